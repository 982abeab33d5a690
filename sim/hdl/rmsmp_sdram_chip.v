// Behavioural x16 SDR SDRAM chip for Verilator runs of the core behind the SDRAM
// controller (rmsmp.rtl.sdram): burst length 2, CAS latency CL, commands taken at the
// falling edge of the design clock (the board drives the chip's clock inverted).  It
// models data, not timing: the timing rules are checked by the Python chip model in the
// tests (rmsmp.sim.sdram_model); this one is fast enough for whole networks.
// Storage is by 32-bit word in the controller's mapping (word w = column pair w mod 2^(COL_BITS-1),
// then bank, then row), so words are loaded from +LOADFILE=<hex> while `load` is high and
// words dump_lo..dump_hi written to +DUMPFILE=<hex> while `dump` is high, like rmsmp_burst_mem.
module rmsmp_sdram_chip #(
    parameter integer ROW_BITS = 13,
    parameter integer COL_BITS = 9,
    parameter integer BANK_BITS = 2,
    parameter integer ABITS = 13,
    parameter integer CL = 2
) (
    input  wire                 clk,
    input  wire                 cs_n,
    input  wire                 ras_n,
    input  wire                 cas_n,
    input  wire                 we_n,
    input  wire [BANK_BITS-1:0] ba,
    input  wire [ABITS-1:0]     a,
    input  wire [15:0]          dq_o,
    input  wire                 dq_oe,
    output wire [15:0]          dq_i,
    input  wire                 load,
    input  wire                 dump,
    input  wire [31:0]          dump_lo,
    input  wire [31:0]          dump_hi
);
    localparam integer WB = ROW_BITS + BANK_BITS + COL_BITS - 1;
    reg [31:0] mem [0:(1 << WB) - 1];
    reg [ROW_BITS-1:0] open_row [0:(1 << BANK_BITS) - 1];
    // read pipeline: stage k holds the half read k falling edges ago
    reg          p_v [0:CL];
    reg [WB-1:0] p_w [0:CL];
    reg          p_h [0:CL];
    reg          rd2, wr2;
    reg [WB-1:0] rd2_w, wr2_w;
    reg [1023:0] loadfile, dumpfile;
    reg has_load, has_dump;
    integer i;

    wire [WB-1:0] widx = {open_row[ba], ba, a[COL_BITS-1:1]};
    wire [31:0] out_word = mem[p_w[CL-1]];
    assign dq_i = p_v[CL-1] ? (p_h[CL-1] ? out_word[31:16] : out_word[15:0]) : 16'h5a5a;

    initial begin
        for (i = 0; i <= CL; i = i + 1) p_v[i] = 0;
        rd2 = 0; wr2 = 0;
        has_load = $value$plusargs("LOADFILE=%s", loadfile);
        has_dump = $value$plusargs("DUMPFILE=%s", dumpfile);
    end

    always @(negedge clk) begin
        for (i = CL; i > 0; i = i - 1) begin
            p_v[i] <= p_v[i-1]; p_w[i] <= p_w[i-1]; p_h[i] <= p_h[i-1];
        end
        p_v[0] <= rd2; p_w[0] <= rd2_w; p_h[0] <= 1;       // second half of a read burst
        rd2 <= 0;
        if (wr2) mem[wr2_w][31:16] <= dq_o;                // second half of a write burst
        wr2 <= 0;
        if (!cs_n) begin
            case ({ras_n, cas_n, we_n})
                3'b011: open_row[ba] <= a[ROW_BITS-1:0];                     // ACTIVE
                3'b101: begin                                                // READ
                    p_v[0] <= 1; p_w[0] <= widx; p_h[0] <= 0; rd2 <= 1; rd2_w <= widx;
                end
                3'b100: begin                                                // WRITE
                    mem[widx][15:0] <= dq_o; wr2 <= 1; wr2_w <= widx;
                end
                default: ;
            endcase
        end
    end

    always @(posedge clk) begin
        if (load && has_load) $readmemh(loadfile, mem);
        if (dump && has_dump) $writememh(dumpfile, mem, dump_lo[WB-1:0], dump_hi[WB-1:0]);
    end
endmodule
