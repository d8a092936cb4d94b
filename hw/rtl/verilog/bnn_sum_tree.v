// bnn_sum_tree: the sum of N terms as a balanced adder tree (a popcount when the terms are single bits).
//
// A balanced tree is log2(N) adders deep instead of the N-deep chain a plain loop gives, which is what lets a
// wide SIMD layer close timing. Terms are TW bits each, two's complement when SIGNED; the sum is OW > TW bits.
`default_nettype none

module bnn_sum_tree #(
    parameter integer N = 4,
    parameter integer TW = 1,
    parameter integer SIGNED = 0,
    parameter integer OW = 3
) (
    input  wire [N*TW-1:0] terms,
    output wire [OW-1:0]   sum
);
    localparam integer LEAVES = 1 << $clog2(N);

    // node[i] = node[2i] + node[2i+1]; leaves are node[LEAVES .. 2*LEAVES-1], the root is node[1]
    wire [OW-1:0] node [1:2*LEAVES-1];

    genvar i;
    generate
        for (i = 0; i < LEAVES; i = i + 1) begin : g_leaf
            if (i < N) begin : g_term
                if (SIGNED != 0) begin : g_signed
                    assign node[LEAVES + i] = {{(OW - TW){terms[i*TW + TW - 1]}}, terms[i*TW +: TW]};
                end else begin : g_unsigned
                    assign node[LEAVES + i] = {{(OW - TW){1'b0}}, terms[i*TW +: TW]};
                end
            end else begin : g_pad
                assign node[LEAVES + i] = {OW{1'b0}};
            end
        end
        for (i = 1; i < LEAVES; i = i + 1) begin : g_add
            assign node[i] = node[2*i] + node[2*i + 1];
        end
    endgenerate

    assign sum = node[1];
endmodule

`default_nettype wire
