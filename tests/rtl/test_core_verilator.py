"""Layer benches through the whole core in Verilator (program in memory, DMA, compute,
store), bit-exact vs golden, on the default 10×pot4 + 6×fix8, C = 8 array."""
import pytest

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.generator.program import layer_program, vec_program
from rmsmp.host import open_device
from rmsmp.sim.device import ProgramMismatchError
from rmsmp.sim.layer_cases import LAYER_CASES, VEC_CASES, mini_block, one_layer_model, vec_case

pytestmark = pytest.mark.slow      # a Verilator build of the core

CFG = AcceleratorConfig()


@pytest.fixture(scope="module")
def dev():
    d = open_device("sim", CFG)
    print(f"\nVerilator build of the core ({CFG.describe()}): {d.build():.1f} s")
    return d


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_layer_bit_exact_in_verilator(dev, name):
    case = LAYER_CASES[name]
    qm, layer, x, y = one_layer_model(**case)
    hw = case.get("hw", 1)
    prog = layer_program(qm, layer, CFG, x, in_hw=(hw, hw))
    dev.load(prog)
    got = dev.run(x)
    assert got.tolist() == y.reshape(got.shape).tolist()
    s = dev.stats
    print(f"\n{name}: {s['cycles']} cycles, MAC utilization {s['mac_utilization']:.1%} "
          f"(array busy {s['beat_utilization']:.1%} of cycles), {s['sim_cycles_per_s'] / 1e3:.0f} kcycles/s")


@pytest.mark.parametrize("name", VEC_CASES)
def test_vector_op_bit_exact_in_verilator(dev, name):
    """max-pool 3x3/2 p1, residual add + ReLU, global average pool of a quantized block."""
    qm, tr = mini_block(hw=16)
    layer, inputs, y = vec_case(qm, tr, name)
    dev.load(vec_program(qm, layer, CFG, inputs))
    got = dev.run(*inputs)
    assert got.tolist() == y.reshape(got.shape).tolist()
    print(f"\n{name}: {dev.stats['cycles']} cycles for {got.shape[0]}x{got.shape[1]}x{got.shape[2]} outputs")


def test_program_for_another_config_is_refused(dev):
    other = AcceleratorConfig(columns=16)
    qm, layer, x, y = one_layer_model("linear", 8, 16, relu=False)
    prog = layer_program(qm, layer, other, x)
    with pytest.raises(ProgramMismatchError, match="recompile"):
        dev.load(prog)


def test_a_run_past_its_cycle_budget_is_stopped_and_named(dev):
    from rmsmp.generator.runtime import RunError
    qm, layer, x, y = one_layer_model(**LAYER_CASES[next(iter(LAYER_CASES))])
    hw = LAYER_CASES[next(iter(LAYER_CASES))].get("hw", 1)
    dev.load(layer_program(qm, layer, CFG, x, in_hw=(hw, hw)))
    assert dev.budget > 0
    dev.budget = 300                         # as if the program never reached END
    with pytest.raises(RunError, match=r"past its cycle budget of 300 cycles.* at instruction \d+ \((LOAD|CONV|SYNC)"):
        dev.run(x)


def test_the_core_stops_on_an_instruction_the_host_check_would_refuse(dev):
    """Past the host's check (a program put straight into the device): the core itself stops
    on the illegal opcode, and the device raises naming it; nothing is returned."""
    from copy import deepcopy

    from rmsmp.generator.program import split_words
    from rmsmp.generator.runtime import RunError
    from rmsmp.generator.validate import decode
    from rmsmp.rtl.isa import INSTR_BITS
    qm, layer, x, y = one_layer_model("linear", 8, 16, relu=False)
    prog = layer_program(qm, layer, CFG, x)
    conv = next(s for s in decode(prog) if s.op == "CONV")
    bad = deepcopy(prog)
    w = INSTR_BITS // prog.bus_width
    bits = sum(v << (prog.bus_width * i) for i, v in enumerate(bad.image[conv.addr:conv.addr + w]))
    bad.image[conv.addr:conv.addr + w] = split_words(bits | 0xF, INSTR_BITS, prog.bus_width)
    dev.load(prog)
    dev.program = bad                        # bypasses load()'s checks
    with pytest.raises(RunError, match=f"cannot run at instruction {conv.index} \\(illegal opcode 15\\)"):
        dev.run(x)
