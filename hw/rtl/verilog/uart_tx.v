// 8N1 UART transmitter: one start bit (0), eight data bits least significant first, one stop bit (1).
//
// A byte is taken with a valid/ready handshake and shifted out over 10 * CLKS_PER_BIT cycles. `ready` is high
// while the line is idle and in the last cycle of a stop bit, so bytes offered back to back leave at exactly
// the baud rate: an echo of a host sending flat out never falls behind. `tx` comes straight from a flip-flop
// (no glitches on the pin) and idles high, also during reset.
//
// CLKS_PER_BIT = clock frequency / baud rate, at least 2 (868 for 115200 baud at 100 MHz).

`default_nettype none

module uart_tx #(
    parameter integer CLKS_PER_BIT = 868
) (
    input  wire       clk,
    input  wire       rst,    // synchronous, active high
    input  wire [7:0] data,
    input  wire       valid,
    output wire       ready,
    output reg        tx
);
    localparam integer CW = $clog2(CLKS_PER_BIT);
    localparam integer LAST_I = CLKS_PER_BIT - 1;
    localparam [CW-1:0] LAST = LAST_I[CW-1:0];

    reg [8:0]    shift;      // the bits still to send after the one on the line, stop bit on top
    reg [3:0]    bits_left;  // bit periods left in this byte, including the one on the line; 0 = idle
    reg [CW-1:0] count;      // cycles into the current bit period

    assign ready = (bits_left == 4'd0) || (bits_left == 4'd1 && count == LAST);

    always @(posedge clk) begin
        if (rst) begin
            tx <= 1'b1;
            shift <= 9'h1ff;
            bits_left <= 4'd0;
            count <= {CW{1'b0}};
        end else if (ready && valid) begin
            tx <= 1'b0;  // start bit
            shift <= {1'b1, data};
            bits_left <= 4'd10;
            count <= {CW{1'b0}};
        end else if (bits_left != 4'd0) begin
            if (count == LAST) begin
                count <= {CW{1'b0}};
                tx <= shift[0];  // after the stop bit this is a 1 shifted in from the top: the idle level
                shift <= {1'b1, shift[8:1]};
                bits_left <= bits_left - 1'b1;
            end else begin
                count <= count + 1'b1;
            end
        end
    end
endmodule

`default_nettype wire
