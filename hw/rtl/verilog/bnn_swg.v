// bnn_swg: the sliding-window generator (convolution input generator) for an unpadded KHxKW convolution.
//
// The input map streams in channels-last, SIMD channels per beat (CF = C/SIMD beats per pixel). Each output
// pixel's patch goes out in (kh, kw, channel) order, channels fastest, the order qonnx's Im2Col uses, so the
// MVTU after it sees the same vectors as the reference. The map is held whole in one of two banks: frame n+1
// streams in while frame n's patches are read out, so one frame takes max(IH*IW*CF, OH*OW*KH*KW*CF) cycles.
// Addresses are kept incrementally (pixel base + offset in the kernel) so no multiplier sits in the loop.
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
    parameter integer EB = 1
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
    localparam integer FRAME = IH * IWD * CF;
    localparam integer AW = $clog2(2 * FRAME);
    localparam integer W = SIMD * EB;
    localparam integer STAGES = 3;  // address register, memory read, hold (block RAM output timing)
    localparam integer DEPTH = 8;
    localparam integer CW = $clog2(DEPTH) + 1;
    localparam integer CFW = CF > 1 ? $clog2(CF) : 1;
    localparam integer KXW = KW > 1 ? $clog2(KW) : 1;
    localparam integer KYW = KH > 1 ? $clog2(KH) : 1;
    localparam integer OXW = OWD > 1 ? $clog2(OWD) : 1;
    localparam integer OYW = OH > 1 ? $clog2(OH) : 1;
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer CF_LAST_I = CF - 1;
    localparam integer KX_LAST_I = KW - 1;
    localparam integer KY_LAST_I = KH - 1;
    localparam integer OX_LAST_I = OWD - 1;
    localparam integer OY_LAST_I = OH - 1;
    localparam integer FRAME_LAST_I = FRAME - 1;
    localparam integer LAST_I = 2 * FRAME - 1;
    localparam integer ROW_STEP_I = (IWD - KW) * CF + 1;  // from the end of one kernel row to the next row
    localparam integer PIX_STEP_I = SW * CF;
    localparam integer LINE_STEP_I = SH * IWD * CF;
    localparam [CW-1:0] ROOM = ROOM_I[CW-1:0];
    localparam [CFW-1:0] CF_LAST = CF_LAST_I[CFW-1:0];
    localparam [KXW-1:0] KX_LAST = KX_LAST_I[KXW-1:0];
    localparam [KYW-1:0] KY_LAST = KY_LAST_I[KYW-1:0];
    localparam [OXW-1:0] OX_LAST = OX_LAST_I[OXW-1:0];
    localparam [OYW-1:0] OY_LAST = OY_LAST_I[OYW-1:0];
    localparam [AW-1:0] FRAME_LAST = FRAME_LAST_I[AW-1:0];
    localparam [AW-1:0] LAST = LAST_I[AW-1:0];
    localparam [AW-1:0] BANK1 = FRAME[AW-1:0];
    localparam [AW-1:0] ROW_STEP = ROW_STEP_I[AW-1:0];
    localparam [AW-1:0] PIX_STEP = PIX_STEP_I[AW-1:0];
    localparam [AW-1:0] LINE_STEP = LINE_STEP_I[AW-1:0];

    // A bank is read only while full and written only while not, so a read never meets a write to its address:
    // no_rw_check spares the collision logic yosys would otherwise put after the block RAM (it limited Fmax).
    (* no_rw_check *) reg [W-1:0] mem [0:2*FRAME-1];
    reg [1:0] full;
    reg [AW-1:0] wptr;  // runs over both banks: bank 0 is [0, FRAME), bank 1 [FRAME, 2*FRAME)
    wire wb = wptr > FRAME_LAST;
    wire [CW-1:0] count;

    assign in_ready = !full[wb];
    wire in_fire = in_valid && !full[wb];

    always @(posedge clk) begin
        if (in_fire) mem[wptr] <= in_data;
    end

    // read side: counters of the patch order and the two halves of the address
    reg rb;
    reg [CFW-1:0] cf;
    reg [KXW-1:0] kx;
    reg [KYW-1:0] ky;
    reg [OXW-1:0] ox;
    reg [OYW-1:0] oy;
    reg [AW-1:0] row_base;  // bank base + oy * SH * IWD * CF
    reg [AW-1:0] pix_base;  // row_base + ox * SW * CF
    reg [AW-1:0] k_off;     // (ky * IWD + kx) * CF + cf
    wire issue = full[rb] && count < ROOM;
    wire end_cf = cf == CF_LAST;
    wire end_kx = end_cf && kx == KX_LAST;
    wire end_ky = end_kx && ky == KY_LAST;
    wire end_ox = end_ky && ox == OX_LAST;
    wire end_frame = end_ox && oy == OY_LAST;

    reg [AW-1:0] raddr;
    reg v1, done1, bank1;
    reg [W-1:0] d2;
    reg v2, done2, bank2;
    reg [W-1:0] d3;
    reg v3;

    always @(posedge clk) begin
        if (rst) begin
            full <= 2'b00;
            wptr <= 0;
            rb <= 1'b0;
            cf <= 0;
            kx <= 0;
            ky <= 0;
            ox <= 0;
            oy <= 0;
            row_base <= 0;
            pix_base <= 0;
            k_off <= 0;
        end else begin
            if (in_fire) begin
                wptr <= wptr == LAST ? 0 : wptr + 1'b1;
                if (wptr == FRAME_LAST) full[0] <= 1'b1;
                if (wptr == LAST) full[1] <= 1'b1;
            end
            if (issue) begin
                cf <= end_cf ? 0 : cf + 1'b1;
                if (end_cf) kx <= end_kx ? 0 : kx + 1'b1;
                if (end_kx) ky <= end_ky ? 0 : ky + 1'b1;
                if (end_ky) ox <= end_ox ? 0 : ox + 1'b1;
                if (end_ox) oy <= end_frame ? 0 : oy + 1'b1;
                if (end_ky) k_off <= 0;
                else if (end_kx) k_off <= k_off + ROW_STEP;
                else k_off <= k_off + 1'b1;
                if (end_frame) begin
                    rb <= !rb;
                    row_base <= rb ? 0 : BANK1;
                    pix_base <= rb ? 0 : BANK1;
                end else if (end_ox) begin
                    row_base <= row_base + LINE_STEP;
                    pix_base <= row_base + LINE_STEP;
                end else if (end_ky) begin
                    pix_base <= pix_base + PIX_STEP;
                end
            end
            // a bank is free once its last word has been read (two cycles after its last issue)
            if (v2 && done2) full[bank2] <= 1'b0;
        end
    end

    always @(posedge clk) begin
        raddr <= pix_base + k_off;
        v1 <= issue && !rst;
        done1 <= end_frame;
        bank1 <= rb;
        d2 <= mem[raddr];
        v2 <= v1 && !rst;
        done2 <= done1;
        bank2 <= bank1;
        d3 <= d2;
        v3 <= v2 && !rst;
    end

    bnn_fifo #(.WIDTH(W), .DEPTH(DEPTH)) u_out (
        .clk(clk), .rst(rst), .in_data(d3), .in_valid(v3),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .count(count));
endmodule

`default_nettype wire
