// 8N1 UART receiver: one start bit (0), eight data bits least significant first, one stop bit (1).
//
// `rx` comes from another clock domain (the USB-serial chip), so it passes two flip-flops before any logic
// looks at it. A falling edge on the idle line starts a byte; the receiver re-checks the line half a bit
// later (a glitch shorter than that is ignored), then samples every bit in its middle, CLKS_PER_BIT cycles
// apart, which tolerates a few percent of baud-rate mismatch. A stop bit that reads 0 is a framing error
// (wrong baud rate, noise, or a break): the byte is dropped, `frame_error` pulses, and the receiver waits
// for the line to return to idle before it looks for the next start bit.
//
// CLKS_PER_BIT = clock frequency / baud rate, at least 4 (868 for 115200 baud at 100 MHz).

`default_nettype none

module uart_rx #(
    parameter integer CLKS_PER_BIT = 868
) (
    input  wire       clk,
    input  wire       rst,          // synchronous, active high
    input  wire       rx,
    output reg  [7:0] data,         // the last byte received; valid while `valid` is high
    output reg        valid,        // one-cycle pulse per byte received with a good stop bit
    output reg        frame_error   // one-cycle pulse per byte whose stop bit read 0
);
    localparam integer CW = $clog2(CLKS_PER_BIT);
    localparam integer LAST_I = CLKS_PER_BIT - 1;
    localparam integer HALF_I = CLKS_PER_BIT / 2 - 1;
    localparam [CW-1:0] LAST = LAST_I[CW-1:0];  // cycles from one mid-bit sample to the next, minus one
    localparam [CW-1:0] HALF = HALF_I[CW-1:0];  // cycles from the start edge to the middle of the start bit

    localparam [2:0] IDLE = 3'd0, START = 3'd1, DATA = 3'd2, STOP = 3'd3, RECOVER = 3'd4;

    reg          rx_meta;  // first synchroniser stage: may be metastable, read only by rx_sync
    reg          rx_sync;
    reg [2:0]    state;
    reg [CW-1:0] count;    // cycles since the last sample point
    reg [2:0]    bit_index;
    reg [7:0]    shift;

    always @(posedge clk) begin
        if (rst) begin
            rx_meta <= 1'b1;
            rx_sync <= 1'b1;
        end else begin
            rx_meta <= rx;
            rx_sync <= rx_meta;
        end
    end

    always @(posedge clk) begin
        valid <= 1'b0;
        frame_error <= 1'b0;
        if (rst) begin
            state <= IDLE;
            count <= {CW{1'b0}};
            bit_index <= 3'd0;
            shift <= 8'd0;
            data <= 8'd0;
        end else begin
            case (state)
                IDLE: begin
                    count <= {CW{1'b0}};
                    if (!rx_sync) state <= START;
                end
                START: begin
                    if (count == HALF) begin
                        count <= {CW{1'b0}};
                        bit_index <= 3'd0;
                        state <= rx_sync ? IDLE : DATA;  // high again: a glitch, not a start bit
                    end else begin
                        count <= count + 1'b1;
                    end
                end
                DATA: begin
                    if (count == LAST) begin
                        count <= {CW{1'b0}};
                        shift <= {rx_sync, shift[7:1]};
                        bit_index <= bit_index + 1'b1;
                        if (bit_index == 3'd7) state <= STOP;
                    end else begin
                        count <= count + 1'b1;
                    end
                end
                STOP: begin
                    if (count == LAST) begin
                        count <= {CW{1'b0}};
                        if (rx_sync) begin
                            data <= shift;
                            valid <= 1'b1;
                            state <= IDLE;
                        end else begin
                            frame_error <= 1'b1;
                            state <= RECOVER;
                        end
                    end else begin
                        count <= count + 1'b1;
                    end
                end
                default: begin  // RECOVER: a break or a baud mismatch; wait for the idle line
                    if (rx_sync) state <= IDLE;
                end
            endcase
        end
    end
endmodule

`default_nettype wire
