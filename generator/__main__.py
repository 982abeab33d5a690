"""``python -m rmsmp.generator emit --config cfg.json -o build/`` writes Verilog and RTLIL."""
import argparse
import json
import sys

from .config import AcceleratorConfig, ConfigError
from .emit import emit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rmsmp.generator")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("emit", help="write Verilog + RTLIL for a config")
    e.add_argument("--config",
                   help="JSON file with AcceleratorConfig fields (default: 10 pot4 + 6 fix8 rows × 8 columns)")
    e.add_argument("--name", default="rmsmp_core")
    e.add_argument("-o", "--output", default="build/rtl")
    a = p.parse_args(argv)
    try:
        cfg = AcceleratorConfig.load(a.config) if a.config else AcceleratorConfig()
    except (OSError, json.JSONDecodeError, TypeError, KeyError, ConfigError) as err:
        print(f"rmsmp.generator emit: bad config {a.config!r}: {err}", file=sys.stderr)
        return 2
    paths = emit(cfg, a.output, a.name)
    print(f"{cfg.describe()}")
    for k, v in paths.items():
        print(f"  {k:8s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
