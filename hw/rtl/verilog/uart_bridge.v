// The accelerator's streams over a UART: the board wrapper's link to a host's serial port.
//
// Input: every ceil(IN_W / 8) bytes received make one beat of `m_data`, least significant byte first; bits of
// the last byte beyond IN_W are dropped. Output: every beat taken from `s_data` is sent as ceil(OUT_W / 8) bytes,
// least significant byte first, the bits beyond OUT_W as zeros. This is the byte form of hw/rtl/stream.py.
//
// A UART has no flow control, so the receive side is double-buffered: the beat being assembled and the beat
// offered on `m_data` are separate registers. The accelerator thus has the time of a whole beat (plus one byte)
// to accept a beat before data is lost. If a byte arrives while the assembled beat still cannot be handed over,
// the byte is dropped and `error` is set; a framing error on `rx` sets it too. `error` stays set until reset,
// so a dropped byte is never silent (drive an LED with it). The transmit side needs no buffer of its own: it
// holds `s_ready` low while a beat is on the wire, and the accelerator waits.
//
// Widths may be anything from 1 bit up; the registers grow as IN_W + 8 * ceil(IN_W / 8) and OUT_W (padded to
// whole bytes) flip-flops, without wide multiplexers: bytes move through shift registers.

`default_nettype none

module uart_bridge #(
    parameter integer IN_W = 8,
    parameter integer OUT_W = 8,
    parameter integer CLKS_PER_BIT = 868  // clock frequency / baud rate, at least 4
) (
    input  wire             clk,
    input  wire             rst,      // synchronous, active high
    input  wire             rx,
    output wire             tx,
    output reg              error,    // sticky: framing error, or a byte lost because the accelerator was not ready
    output reg  [IN_W-1:0]  m_data,
    output reg              m_valid,
    input  wire             m_ready,
    input  wire [OUT_W-1:0] s_data,
    input  wire             s_valid,
    output wire             s_ready
);
    localparam integer IN_BYTES = (IN_W + 7) / 8;
    localparam integer OUT_BYTES = (OUT_W + 7) / 8;
    localparam integer IN_CW = $clog2(IN_BYTES + 1);
    localparam integer OUT_CW = $clog2(OUT_BYTES + 1);
    localparam integer IN_LAST_I = IN_BYTES - 1;
    localparam [IN_CW-1:0] IN_LAST = IN_LAST_I[IN_CW-1:0];
    localparam [OUT_CW-1:0] OUT_COUNT = OUT_BYTES[OUT_CW-1:0];

    // ---- receive: bytes -> beats on m_* ----

    wire [7:0] rx_byte;
    wire       rx_valid;
    wire       rx_frame_error;

    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_rx (
        .clk(clk), .rst(rst), .rx(rx), .data(rx_byte), .valid(rx_valid), .frame_error(rx_frame_error)
    );

    reg  [IN_BYTES*8-1:0] gather;       // bytes enter at the top and move down, so the first ends lowest
    wire [IN_BYTES*8-1:0] gather_next;
    reg  [IN_CW-1:0]      gathered;     // bytes in `gather` of the beat being assembled
    reg                   gather_full;  // `gather` holds a whole beat not yet moved to m_data

    generate
        if (IN_BYTES == 1) begin : g_gather_one
            assign gather_next = rx_byte;
        end else begin : g_gather_many
            assign gather_next = {rx_byte, gather[IN_BYTES*8-1:8]};
        end
        if (IN_BYTES * 8 > IN_W) begin : g_gather_pad
            wire unused_pad = &{1'b0, gather[IN_BYTES*8-1:IN_W]};  // padding bits of the last byte
        end
    endgenerate

    // the assembled beat moves to m_data when m_data is free or being taken this very cycle
    wire handover = gather_full && (!m_valid || m_ready);

    always @(posedge clk) begin
        if (rst) begin
            gathered <= {IN_CW{1'b0}};
            gather_full <= 1'b0;
            m_valid <= 1'b0;
            error <= 1'b0;
        end else begin
            if (m_valid && m_ready) m_valid <= 1'b0;
            if (handover) begin
                m_data <= gather[IN_W-1:0];
                m_valid <= 1'b1;
                gather_full <= 1'b0;
            end
            if (rx_valid) begin
                if (gather_full && !handover) begin
                    error <= 1'b1;  // both buffers full: this byte has nowhere to go
                end else begin
                    gather <= gather_next;
                    if (gathered == IN_LAST) begin
                        gathered <= {IN_CW{1'b0}};
                        gather_full <= 1'b1;
                    end else begin
                        gathered <= gathered + 1'b1;
                    end
                end
            end
            if (rx_frame_error) error <= 1'b1;
        end
    end

    // ---- transmit: beats on s_* -> bytes ----

    reg  [OUT_BYTES*8-1:0] send;     // the beat on the wire; its lowest byte goes next
    reg  [OUT_CW-1:0]      to_send;  // bytes of it not yet handed to the transmitter
    wire [OUT_BYTES*8-1:0] s_padded;
    wire                   tx_ready;
    wire                   tx_valid = (to_send != {OUT_CW{1'b0}});

    generate
        if (OUT_BYTES * 8 > OUT_W) begin : g_send_pad
            assign s_padded = {{(OUT_BYTES * 8 - OUT_W){1'b0}}, s_data};
        end else begin : g_send_whole
            assign s_padded = s_data;
        end
    endgenerate

    assign s_ready = !tx_valid;

    uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_tx (
        .clk(clk), .rst(rst), .data(send[7:0]), .valid(tx_valid), .ready(tx_ready), .tx(tx)
    );

    always @(posedge clk) begin
        if (rst) begin
            to_send <= {OUT_CW{1'b0}};
        end else if (s_valid && s_ready) begin
            send <= s_padded;
            to_send <= OUT_COUNT;
        end else if (tx_valid && tx_ready) begin
            send <= send >> 8;
            to_send <= to_send - 1'b1;
        end
    end
endmodule

`default_nettype wire
