"""rmsmp.generator: the accelerator's configuration, sizing and cost model, RTL elaboration,
the compiler from a ``QuantizedModel`` to a ``Program``, and the program's runtime contract."""
from .config import AcceleratorConfig, ConfigError, LaneGroup

__all__ = ["AcceleratorConfig", "LaneGroup", "ConfigError"]
