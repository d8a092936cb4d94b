// bnn_sum_stage: one registered level of a pipelined adder tree, for LANES independent lanes.
//
// Each lane's N_IN terms (TW bits, two's complement when SIGNED) are summed in groups of FAN into
// ceil(N_IN / FAN) sums of OW > TW bits, registered. Terms and sums are lane-major: lane l's term i sits at
// [(l*N_IN + i)*TW]. Chaining stages keeps every clock cycle to a few adder levels however wide the sum.
`default_nettype none

module bnn_sum_stage #(
    parameter integer LANES = 1,
    parameter integer N_IN = 4,
    parameter integer FAN = 4,
    parameter integer TW = 4,
    parameter integer SIGNED = 0,
    parameter integer OW = 7
) (
    input  wire                                         clk,
    input  wire [LANES*N_IN*TW-1:0]                     terms,
    output reg  [LANES*((N_IN + FAN - 1) / FAN)*OW-1:0] sums
);
    localparam integer N_OUT = (N_IN + FAN - 1) / FAN;

    wire [LANES*N_OUT*OW-1:0] next;
    genvar l, k;
    generate
        for (l = 0; l < LANES; l = l + 1) begin : g_lane
            for (k = 0; k < N_OUT; k = k + 1) begin : g_group
                localparam integer NK = N_IN - k*FAN < FAN ? N_IN - k*FAN : FAN;
                bnn_sum_tree #(.N(NK), .TW(TW), .SIGNED(SIGNED), .OW(OW)) u_group (
                    .terms(terms[(l*N_IN + k*FAN)*TW +: NK*TW]), .sum(next[(l*N_OUT + k)*OW +: OW]));
            end
        end
    endgenerate

    always @(posedge clk) sums <= next;
endmodule

`default_nettype wire
