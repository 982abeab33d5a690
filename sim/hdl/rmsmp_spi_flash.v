// A SPI NOR flash (W25Q128JV / IS25LP128 class, mode 0, single I/O) for the board top's
// flash boot: READ (0x03, 24-bit address, any number of bytes, SCK may stop between bits)
// and RELEASE POWER-DOWN (0xAB).  The chip starts in deep power-down, as an FPGA may leave it
// after configuration, and ignores everything but 0xAB until woken.
//
// It checks the datasheet timing against the board's clock (``clk``, CLK_NS per cycle) and
// reports what was violated in ``errors`` (sticky bits):
//   [0] SCK faster than READ's fR (a rising edge within SCK_MIN_NS of the last)
//   [1] a command other than 0xAB while powered down
//   [2] chip select high for less than tSHSL between commands
//   [3] a command within tRES1 of the end of the wake-up command
// ``reads``: bytes sent.  Contents: 0xFF (erased), then the plusarg ``+flash=<file>``
// ($readmemh: "@<byte address>" lines and one byte per word); addresses wrap at BYTES.
`timescale 1ns/1ps
module rmsmp_spi_flash #(
    parameter BYTES = 1 << 20,
    parameter CLK_NS = 10,
    parameter SCK_MIN_NS = 20,      // fR = 50 MHz
    parameter TSHSL_NS = 50,
    parameter TRES1_NS = 3000
) (
    input clk,
    input sck,
    input cs_n,
    input copi,
    output reg cipo,
    output [3:0] errors,
    output reg [31:0] reads
);
    reg [7:0] mem [0:BYTES-1];
    reg [63:0] now;
    reg [63:0] last_rise, cs_rise, wake_at;
    reg rise_seen, cs_seen, powered;
    reg [7:0] cmd;
    reg [5:0] bitcnt;
    reg [23:0] addr_in, rd_addr;
    reg [2:0] obit;
    reg [7:0] sh_o;
    reg streaming;
    reg err_sck, err_pd, err_cs, err_wake;
    assign errors = {err_wake, err_cs, err_pd, err_sck};

    integer i;
    reg [1023:0] file;
    initial begin
        for (i = 0; i < BYTES; i = i + 1) mem[i] = 8'hFF;
        if ($value$plusargs("flash=%s", file)) $readmemh(file, mem);
        now = 0; last_rise = 0; cs_rise = 0; wake_at = 0;
        rise_seen = 0; cs_seen = 0; powered = 0;
        cmd = 0; bitcnt = 0; addr_in = 0; rd_addr = 0; obit = 0; sh_o = 8'hFF; streaming = 0;
        err_sck = 0; err_pd = 0; err_cs = 0; err_wake = 0; cipo = 1; reads = 0;
    end

    always @(posedge clk) now <= now + 1;

    // command and address bits, taken at SCK's rising edges
    always @(posedge sck or posedge cs_n) begin
        if (cs_n) begin
            bitcnt <= 0;
            cmd <= 0;
        end else begin
            if (rise_seen && (now - last_rise) * CLK_NS < SCK_MIN_NS) err_sck <= 1;
            last_rise <= now;
            rise_seen <= 1;
            if (bitcnt < 8) cmd <= {cmd[6:0], copi};
            else if (bitcnt < 32) addr_in <= {addr_in[22:0], copi};
            if (bitcnt == 7 && !powered && {cmd[6:0], copi} != 8'hAB) err_pd <= 1;
            if (bitcnt != 63) bitcnt <= bitcnt + 1;
        end
    end

    // read data, shifted out at SCK's falling edges (the first right after the address)
    always @(negedge sck or posedge cs_n) begin : read_data
        reg [23:0] a;
        reg [7:0] b;
        if (cs_n) begin
            obit <= 0;
            streaming <= 0;
            cipo <= 1;
        end else if (powered && cmd == 8'h03 && bitcnt >= 32) begin
            if (obit == 0) begin
                a = streaming ? rd_addr : addr_in;
                b = mem[a % BYTES];
                rd_addr <= a + 1;
                cipo <= b[7];
                sh_o <= {b[6:0], 1'b0};
                reads <= reads + 1;
                streaming <= 1;
            end else begin
                cipo <= sh_o[7];
                sh_o <= {sh_o[6:0], 1'b0};
            end
            obit <= obit + 1;
        end
    end

    // the end of a command: the wake-up takes tRES1 from here
    always @(posedge cs_n) begin
        cs_rise <= now;
        cs_seen <= 1;
        if (cmd == 8'hAB && bitcnt >= 8) begin
            powered <= 1;
            wake_at <= now;
        end
    end

    // the start of a command
    always @(negedge cs_n) begin
        if (cs_seen && (now - cs_rise) * CLK_NS < TSHSL_NS) err_cs <= 1;
        if (powered && (now - wake_at) * CLK_NS < TRES1_NS) err_wake <= 1;
    end
endmodule
