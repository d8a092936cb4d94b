// bnn_stream_fifo: a first-word-fall-through FIFO of any DEPTH >= 1 with valid/ready on both sides, one beat a
// cycle in and out. It sits before a join's input, where it must absorb what the other branch holds in flight:
// deep ones (thousands of beats) go to block RAM, shallow ones to LUT RAM.
//
// Shallow (under 16 beats, or at most 4096 bits in the deep form's DEPTH - 2 beats): an array read
// asynchronously, which yosys maps to LUT RAM (registers when tiny). Deep: a RAM of DEPTH - 2 beats in banks of BANK
// words (block RAM), each bank read into its block RAM's register and then a register of its own before the bank
// the read was in is selected into a 4-beat skid FIFO at the output (a block RAM's data comes late in its cycle;
// a multiplexer between it and a register would limit the clock); reads are issued while the skid has room for
// them and the two in flight, so the FIFO still moves a beat every cycle. Either way it holds at most DEPTH beats
// and out_valid is a register; in_ready depends on registers only (a one-beat FIFO also takes a beat in the cycle
// its beat leaves, so its in_ready follows out_ready), so no combinational path runs through a FIFO of two or
// more beats between its producer and its consumer.
// LUT RAM where the family has it (ECP5); on iCE40, which has none, the flow defines BNNFLOW_LUT_RAM as "auto"
`ifndef BNNFLOW_LUT_RAM
`define BNNFLOW_LUT_RAM "distributed"
`endif
`default_nettype none

module bnn_stream_fifo #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 4,
    parameter integer BANK = 2048  // words per bank of the deep form's RAM (bnnflow.hw.ops.base.bank_depth)
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
            // the RAM holds up to DEPTH - 2 beats in banks of BANK words (the last one shorter), each written
            // from registers (address, data, enable: the producer's valid and the FIFO's ready meet in a LUT
            // before them, not before a write enable that may have to cross the chip to a block RAM) when the
            // registered write pointer is in it, and all read together: a bank's output goes into its block RAM's
            // register, then a register of its own, then the bank the read was in is selected into the skid, a
            // small FIFO at the output; reads are issued while the skid has room for every read in flight, of
            // beats already written (`written`: a beat is read the cycle after its write at the earliest, so
            // never where a write is, no_rw_check)
            localparam integer RD = DEPTH - 2;
            localparam integer AW = RD > 1 ? $clog2(RD) : 1;
            localparam integer BW = AW < $clog2(BANK) ? AW : $clog2(BANK);
            localparam integer NB = (RD + (1 << BW) - 1) / (1 << BW);
            localparam integer SW = NB > 1 ? $clog2(NB) : 1;
            localparam integer LAST_I = RD - 1;
            localparam [AW-1:0] LAST = LAST_I[AW-1:0];
            localparam [CW-1:0] FULL = DEPTH[CW-1:0];
            localparam [CW-1:0] RAM_FULL = RD[CW-1:0];
            reg [AW-1:0] wptr;
            reg [AW-1:0] rptr;
            reg [CW-1:0] count;  // beats held in all: the RAM, the read pipeline and the skid
            reg [CW-1:0] stored;  // beats in the RAM, its pending write included
            // beats in the RAM that can be read: always stored - we_r, kept as a register of its own so that the
            // read enable, which fans out to every bank, starts at a flip-flop
            reg [CW-1:0] written;
            reg we_r;  // the registered write
            reg [AW-1:0] wa_r;
            reg [WIDTH-1:0] wd_r;
            reg [2:0] skid_count;  // beats in the skid (up to 4)
            reg v1, v2;  // a read in the banks' registers, in the held registers
            reg [SW-1:0] sel1, sel2;
            wire [NB*WIDTH-1:0] held;
            // the RAM can be full while beats move on to the skid (count < DEPTH): wait a cycle then
            assign in_ready = count != FULL && stored != RAM_FULL;
            wire push = in_valid && in_ready;
            wire pop = out_valid && out_ready;
            // room in the skid for this read and the two in flight
            wire read = written != 0 && {1'b0, skid_count} + {3'b0, v1} + {3'b0, v2} < 4'd4;
            genvar b;
            for (b = 0; b < NB; b = b + 1) begin : g_bank
                localparam integer BD = b == NB - 1 ? RD - b * (1 << BW) : 1 << BW;
                localparam integer BDA = BD > 1 ? BD : 2;  // a 1-word bank is declared 2 words deep
                localparam integer IBW = $clog2(BDA);
                wire here_w;  // the registered write's address is in this bank
                if (NB > 1) begin : g_many
                    localparam [SW-1:0] B = b[SW-1:0];
                    assign here_w = wa_r[AW-1:BW] == B;
                end else begin : g_one
                    assign here_w = 1'b1;
                end
                reg [WIDTH-1:0] q, h;
                // block RAM above 4096 bits (bnnflow.hw.estimates' LUTROM_MAX_BITS), else LUT RAM
                if (WIDTH * BDA > 4096) begin : g_block
                    (* no_rw_check, ram_style = "block" *) reg [WIDTH-1:0] mem [0:BDA-1];
                    always @(posedge clk) begin
                        if (we_r && here_w) mem[wa_r[IBW-1:0]] <= wd_r;  // bits above IBW are 0 in this bank
                        if (read) q <= mem[rptr[IBW-1:0]];
                    end
                end else begin : g_lut
                    (* no_rw_check, ram_style = `BNNFLOW_LUT_RAM *) reg [WIDTH-1:0] mem [0:BDA-1];
                    always @(posedge clk) begin
                        if (we_r && here_w) mem[wa_r[IBW-1:0]] <= wd_r;
                        if (read) q <= mem[rptr[IBW-1:0]];
                    end
                end
                always @(posedge clk) h <= q;
                assign held[b*WIDTH +: WIDTH] = h;
            end
            // the skid: 4 beats, written with the selected bank's held beat
            reg [WIDTH-1:0] skid [0:3];
            reg [1:0] skid_w, skid_r;
            assign out_valid = skid_count != 0;
            assign out_data = skid[skid_r];
            always @(posedge clk) begin
                if (v2) skid[skid_w] <= held[sel2*WIDTH +: WIDTH];
            end
            always @(posedge clk) begin
                sel2 <= sel1;
                wa_r <= wptr;
                wd_r <= in_data;
                if (rst) begin
                    wptr <= 0;
                    rptr <= 0;
                    count <= 0;
                    stored <= 0;
                    written <= 0;
                    we_r <= 1'b0;
                    skid_count <= 0;
                    skid_w <= 0;
                    skid_r <= 0;
                    v1 <= 1'b0;
                    v2 <= 1'b0;
                end else begin
                    if (push) wptr <= wptr == LAST ? 0 : wptr + 1'b1;
                    if (read) rptr <= rptr == LAST ? 0 : rptr + 1'b1;
                    if (push && !pop) count <= count + 1'b1;
                    else if (pop && !push) count <= count - 1'b1;
                    if (push && !read) stored <= stored + 1'b1;
                    else if (read && !push) stored <= stored - 1'b1;
                    we_r <= push;
                    if (we_r && !read) written <= written + 1'b1;
                    else if (read && !we_r) written <= written - 1'b1;
                    v1 <= read;
                    v2 <= v1;
                    if (v2) skid_w <= skid_w + 1'b1;
                    if (pop) skid_r <= skid_r + 1'b1;
                    if (v2 && !pop) skid_count <= skid_count + 1'b1;
                    else if (pop && !v2) skid_count <= skid_count - 1'b1;
                end
            end
            if (NB > 1) begin : g_sel
                always @(posedge clk) sel1 <= rptr[AW-1:BW];
            end else begin : g_one
                always @(posedge clk) sel1 <= 1'b0;
            end
        end
    endgenerate
endmodule

`default_nettype wire
