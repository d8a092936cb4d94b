// bnn_thr_count: the threshold stage of bnn_mvtu and bnn_threshold. Each PE lane's output is OUT_BIAS plus the
// number of its channel's N_THR thresholds at or below its value (ACC_W bits, two's complement; an exact hit
// counts); one value a cycle, no stalls (the unit around it checks its output FIFO before issuing).
//
// Up to 15 thresholds (SEARCH = 0) are all compared at once: THRESH_FILE holds NF words of PE*N_THR*ACC_W bits,
// word nf lane p threshold i at [(p*N_THR + i)*ACC_W] for channel nf*PE + p. They are read into a register a
// cycle ahead of the value (in_nf_early: the fold of the value arriving on the next cycle), then compared,
// counted and registered: LATENCY = 1 cycle after the value. Thresholds of more than 4096 bits in all sit in
// block RAM, whose data comes late in its cycle (5.6 ns on the ECP5) and may be placed far from the compare: its
// word is held once more, and the value delayed a cycle to match, LATENCY = 2 (the units around count it as
// THOLD). More are searched (SEARCH = the levels of the search tree) by bnn_thr_search from the memories
// SEARCH_FILE_ss_ppp_bb.hex (level s in banks of 2^SEARCH_BANKS[4s+3:4s] words), with the value's fold in_nf:
// LATENCY = 4 * SEARCH.
`default_nettype none

module bnn_thr_count #(
    parameter integer PE = 1,
    parameter integer NF = 1,
    parameter integer ACC_W = 10,
    parameter integer N_THR = 1,
    parameter integer OUT_BITS = 1,
    parameter integer OUT_BIAS = 0,
    parameter integer SEARCH = 0,
    /* verilator lint_off UNUSEDPARAM */  // each file, and the bank depth, is read only in the mode that has it
    parameter [63:0] SEARCH_BANKS = {16{4'd11}},
    parameter THRESH_FILE = "thresholds.hex",
    parameter SEARCH_FILE = "search"
    /* verilator lint_on UNUSEDPARAM */
) (
    input  wire                     clk,
    input  wire                     rst,
    /* verilator lint_off UNUSEDSIGNAL */  // each fold is read only in the mode that has it
    input  wire [(NF > 1 ? $clog2(NF) : 1)-1:0] in_nf_early,
    input  wire [(NF > 1 ? $clog2(NF) : 1)-1:0] in_nf,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [PE*ACC_W-1:0]      in_value,
    input  wire                     in_valid,
    output wire [PE*OUT_BITS-1:0]   out_code,
    output wire                     out_valid
);
    genvar p, s;
    generate
        if (SEARCH > 0) begin : g_search
            bnn_thr_search #(.PE(PE), .NF(NF), .ACC_W(ACC_W), .LEVELS(SEARCH), .OUT_BITS(OUT_BITS),
                             .OUT_BIAS(OUT_BIAS), .BANK_LOG2(SEARCH_BANKS), .SEARCH_FILE(SEARCH_FILE)) u_search (
                .clk(clk), .rst(rst), .in_value(in_value), .in_nf(in_nf), .in_valid(in_valid),
                .out_code(out_code), .out_valid(out_valid));
        end else begin : g_parallel
            localparam integer TW = PE * N_THR * ACC_W;
            localparam [OUT_BITS:0] BIAS = OUT_BIAS[OUT_BITS:0];
            reg [TW-1:0] t;
            wire [PE*ACC_W-1:0] x;  // the value, beside its thresholds
            wire x_valid;
            // logic up to 4096 bits, block RAM above (bnnflow.hw.estimates' LUTROM_MAX_BITS)
            if (TW * NF <= 4096) begin : g_lut
                (* rom_style = "logic" *) reg [TW-1:0] trom [0:NF-1];
                initial $readmemh(THRESH_FILE, trom);
                always @(posedge clk) t <= trom[in_nf_early];
                assign x = in_value;
                assign x_valid = in_valid;
            end else begin : g_block
                (* rom_style = "block" *) reg [TW-1:0] trom [0:NF-1];
                initial $readmemh(THRESH_FILE, trom);
                reg [TW-1:0] tb;  // the block RAM's data, registered before anything else reads it
                reg [PE*ACC_W-1:0] xd;
                reg xd_valid;
                always @(posedge clk) begin
                    tb <= trom[in_nf_early];
                    t <= tb;
                    xd <= in_value;
                    xd_valid <= in_valid && !rst;
                end
                assign x = xd;
                assign x_valid = xd_valid;
            end
            wire [PE*OUT_BITS-1:0] codes;
            for (p = 0; p < PE; p = p + 1) begin : g_pe
                wire [N_THR-1:0] hit;
                for (s = 0; s < N_THR; s = s + 1) begin : g_t
                    assign hit[s] = $signed(x[p*ACC_W +: ACC_W]) >= $signed(t[(p*N_THR + s)*ACC_W +: ACC_W]);
                end
                wire [OUT_BITS:0] n;
                bnn_sum_tree #(.N(N_THR), .TW(1), .SIGNED(0), .OW(OUT_BITS + 1)) u_count (.terms(hit), .sum(n));
                wire [OUT_BITS:0] code = n + BIAS;  // a signed code counts up from its lowest value
                assign codes[p*OUT_BITS +: OUT_BITS] = code[OUT_BITS-1:0];
                /* verilator lint_off UNUSEDSIGNAL */
                wire unused_top = code[OUT_BITS];  // only OUT_BITS bits of a code are ever set
                /* verilator lint_on UNUSEDSIGNAL */
            end
            reg [PE*OUT_BITS-1:0] o;
            reg v;
            always @(posedge clk) begin
                o <= codes;
                v <= x_valid && !rst;
            end
            assign out_code = o;
            assign out_valid = v;
        end
    endgenerate
endmodule

`default_nettype wire
