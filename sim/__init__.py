"""Simulation side: the integer golden model, the Verilator builds and cocotb testbenches, the
memory models and the simulated device (:class:`rmsmp.sim.device.SimDevice`)."""
from .golden import golden, golden_trace

__all__ = ["golden", "golden_trace", "localize", "Mismatch", "run_dataset"]


def __getattr__(name):
    # the localizer runs programs (generator, devices): imported on first use, so importing the
    # golden model keeps to the bottom layers
    if name in ("localize", "Mismatch"):
        from . import mismatch
        return getattr(mismatch, name)
    if name == "run_dataset":
        from .dataset_run import run_dataset
        return run_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
