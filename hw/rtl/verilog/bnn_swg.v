// bnn_swg: the sliding-window generator (convolution input generator) for a KHxKW convolution with strides
// SHxSW and padding: PT rows on top, PL columns on the left (the bottom and right padding follow from OH, OWD).
//
// The input map streams in channels-last, SIMD channels per beat (CF = C/SIMD beats per pixel). Each output
// pixel's patch goes out in (kh, kw, channel) order, channels fastest, the order qonnx's Im2Col uses, so the
// MVTU after it sees the same vectors as the reference. Positions outside the map are generated, not read: every
// element of such a beat is PAD (the element's code, EB bits).
//
// Line buffer: NR >= KH + SH input rows of IWD*CF words, used as a ring (input row g of the stream, counted over
// frames, goes to row slot g mod NR). While an output row reads its KH input rows, the next SH rows stream into
// the other slots, so reading and writing overlap. The generator (SlidingWindow.ring_rows) adds rows only where
// they buy throughput: at a frame's turn the last output row still holds its rows while the next frame's first
// output row needs KH - PT new ones (so a map without top and bottom padding gets up to 2*KH rows), and where
// reading and writing a row take about as long one row more keeps the two handshakes from adding up. A frame
// takes about max(IH*IWD*CF, OH*OWD*KH*KW*CF) cycles; the exact figure is SlidingWindow.get_exp_cycles, a
// row-level model of the two handshakes:
// - The writer starts an input row only when its slot is free: the reader's current output row no longer needs
//   the row it held (the ring keeps the rows from the reader's first, min(max(top - PT, 0), IH), on). `slot_ok`
//   is that test, registered, for the row the writer starts next, made against a one-cycle-old copy of the
//   reader's state (so it can only err on the safe side).
// - The reader starts an output row only when the writer has completed every input row it reads (`ok`,
//   registered, for the row the reader is on next).
// Frames are told apart by 2-bit frame counters on both sides: the writer is at most one frame behind the reader
// (finishing rows no output row reads) and may complete the reader's next frame but not start the one after.
//
// Timing: every address is kept incrementally (row slot address + column offset, ring wrap-arounds computed
// side by side), so no multiplier sits in a loop; what the handshakes compare is in registers, the rows' limits
// computed a row ahead. The memory is written from registers (address, data, enable) and read synchronously, as
// block RAM wants. On the ECP5 (CNV's second window, C = 64, SIMD = 32 or 64, 30x30, 3x3) the critical path is
// the block RAM's output into its register, as in a bare block RAM.
// LUT RAM where the family has it (ECP5); on iCE40, which has none, the flow defines BNNFLOW_LUT_RAM as "auto"
`ifndef BNNFLOW_LUT_RAM
`define BNNFLOW_LUT_RAM "distributed"
`endif
`default_nettype none

module bnn_swg #(
    parameter integer C = 1,
    parameter integer SIMD = 1,
    parameter integer IH = 4,
    parameter integer IWD = 4,
    parameter integer OH = 2,
    parameter integer OWD = 2,
    parameter integer KH = 3,
    parameter integer KW = 3,
    parameter integer SH = 1,
    parameter integer SW = 1,
    parameter integer PT = 0,
    parameter integer PL = 0,
    parameter integer EB = 1,
    parameter integer PAD = 0,  // the pad element's code (its low EB bits)
    parameter integer NR = KH + SH  // rows in the ring, at least KH + SH (SlidingWindow.ring_rows)
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [SIMD*EB-1:0]   in_data,
    input  wire                 in_valid,
    output wire                 in_ready,
    output wire [SIMD*EB-1:0]   out_data,
    output wire                 out_valid,
    input  wire                 out_ready
);
    localparam integer CF = C / SIMD;
    localparam integer W = SIMD * EB;
    localparam integer ROWW = IWD * CF;         // words per row
    localparam integer WORDS = NR * ROWW;
    localparam integer AW = $clog2(WORDS);
    localparam integer STAGES = 4;  // address register, memory read, its hold, pad select (block RAM output timing)
    localparam integer DEPTH = 8;
    localparam integer CFW = CF > 1 ? $clog2(CF) : 1;
    localparam integer KXW = KW > 1 ? $clog2(KW) : 1;
    localparam integer KYW = KH > 1 ? $clog2(KH) : 1;
    localparam integer OXW = OWD > 1 ? $clog2(OWD) : 1;
    localparam integer OYW = OH > 1 ? $clog2(OH) : 1;
    localparam integer RW = ROWW > 1 ? $clog2(ROWW) : 1;
    // padded row / column numbers and the sums compared with them
    localparam integer YW = $clog2((OH + 1) * SH + KH + NR + 2 * IH + PT + 2);
    localparam integer XW = $clog2((OWD + 1) * SW + KW + IWD + PL + 2);
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer CF_LAST_I = CF - 1;
    localparam integer KX_LAST_I = KW - 1;
    localparam integer KY_LAST_I = KH - 1;
    localparam integer OX_LAST_I = OWD - 1;
    localparam integer OY_LAST_I = OH - 1;
    localparam integer ROW_LAST_I = ROWW - 1;
    localparam integer IH_LAST_I = IH - 1;
    localparam integer WORDS_LAST_I = WORDS - 1;
    localparam integer COL0_I = -PL * CF;                                   // column word offset of the left edge
    localparam integer TOP0_I = (((-PT) % NR) + NR) % NR * ROWW;            // slot of (virtual) row -PT, frame 0
    localparam integer NEXT0_I = (((IH - PT) % NR) + NR) % NR * ROWW;       // ... of frame 1
    localparam integer FRAME_STEP_I = IH % NR * ROWW;                       // slots a frame moves the ring
    localparam integer LINE_STEP_I = SH % NR * ROWW;
    localparam integer SWCF_I = SW * CF;
    localparam integer PT_END_I = PT + IH;
    localparam integer IH1_I = IH + 1;
    // the handshake registers of output rows 0, 1 and 2 (mod OH), as need_of and keep_of make them
    localparam integer NX_TOP0_I = OH > 1 ? SH : 0;
    localparam integer N2_OY0_I = 2 % OH;
    localparam integer N2_TOP0_I = N2_OY0_I * SH;
    localparam integer N2_BOT0_I = N2_TOP0_I + KH;
    localparam integer NR_PT_D_I = NR - PT;
    localparam integer IH_NR_I = IH + NR;
    localparam ONE_BEAT_ROWS = OWD * KH * KW * CF == 1;
    localparam integer NEED0_I = KH - PT < 0 ? 0 : (KH - PT > IH ? IH : KH - PT);
    localparam integer NX_NEED0_I = NX_TOP0_I + KH - PT < 0 ? 0 : (NX_TOP0_I + KH - PT > IH ? IH : NX_TOP0_I + KH - PT);
    localparam integer KEEP0_I = NR;
    localparam integer NX_KEEP0_I = (NX_TOP0_I > PT ? (NX_TOP0_I - PT > IH ? IH : NX_TOP0_I - PT) : 0) + NR;
    localparam integer PL_END_I = PL + IWD;
    localparam integer NR_PT_I = NR;
    localparam integer PT_IH_I = PT + IH;
    localparam [CFW-1:0] CF_LAST = CF_LAST_I[CFW-1:0];
    localparam [KXW-1:0] KX_LAST = KX_LAST_I[KXW-1:0];
    localparam [KYW-1:0] KY_LAST = KY_LAST_I[KYW-1:0];
    localparam [OXW-1:0] OX_LAST = OX_LAST_I[OXW-1:0];
    localparam [OYW-1:0] OY_LAST = OY_LAST_I[OYW-1:0];
    localparam [RW-1:0] ROW_LAST = ROW_LAST_I[RW-1:0];
    localparam [YW-1:0] IH_LAST = IH_LAST_I[YW-1:0];
    localparam [AW-1:0] WORDS_LAST = WORDS_LAST_I[AW-1:0];
    localparam [AW:0] WORDS_W = WORDS[AW:0];
    localparam [AW-1:0] COL0 = COL0_I[AW-1:0];
    localparam [AW-1:0] TOP0 = TOP0_I[AW-1:0];
    localparam [AW-1:0] NEXT0 = NEXT0_I[AW-1:0];
    localparam [AW-1:0] SWCF = SWCF_I[AW-1:0];
    localparam [AW:0] LINE_STEP = LINE_STEP_I[AW:0];
    localparam [AW:0] FRAME_STEP = FRAME_STEP_I[AW:0];
    localparam [AW:0] ROW_STEP = ROWW[AW:0];
    localparam [YW-1:0] Y_PT = PT[YW-1:0];
    localparam [YW-1:0] Y_SH = SH[YW-1:0];
    localparam [YW-1:0] Y_KH = KH[YW-1:0];
    localparam [YW-1:0] Y_NR = NR_PT_I[YW-1:0];
    localparam [YW-1:0] Y_PT_IH = PT_IH_I[YW-1:0];
    localparam [YW-1:0] Y_IH = IH[YW-1:0];
    localparam [YW-1:0] Y_IH1 = IH1_I[YW-1:0];
    localparam [OYW-1:0] N2_OY0 = N2_OY0_I[OYW-1:0];
    localparam [YW-1:0] N2_TOP0 = N2_TOP0_I[YW-1:0];
    localparam [YW-1:0] N2_BOT0 = N2_BOT0_I[YW-1:0];
    localparam [YW-1:0] Y_NR_PT = NR_PT_D_I[YW-1:0];  // NR - PT, mod 2^YW
    localparam [YW-1:0] Y_IH_NR = IH_NR_I[YW-1:0];
    localparam [YW-1:0] NX_TOP0 = NX_TOP0_I[YW-1:0];
    localparam [YW-1:0] NEED0 = NEED0_I[YW-1:0];
    localparam [YW-1:0] NX_NEED0 = NX_NEED0_I[YW-1:0];
    localparam [YW-1:0] KEEP0 = KEEP0_I[YW-1:0];
    localparam [YW-1:0] NX_KEEP0 = NX_KEEP0_I[YW-1:0];
    localparam [YW-1:0] Y_PT_END = PT_END_I[YW-1:0];
    localparam [XW-1:0] X_SW = SW[XW-1:0];
    localparam [XW-1:0] X_PL = PL[XW-1:0];
    localparam [XW-1:0] X_PL_END = PL_END_I[XW-1:0];
    localparam [EB-1:0] PAD_EL = PAD[EB-1:0];
    localparam [W-1:0] PAD_WORD = {SIMD{PAD_EL}};

    // (a + k) mod WORDS for a < WORDS, 0 <= k < WORDS: a + k and a + k - WORDS side by side, the second's sign
    // choosing (one adder deep)
    function automatic [AW-1:0] ring_add(input [AW-1:0] a, input [AW:0] k);
        reg [AW:0] t;
        begin
            t = {1'b0, a} + (k - WORDS_W);
            ring_add = t[AW] ? a + k[AW-1:0] : t[AW-1:0];
        end
    endfunction

    // No read meets a write to its address except at padded positions, whose word is dropped: no_rw_check
    // spares the collision logic yosys would otherwise put after the block RAM.
    // LUT RAM up to 4096 bits, block RAM above (bnnflow.hw.estimates' LUTROM_MAX_BITS)
    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)
    reg [AW-1:0] raddr;
    reg we_r;
    reg [AW-1:0] wa_r;
    reg [W-1:0] wd_r;
    wire [W-1:0] mem_q;
    generate
        if (W * WORDS <= 4096) begin : g_ring_lut
            (* no_rw_check, ram_style = `BNNFLOW_LUT_RAM *) reg [W-1:0] mem [0:WORDS-1];
            always @(posedge clk) begin
                if (we_r) mem[wa_r] <= wd_r;
            end
            assign mem_q = mem[raddr];
        end else begin : g_ring_block
            (* no_rw_check, ram_style = "block" *) reg [W-1:0] mem [0:WORDS-1];
            always @(posedge clk) begin
                if (we_r) mem[wa_r] <= wd_r;
            end
            assign mem_q = mem[raddr];
        end
    endgenerate

    // ---- writer: the input stream into the ring, a row at a time
    reg open;      // a row is being written (its slot was granted)
    reg slot_ok;   // the row the writer starts next has a free slot
    reg [RW-1:0] wx;
    reg [YW-1:0] wy;   // rows completed in the writer's frame
    reg [1:0] wf;
    reg [AW-1:0] wa;

    assign in_ready = open || slot_ok;
    wire in_fire = in_valid && in_ready;
    wire w_end_row = wx == ROW_LAST;

    always @(posedge clk) begin
        we_r <= in_fire && !rst;
        wa_r <= wa;
        wd_r <= in_data;
    end

    // ---- reader: counters of the patch order, padded coordinates and ring addresses
    reg ok;  // the reader's current output row has all its input rows
    reg [CFW-1:0] cf;
    reg [KXW-1:0] kx;
    reg [KYW-1:0] ky;
    reg [OXW-1:0] ox;
    reg [OYW-1:0] oy;
    reg [1:0] rf;
    reg [YW-1:0] yo;     // padded row of the current beat: top + ky
    reg [XW-1:0] pixx;   // padded column of the output pixel's first kernel column: ox * SW
    reg [XW-1:0] xo;     // padded column of the current beat: pixx + kx
    reg [AW-1:0] top_a;  // ring address of padded row `top` (mod WORDS; rows outside the map are never read)
    reg [AW-1:0] row_a;  // ... of padded row `yo`
    reg [AW-1:0] next_a; // ... of padded row 0 of the next frame
    reg [AW-1:0] pix_c;  // word offset of column pixx in a row: (pixx - PL) * CF (mod 2^AW)
    reg [AW-1:0] col_c;  // ... of the current beat: (xo - PL) * CF + cf
    // The current output row and the next one, as the handshakes use them, kept in registers so that no sum sits
    // between the issue decision and them: its padded top row (oy * SH), the input rows of its frame it needs
    // (min(top + KH - PT, IH), at least 0) and the rows the ring must keep for it (max(top - PT, 0) + NR).
    // The row after the next one (n2) is a third set, whose need and keep are registered from its top, so no sum
    // sits between two registers of the handshakes either.
    reg [YW-1:0] top, need, keep;
    reg [YW-1:0] nx_top, nx_need, nx_keep;
    reg [YW-1:0] n2_top, n2_bot, n2_need, n2_keep;
    reg [OYW-1:0] n2_oy;

    // from a row's top t and its bottom b = t + KH (compares and sums side by side, one adder deep)
    function automatic [YW-1:0] need_of(input [YW-1:0] b);
        need_of = b > Y_PT_IH ? Y_IH : (b > Y_PT ? b - Y_PT : {YW{1'b0}});
    endfunction

    // (a row below the map needs none of its frame's rows, and the next frame's first row needs its row 0)
    function automatic [YW-1:0] keep_of(input [YW-1:0] t);
        keep_of = t > Y_PT_IH ? Y_IH_NR : (t > Y_PT ? t + Y_NR_PT : Y_NR);  // min(max(t - PT, 0), IH) + NR
    endfunction

    wire issue = ok && has_room;
    wire end_cf = cf == CF_LAST;
    wire end_kx = end_cf && kx == KX_LAST;
    wire end_ky = end_kx && ky == KY_LAST;
    wire end_ox = end_ky && ox == OX_LAST;
    wire last_row = oy == OY_LAST;
    wire end_frame = end_ox && last_row;
    wire advance = issue && end_ox;
    wire n2_last = n2_oy == OY_LAST;

    // reader: may the row go on (stay) / may the next row start (advance)? The writer is in a later frame, or in
    // this one with the rows needed written.
    wire [1:0] d_stay = wf - rf;
    wire [1:0] d_adv = wf - rf - {1'b0, last_row};
    wire ok_stay = d_stay == 2'd1 || d_stay == 2'd2 || (d_stay == 2'd0 && wy >= need);
    // (a row of one beat waits a cycle after the previous one, which gives n2's registers that cycle)
    wire ok_adv = !ONE_BEAT_ROWS && (d_adv == 2'd1 || d_adv == 2'd2 || (d_adv == 2'd0 && wy >= nx_need));
    // writer: may row wy (stay) / the row after it (advance) take its slot? Its frame is behind the reader's, or
    // the row NR before it is above the rows the reader keeps (two frames ahead it waits). It compares with a
    // registered copy of the reader's state (a cycle old, so it errs on the safe side): the row limits of its own
    // frame (rows < keep) and of the next (rows < keep - IH), and the same less one for the row after wy.
    reg [1:0] rf_w;
    reg [YW-1:0] lim0, lim0_1, lim1, lim1_1;
    wire w_last_row = wy == IH_LAST;
    wire [1:0] dw_stay = wf - rf_w;
    wire [1:0] dw_adv = wf - rf_w + {1'b0, w_last_row};
    wire slot_stay = dw_stay == 2'd3 || (dw_stay == 2'd0 && wy < lim0) || (dw_stay == 2'd1 && wy < lim1);
    wire slot_adv = dw_adv == 2'd3 || (dw_adv == 2'd0 && (w_last_row || wy < lim0_1))
                    || (dw_adv == 2'd1 && (w_last_row ? lim1 != 0 : wy < lim1_1));

    always @(posedge clk) begin
        if (rst) begin
            open <= 1'b0;
            slot_ok <= 1'b0;
            rf_w <= 0;
            lim0 <= 0;
            lim0_1 <= 0;
            lim1 <= 0;
            lim1_1 <= 0;
            wx <= 0;
            wy <= 0;
            wf <= 0;
            wa <= 0;
            ok <= 1'b0;
            cf <= 0;
            kx <= 0;
            ky <= 0;
            ox <= 0;
            oy <= 0;
            rf <= 0;
            top <= 0;
            need <= NEED0;
            keep <= KEEP0;
            nx_top <= NX_TOP0;
            nx_need <= NX_NEED0;
            nx_keep <= NX_KEEP0;
            n2_top <= N2_TOP0;
            n2_bot <= N2_BOT0;
            n2_oy <= N2_OY0;
            yo <= 0;
            pixx <= 0;
            xo <= 0;
            top_a <= TOP0;
            row_a <= TOP0;
            next_a <= NEXT0;
            pix_c <= COL0;
            col_c <= COL0;
        end else begin
            slot_ok <= in_fire && w_end_row ? slot_adv : slot_stay;
            ok <= advance ? ok_adv : ok_stay;
            rf_w <= rf;
            lim0 <= keep;
            lim0_1 <= keep - 1'b1;  // keep >= NR >= 2
            lim1 <= keep > Y_IH ? keep - Y_IH : {YW{1'b0}};
            lim1_1 <= keep > Y_IH1 ? keep - Y_IH1 : {YW{1'b0}};
            n2_need <= need_of(n2_bot);
            n2_keep <= keep_of(n2_top);
            if (in_fire) begin
                wx <= w_end_row ? 0 : wx + 1'b1;
                open <= !w_end_row;
                wa <= wa == WORDS_LAST ? 0 : wa + 1'b1;
                if (w_end_row) begin
                    wy <= w_last_row ? {YW{1'b0}} : wy + 1'b1;
                    if (w_last_row) wf <= wf + 1'b1;
                end
            end
            if (issue) begin
                cf <= end_cf ? 0 : cf + 1'b1;
                if (end_cf) kx <= end_kx ? 0 : kx + 1'b1;
                if (end_kx) ky <= end_ky ? 0 : ky + 1'b1;
                if (end_ky) ox <= end_ox ? 0 : ox + 1'b1;
                if (end_ox) oy <= end_frame ? 0 : oy + 1'b1;
                if (end_frame) rf <= rf + 1'b1;
                if (end_ox) begin
                    top <= nx_top;
                    need <= nx_need;
                    keep <= nx_keep;
                    nx_top <= n2_top;
                    nx_need <= n2_need;
                    nx_keep <= n2_keep;
                    n2_top <= n2_last ? {YW{1'b0}} : n2_top + Y_SH;
                    n2_bot <= n2_last ? Y_KH : n2_bot + Y_SH;
                    n2_oy <= n2_last ? 0 : n2_oy + 1'b1;
                end
                // columns
                if (end_ky) begin
                    pixx <= end_ox ? 0 : pixx + X_SW;
                    xo <= end_ox ? 0 : pixx + X_SW;
                    pix_c <= end_ox ? COL0 : pix_c + SWCF;
                    col_c <= end_ox ? COL0 : pix_c + SWCF;
                end else if (end_kx) begin
                    xo <= pixx;
                    col_c <= pix_c;
                end else begin
                    if (end_cf) xo <= xo + 1'b1;
                    col_c <= col_c + 1'b1;
                end
                // rows
                if (end_ox) begin
                    yo <= nx_top;
                    top_a <= end_frame ? next_a : ring_add(top_a, LINE_STEP);
                    row_a <= end_frame ? next_a : ring_add(top_a, LINE_STEP);
                    if (end_frame) next_a <= ring_add(next_a, FRAME_STEP);
                end else if (end_ky) begin
                    yo <= top;
                    row_a <= top_a;
                end else if (end_kx) begin
                    yo <= yo + 1'b1;
                    row_a <= ring_add(row_a, ROW_STEP);
                end
            end
        end
    end

    // the read pipeline: address, memory, hold, pad select. The memory's word is held once before the pad select:
    // a block RAM's data comes late in its cycle (5.8 ns of 10 on the ECP5), and the pad select's register sits by
    // the FIFO it writes, which the placer may put far from the block RAM (CNV's first window at 6,000 frames/s:
    // 4.7 ns of routing, 95 MHz); the hold has no other pull, so it goes next to the block RAM.
    reg v1, pad1;
    reg [W-1:0] d2;
    reg v2, pad2;
    reg [W-1:0] d2h;
    reg v2h, pad2h;
    reg [W-1:0] d3;
    reg v3;
    // yo >= PT and xo >= PL, written so that PT = 0 or PL = 0 makes no comparison with 0
    wire in_map = {1'b0, yo} + 1'b1 > {1'b0, Y_PT} && yo < Y_PT_END && {1'b0, xo} + 1'b1 > {1'b0, X_PL}
                  && xo < X_PL_END;

    always @(posedge clk) begin
        raddr <= row_a + col_c;
        v1 <= issue && !rst;
        pad1 <= !in_map;
        d2 <= mem_q;
        v2 <= v1 && !rst;
        pad2 <= pad1;
        d2h <= d2;
        v2h <= v2 && !rst;
        pad2h <= pad2;
        d3 <= pad2h ? PAD_WORD : d2h;
        v3 <= v2h && !rst;
    end

    bnn_fifo #(.WIDTH(W), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(d3), .in_valid(v3),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
