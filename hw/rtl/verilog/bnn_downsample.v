// bnn_downsample: every SY-th row and SX-th column of a channels-last map from (OY, OX), OH x OWD pixels (the
// strided subsampling of an option-A shortcut). PE channels a beat (CF = C/PE beats a pixel).
//
// It reads every input beat, one a cycle, and passes on those of the kept pixels: IH*IWD*CF cycles a frame, no
// memory. The next kept row and column, and how many of each have been kept, are counters.
`default_nettype none

module bnn_downsample #(
    parameter integer C = 1,
    parameter integer PE = 1,
    parameter integer IH = 4,
    parameter integer IWD = 4,
    parameter integer OH = 2,
    parameter integer OWD = 2,
    parameter integer OY = 0,
    parameter integer OX = 0,
    parameter integer SY = 2,
    parameter integer SX = 2,
    parameter integer EB = 1
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [PE*EB-1:0]     in_data,
    input  wire                 in_valid,
    output wire                 in_ready,
    output wire [PE*EB-1:0]     out_data,
    output wire                 out_valid,
    input  wire                 out_ready
);
    localparam integer CF = C / PE;
    localparam integer W = PE * EB;
    localparam integer STAGES = 1;  // the output register
    localparam integer DEPTH = 4;
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer CFW = CF > 1 ? $clog2(CF) : 1;
    localparam integer CF_LAST_I = CF - 1;
    localparam [CFW-1:0] CF_LAST = CF_LAST_I[CFW-1:0];
    // positions run to the last kept one plus a stride: IH + SY covers them
    localparam integer YW = $clog2(IH + SY + 1);
    localparam integer XW = $clog2(IWD + SX + 1);
    localparam integer KYW = $clog2(OH + 1);
    localparam integer KXW = $clog2(OWD + 1);
    localparam integer Y_LAST_I = IH - 1;
    localparam integer X_LAST_I = IWD - 1;
    localparam [YW-1:0] Y_LAST = Y_LAST_I[YW-1:0];
    localparam [XW-1:0] X_LAST = X_LAST_I[XW-1:0];
    localparam [YW-1:0] Y_FIRST = OY[YW-1:0];
    localparam [XW-1:0] X_FIRST = OX[XW-1:0];
    localparam [YW-1:0] Y_STEP = SY[YW-1:0];
    localparam [XW-1:0] X_STEP = SX[XW-1:0];
    localparam [KYW-1:0] KY_END = OH[KYW-1:0];
    localparam [KXW-1:0] KX_END = OWD[KXW-1:0];

    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)
    assign in_ready = has_room;
    wire in_fire = in_valid && has_room;

    reg [CFW-1:0] cf;
    reg [XW-1:0] x;
    reg [YW-1:0] y;
    reg [XW-1:0] nx;  // the next kept column
    reg [YW-1:0] ny;  // the next kept row
    reg [KXW-1:0] kx;  // columns kept in this row
    reg [KYW-1:0] ky;  // rows kept in this frame
    wire end_cf = cf == CF_LAST;
    wire end_x = end_cf && x == X_LAST;
    wire end_y = end_x && y == Y_LAST;
    wire keep_x = x == nx && kx != KX_END;
    wire keep_y = y == ny && ky != KY_END;

    always @(posedge clk) begin
        if (rst) begin
            cf <= 0;
            x <= 0;
            y <= 0;
            nx <= X_FIRST;
            ny <= Y_FIRST;
            kx <= 0;
            ky <= 0;
        end else if (in_fire) begin
            cf <= end_cf ? 0 : cf + 1'b1;
            if (end_cf) x <= end_x ? 0 : x + 1'b1;
            if (end_x) begin
                nx <= X_FIRST;
                kx <= 0;
            end else if (end_cf && keep_x) begin
                nx <= nx + X_STEP;
                kx <= kx + 1'b1;
            end
            if (end_x) y <= end_y ? 0 : y + 1'b1;
            if (end_y) begin
                ny <= Y_FIRST;
                ky <= 0;
            end else if (end_x && keep_y) begin
                ny <= ny + Y_STEP;
                ky <= ky + 1'b1;
            end
        end
    end

    reg [W-1:0] o1;
    reg v1;
    always @(posedge clk) begin
        o1 <= in_data;
        v1 <= in_fire && keep_x && keep_y && !rst;
    end

    bnn_fifo #(.WIDTH(W), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(o1), .in_valid(v1),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
