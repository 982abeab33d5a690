"""The rmsmp command line: quantize and report, and its error messages."""
import torch

from rmsmp.host import QuantizedModel
from rmsmp.host.cli import main, parse_ratio_arg


def test_quantize_then_report(tmp_path, capsys):
    out = tmp_path / "d.rmsmp"
    assert main(["quantize", "--model", "digits", "--calib", "random:16", "--quiet", "-o", str(out)]) == 0
    qm = QuantizedModel.load(out)
    assert qm.meta["model"] == "DigitsNet" and qm.output.op == "linear"
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "layer1.conv1" in text and "pot4:20" in text and "realized ratio" in text


def test_custom_model_and_ratio(tmp_path):
    out = tmp_path / "d.rmsmp"
    calib = tmp_path / "calib.pt"
    torch.save(torch.randn(8, 1, 8, 8), calib)
    assert main(["quantize", "--model", "rmsmp.host.models:DigitsNet", "--calib", str(calib),
                 "--ratio", "fix4=3/4,fix8=1/4", "--assign", "variance", "--quiet", "-o", str(out)]) == 0
    qm = QuantizedModel.load(out)
    assert qm.realized_ratio.keys() == {"fix4", "fix8"}


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["quantize", "--model", "digits", "--ratio", "pot4=1/2", "--quiet", "-o", str(tmp_path / "x")]) == 2
    assert "sum to 0.5" in capsys.readouterr().err
    assert main(["quantize", "--model", "nosuchmodel", "-o", str(tmp_path / "x")]) == 2
    assert "built-in name" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.rmsmp")]) == 2
    bad = tmp_path / "bad.rmsmp"
    bad.write_bytes(b"garbage")
    assert main(["report", str(bad)]) == 2
    assert "not a readable rmsmp model file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_parse_ratio_arg():
    assert parse_ratio_arg("pot4=10/16, fix4=5/16,fix8=0.0625") == {"pot4": 0.625, "fix4": 0.3125, "fix8": 0.0625}


def test_quantize_with_another_method(tmp_path, capsys):
    out = tmp_path / "m.rmsmp"
    assert main(["quantize", "--model", "digits", "--calib", "random:16", "--method", "mxqn", "--act-bits", "3",
                 "--quiet", "-o", str(out)]) == 0
    qm = QuantizedModel.load(out)
    assert qm.meta["method"] == "mxqn" and set(qm.realized_ratio) == {"fix4", "fix8"}
    assert main(["quantize", "--model", "digits", "--calib", "random:16", "--method", "hmq",
                 "--quiet", "-o", str(tmp_path / "h")]) == 2
    assert "labelled" in capsys.readouterr().err
