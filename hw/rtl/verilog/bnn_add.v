// bnn_add: two streams added element by element, the join of a residual block (FINN's AddStreams).
//
// PE elements of each input a beat: `in` of A_BITS-bit and `in2` of B_BITS-bit elements, each unsigned, signed
// (two's complement) or bipolar (a bit, 1 = +1 and 0 = -1) as its *_SIGNED / *_BIPOLAR say; out the OUT_BITS-bit
// sums (the output datatype holds every sum, so the low OUT_BITS bits of a wider sum are the sum). A pair of beats
// is taken when both inputs have one and the output FIFO has room; the join FIFOs before it (bnn_stream_fifo) keep
// the two branches apart.
`default_nettype none

module bnn_add #(
    parameter integer PE = 1,
    parameter integer A_BITS = 2,
    parameter integer A_SIGNED = 0,
    parameter integer A_BIPOLAR = 0,
    parameter integer B_BITS = 2,
    parameter integer B_SIGNED = 0,
    parameter integer B_BIPOLAR = 0,
    parameter integer OUT_BITS = 3
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire [PE*A_BITS-1:0]     in_data,
    input  wire                     in_valid,
    output wire                     in_ready,
    input  wire [PE*B_BITS-1:0]     in2_data,
    input  wire                     in2_valid,
    output wire                     in2_ready,
    output wire [PE*OUT_BITS-1:0]   out_data,
    output wire                     out_valid,
    input  wire                     out_ready
);
    // a sum width that holds each input and the output, so that extension and truncation are exact
    localparam integer SW = (A_BITS > B_BITS ? (A_BITS > OUT_BITS ? A_BITS : OUT_BITS)
                                             : (B_BITS > OUT_BITS ? B_BITS : OUT_BITS)) + 2;
    localparam integer STAGES = 1;  // the output register
    localparam integer DEPTH = 4;
    localparam integer ROOM_I = DEPTH - STAGES;

    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)
    wire room = has_room;
    assign in_ready = room && in2_valid;
    assign in2_ready = room && in_valid;
    wire fire = in_valid && in2_valid && room;

    wire [PE*OUT_BITS-1:0] sum;
    genvar p;
    generate
        for (p = 0; p < PE; p = p + 1) begin : g_pe
            wire [A_BITS-1:0] a = in_data[p*A_BITS +: A_BITS];
            wire [B_BITS-1:0] b = in2_data[p*B_BITS +: B_BITS];
            wire [SW-1:0] av;
            wire [SW-1:0] bv;
            if (A_BIPOLAR != 0) begin : g_abip
                assign av = a[0] ? {{(SW - 1){1'b0}}, 1'b1} : {SW{1'b1}};
            end else begin : g_aint
                assign av = {{(SW - A_BITS){A_SIGNED != 0 && a[A_BITS-1]}}, a};
            end
            if (B_BIPOLAR != 0) begin : g_bbip
                assign bv = b[0] ? {{(SW - 1){1'b0}}, 1'b1} : {SW{1'b1}};
            end else begin : g_bint
                assign bv = {{(SW - B_BITS){B_SIGNED != 0 && b[B_BITS-1]}}, b};
            end
            wire [SW-1:0] s = av + bv;
            assign sum[p*OUT_BITS +: OUT_BITS] = s[OUT_BITS-1:0];
            /* verilator lint_off UNUSEDSIGNAL */
            wire [SW-OUT_BITS-1:0] unused_top = s[SW-1:OUT_BITS];  // the output datatype holds every sum
            /* verilator lint_on UNUSEDSIGNAL */
        end
    endgenerate

    reg [PE*OUT_BITS-1:0] o1;
    reg v1;
    always @(posedge clk) begin
        o1 <= sum;
        v1 <= fire && !rst;
    end

    bnn_fifo #(.WIDTH(PE*OUT_BITS), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(o1), .in_valid(v1),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
