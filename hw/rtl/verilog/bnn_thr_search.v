// bnn_thr_search: many thresholds (a multi-bit code, T > 15) searched in a pipeline instead of compared at once,
// as FINN's RTL thresholding does.
//
// Each PE lane counts the thresholds at or below its value (ACC_W bits, two's complement) among the 2^LEVELS - 1
// thresholds of its channel, sorted ascending (padded at the top with thresholds above the reachable range, which
// never count): a binary search, one compare stage per level of the search tree. Stage s reads the node of its
// level that the earlier stages chose from a memory of that level's thresholds, one threshold a word: lane p's
// memory of level s is the file SEARCH_FILE_ss_ppp.hex, word nf * 2^s + i holding, for channel nf*PE + p, the
// sorted threshold number (2i + 1) * 2^(LEVELS-1-s) - 1 (the middle of the i-th range of its level). A stage is
// three registers: the memory read, a register on the memory's output (a block RAM's data comes late in its
// cycle, too late for a compare's carry chain at 100 MHz on an ECP5), then the compare, which shifts one bit into
// the lane's count. The output is OUT_BIAS plus the count, LATENCY = 3 * LEVELS cycles after the input; one value
// a cycle, no stalls (the unit around it checks its output FIFO before issuing, as every bnnflow layer does).
`default_nettype none

module bnn_thr_search #(
    parameter integer PE = 1,
    parameter integer NF = 1,
    parameter integer ACC_W = 10,
    parameter integer LEVELS = 8,
    parameter integer OUT_BITS = 8,
    parameter integer OUT_BIAS = 0,
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
            wire [PE*ACC_W-1:0] x = xs[s*PE*ACC_W +: PE*ACC_W];
            wire [NFW-1:0] nf = nfs[s*NFW +: NFW];
            wire [PE*L-1:0] cnt = counts[s*PE*L +: PE*L];
            // first register: the memory read, with the value, fold and count so far alongside it
            reg [PE*ACC_W-1:0] xa;
            reg [NFW-1:0] nfa;
            reg [PE*L-1:0] ca;
            reg va;
            always @(posedge clk) begin
                xa <= x;
                nfa <= nf;
                ca <= cnt;
                va <= vs[s] && !rst;
            end
            // second register: the memory's output, with the value, fold and count alongside it
            reg [PE*ACC_W-1:0] xm;
            reg [NFW-1:0] nfm;
            reg [PE*L-1:0] cm;
            reg vm;
            always @(posedge clk) begin
                xm <= xa;
                nfm <= nfa;
                cm <= ca;
                vm <= va && !rst;
            end
            // third register: the compare shifts its bit into the count
            reg [PE*ACC_W-1:0] xb;
            reg [NFW-1:0] nfb;
            reg [PE*L-1:0] cb;
            reg vb;
            always @(posedge clk) begin
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
                reg [ACC_W-1:0] q;
                // logic up to 4096 bits, block RAM above (bnnflow.hw.estimates' LUTROM_MAX_BITS)
                if (ACC_W * DA <= 4096) begin : g_lut
                    (* rom_style = "logic" *) reg [ACC_W-1:0] rom [0:DA-1];
                    initial $readmemh({SEARCH_FILE, "_", S1, S0, "_", P2, P1, P0, ".hex"}, rom);
                    always @(posedge clk) q <= rom[addr];
                end else begin : g_block
                    (* rom_style = "block" *) reg [ACC_W-1:0] rom [0:DA-1];
                    initial $readmemh({SEARCH_FILE, "_", S1, S0, "_", P2, P1, P0, ".hex"}, rom);
                    always @(posedge clk) q <= rom[addr];
                end
                reg [ACC_W-1:0] qm;
                always @(posedge clk) qm <= q;
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
