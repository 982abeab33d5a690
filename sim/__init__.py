"""Simulation side: the integer golden model (and, later, Verilator/cocotb helpers)."""
from .golden import golden, golden_trace

__all__ = ["golden", "golden_trace"]
