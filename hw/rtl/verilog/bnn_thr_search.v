// bnn_thr_search: many thresholds (a multi-bit code, T > 15) searched in a pipeline instead of compared at once,
// as FINN's RTL thresholding does.
//
// Each PE lane counts the thresholds at or below its value (ACC_W bits, two's complement) among the 2^LEVELS - 1
// thresholds of its channel, sorted ascending (padded at the top with thresholds above the reachable range, which
// never count): a binary search, one compare stage per level of the search tree. Stage s reads the node of its
// level that the earlier stages chose from a memory of that level's thresholds, one threshold a word: word
// nf * 2^s + i holds, for channel nf*PE + p, the sorted threshold number (2i + 1) * 2^(LEVELS-1-s) - 1 (the middle
// of the i-th range of its level). Level s's memory sits in banks of 2^BANK_LOG2[4s+3:4s] words (the last one
// shorter), lane p's bank bb in the file SEARCH_FILE_ss_ppp_bb.hex, so no block RAM's output goes through a
// multiplexer before a register: a block RAM's data comes late in its cycle. A stage is four registers: the banks'
// read, a register on each bank's output, the bank selected, then the compare, which shifts one bit into the
// lane's count. The output is OUT_BIAS plus the count, LATENCY = 4 * LEVELS cycles after the input; one value a
// cycle, no stalls (the unit around it checks its output FIFO before issuing, as every bnnflow layer does).
`default_nettype none

module bnn_thr_search #(
    parameter integer PE = 1,
    parameter integer NF = 1,
    parameter integer ACC_W = 10,
    parameter integer LEVELS = 8,
    parameter integer OUT_BITS = 8,
    parameter integer OUT_BIAS = 0,
    parameter [63:0] BANK_LOG2 = {16{4'd11}},  // level s: banks of 2^BANK_LOG2[4s+3:4s] words
    parameter SEARCH_FILE = "search"
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire [PE*ACC_W-1:0]      in_value,
    input  wire [(NF > 1 ? $clog2(NF) : 1)-1:0] in_nf,
    input  wire                     in_valid,
    output wire [PE*OUT_BITS-1:0]   out_code,
    output wire                     out_valid
);
    localparam integer NFW = NF > 1 ? $clog2(NF) : 1;
    localparam integer L = LEVELS;
    localparam integer CW = (L > OUT_BITS ? L : OUT_BITS) + 1;
    localparam [CW-1:0] BIAS = OUT_BIAS[CW-1:0];

    // the values, channel folds, counts so far and valid bits entering each level (level L: the results)
    wire [(L+1)*PE*ACC_W-1:0] xs;
    wire [(L+1)*NFW-1:0] nfs;
    wire [(L+1)*PE*L-1:0] counts;
    wire [L:0] vs;
    assign xs[0 +: PE*ACC_W] = in_value;
    assign nfs[0 +: NFW] = in_nf;
    assign counts[0 +: PE*L] = {(PE*L){1'b0}};
    assign vs[0] = in_valid;

    genvar s, p;
    generate
        for (s = 0; s < L; s = s + 1) begin : g_level
            localparam integer D = NF << s;
            localparam integer DA = D > 1 ? D : 2;  // a 1-word memory is declared (and written) 2 words deep
            localparam integer AW = $clog2(DA);
            localparam integer S1_I = 48 + s / 10;
            localparam integer S0_I = 48 + s % 10;
            localparam [7:0] S1 = S1_I[7:0];
            localparam [7:0] S0 = S0_I[7:0];
            // the level's banks: BD words each (a power of two), NB of them, selected by the address's top bits
            localparam integer LB = {28'd0, BANK_LOG2[4*s +: 4]};
            localparam integer BW = AW < LB ? AW : LB;
            localparam integer NB = (D + (1 << BW) - 1) / (1 << BW);
            localparam integer SW = NB > 1 ? $clog2(NB) : 1;
            wire [PE*ACC_W-1:0] x = xs[s*PE*ACC_W +: PE*ACC_W];
            wire [NFW-1:0] nf = nfs[s*NFW +: NFW];
            wire [PE*L-1:0] cnt = counts[s*PE*L +: PE*L];
            // the value, fold and count so far go along beside the memory: read, hold, select, then the compare
            reg [PE*ACC_W-1:0] xa, xh, xm, xb;
            reg [NFW-1:0] nfa, nfh, nfm, nfb;
            reg [PE*L-1:0] ca, ch, cm;
            reg [PE*L-1:0] cb;
            reg va, vh, vm, vb;
            always @(posedge clk) begin
                xa <= x;
                nfa <= nf;
                ca <= cnt;
                va <= vs[s] && !rst;
                xh <= xa;
                nfh <= nfa;
                ch <= ca;
                vh <= va && !rst;
                xm <= xh;
                nfm <= nfh;
                cm <= ch;
                vm <= vh && !rst;
                xb <= xm;
                nfb <= nfm;
                vb <= vm && !rst;
            end
            for (p = 0; p < PE; p = p + 1) begin : g_lane
                localparam integer P2_I = 48 + p / 100;
                localparam integer P1_I = 48 + (p / 10) % 10;
                localparam integer P0_I = 48 + p % 10;
                localparam [7:0] P2 = P2_I[7:0];
                localparam [7:0] P1 = P1_I[7:0];
                localparam [7:0] P0 = P0_I[7:0];
                // word nf * 2^s + i: the count so far is i (< 2^s), the fold above it
                /* verilator lint_off UNUSEDSIGNAL */
                wire [NFW+L-1:0] full = ({{L{1'b0}}, nf} << s) | {{NFW{1'b0}}, cnt[p*L +: L]};
                /* verilator lint_on UNUSEDSIGNAL */
                wire [AW-1:0] addr = full[AW-1:0];
                wire [NB*ACC_W-1:0] held;
                genvar b;
                for (b = 0; b < NB; b = b + 1) begin : g_bank
                    localparam integer BD = b == NB - 1 ? D - b * (1 << BW) : 1 << BW;
                    localparam integer BDA = BD > 1 ? BD : 2;  // a 1-word memory is declared (and written) 2 deep
                    localparam integer IBW = $clog2(BDA);
                    localparam integer B1_I = 48 + b / 10;
                    localparam integer B0_I = 48 + b % 10;
                    localparam [7:0] B1 = B1_I[7:0];
                    localparam [7:0] B0 = B0_I[7:0];
                    reg [ACC_W-1:0] q, h;
                    // logic up to 4096 bits, block RAM above (bnnflow.hw.estimates' LUTROM_MAX_BITS)
                    if (ACC_W * BDA <= 4096) begin : g_lut
                        (* rom_style = "logic" *) reg [ACC_W-1:0] rom [0:BDA-1];
                        initial $readmemh({SEARCH_FILE, "_", S1, S0, "_", P2, P1, P0, "_", B1, B0, ".hex"}, rom);
                        always @(posedge clk) q <= rom[addr[IBW-1:0]];  // bits above IBW are 0 when it is read
                    end else begin : g_block
                        (* rom_style = "block" *) reg [ACC_W-1:0] rom [0:BDA-1];
                        initial $readmemh({SEARCH_FILE, "_", S1, S0, "_", P2, P1, P0, "_", B1, B0, ".hex"}, rom);
                        always @(posedge clk) q <= rom[addr[IBW-1:0]];  // bits above IBW are 0 when it is read
                    end
                    always @(posedge clk) h <= q;
                    assign held[b*ACC_W +: ACC_W] = h;
                end
                reg [SW-1:0] sa, sh;
                if (NB > 1) begin : g_sel
                    always @(posedge clk) sa <= addr[AW-1:BW];
                end else begin : g_one
                    always @(posedge clk) sa <= 1'b0;
                end
                reg [ACC_W-1:0] qm;
                always @(posedge clk) begin
                    sh <= sa;
                    qm <= held[sh*ACC_W +: ACC_W];
                end
                wire hit = $signed(xm[p*ACC_W +: ACC_W]) >= $signed(qm);
                always @(posedge clk) cb[p*L +: L] <= {cm[p*L +: L-1], hit};
                /* verilator lint_off UNUSEDSIGNAL */
                wire unused_top = cm[p*L + L-1];  // the count has fewer than L bits before the last level
                /* verilator lint_on UNUSEDSIGNAL */
            end
            assign xs[(s+1)*PE*ACC_W +: PE*ACC_W] = xb;
            assign nfs[(s+1)*NFW +: NFW] = nfb;
            assign counts[(s+1)*PE*L +: PE*L] = cb;
            assign vs[s+1] = vb;
        end
    endgenerate

    /* verilator lint_off UNUSEDSIGNAL */
    wire [PE*ACC_W-1:0] x_done = xs[L*PE*ACC_W +: PE*ACC_W];  // the values and folds leave with their counts
    wire [NFW-1:0] nf_done = nfs[L*NFW +: NFW];
    /* verilator lint_on UNUSEDSIGNAL */
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_out
            wire [CW-1:0] code = {{(CW-L){1'b0}}, counts[L*PE*L + p*L +: L]} + BIAS;
            assign out_code[p*OUT_BITS +: OUT_BITS] = code[OUT_BITS-1:0];
            /* verilator lint_off UNUSEDSIGNAL */
            wire [CW-OUT_BITS-1:0] unused_top = code[CW-1:OUT_BITS];  // a code fits OUT_BITS
            /* verilator lint_on UNUSEDSIGNAL */
        end
    endgenerate
    assign out_valid = vs[L];
endmodule

`default_nettype wire
