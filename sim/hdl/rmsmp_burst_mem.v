// Burst memory model for Verilator runs of the rmsmp core (the Verilog twin of
// rmsmp.sim.memory.BurstMemory): one word per cycle each way on the core's generic
// memory port.  Words arrive in bulk: while `load` is high at a clock edge the memory
// reads +LOADFILE=<hex file> (its @address lines place each run of words), and while
// `dump` is high it writes words dump_lo..dump_hi to +DUMPFILE=<hex file>, so a run
// never steps memory from Python and one simulation serves many runs.
module rmsmp_burst_mem #(
    parameter integer DEPTH = 1 << 23,
    parameter integer BUS = 32
) (
    input  wire           clk,
    input  wire           rst,
    input  wire           rd_cmd_valid,
    output wire           rd_cmd_ready,
    input  wire [31:0]    rd_cmd_addr,
    input  wire [23:0]    rd_cmd_len,
    output reg            rd_data_valid,
    input  wire           rd_data_ready,
    output reg  [BUS-1:0] rd_data,
    input  wire           wr_cmd_valid,
    output wire           wr_cmd_ready,
    input  wire [31:0]    wr_cmd_addr,
    input  wire [23:0]    wr_cmd_len,
    input  wire           wr_data_valid,
    output wire           wr_data_ready,
    input  wire [BUS-1:0] wr_data,
    input  wire           load,
    input  wire           dump,
    input  wire [31:0]    dump_lo,
    input  wire [31:0]    dump_hi
);
    localparam integer AW = $clog2(DEPTH);   // word address bits the memory decodes
    reg [BUS-1:0] mem [0:DEPTH-1];
    reg [31:0] raddr, waddr;
    reg [23:0] rleft, wleft;
    reg [1023:0] loadfile, dumpfile;
    reg has_load, has_dump;

    initial begin
        rleft = 0; wleft = 0; rd_data_valid = 0;
        has_load = $value$plusargs("LOADFILE=%s", loadfile);
        has_dump = $value$plusargs("DUMPFILE=%s", dumpfile);
    end

    assign rd_cmd_ready = (rleft == 0);
    assign wr_cmd_ready = (wleft == 0);
    assign wr_data_ready = (wleft != 0);
    wire advance = (rleft != 0) && (!rd_data_valid || rd_data_ready);

    always @(posedge clk) begin
        if (rst) begin
            rleft <= 0; wleft <= 0; rd_data_valid <= 0;
        end else begin
            if (rd_cmd_valid && rd_cmd_ready) begin
                raddr <= rd_cmd_addr; rleft <= rd_cmd_len;
            end
            if (advance) begin
                rd_data <= mem[raddr[AW-1:0]]; raddr <= raddr + 1; rleft <= rleft - 1; rd_data_valid <= 1;
            end else if (rd_data_ready) begin
                rd_data_valid <= 0;
            end
            if (wr_cmd_valid && wr_cmd_ready) begin
                waddr <= wr_cmd_addr; wleft <= wr_cmd_len;
            end
            if (wr_data_valid && wleft != 0) begin
                mem[waddr[AW-1:0]] <= wr_data; waddr <= waddr + 1; wleft <= wleft - 1;
            end
        end
        if (load && has_load) $readmemh(loadfile, mem);
        if (dump && has_dump) $writememh(dumpfile, mem, dump_lo[AW-1:0], dump_hi[AW-1:0]);
    end
endmodule
