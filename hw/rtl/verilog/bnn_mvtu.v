// bnn_mvtu: the matrix-vector-threshold unit (one fully connected layer, or a conv layer after a sliding window).
//
// Folding: PE output channels and SIMD input elements per cycle; SF = MW/SIMD and NF = MH/PE, so one input vector
// takes NF*SF cycles (FINN's MVAU schedule). Weights: a ROM of NF*SF words of PE*SIMD*W_BITS bits (in banks), word
// nf*SF + sf holding, in lane p, the weights of output channel nf*PE + p for inputs sf*SIMD .. sf*SIMD+SIMD-1.
// Thresholds: a ROM of NF words of PE*N_THR*ACC_W bits (lane p, threshold i at [(p*N_THR + i)*ACC_W]).
//
// XNOR mode (XNOR=1): inputs and weights are bits, acc = popcount(xnor(x, w)). Otherwise (the multi-bit input
// layer) acc = sum of x * w with x of IN_BITS (two's complement if IN_SIGNED) and w bipolar (bit 1 = +1,
// bit 0 = -1) when W_BIPOLAR, else W_BITS two's complement. With N_THR > 0 the output of a channel is OUT_BIAS
// plus the number of thresholds T_i <= acc (an accumulator exactly on a threshold counts; in XNOR mode the
// thresholds are on the popcount); with N_THR = 0 it is acc itself, in XNOR mode as the bipolar dot product
// 2 * popcount - MW.
//
// Padding correction (PAD=1): the vectors are the OH x OWD output positions of a conv, row by row; position
// (r, c) adds to each channel's accumulator the correction of its border class. ROW_FILE holds OH words, the
// first correction word of row r's class (rows[r] * (classes of columns) * NF), COL_FILE OWD words (cols[c] * NF),
// and CORR_FILE the corrections, word class * NF + nf holding lane p's at [p*ACC_W] (two's complement). In XNOR
// mode the corrected value is on the bipolar accumulator, 2 * popcount + (correction - MW), and so are the
// thresholds; CORR_FILE holds correction - MW.
//
// Thresholds (counted by bnn_thr_count): up to 15 are compared at once (above); more (SEARCH = the levels of the
// search tree) are searched by bnn_thr_search, from its memories SEARCH_FILE_ss_ppp_bb.hex.
//
// The input vector sits in a double buffer: the next vector streams in while the unit reuses the current one
// for its NF passes, so a layer's throughput is max(its input time, NF*SF) without large FIFOs around it.
// Pipeline: issue -> ROM and buffer read -> hold -> hold -> bank select -> (multi-bit: products) -> four levels of
// sums -> accumulate -> threshold -> output FIFO.
// LUT RAM where the family has it (ECP5); on iCE40, which has none, the flow defines BNNFLOW_LUT_RAM as "auto"
`ifndef BNNFLOW_LUT_RAM
`define BNNFLOW_LUT_RAM "distributed"
`endif
`default_nettype none

module bnn_mvtu #(
    parameter integer MW = 4,
    parameter integer MH = 4,
    parameter integer PE = 1,
    parameter integer SIMD = 1,
    parameter integer IN_BITS = 1,
    parameter integer IN_SIGNED = 0,
    parameter integer W_BITS = 1,
    parameter integer W_BIPOLAR = 1,
    parameter integer XNOR = 1,
    parameter integer ACC_W = 8,
    parameter integer N_THR = 1,
    parameter integer OUT_BITS = 1,
    /* verilator lint_off UNUSEDPARAM */  // only thresholds have a bias
    parameter integer OUT_BIAS = 0,
    /* verilator lint_on UNUSEDPARAM */
    parameter integer WBANK_DEPTH = 2048,
    parameter integer PAD = 0,
    parameter integer OH = 1,
    parameter integer OWD = 1,
    parameter integer NCLS = 1,
    parameter integer SEARCH = 0,
    parameter WEIGHT_FILE = "weights",
    /* verilator lint_off UNUSEDPARAM */  // each file, and the bank depth, is read only in the mode that has it
    parameter [63:0] SEARCH_BANKS = {16{4'd11}},
    parameter THRESH_FILE = "thresholds.hex",
    parameter CORR_FILE = "corrections.hex",
    parameter ROW_FILE = "rows.hex",
    parameter COL_FILE = "cols.hex",
    parameter SEARCH_FILE = "search"
    /* verilator lint_on UNUSEDPARAM */
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire [SIMD*IN_BITS-1:0]  in_data,
    input  wire                     in_valid,
    output wire                     in_ready,
    output wire [PE*OUT_BITS-1:0]   out_data,
    output wire                     out_valid,
    input  wire                     out_ready
);
    localparam integer SF = MW / SIMD;
    localparam integer NF = MH / PE;
    localparam integer IW = SIMD * IN_BITS;
    localparam integer WW = PE * SIMD * W_BITS;
    localparam [ACC_W-1:0] MW_ACC = MW[ACC_W-1:0];
    localparam integer SFW = SF > 1 ? $clog2(SF) : 1;
    localparam integer NFW = NF > 1 ? $clog2(NF) : 1;
    localparam integer WAW = SF * NF > 1 ? $clog2(SF * NF) : 1;
    localparam integer PSTAGE = XNOR != 0 ? 0 : 1;  // multi-bit products are registered before they are summed
    // the padding correction: its ROM's output is registered (a block RAM's data comes late), then added in a
    // register of its own
    localparam integer CSTAGE = PAD != 0 ? 2 : 0;
    // thresholds in block RAM are held once more, and the value with them (bnn_thr_count)
    localparam integer THOLD = N_THR > 0 && SEARCH == 0 && PE * N_THR * ACC_W * NF > 4096 ? 1 : 0;
    // registers from issue to the FIFO: read, 2 hold, select, products, 4 sums, accumulate, 2 correction, threshold
    // hold, output (or the search's four registers a level)
    localparam integer STAGES = 10 + PSTAGE + CSTAGE + THOLD + (SEARCH > 0 ? 4 * SEARCH - 1 : 0);
    // the output FIFO (a power of two, 16 or more) has room for the pipeline and 5 results more
    localparam integer DEPTH = STAGES + 5 <= 16 ? 16 : 1 << $clog2(STAGES + 5);
    localparam integer ROOM_I = DEPTH - STAGES;  // issue only while the FIFO holds fewer: in-flight results fit
    localparam integer SF_LAST_I = SF - 1;
    localparam integer NF_LAST_I = NF - 1;
    localparam integer WA_LAST_I = SF * NF - 1;
    localparam [SFW-1:0] SF_LAST = SF_LAST_I[SFW-1:0];
    localparam [NFW-1:0] NF_LAST = NF_LAST_I[NFW-1:0];
    localparam [WAW-1:0] WA_LAST = WA_LAST_I[WAW-1:0];
    localparam integer MTW = IN_BITS + W_BITS + 1;  // a product's width in multi-bit mode
    // Memories of up to LUT_MEM_BITS bits are logic (ROMs) or LUT RAM, bigger ones block RAM, each declared with
    // the yosys attribute that says so: the rule of bnnflow.hw.estimates (LUTROM_MAX_BITS), so the estimate
    // counts the block RAMs synthesis uses. A weight ROM of up to SHALLOW_WORDS words is logic at any width
    // (SHALLOW_ROM_WORDS there): each bit of its word is a 5-input function at most, two LUT4s.
    localparam integer LUT_MEM_BITS = 4096;
    localparam integer SHALLOW_WORDS = 32;
    localparam integer RSL = 32;  // bits of a logic ROM's word read per copy of the address

    // ---- input double buffer: bank {wb}, entry wi is written while bank rb is read ----
    // the bank being read is never the one being written, so read-write collisions need no logic (no_rw_check)
    localparam integer IBD = 2 * (1 << SFW);
    wire [IW-1:0] ibuf_q;
    generate
        if (IW * IBD <= LUT_MEM_BITS) begin : g_ibuf_lut
            (* no_rw_check, ram_style = `BNNFLOW_LUT_RAM *) reg [IW-1:0] ibuf [0:IBD-1];
            always @(posedge clk) begin
                if (in_fire) ibuf[{wb, wi}] <= in_data;
            end
            assign ibuf_q = ibuf[{rb, sf}];
        end else begin : g_ibuf_block
            (* no_rw_check, ram_style = "block" *) reg [IW-1:0] ibuf [0:IBD-1];
            always @(posedge clk) begin
                if (in_fire) ibuf[{wb, wi}] <= in_data;
            end
            assign ibuf_q = ibuf[{rb, sf}];
        end
    endgenerate
    reg [1:0] full;
    reg wb;
    reg [SFW-1:0] wi;
    reg rb;
    reg [SFW-1:0] sf;
    reg [NFW-1:0] nf;
    reg [WAW-1:0] waddr;
    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)

    assign in_ready = !full[wb];
    wire in_fire = in_valid && !full[wb];
    wire issue = full[rb] && has_room;
    wire vector_done = issue && sf == SF_LAST && nf == NF_LAST;

    // the weight address advances with every issue; computed here so that copies of it can be registered too
    wire [WAW-1:0] waddr_next = !issue ? waddr : waddr == WA_LAST ? {WAW{1'b0}} : waddr + 1'b1;
    always @(posedge clk) waddr <= rst ? {WAW{1'b0}} : waddr_next;

    always @(posedge clk) begin
        if (rst) begin
            full <= 2'b00;
            wb <= 1'b0;
            wi <= 0;
            rb <= 1'b0;
            sf <= 0;
            nf <= 0;
        end else begin
            if (in_fire) begin
                wi <= wi == SF_LAST ? 0 : wi + 1'b1;
                if (wi == SF_LAST) begin
                    full[wb] <= 1'b1;
                    wb <= !wb;
                end
            end
            if (issue) begin
                sf <= sf == SF_LAST ? 0 : sf + 1'b1;
                if (sf == SF_LAST) nf <= nf == NF_LAST ? 0 : nf + 1'b1;
            end
            if (vector_done) begin
                full[rb] <= 1'b0;  // the bank being filled is the other one, so this never races the fill
                rb <= !rb;
            end
        end
    end

    // ---- stages 1-3: weight ROM and input buffer reads ----
    // The weights sit in banks of at most WBANK_DEPTH words (file WEIGHT_FILE_bb.hex for bank bb), each read into
    // its block RAM's register and held twice more before the bank is selected: a deep layer's ROM spans dozens
    // of block RAMs, and selecting among their raw outputs in the same cycle would limit the clock. On an ECP5 the
    // first hold becomes the block RAM's own output register (bnnflow.hw.block_ram_registers), whose data comes
    // out early; as a flip-flop it was placed far from a block RAM whose data comes 5.8 ns after the clock.
    localparam integer WDEPTH = SF * NF;
    localparam integer BW = WAW < $clog2(WBANK_DEPTH) ? WAW : $clog2(WBANK_DEPTH);
    localparam integer NB = (WDEPTH + (1 << BW) - 1) / (1 << BW);
    localparam integer SBW = NB > 1 ? $clog2(NB) : 1;
    wire [NB*WW-1:0] banks;
    genvar b, r;
    generate
        if (WDEPTH <= (1 << BW) && (WW * (WDEPTH > 1 ? WDEPTH : 2) <= LUT_MEM_BITS || WDEPTH <= SHALLOW_WORDS))
        begin : g_lut_rom
            // A shallow ROM is logic, not block RAM: every output bit is a few LUTs decoding the address. A wide
            // one (CNV's second layer: 36 words of 1024 bits) would hang thousands of LUTs on each address bit,
            // so each RSL-bit slice reads with its own registered copy of the address (kept apart in synthesis).
            localparam integer NR = (WW + RSL - 1) / RSL;
            (* rom_style = "logic" *) reg [WW-1:0] rom [0:(WDEPTH > 1 ? WDEPTH : 2)-1];
            initial $readmemh({WEIGHT_FILE, "_00.hex"}, rom);
            wire [WW-1:0] q;
            reg [WW-1:0] h;
            for (r = 0; r < NR; r = r + 1) begin : g_slice
                localparam integer LO = r * RSL;
                localparam integer SLW = WW - LO < RSL ? WW - LO : RSL;
                reg [WAW-1:0] ra;
                (* keep *) always @(posedge clk) ra <= rst ? {WAW{1'b0}} : waddr_next;
                reg [SLW-1:0] qs;
                always @(posedge clk) qs <= rom[ra][LO +: SLW];
                assign q[LO +: SLW] = qs;
            end
            reg [WW-1:0] h2;
            always @(posedge clk) begin
                h <= q;
                h2 <= h;
            end
            assign banks = h2;
        end else begin : g_block_rom
            for (b = 0; b < NB; b = b + 1) begin : g_bank
                localparam integer BD = b == NB - 1 ? WDEPTH - b * (1 << BW) : 1 << BW;
                localparam integer D1_I = 48 + b / 10;
                localparam integer D0_I = 48 + b % 10;
                localparam [7:0] D1 = D1_I[7:0];
                localparam [7:0] D0 = D0_I[7:0];
                localparam integer BDA = BD > 1 ? BD : 2;  // the last bank may be shorter; a 1-word ROM gets 2
                localparam integer IBW = $clog2(BDA);
                reg [WW-1:0] q;
                reg [WW-1:0] h;
                if (WW * BDA <= LUT_MEM_BITS || BDA <= SHALLOW_WORDS) begin : g_lut
                    (* rom_style = "logic" *) reg [WW-1:0] rom [0:BDA-1];
                    initial $readmemh({WEIGHT_FILE, "_", D1, D0, ".hex"}, rom);
                    always @(posedge clk) q <= rom[waddr[IBW-1:0]];  // bits above IBW are 0 when this bank is read
                end else begin : g_block
                    (* rom_style = "block" *) reg [WW-1:0] rom [0:BDA-1];
                    initial $readmemh({WEIGHT_FILE, "_", D1, D0, ".hex"}, rom);
                    always @(posedge clk) q <= rom[waddr[IBW-1:0]];  // bits above IBW are 0 when this bank is read
                end
                reg [WW-1:0] h2;
                always @(posedge clk) begin
                    h <= q;
                    h2 <= h;
                end
                assign banks[b*WW +: WW] = h2;
            end
        end
    endgenerate

    reg [IW-1:0] x1, x1h, x1g;
    reg v1, first1, last1, v1h, first1h, last1h, v1g, first1g, last1g;
    reg [NFW-1:0] nf1, nf1h, nf1g;
    reg [SBW-1:0] sel1, sel1h, sel1g;
    always @(posedge clk) begin
        x1 <= ibuf_q;
        v1 <= issue && !rst;
        first1 <= sf == 0;
        last1 <= sf == SF_LAST;
        nf1 <= nf;
        x1h <= x1;
        v1h <= v1 && !rst;
        first1h <= first1;
        last1h <= last1;
        nf1h <= nf1;
        sel1h <= sel1;
        x1g <= x1h;
        v1g <= v1h && !rst;
        first1g <= first1h;
        last1g <= last1h;
        nf1g <= nf1h;
        sel1g <= sel1h;
    end

    generate
        if (NB > 1) begin : g_sel
            always @(posedge clk) sel1 <= waddr[WAW-1:BW];  // the bank of the word being read
        end else begin : g_one
            always @(posedge clk) sel1 <= 1'b0;
        end
    endgenerate

    reg [WW-1:0] w2;
    reg [IW-1:0] x2;
    reg v2, first2, last2;
    reg [NFW-1:0] nf2;
    always @(posedge clk) begin
        w2 <= banks[sel1g*WW +: WW];
        x2 <= x1g;
        v2 <= v1g && !rst;
        first2 <= first1g;
        last2 <= last1g;
        nf2 <= nf1g;
    end

    // ---- per-PE sums of groups of CH lanes, then of groups of 4 such sums (twice), then the total ----
    // Short adder trees with registers between them instead of one deep tree, so that a wide SIMD still closes
    // timing: a group of 8 bits (or 4 multi-bit products) is a few LUT levels deep.
    localparam integer CH = XNOR != 0 ? 8 : 4;
    localparam integer NCH = (SIMD + CH - 1) / CH;
    localparam integer GW = XNOR != 0 ? $clog2(CH + 1) + 1 : MTW + $clog2(CH) + 1;
    wire [PE*NCH*GW-1:0] grp;
    genvar p, s, k;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_pe
            wire [SIMD*(XNOR != 0 ? 1 : MTW)-1:0] terms;
            if (XNOR != 0) begin : g_xnor
                assign terms = ~(x2 ^ w2[p*SIMD +: SIMD]);
            end else begin : g_int
                // a negation or a multiply and then an adder tree is too deep for one cycle at 100 MHz: the
                // products are registered first (PSTAGE)
                wire [SIMD*MTW-1:0] prods;
                reg [SIMD*MTW-1:0] prods_q;
                always @(posedge clk) prods_q <= prods;
                assign terms = prods_q;
                for (s = 0; s < SIMD; s = s + 1) begin : g_lane
                    wire [IN_BITS-1:0] xr = x2[s*IN_BITS +: IN_BITS];
                    wire signed [MTW-1:0] xv = IN_SIGNED != 0 ? $signed({{(MTW - IN_BITS){xr[IN_BITS-1]}}, xr})
                                                               : $signed({{(MTW - IN_BITS){1'b0}}, xr});
                    wire [W_BITS-1:0] wr = w2[(p*SIMD + s)*W_BITS +: W_BITS];
                    if (W_BIPOLAR != 0) begin : g_bipolar
                        assign prods[s*MTW +: MTW] = wr[0] ? xv : -xv;
                    end else begin : g_weight
                        wire signed [MTW-1:0] wv = $signed({{(MTW - W_BITS){wr[W_BITS-1]}}, wr});
                        assign prods[s*MTW +: MTW] = xv * wv;
                    end
                end
            end
            for (k = 0; k < NCH; k = k + 1) begin : g_group
                localparam integer NK = SIMD - k*CH < CH ? SIMD - k*CH : CH;
                localparam integer TWK = XNOR != 0 ? 1 : MTW;
                bnn_sum_tree #(.N(NK), .TW(TWK), .SIGNED(XNOR != 0 ? 0 : 1), .OW(GW)) u_group (
                    .terms(terms[k*CH*TWK +: NK*TWK]), .sum(grp[(p*NCH + k)*GW +: GW]));
            end
        end
    endgenerate

    // the control bits that go with the terms being summed: one register later in multi-bit mode
    wire vp, firstp, lastp;
    wire [NFW-1:0] nfp;
    generate
        if (PSTAGE != 0) begin : g_pstage
            reg v, f, l;
            reg [NFW-1:0] n;
            always @(posedge clk) begin
                v <= v2 && !rst;
                f <= first2;
                l <= last2;
                n <= nf2;
            end
            assign {vp, firstp, lastp, nfp} = {v, f, l, n};
        end else begin : g_no_pstage
            assign {vp, firstp, lastp, nfp} = {v2, first2, last2, nf2};
        end
    endgenerate

    reg [PE*NCH*GW-1:0] grp_q;
    reg vg, firstg, lastg;
    reg [NFW-1:0] nfg;
    always @(posedge clk) begin
        grp_q <= grp;
        vg <= vp && !rst;
        firstg <= firstp;
        lastg <= lastp;
        nfg <= nfp;
    end

    // groups of up to 4 groups, twice, each registered; then the final sum (at most 8 terms up to SIMD = 1024)
    localparam integer NCH2 = (NCH + 3) / 4;
    localparam integer GW2 = GW + 3;
    localparam integer NCH3 = (NCH2 + 3) / 4;
    localparam integer GW3 = GW2 + 3;
    localparam integer SW = ACC_W > GW3 ? ACC_W : GW3 + 1;
    wire [PE*NCH2*GW2-1:0] grp2_q;
    wire [PE*NCH3*GW3-1:0] grp3_q;
    bnn_sum_stage #(.LANES(PE), .N_IN(NCH), .FAN(4), .TW(GW), .SIGNED(XNOR != 0 ? 0 : 1), .OW(GW2)) u_level2 (
        .clk(clk), .terms(grp_q), .sums(grp2_q));
    bnn_sum_stage #(.LANES(PE), .N_IN(NCH2), .FAN(4), .TW(GW2), .SIGNED(XNOR != 0 ? 0 : 1), .OW(GW3)) u_level3 (
        .clk(clk), .terms(grp2_q), .sums(grp3_q));
    reg vg2, firstg2, lastg2, vg3, firstg3, lastg3;
    reg [NFW-1:0] nfg2, nfg3;
    always @(posedge clk) begin
        vg2 <= vg && !rst;
        firstg2 <= firstg;
        lastg2 <= lastg;
        nfg2 <= nfg;
        vg3 <= vg2 && !rst;
        firstg3 <= firstg2;
        lastg3 <= lastg2;
        nfg3 <= nfg2;
    end

    wire [PE*ACC_W-1:0] part;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_sum
            /* verilator lint_off UNUSEDSIGNAL */
            wire [SW-1:0] total;  // the sum fits ACC_W (the accumulator's range); wider only for the tree's sake
            /* verilator lint_on UNUSEDSIGNAL */
            bnn_sum_tree #(.N(NCH3), .TW(GW3), .SIGNED(XNOR != 0 ? 0 : 1), .OW(SW)) u_sum (
                .terms(grp3_q[p*NCH3*GW3 +: NCH3*GW3]), .sum(total));
            assign part[p*ACC_W +: ACC_W] = total[ACC_W-1:0];
        end
    endgenerate

    reg [PE*ACC_W-1:0] part3;
    reg v3, first3, last3;
    /* verilator lint_off UNUSEDSIGNAL */
    reg [NFW-1:0] nf3;  // addresses the thresholds; unused when the layer has none
    /* verilator lint_on UNUSEDSIGNAL */
    always @(posedge clk) begin
        part3 <= part;
        v3 <= vg3 && !rst;
        first3 <= firstg3;
        last3 <= lastg3;
        nf3 <= nfg3;
    end

    // ---- stage 4: accumulate; the last fold's sum goes on with its channels' thresholds ----
    reg [PE*ACC_W-1:0] acc;
    /* verilator lint_off UNUSEDSIGNAL */
    reg [PE*ACC_W-1:0] fin4;  // without thresholds only the output datatype's low bits leave the unit
    reg [NFW-1:0] nf4;
    /* verilator lint_on UNUSEDSIGNAL */
    reg v4;
    wire [PE*ACC_W-1:0] acc_next;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_acc
            assign acc_next[p*ACC_W +: ACC_W] = (first3 ? {ACC_W{1'b0}} : acc[p*ACC_W +: ACC_W]) + part3[p*ACC_W +: ACC_W];
        end
    endgenerate
    always @(posedge clk) begin
        if (v3) acc <= acc_next;
        fin4 <= acc_next;
        nf4 <= nf3;
        v4 <= v3 && last3 && !rst;
    end

    // ---- stage 4b (PAD): the padding correction of the output position ----
    /* verilator lint_off UNUSEDSIGNAL */
    wire [PE*ACC_W-1:0] val;  // the value to threshold: the accumulator, corrected when PAD
    wire [NFW-1:0] nfv;  // its channel fold
    wire [NFW-1:0] nf_pre;  // the channel fold one cycle before val, to read the thresholds with
    /* verilator lint_on UNUSEDSIGNAL */
    wire vv;
    generate
        if (PAD != 0) begin : g_pad
            localparam integer RW = OH > 1 ? $clog2(OH) : 1;
            localparam integer KW = OWD > 1 ? $clog2(OWD) : 1;
            localparam integer CAW = NCLS * NF > 1 ? $clog2(NCLS * NF) : 1;
            localparam integer OH_LAST_I = OH - 1;
            localparam integer OW_LAST_I = OWD - 1;
            localparam [RW-1:0] OH_LAST = OH_LAST_I[RW-1:0];
            localparam [KW-1:0] OW_LAST = OW_LAST_I[KW-1:0];
            // the output position of the group whose last fold is at stage 3; results leave in order, so a
            // counter of finished vectors is that position
            reg [RW-1:0] row;
            reg [KW-1:0] col;
            always @(posedge clk) begin
                if (rst) begin
                    row <= 0;
                    col <= 0;
                end else if (v3 && last3 && nf3 == NF_LAST) begin
                    col <= col == OW_LAST ? 0 : col + 1'b1;
                    if (col == OW_LAST) row <= row == OH_LAST ? 0 : row + 1'b1;
                end
            end
            wire [CAW-1:0] row_base, col_base;  // rrom[row], krom[col]
            /* verilator lint_off UNUSEDSIGNAL */
            wire [CAW+NFW-1:0] caddr;
            /* verilator lint_on UNUSEDSIGNAL */
            reg [PE*ACC_W-1:0] corr4;
            // read asynchronously, so logic whatever their size (a few bits of OH and OWD words)
            (* rom_style = "logic" *) reg [CAW-1:0] rrom [0:OH-1];
            (* rom_style = "logic" *) reg [CAW-1:0] krom [0:OWD-1];
            initial begin
                $readmemh(ROW_FILE, rrom);
                $readmemh(COL_FILE, krom);
            end
            assign row_base = rrom[row];
            assign col_base = krom[col];
            if (PE * ACC_W * NCLS * NF <= LUT_MEM_BITS) begin : g_crom_lut
                (* rom_style = "logic" *) reg [PE*ACC_W-1:0] crom [0:NCLS*NF-1];
                initial $readmemh(CORR_FILE, crom);
                always @(posedge clk) corr4 <= crom[caddr[CAW-1:0]];
            end else begin : g_crom_block
                (* rom_style = "block" *) reg [PE*ACC_W-1:0] crom [0:NCLS*NF-1];
                initial $readmemh(CORR_FILE, crom);
                always @(posedge clk) corr4 <= crom[caddr[CAW-1:0]];
            end
            assign caddr = {{NFW{1'b0}}, row_base} + {{NFW{1'b0}}, col_base} + {{CAW{1'b0}}, nf3};
            reg [PE*ACC_W-1:0] corr5, fin5;
            reg [NFW-1:0] nf5;
            reg v5c;
            always @(posedge clk) begin
                corr5 <= corr4;
                fin5 <= fin4;
                nf5 <= nf4;
                v5c <= v4 && !rst;
            end
            reg [PE*ACC_W-1:0] vc;
            reg [NFW-1:0] nfc;
            reg vvc;
            for (p = 0; p < PE; p = p + 1) begin : g_corr
                wire [ACC_W-1:0] a = fin5[p*ACC_W +: ACC_W];
                always @(posedge clk) vc[p*ACC_W +: ACC_W] <= (XNOR != 0 ? a << 1 : a) + corr5[p*ACC_W +: ACC_W];
            end
            always @(posedge clk) begin
                nfc <= nf5;
                vvc <= v5c && !rst;
            end
            assign {val, nfv, vv, nf_pre} = {vc, nfc, vvc, nf5};
        end else begin : g_no_pad
            assign {val, nfv, vv, nf_pre} = {fin4, nf4, v4, nf3};
        end
    endgenerate

    // ---- stage 5: thresholds (bnn_thr_count: compared at once, or searched), or the accumulator itself ----
    wire [PE*OUT_BITS-1:0] o5;
    wire v5;
    generate
        if (N_THR > 0) begin : g_thr
            bnn_thr_count #(.PE(PE), .NF(NF), .ACC_W(ACC_W), .N_THR(N_THR), .OUT_BITS(OUT_BITS), .OUT_BIAS(OUT_BIAS),
                            .SEARCH(SEARCH), .SEARCH_BANKS(SEARCH_BANKS), .THRESH_FILE(THRESH_FILE),
                            .SEARCH_FILE(SEARCH_FILE)) u_thr (
                .clk(clk), .rst(rst), .in_nf_early(nf_pre), .in_nf(nfv), .in_value(val), .in_valid(vv),
                .out_code(o5), .out_valid(v5));
        end else begin : g_acc_out
            wire [PE*OUT_BITS-1:0] result;
            for (p = 0; p < PE; p = p + 1) begin : g_out
                wire [ACC_W-1:0] a = val[p*ACC_W +: ACC_W];
                /* verilator lint_off UNUSEDSIGNAL */
                // a corrected XNOR value is already bipolar
                wire [ACC_W-1:0] value = XNOR != 0 && PAD == 0 ? (a << 1) - MW_ACC : a;
                /* verilator lint_on UNUSEDSIGNAL */
                assign result[p*OUT_BITS +: OUT_BITS] = value[OUT_BITS-1:0];
            end
            reg [PE*OUT_BITS-1:0] o;
            reg v;
            always @(posedge clk) begin
                o <= result;
                v <= vv && !rst;
            end
            assign o5 = o;
            assign v5 = v;
        end
    endgenerate

    bnn_fifo #(.WIDTH(PE*OUT_BITS), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(o5), .in_valid(v5),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
