"""rmsmp.generator: accelerator configuration and RTL elaboration (compiler: later issues)."""
from .config import AcceleratorConfig, ConfigError, LaneGroup

__all__ = ["AcceleratorConfig", "LaneGroup", "ConfigError"]
