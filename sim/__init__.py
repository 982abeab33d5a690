"""Simulation side: the integer golden model, the Verilator builds and cocotb testbenches, the
memory models and the simulated device (:class:`rmsmp.sim.device.SimDevice`)."""
from .golden import golden, golden_trace

__all__ = ["golden", "golden_trace"]
