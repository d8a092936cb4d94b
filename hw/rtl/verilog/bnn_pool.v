// bnn_pool: pooling over non-overlapping KHxKW windows (stride = kernel; KH = IH and KW = IWD for a global pool) of
// a channels-last stream, PE channels a beat. MODE "max" keeps each window's maximum (on bits an OR); MODE "sum"
// its sum, an average pool whose 1 / (KH*KW) the next layer takes.
//
// It keeps one output row of running maxima or sums (OWD*CF words of PE*OUT_BITS bits) and emits a pooled beat as
// the last input of its window arrives, so one frame takes IH*IWD*CF cycles. Inputs are IN_BITS bits, unsigned,
// signed (IN_SIGNED) or, for a sum, bipolar (IN_BIPOLAR: a bit, 1 = +1 and 0 = -1). A max is as wide as its input
// (OUT_BITS = IN_BITS); a sum's output datatype holds every sum, so sums are kept in OUT_BITS bits. Rows and
// columns past the last whole window are read and dropped, as floor-mode pooling does.
// LUT RAM where the family has it (ECP5); on iCE40, which has none, the flow defines BNNFLOW_LUT_RAM as "auto"
`ifndef BNNFLOW_LUT_RAM
`define BNNFLOW_LUT_RAM "distributed"
`endif
`default_nettype none

module bnn_pool #(
    parameter MODE = "max",
    parameter integer C = 1,
    parameter integer PE = 1,
    parameter integer IH = 4,
    parameter integer IWD = 4,
    parameter integer KH = 2,
    parameter integer KW = 2,
    parameter integer IN_BITS = 1,
    parameter integer IN_SIGNED = 0,
    parameter integer IN_BIPOLAR = 0,
    parameter integer OUT_BITS = 1
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
    localparam integer CF = C / PE;
    localparam integer OH = IH / KH;
    localparam integer OWD = IWD / KW;
    localparam integer IW = PE * IN_BITS;
    localparam integer W = PE * OUT_BITS;
    localparam integer ROW = OWD * CF;
    localparam integer RW = ROW > 1 ? $clog2(ROW) : 1;
    localparam integer STAGES = 2;  // input register, output register
    localparam integer DEPTH = 4;
    localparam integer CFW = CF > 1 ? $clog2(CF) : 1;
    localparam integer KXW = KW > 1 ? $clog2(KW) : 1;
    localparam integer KYW = KH > 1 ? $clog2(KH) : 1;
    localparam integer OXW = $clog2(OWD + 1);
    localparam integer OYW = $clog2(OH + 1);
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer CF_LAST_I = CF - 1;
    localparam integer KX_LAST_I = KW - 1;
    localparam integer KY_LAST_I = KH - 1;
    localparam integer X_LAST_I = IWD - 1;
    localparam integer Y_LAST_I = IH - 1;
    localparam [CFW-1:0] CF_LAST = CF_LAST_I[CFW-1:0];
    localparam [KXW-1:0] KX_LAST = KX_LAST_I[KXW-1:0];
    localparam [KYW-1:0] KY_LAST = KY_LAST_I[KYW-1:0];
    localparam [OXW-1:0] OX_END = OWD[OXW-1:0];
    localparam [OYW-1:0] OY_END = OH[OYW-1:0];
    localparam [RW-1:0] CF_STEP = CF[RW-1:0];
    localparam integer XW = $clog2(IWD + 1);
    localparam integer YW = $clog2(IH + 1);
    localparam [XW-1:0] X_LAST = X_LAST_I[XW-1:0];
    localparam [YW-1:0] Y_LAST = Y_LAST_I[YW-1:0];

    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)
    assign in_ready = has_room;
    wire in_fire = in_valid && has_room;

    reg [CFW-1:0] cf;
    reg [KXW-1:0] kx;
    reg [KYW-1:0] ky;
    reg [XW-1:0] x;
    reg [YW-1:0] y;
    reg [OXW-1:0] ox;
    reg [OYW-1:0] oy;
    reg [RW-1:0] obase;  // ox * CF
    reg [RW-1:0] idx;  // obase + cf: the word of the row the entering beat updates
    wire end_cf = cf == CF_LAST;
    wire end_kx = end_cf && kx == KX_LAST;
    wire end_x = end_cf && x == X_LAST;
    wire end_ky = end_x && ky == KY_LAST;
    wire end_y = end_x && y == Y_LAST;

    reg [IW-1:0] d1;
    reg [RW-1:0] idx1;
    reg v1, first1, emit1;
    wire [RW-1:0] obase_next = end_x ? {RW{1'b0}} : end_kx ? obase + CF_STEP : obase;

    always @(posedge clk) begin
        if (rst) begin
            cf <= 0;
            kx <= 0;
            ky <= 0;
            x <= 0;
            y <= 0;
            ox <= 0;
            oy <= 0;
            obase <= 0;
            idx <= 0;
        end else if (in_fire) begin
            idx <= obase_next + (end_cf ? {RW{1'b0}} : {{(RW - CFW){1'b0}}, cf} + 1'b1);
            cf <= end_cf ? 0 : cf + 1'b1;
            if (end_cf) x <= end_x ? 0 : x + 1'b1;
            if (end_cf) kx <= (end_kx || end_x) ? 0 : kx + 1'b1;
            obase <= obase_next;
            if (end_x) ox <= 0;
            else if (end_kx) ox <= ox + 1'b1;
            if (end_x) y <= end_y ? 0 : y + 1'b1;
            if (end_x) ky <= (end_ky || end_y) ? 0 : ky + 1'b1;
            if (end_y) oy <= 0;
            else if (end_ky) oy <= oy + 1'b1;
        end
    end

    always @(posedge clk) begin
        d1 <= in_data;
        idx1 <= idx;
        v1 <= in_fire && ox != OX_END && oy != OY_END && !rst;
        first1 <= kx == 0 && ky == 0;
        emit1 <= kx == KX_LAST && ky == KY_LAST;
    end

    // the running maxima or sums: a beat's word is read as it enters, from a registered index (a deep LUT RAM's
    // read multiplexers and the adder after them would not fit one cycle at 100 MHz), and updated the cycle after;
    // a beat entering while the one before updates its word takes the update (back-to-back beats of one window
    // when CF = 1)
    (* ram_style = `BNNFLOW_LUT_RAM *) reg [W-1:0] row [0:ROW-1];  // read asynchronously: LUT RAM
    reg [W-1:0] prev;
    wire [W-1:0] m;
    always @(posedge clk) prev <= v1 && idx1 == idx ? m : row[idx];
    genvar p;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_lane
            wire [IN_BITS-1:0] b = d1[p*IN_BITS +: IN_BITS];
            wire [OUT_BITS-1:0] a = prev[p*OUT_BITS +: OUT_BITS];
            wire [OUT_BITS-1:0] bv;  // the input in the output's format
            if (IN_BIPOLAR != 0) begin : g_bip
                assign bv = b[0] ? {{(OUT_BITS - 1){1'b0}}, 1'b1} : {OUT_BITS{1'b1}};
            end else if (OUT_BITS > IN_BITS) begin : g_ext
                assign bv = {{(OUT_BITS - IN_BITS){IN_SIGNED != 0 && b[IN_BITS-1]}}, b};
            end else begin : g_same  // a max, or a sum over a 1x1 window: the output is as wide as the input
                assign bv = b[OUT_BITS-1:0];
            end
            if (MODE == "sum") begin : g_sum
                assign m[p*OUT_BITS +: OUT_BITS] = first1 ? bv : a + bv;
            end else begin : g_max
                wire b_wins = IN_SIGNED != 0 ? $signed(bv) > $signed(a) : bv > a;
                assign m[p*OUT_BITS +: OUT_BITS] = (first1 || b_wins) ? bv : a;
            end
        end
    endgenerate

    reg [W-1:0] o2;
    reg v2;
    always @(posedge clk) begin
        if (v1 && !emit1) row[idx1] <= m;
        o2 <= m;
        v2 <= v1 && emit1 && !rst;
    end

    bnn_fifo #(.WIDTH(W), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(o2), .in_valid(v2),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
