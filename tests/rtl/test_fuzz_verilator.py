"""A short run of the random-network differential tester (rmsmp.sim.fuzz): random small
networks through quantize → compile → the Verilator model, each bit-exact against golden or
refused with a clear error.  Long runs: bench/fuzz_networks.py --count N."""
import pytest
from hypothesis import HealthCheck, given, seed, settings

from rmsmp.generator.config import AcceleratorConfig
from rmsmp.sim.fuzz import networks, run_case

CFG = AcceleratorConfig()


@pytest.fixture(scope="module")
def dev():
    from rmsmp.host import open_device
    return open_device("sim", CFG)


@pytest.mark.slow
def test_random_networks_are_bit_exact(dev):
    @seed(1)
    @settings(max_examples=24, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(networks())
    def check(spec):
        r = run_case(spec, dev, CFG)          # raises AssertionError when the device differs from golden
        assert r == "exact" or r.startswith("refused: "), r
    check()
