// bnn_channel_pad: each vector's C channels extended by PB channels in front and PA behind, all holding the
// EB-bit code PAD (the channel zero-extension of an option-A shortcut). PE channels a beat on both sides; PE
// divides C and C + PB + PA, but not necessarily PB.
//
// Output beat j of a vector holds channels j*PE .. j*PE + PE-1 of the padded vector. With PB = Q*PE + R, its lanes
// R.. come from input beat j - Q (lanes 0 .. PE-R-1) and its lanes ..R-1 from input beat j - Q - 1 (lanes PE-R ..,
// kept in a register from the beat before); lanes outside the input channels get PAD. Each output beat takes at
// most one input beat, so a vector takes (C + PB + PA) / PE cycles; no memory.
`default_nettype none

module bnn_channel_pad #(
    parameter integer C = 1,
    parameter integer PE = 1,
    parameter integer PB = 0,
    parameter integer PA = 0,
    parameter integer EB = 1,
    parameter integer PAD = 0
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
    localparam integer OF = (C + PB + PA) / PE;
    localparam integer Q = PB / PE;
    localparam integer R = PB % PE;
    localparam integer W = PE * EB;
    localparam integer JW = $clog2(OF + 2);  // holds IN_END (up to OF) with a value to spare
    localparam integer STAGES = 1;  // the output register
    localparam integer DEPTH = 4;
    localparam integer ROOM_I = DEPTH - STAGES;
    localparam integer OF_LAST_I = OF - 1;
    localparam integer IN_END_I = Q + CF;
    localparam [JW-1:0] OF_LAST = OF_LAST_I[JW-1:0];
    localparam [JW-1:0] IN_FIRST = Q[JW-1:0];
    localparam [JW-1:0] IN_END = IN_END_I[JW-1:0];
    localparam [EB-1:0] PAD_CODE = PAD[EB-1:0];

    wire has_room;  // the output FIFO holds fewer than ROOM beats (a register)
    wire room = has_room;

    reg [JW-1:0] j;  // the output beat of the vector
    wire take;  // this output beat takes input beat j - Q
    assign in_ready = room && take;
    wire issue = room && (!take || in_valid);
    always @(posedge clk) begin
        if (rst) j <= 0;
        else if (issue) j <= j == OF_LAST ? 0 : j + 1'b1;
    end

    wire [W-1:0] beat;
    genvar p;
    generate
        if (Q == 0) begin : g_take_first
            assign take = j < IN_END;
        end else begin : g_take_later
            assign take = j >= IN_FIRST && j < IN_END;
        end
        for (p = R; p < PE; p = p + 1) begin : g_cur
            assign beat[p*EB +: EB] = take ? in_data[(p - R)*EB +: EB] : PAD_CODE;
        end
        if (R > 0) begin : g_prev
            // the last R lanes of the input beat before, for the first R lanes of this output beat
            reg [R*EB-1:0] prev;
            wire held = j > IN_FIRST && j <= IN_END;  // input beat j - Q - 1 is in `prev`
            always @(posedge clk) begin
                if (issue && take) prev <= in_data[W-1 -: R*EB];
            end
            assign beat[R*EB-1:0] = held ? prev : {R{PAD_CODE}};
        end
    endgenerate

    reg [W-1:0] o1;
    reg v1;
    always @(posedge clk) begin
        o1 <= beat;
        v1 <= issue && !rst;
    end

    bnn_fifo #(.WIDTH(W), .DEPTH(DEPTH), .ROOM(ROOM_I)) u_out (
        .clk(clk), .rst(rst), .in_data(o1), .in_valid(v1),
        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready), .room(has_room));
endmodule

`default_nettype wire
