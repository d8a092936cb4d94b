// bnn_label_select: the index of the largest of LABELS scores (top-1), PE scores a beat.
//
// Lanes are compared in index order with a strict `>`, and a later beat wins only if strictly larger, so ties
// go to the lower index, as numpy's and PyTorch's argmax do. One index leaves per frame.
`default_nettype none

module bnn_label_select #(
    parameter integer LABELS = 10,
    parameter integer PE = 1,
    parameter integer EB = 8,
    parameter integer SIGNED = 0,
    parameter integer OUT_BITS = 4
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [PE*EB-1:0]     in_data,
    input  wire                 in_valid,
    output wire                 in_ready,
    output wire [OUT_BITS-1:0]  out_data,
    output wire                 out_valid,
    input  wire                 out_ready
);
    localparam integer IXW = OUT_BITS;  // the output datatype holds every index 0 .. LABELS-1
    localparam integer STAGES = 2;  // input register, output register
    localparam integer DEPTH = 4;
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer LAST_I = LABELS - PE;
    localparam [IXW-1:0] LAST_BASE = LAST_I[IXW-1:0];
    localparam [IXW-1:0] STEP = PE[IXW-1:0];

    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)
    assign in_ready = has_room;
    wire in_fire = in_valid && has_room;

    reg [IXW-1:0] base;  // index of the beat's lane 0
    always @(posedge clk) begin
        if (rst) base <= 0;
        else if (in_fire) base <= base == LAST_BASE ? 0 : base + STEP;
    end

    reg [PE*EB-1:0] d1;
    reg [IXW-1:0] base1;
    reg v1, first1, last1;
    always @(posedge clk) begin
        d1 <= in_data;
        base1 <= base;
        v1 <= in_fire && !rst;
        first1 <= base == 0;
        last1 <= base == LAST_BASE;
    end

    reg [EB-1:0] best;
    reg [IXW-1:0] best_i;
    // candidate chain over the lanes: cand_v[p] / cand_i[p] is the best of everything up to lane p
    wire [EB-1:0] cand_v [0:PE];
    wire [IXW-1:0] cand_i [0:PE];
    assign cand_v[0] = first1 ? d1[EB-1:0] : best;
    assign cand_i[0] = first1 ? base1 : best_i;
    genvar p;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_lane
            wire [EB-1:0] v = d1[p*EB +: EB];
            wire wins = SIGNED != 0 ? $signed(v) > $signed(cand_v[p]) : v > cand_v[p];
            assign cand_v[p + 1] = wins ? v : cand_v[p];
            assign cand_i[p + 1] = wins ? base1 + p[IXW-1:0] : cand_i[p];
        end
    endgenerate

    reg [OUT_BITS-1:0] o2;
    reg v2;
    always @(posedge clk) begin
        if (v1) begin
            best <= cand_v[PE];
            best_i <= cand_i[PE];
        end
        o2 <= cand_i[PE];
        v2 <= v1 && last1 && !rst;
    end

    bnn_fifo #(.WIDTH(OUT_BITS), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(o2), .in_valid(v2),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
