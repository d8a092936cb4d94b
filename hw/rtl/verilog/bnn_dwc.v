// bnn_dwc: a stream width converter between a producer of IN_L elements a beat and a consumer of OUT_L.
//
// When one width divides the other it is a plain upsizer (collect OUT_L/IN_L beats) or downsizer (send an
// input beat in IN_L/OUT_L parts), both at one beat a cycle. Otherwise it is a gearbox: a shift buffer of
// CAP = 2*(IN_L + OUT_L) elements that takes a beat while it has room and sends whenever it holds OUT_L.
// Element order is kept: the first element of the stream is always in the lowest bits.
`default_nettype none

module bnn_dwc #(
    parameter integer IN_L = 2,
    parameter integer OUT_L = 4,
    parameter integer EB = 1
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire [IN_L*EB-1:0]   in_data,
    input  wire                 in_valid,
    output wire                 in_ready,
    output wire [OUT_L*EB-1:0]  out_data,
    output wire                 out_valid,
    input  wire                 out_ready
);
    localparam integer IW = IN_L * EB;
    localparam integer OW = OUT_L * EB;

    generate
        if (OUT_L % IN_L == 0) begin : g_up
            // collect K-1 beats, then move them with the K-th into the output register; in_ready depends on
            // registers only, so no ready path runs combinationally from the consumer through this converter
            localparam integer K = OUT_L / IN_L;
            localparam integer KW = K > 1 ? $clog2(K) : 1;
            localparam integer K_LAST_I = K - 1;
            localparam [KW-1:0] K_LAST = K_LAST_I[KW-1:0];
            reg [(K-1)*IW-1:0] buffer;
            reg [OW-1:0] obuf;
            reg [KW-1:0] n;
            reg ofull;
            wire last = n == K_LAST;
            assign in_ready = !(last && ofull);
            wire in_fire = in_valid && in_ready;
            assign out_valid = ofull;
            assign out_data = obuf;
            always @(posedge clk) begin
                if (rst) begin
                    n <= 0;
                    ofull <= 1'b0;
                end else begin
                    if (ofull && out_ready) ofull <= 1'b0;
                    if (in_fire) begin
                        n <= last ? 0 : n + 1'b1;
                        if (last) ofull <= 1'b1;
                    end
                end
            end
            always @(posedge clk) begin
                if (in_fire && !last) buffer[n*IW +: IW] <= in_data;
                if (in_fire && last) obuf <= {in_data, buffer};
            end
        end else if (IN_L % OUT_L == 0) begin : g_down
            // send a beat in K parts while the next beat waits in `nxt`: in_ready is a register, and a new beat
            // is taken every K cycles
            localparam integer K = IN_L / OUT_L;
            localparam integer KW = $clog2(K);
            localparam integer K_LAST_I = K - 1;
            localparam [KW-1:0] K_LAST = K_LAST_I[KW-1:0];
            reg [IW-1:0] buffer;
            reg [IW-1:0] nxt;
            reg [KW-1:0] n;
            reg full;
            reg nfull;
            wire out_fire = full && out_ready;
            wire free = !full || (out_fire && n == K_LAST);  // the buffer can take a beat this cycle
            assign in_ready = !nfull;
            wire in_fire = in_valid && !nfull;
            assign out_valid = full;
            assign out_data = buffer[n*OW +: OW];
            always @(posedge clk) begin
                if (rst) begin
                    n <= 0;
                    full <= 1'b0;
                    nfull <= 1'b0;
                end else begin
                    if (out_fire) n <= n == K_LAST ? 0 : n + 1'b1;
                    if (free) begin
                        full <= nfull || in_fire;
                        nfull <= nfull && in_fire;
                    end else if (in_fire) begin
                        nfull <= 1'b1;
                    end
                end
            end
            always @(posedge clk) begin
                if (free && nfull) buffer <= nxt;
                else if (free && in_fire) buffer <= in_data;
                if (in_fire && (!free || nfull)) nxt <= in_data;
            end
        end else begin : g_gearbox
            localparam integer CAP = 2 * (IN_L + OUT_L);
            localparam integer NW = $clog2(CAP + 1);
            localparam integer IN_ROOM_I = CAP - IN_L;
            localparam [NW-1:0] IN_ROOM = IN_ROOM_I[NW-1:0];
            localparam [NW-1:0] IN_N = IN_L[NW-1:0];
            localparam [NW-1:0] OUT_N = OUT_L[NW-1:0];
            reg [CAP*EB-1:0] buffer;
            reg [NW-1:0] n;  // elements held
            wire out_fire = n >= OUT_N && out_ready;
            wire in_fire = in_valid && n <= IN_ROOM;
            wire [NW-1:0] kept = out_fire ? n - OUT_N : n;
            wire [CAP*EB-1:0] shifted = out_fire ? buffer >> OW : buffer;
            wire [CAP*EB-1:0] placed = {{(CAP*EB - IW){1'b0}}, in_data} << (kept * EB);
            assign in_ready = n <= IN_ROOM;
            assign out_valid = n >= OUT_N;
            assign out_data = buffer[OW-1:0];
            always @(posedge clk) begin
                if (rst) begin
                    n <= 0;
                    buffer <= 0;
                end else begin
                    n <= in_fire ? kept + IN_N : kept;
                    buffer <= in_fire ? (shifted | placed) : shifted;
                end
            end
        end
    endgenerate
endmodule

`default_nettype wire
