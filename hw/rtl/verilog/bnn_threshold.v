// bnn_threshold: integer thresholds on a stream without a matrix product before them (FINN's Thresholding).
//
// PE channels a beat (NF = C/PE beats a pixel); a channel's output is OUT_BIAS plus the number of its N_THR
// thresholds at or below the input. Thresholds: a ROM of NF words of PE*N_THR*ACC_W bits, as in bnn_mvtu.
`default_nettype none

module bnn_threshold #(
    parameter integer C = 1,
    parameter integer PE = 1,
    parameter integer IN_BITS = 8,
    parameter integer IN_SIGNED = 0,
    parameter integer ACC_W = 10,
    parameter integer N_THR = 1,
    parameter integer OUT_BITS = 1,
    parameter integer OUT_BIAS = 0,
    parameter THRESH_FILE = "thresholds.hex"
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire [PE*IN_BITS-1:0]    in_data,
    input  wire                     in_valid,
    output wire                     in_ready,
    output wire [PE*OUT_BITS-1:0]   out_data,
    output wire                     out_valid,
    input  wire                     out_ready
);
    localparam integer NF = C / PE;
    localparam integer NFW = NF > 1 ? $clog2(NF) : 1;
    localparam integer TW = PE * N_THR * ACC_W;
    localparam [OUT_BITS:0] BIAS = OUT_BIAS[OUT_BITS:0];
    localparam integer STAGES = 2;  // input and threshold read, output register
    localparam integer DEPTH = 4;
    localparam integer CW = $clog2(DEPTH) + 1;
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer NF_LAST_I = NF - 1;
    localparam [CW-1:0] ROOM = ROOM_I[CW-1:0];
    localparam [NFW-1:0] NF_LAST = NF_LAST_I[NFW-1:0];

    wire [CW-1:0] count;
    assign in_ready = count < ROOM;
    wire in_fire = in_valid && count < ROOM;

    reg [NFW-1:0] nf;
    always @(posedge clk) begin
        if (rst) nf <= 0;
        else if (in_fire) nf <= nf == NF_LAST ? 0 : nf + 1'b1;
    end

    reg [TW-1:0] trom [0:NF-1];
    initial $readmemh(THRESH_FILE, trom);
    reg [TW-1:0] t1;
    reg [PE*IN_BITS-1:0] x1;
    reg v1;
    always @(posedge clk) begin
        t1 <= trom[nf];
        x1 <= in_data;
        v1 <= in_fire && !rst;
    end

    wire [PE*OUT_BITS-1:0] result;
    genvar p, s;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_pe
            wire [IN_BITS-1:0] xr = x1[p*IN_BITS +: IN_BITS];
            wire signed [ACC_W-1:0] xv = IN_SIGNED != 0 ? $signed({{(ACC_W - IN_BITS){xr[IN_BITS-1]}}, xr})
                                                         : $signed({{(ACC_W - IN_BITS){1'b0}}, xr});
            wire [N_THR-1:0] hit;
            for (s = 0; s < N_THR; s = s + 1) begin : g_t
                assign hit[s] = xv >= $signed(t1[(p*N_THR + s)*ACC_W +: ACC_W]);
            end
            wire [OUT_BITS:0] n;
            bnn_sum_tree #(.N(N_THR), .TW(1), .SIGNED(0), .OW(OUT_BITS + 1)) u_count (.terms(hit), .sum(n));
            wire [OUT_BITS:0] code = n + BIAS;  // a signed code counts up from its lowest value
            assign result[p*OUT_BITS +: OUT_BITS] = code[OUT_BITS-1:0];
            /* verilator lint_off UNUSEDSIGNAL */
            wire unused_top = code[OUT_BITS];  // only OUT_BITS bits of a code are ever set
            /* verilator lint_on UNUSEDSIGNAL */
        end
    endgenerate

    reg [PE*OUT_BITS-1:0] o2;
    reg v2;
    always @(posedge clk) begin
        o2 <= result;
        v2 <= v1 && !rst;
    end

    bnn_fifo #(.WIDTH(PE*OUT_BITS), .DEPTH(DEPTH)) u_out (
        .clk(clk), .rst(rst), .in_data(o2), .in_valid(v2),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .count(count));
endmodule

`default_nettype wire
