"""The rmsmp command line: quantize and report, and its error messages."""
import pytest
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


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert main(["quantize", "--model", "digits", "--calib", "random:16", "--quiet", "-o", str(d / "d.rmsmp")]) == 0
    assert main(["compile", str(d / "d.rmsmp"), "-o", str(d / "d.prog")]) == 0
    torch.save(torch.randn(16, 8, 8), d / "rank3.pt")
    torch.save(torch.randn(16, 3, 8, 8), d / "rgb.pt")
    nan = torch.randn(16, 1, 8, 8)
    nan[3, 0, 2, 5] = float("nan")
    torch.save(nan, d / "nan.pt")
    (d / "partial.json").write_text('{"columns": 8}')
    (d / "typo.json").write_text('{"lane_groups": [["pot4", 4]], "colums": 8}')
    (d / "notjson.json").write_text("{lane_groups")
    (d / "adir").mkdir()
    return d


# (arguments, what the one-line message must say); {d} is the fixture's directory
BAD_INVOCATIONS = [
    ("compile {d}/d.rmsmp --batch 0 -o {d}/x.prog", "batch 0: a program runs at least one image"),
    ("compile {d}/d.rmsmp --input-shape 3x8x8 -o {d}/x.prog", "'conv1' takes 1 input channels"),
    ("compile {d}/d.rmsmp --input-shape 0x8x8 -o {d}/x.prog", "[0, 8, 8]: expected [C, H, W], each at least 1"),
    ("compile {d}/d.rmsmp --input-shape 1x8 -o {d}/x.prog", "expected [C, H, W]"),
    ("compile {d}/d.rmsmp --input-shape axb -o {d}/x.prog", "'axb' is not a list of sizes"),
    ("compile {d}/d.rmsmp --config {d}/partial.json -o {d}/x.prog", "has no 'lane_groups'"),
    ("compile {d}/d.rmsmp --config {d}/typo.json -o {d}/x.prog", "unknown config key(s) 'colums'"),
    ("compile {d}/d.rmsmp --config {d}/notjson.json -o {d}/x.prog", "not a JSON config"),
    ("compile {d}/d.rmsmp -o {d}/missing/x.prog", "does not exist"),
    ("compile {d}/d.rmsmp -o {d}/adir", "is a directory"),
    ("compile {d}/d.rmsmp --batch 1024 --board icebreaker -o {d}/x.prog",
     "the memory holds 32,768; compile a smaller batch"),
    ("compile {d}/d.rmsmp --board nosuch -o {d}/x.prog", "unknown board 'nosuch'"),
    ("quantize --model digits --calib random:0 --quiet -o {d}/x.rmsmp", "calibrate on at least one image"),
    ("quantize --model digits --calib {d}/rank3.pt --quiet -o {d}/x.rmsmp", "'conv1' (conv) takes [N, 1, H, W]"),
    ("quantize --model digits --calib {d}/rgb.pt --quiet -o {d}/x.rmsmp", "shape [16, 3, 8, 8]"),
    ("quantize --model digits --calib {d}/nan.pt --quiet -o {d}/x.rmsmp", "nan at index [3, 0, 2, 5]"),
    ("quantize --model digits --calib {d}/d.prog --quiet -o {d}/x.rmsmp", "not a tensor file"),
    ("quantize --model digits --calib random:4 --ratio pot4=1,pot4=0 --quiet -o {d}/x.rmsmp", "names 'pot4' twice"),
    ("quantize --model digits --calib random:4 --quiet -o {d}/missing/x.rmsmp", "does not exist"),
    ("quantize --model digits --calib random:4 --quiet -o {d}/adir", "is a directory"),
    ("quantize --model digits --calib samples:cifar10 --quiet -o {d}/x.rmsmp",
     "images of shape [3, 32, 32]; the model takes [1, 8, 8]"),
    ("quantize --model digits --calib samples:svhn --quiet -o {d}/x.rmsmp", "sample set 'svhn'"),
    ("quantize --model digits --calib mnist:x --quiet -o {d}/x.rmsmp", "'x' is not a number of images"),
    ("quantize --model resnet8 --num-classes 5 --calib samples:cifar10 --quiet -o {d}/x.rmsmp",
     "comes with its published weights"),
    ("sim {d}/d.prog --images 0", "--images 0: run at least one image"),
    ("sim {d}/d.prog --localize", "--localize compares against golden: give the model with --model"),
    ("sim {d}/d.rmsmp", "not a readable rmsmp program file"),
    ("sim {d}/d.prog --input {d}/nan.pt", "nan.pt': nan at index [3, 0, 2, 5]"),
    ("sim {d}/d.prog --input {d}/rgb.pt", "images of shape [16, 3, 8, 8];"),
]


@pytest.mark.parametrize("args,says", BAD_INVOCATIONS, ids=[a.split()[0] + ":" + s[:30] for a, s in BAD_INVOCATIONS])
def test_bad_input_is_one_line_and_exit_2(digits_files, capsys, args, says):
    d = digits_files
    before = sorted(p.name for p in d.iterdir())
    assert main(args.format(d=d).split()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rmsmp ") and says in err, err
    assert sorted(p.name for p in d.iterdir()) == before          # nothing written, no temporaries


def test_quantize_an_mlperf_tiny_model_on_real_images(tmp_path, capsys):
    """``--model resnet8 --calib samples:cifar10``: the published weights, calibrated on the
    real CIFAR-10 images through the model's own preprocessing; ``report`` reads it back."""
    out = tmp_path / "r8.rmsmp"
    assert main(["quantize", "--model", "resnet8", "--calib", "samples:cifar10:8", "--quiet", "-o", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mods.depthwise" not in text and "mods.conv2d_8" in text and "mods.dense" in text
