"""python -m rmsmp.generator emit: Verilog + RTLIL + config for a config."""
import json

import pytest

from rmsmp.generator.__main__ import main
from rmsmp.generator.config import AcceleratorConfig


@pytest.mark.slow      # Verilog of the default core
def test_emit_default(tmp_path, capsys):
    assert main(["emit", "-o", str(tmp_path)]) == 0
    v = (tmp_path / "rmsmp_core.v").read_text()
    assert "module rmsmp_core" in v and "mem__rd_cmd__payload" in v and "cycles" in v
    assert (tmp_path / "rmsmp_core.il").read_text().startswith("attribute")
    meta = json.loads((tmp_path / "rmsmp_core.json").read_text())
    assert meta["config_hash"] == f"{AcceleratorConfig().config_hash:08x}"
    assert "128 MACs/cycle" in capsys.readouterr().out


def test_emit_from_config_file(tmp_path):
    cfgf = tmp_path / "c.json"
    cfgf.write_text(json.dumps({"lane_groups": [["pot3", 3], ["fix8", 1]], "columns": 4}))
    assert main(["emit", "--config", str(cfgf), "-o", str(tmp_path / "out"), "--name", "small"]) == 0
    meta = json.loads((tmp_path / "out" / "small.json").read_text())
    assert meta["lane_groups"] == [["pot3", 3], ["fix8", 1]] and meta["columns"] == 4


def test_emit_bad_config_is_named(tmp_path, capsys):
    cfgf = tmp_path / "c.json"
    cfgf.write_text(json.dumps({"lane_groups": [["pot9", 3]]}))
    assert main(["emit", "--config", str(cfgf), "-o", str(tmp_path)]) == 2
    assert "pot9" in capsys.readouterr().err
