// bnn_stream_fifo: a first-word-fall-through FIFO of any DEPTH >= 1 with valid/ready on both sides, one beat a
// cycle in and out. It sits before a join's input, where it must absorb what the other branch holds in flight:
// deep ones (thousands of beats) go to block RAM, shallow ones to LUT RAM.
//
// Shallow (under 16 beats, or at most 4096 bits in the deep form's DEPTH - 2 beats): an array read asynchronously, which yosys maps to
// LUT RAM (registers when tiny). Deep: an array written and read synchronously (block RAM; it holds DEPTH - 2
// beats) followed by two registers, the RAM's read register and an output register, so a beat read from the RAM
// is at the output the cycle after and the FIFO still moves a beat every cycle. Either way it holds at most DEPTH
// beats and out_valid is a register; in_ready depends on registers only (a one-beat FIFO also takes a beat in the
// cycle its beat leaves, so its in_ready follows out_ready), so no combinational path runs through a FIFO of two
// or more beats between its producer and its consumer.
// LUT RAM where the family has it (ECP5); on iCE40, which has none, the flow defines BNNFLOW_LUT_RAM as "auto"
`ifndef BNNFLOW_LUT_RAM
`define BNNFLOW_LUT_RAM "distributed"
`endif
`default_nettype none

module bnn_stream_fifo #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 4
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [WIDTH-1:0]     in_data,
    input  wire                 in_valid,
    output wire                 in_ready,
    output wire [WIDTH-1:0]     out_data,
    output wire                 out_valid,
    input  wire                 out_ready
);
    // block RAM when its RAM (DEPTH - 2 beats) holds more than 4096 bits (bnnflow.hw.estimates' LUTROM_MAX_BITS)
    localparam integer DEEP = (DEPTH >= 16 && (DEPTH - 2) * WIDTH > 4096) ? 1 : 0;
    localparam integer CW = $clog2(DEPTH + 1);

    generate
        if (DEPTH == 1) begin : g_one
            reg [WIDTH-1:0] data;
            reg full;
            assign out_valid = full;
            assign out_data = data;
            assign in_ready = !full || out_ready;
            always @(posedge clk) begin
                if (rst) full <= 1'b0;
                else if (in_valid && in_ready) full <= 1'b1;
                else if (out_ready) full <= 1'b0;
            end
            always @(posedge clk) begin
                if (in_valid && in_ready) data <= in_data;
            end
        end else if (DEEP == 0) begin : g_lut
            localparam integer AW = $clog2(DEPTH);
            localparam integer LAST_I = DEPTH - 1;
            localparam [AW-1:0] LAST = LAST_I[AW-1:0];
            localparam [CW-1:0] FULL = DEPTH[CW-1:0];
            (* ram_style = `BNNFLOW_LUT_RAM *) reg [WIDTH-1:0] mem [0:DEPTH-1];
            reg [AW-1:0] wptr;
            reg [AW-1:0] rptr;
            reg [CW-1:0] count;
            assign in_ready = count != FULL;
            assign out_valid = count != 0;
            assign out_data = mem[rptr];
            wire push = in_valid && count != FULL;
            wire pop = out_ready && count != 0;
            always @(posedge clk) begin
                if (push) mem[wptr] <= in_data;
            end
            always @(posedge clk) begin
                if (rst) begin
                    wptr <= 0;
                    rptr <= 0;
                    count <= 0;
                end else begin
                    if (push) wptr <= wptr == LAST ? 0 : wptr + 1'b1;
                    if (pop) rptr <= rptr == LAST ? 0 : rptr + 1'b1;
                    if (push && !pop) count <= count + 1'b1;
                    else if (pop && !push) count <= count - 1'b1;
                end
            end
        end else begin : g_bram
            // the RAM holds up to DEPTH - 2 beats; `rdata` (the RAM's read register) and `odata` one each
            localparam integer RD = DEPTH - 2;
            localparam integer AW = RD > 1 ? $clog2(RD) : 1;
            localparam integer LAST_I = RD - 1;
            localparam [AW-1:0] LAST = LAST_I[AW-1:0];
            localparam [CW-1:0] FULL = DEPTH[CW-1:0];
            localparam [CW-1:0] RAM_FULL = RD[CW-1:0];
            (* ram_style = "block" *) reg [WIDTH-1:0] mem [0:RD-1];
            reg [WIDTH-1:0] rdata;
            reg [WIDTH-1:0] odata;
            reg [AW-1:0] wptr;
            reg [AW-1:0] rptr;
            reg [CW-1:0] count;  // beats held in all: the RAM, rdata and odata
            reg [CW-1:0] stored;  // beats in the RAM
            reg rvalid;  // rdata holds a beat
            reg ovalid;  // odata holds a beat
            // the RAM can be full while a beat moves on from rdata to odata (count < DEPTH): wait a cycle then
            assign in_ready = count != FULL && stored != RAM_FULL;
            assign out_valid = ovalid;
            assign out_data = odata;
            wire push = in_valid && in_ready;
            wire pop = ovalid && out_ready;
            wire move = rvalid && (!ovalid || pop);  // rdata -> odata
            wire read = stored != 0 && (!rvalid || move);  // RAM -> rdata
            always @(posedge clk) begin
                if (push) mem[wptr] <= in_data;
                if (read) rdata <= mem[rptr];
            end
            always @(posedge clk) begin
                if (move) odata <= rdata;
            end
            always @(posedge clk) begin
                if (rst) begin
                    wptr <= 0;
                    rptr <= 0;
                    count <= 0;
                    stored <= 0;
                    rvalid <= 1'b0;
                    ovalid <= 1'b0;
                end else begin
                    if (push) wptr <= wptr == LAST ? 0 : wptr + 1'b1;
                    if (read) rptr <= rptr == LAST ? 0 : rptr + 1'b1;
                    if (push && !pop) count <= count + 1'b1;
                    else if (pop && !push) count <= count - 1'b1;
                    if (push && !read) stored <= stored + 1'b1;
                    else if (read && !push) stored <= stored - 1'b1;
                    if (read) rvalid <= 1'b1;
                    else if (move) rvalid <= 1'b0;
                    if (move) ovalid <= 1'b1;
                    else if (pop) ovalid <= 1'b0;
                end
            end
        end
    endgenerate
endmodule

`default_nettype wire
