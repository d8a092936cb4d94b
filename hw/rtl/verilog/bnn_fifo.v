// bnn_fifo: a small first-word-fall-through FIFO with valid/ready on both sides.
//
// Every bnnflow layer writes its results into one of these. A layer issues work only while the FIFO has room
// for everything already in its pipeline (`room`: fewer than ROOM = DEPTH - the layer's latency beats held), so
// the layer's pipeline never stalls: back-pressure from downstream stops new work at the layer's input instead.
// `room` is a register (the count's next value compared a cycle ahead), so a layer's issue logic, which fans out
// to its counters and memory addresses, starts at a flip-flop. Both outcomes of the consumer's handshake are
// compared side by side and the pop picks one: the consumer's ready, which may come through a width converter's
// logic, reaches `room` through one LUT rather than through the compare's carry chain. Storage is a register
// array (LUT RAM on ECP5) read asynchronously; DEPTH is a power of two.
// LUT RAM where the family has it (ECP5); on iCE40, which has none, the flow defines BNNFLOW_LUT_RAM as "auto"
`ifndef BNNFLOW_LUT_RAM
`define BNNFLOW_LUT_RAM "distributed"
`endif
`default_nettype none

module bnn_fifo #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 8,
    parameter integer ROOM = 8
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire [WIDTH-1:0]         in_data,
    input  wire                     in_valid,
    output wire [WIDTH-1:0]         out_data,
    output wire                     out_valid,
    input  wire                     out_ready,
    output reg                      room
);
    localparam integer AW = $clog2(DEPTH);
    localparam integer CW = AW + 1;
    localparam [CW-1:0] ROOM_C = ROOM[CW-1:0];
    reg [CW-1:0] count;

    // read asynchronously: LUT RAM whatever its size (DEPTH is 16 or 32 beats of a layer's output)
    (* ram_style = `BNNFLOW_LUT_RAM *) reg [WIDTH-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] wptr;
    reg [AW-1:0] rptr;

    wire push = in_valid;  // writers check `count` before issuing work, so a push never finds the FIFO full
    wire pop = out_valid && out_ready;

    // count != 0 as a register of its own, so no logic the consumer reads is shared with `room`'s compare: at
    // placement seed 2 the board-budget CNV missed 100 MHz (97.7) on a room compare with a LUT placed by its consumer
    reg nonempty;
    assign out_valid = nonempty;
    assign out_data = mem[rptr];

    always @(posedge clk) begin
        if (push) mem[wptr] <= in_data;
    end

    wire [CW-1:0] count_next = push && !pop ? count + 1'b1 : pop && !push ? count - 1'b1 : count;
    // count + push, and whether it (no pop) or it less one (a pop, which needs count >= 1) is below ROOM
    wire [CW-1:0] count_push = push ? count + 1'b1 : count;
    wire below_kept = count_push < ROOM_C;
    wire below_popped = count_push <= ROOM_C;
    always @(posedge clk) begin
        if (rst) begin
            wptr <= 0;
            rptr <= 0;
            count <= 0;
            nonempty <= 1'b0;
            room <= 1'b1;
        end else begin
            if (push) wptr <= wptr + 1'b1;
            if (pop) rptr <= rptr + 1'b1;
            count <= count_next;
            nonempty <= count_next != 0;
            room <= pop ? below_popped : below_kept;
        end
    end
endmodule

`default_nettype wire
