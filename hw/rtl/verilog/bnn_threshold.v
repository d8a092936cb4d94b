// bnn_threshold: integer thresholds on a stream without a matrix product before them (FINN's Thresholding).
//
// PE channels a beat (NF = C/PE beats a pixel); a channel's output is OUT_BIAS plus the number of its thresholds
// at or below the input. With SIGNS = 1 a channel's sign bit (1: -1) negates its input first: SIGN_FILE holds NF
// words of PE bits, lane p for channel nf*PE + p. The thresholds are counted by bnn_thr_count: up to 15
// (SEARCH = 0) all compared at once, THRESH_FILE holding NF words of PE*N_THR*ACC_W bits, as in bnn_mvtu; more
// searched (SEARCH = the number of levels of the search tree, bnn_thr_search) from the memories
// SEARCH_FILE_ss_ppp_bb.hex.
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
    parameter integer SIGNS = 0,
    parameter integer SEARCH = 0,
    /* verilator lint_off UNUSEDPARAM */  // each file, and the bank depth, is read only in the mode that has it
    parameter [63:0] SEARCH_BANKS = {16{4'd11}},
    parameter THRESH_FILE = "thresholds.hex",
    parameter SIGN_FILE = "signs.hex",
    parameter SEARCH_FILE = "search"
    /* verilator lint_on UNUSEDPARAM */
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
    // thresholds in block RAM are held once more, and the value with them (bnn_thr_count)
    localparam integer THOLD = SEARCH == 0 && PE * N_THR * ACC_W * NF > 4096 ? 1 : 0;
    // input and threshold read, (threshold hold,) then the output register, or the search's four registers a level
    localparam integer STAGES = SEARCH > 0 ? 1 + 4 * SEARCH : 2 + THOLD;
    // the output FIFO (a power of two) has room for the pipeline and a few results more
    localparam integer DEPTH = SEARCH == 0 ? 4 << THOLD : STAGES + 4 <= 16 ? 16 : 1 << $clog2(STAGES + 4);
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer NF_LAST_I = NF - 1;
    localparam [NFW-1:0] NF_LAST = NF_LAST_I[NFW-1:0];

    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)
    assign in_ready = has_room;
    wire in_fire = in_valid && has_room;

    reg [NFW-1:0] nf;
    always @(posedge clk) begin
        if (rst) nf <= 0;
        else if (in_fire) nf <= nf == NF_LAST ? 0 : nf + 1'b1;
    end

    reg [PE*IN_BITS-1:0] x1;
    reg v1;
    /* verilator lint_off UNUSEDSIGNAL */
    reg [NFW-1:0] nf1;  // addresses the search memories; unused when the thresholds are compared at once
    /* verilator lint_on UNUSEDSIGNAL */
    always @(posedge clk) begin
        x1 <= in_data;
        v1 <= in_fire && !rst;
        nf1 <= nf;
    end

    // the sign bits of the channels being read (1: negate), read with the input
    wire [PE-1:0] neg1;
    generate
        if (SIGNS != 0) begin : g_signs
            reg [PE-1:0] s1;
            // logic up to 4096 bits, block RAM above (bnnflow.hw.estimates' LUTROM_MAX_BITS)
            if (PE * NF <= 4096) begin : g_lut
                (* rom_style = "logic" *) reg [PE-1:0] srom [0:NF-1];
                initial $readmemh(SIGN_FILE, srom);
                always @(posedge clk) s1 <= srom[nf];
            end else begin : g_block
                (* rom_style = "block" *) reg [PE-1:0] srom [0:NF-1];
                initial $readmemh(SIGN_FILE, srom);
                always @(posedge clk) s1 <= srom[nf];
            end
            assign neg1 = s1;
        end else begin : g_no_signs
            assign neg1 = {PE{1'b0}};
        end
    endgenerate

    // the (signed) values to threshold
    wire [PE*ACC_W-1:0] xv;
    genvar p;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_value
            wire [IN_BITS-1:0] xr = x1[p*IN_BITS +: IN_BITS];
            wire [ACC_W-1:0] xe = IN_SIGNED != 0 ? {{(ACC_W - IN_BITS){xr[IN_BITS-1]}}, xr}
                                                 : {{(ACC_W - IN_BITS){1'b0}}, xr};
            assign xv[p*ACC_W +: ACC_W] = neg1[p] ? -xe : xe;
        end
    endgenerate

    wire [PE*OUT_BITS-1:0] result;
    wire result_valid;
    bnn_thr_count #(.PE(PE), .NF(NF), .ACC_W(ACC_W), .N_THR(N_THR), .OUT_BITS(OUT_BITS), .OUT_BIAS(OUT_BIAS),
                    .SEARCH(SEARCH), .SEARCH_BANKS(SEARCH_BANKS), .THRESH_FILE(THRESH_FILE),
                    .SEARCH_FILE(SEARCH_FILE)) u_thr (
        .clk(clk), .rst(rst), .in_nf_early(nf), .in_nf(nf1), .in_value(xv), .in_valid(v1),
        .out_code(result), .out_valid(result_valid));

    bnn_fifo #(.WIDTH(PE*OUT_BITS), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(result), .in_valid(result_valid),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
