// bnn_dup: a stream copied to N consumers, the fork of a residual block (FINN's DuplicateStreams).
//
// Every copy has a two-beat buffer of its own (registers); a beat is taken when every buffer has room and goes into
// all of them at once, so no beat is lost or sent twice. in_ready depends on the buffers' counts only and each
// out_valid on its own buffer, so a slow consumer adds no combinational path to the producer or to the other
// consumers; a copy whose consumer takes a beat every cycle keeps one beat a cycle moving. Copy i is on
// out_data[i*W +: W], out_valid[i] and out_ready[i].
`default_nettype none

module bnn_dup #(
    parameter integer N = 2,
    parameter integer W = 8
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [W-1:0]         in_data,
    input  wire                 in_valid,
    output wire                 in_ready,
    output wire [N*W-1:0]       out_data,
    output wire [N-1:0]         out_valid,
    input  wire [N-1:0]         out_ready
);
    wire [N-1:0] room;
    assign in_ready = &room;
    wire push = in_valid && in_ready;

    genvar i;
    generate
        for (i = 0; i < N; i = i + 1) begin : g_copy
            reg [W-1:0] d0;  // the head, on the output
            reg [W-1:0] d1;
            reg [1:0] n;
            wire pop = out_ready[i] && n != 0;
            assign room[i] = n != 2'd2;
            assign out_valid[i] = n != 0;
            assign out_data[i*W +: W] = d0;
            always @(posedge clk) begin
                if (rst) n <= 0;
                else if (push && !pop) n <= n + 1'b1;
                else if (pop && !push) n <= n - 1'b1;
            end
            always @(posedge clk) begin
                if (pop) d0 <= n == 2'd2 ? d1 : in_data;  // with one beat held, a pop makes room for the new one
                else if (push && n == 0) d0 <= in_data;
                if (push && (pop ? n == 2'd2 : n == 2'd1)) d1 <= in_data;
            end
        end
    endgenerate
endmodule

`default_nettype wire
