"""ONNX in (issue 25): ONNX models rebuilt as PyTorch modules (rmsmp.host.quant.onnx_net),
checked against onnxruntime — models exported here with torch.onnx.export, and the MNIST CNN
of the ONNX model zoo from the qonnx wheel — then quantized, compiled and run."""
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rmsmp.host import AcceleratorConfig, compile_model, open_device, quantize
from rmsmp.host.cli import main
from rmsmp.host.datasets import mnist
from rmsmp.host.errors import RmsmpError
from rmsmp.host.models.onnx_zoo import MNIST_CONV_INPUT_SCALE, mnist_conv, mnist_conv_reference
from rmsmp.host.quant.onnx_net import UnsupportedOnnxError, from_onnx, onnx_input_shape
from rmsmp.sim import golden


class Block(nn.Module):
    """Conv-BN-ReLU, a residual block, ReLU6, a depthwise conv, Keras-style asymmetric
    padding, max and global average pooling, a linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.pool = nn.MaxPool2d(3, 2, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(y + self.c2(y))
        y = F.relu6(self.dw(F.pad(y, (0, 1, 0, 1))))
        y = self.pool(y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def export(model, shape) -> onnx.ModelProto:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # (the legacy exporter's deprecation notice)
        torch.onnx.export(model.eval(), (torch.randn(1, *shape),), f, dynamo=False, opset_version=13)
    return onnx.load_from_string(f.getvalue())


def run_ort(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def block():
    torch.manual_seed(0)
    model = Block()
    with torch.no_grad():                            # BN statistics that are not the identity
        model.b1.running_mean.uniform_(-0.5, 0.5)
        model.b1.running_var.uniform_(0.5, 2.0)
    return model.eval(), export(model, (3, 12, 12))


def test_an_exported_model_is_rebuilt_equal_to_torch_and_onnxruntime(block):
    model, m = block
    net = from_onnx(m)
    x = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        want, got = model(x), net(x)
    ref = run_ort(m, x[:1].numpy())
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert np.allclose(got[:1].numpy(), ref, atol=1e-5)
    assert onnx_input_shape(m) == (3, 12, 12)


def test_an_onnx_model_quantizes_like_the_pytorch_model_it_came_from(block):
    model, m = block
    x = torch.randn(16, 3, 12, 12)
    qa, qb = quantize(model, x), quantize(m, x)
    assert [layer.schemes for layer in qa.compute_layers()] == [layer.schemes for layer in qb.compute_layers()]
    assert torch.equal(golden(qa, x), golden(qb, x))


def test_the_zoo_mnist_model_matches_onnxruntime_and_its_reference():
    m = mnist_conv()
    x, y = mnist_conv_reference()
    net = from_onnx(m)
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    assert np.allclose(got, run_ort(m, x), rtol=1e-5, atol=1e-2)      # logits of magnitude ~10^3
    assert np.allclose(got, y, rtol=1e-4, atol=1e-2)
    assert onnx_input_shape(m) == (1, 28, 28)


def test_the_zoo_mnist_model_keeps_its_accuracy_quantized():
    """MNIST test images (the first 1,000): the float model and its RMSMP quantization."""
    net = from_onnx(mnist_conv())
    x, y = mnist("test")
    x, y = x[:1000] * MNIST_CONV_INPUT_SCALE, y[:1000]
    with torch.no_grad():
        fp = float((net(x).argmax(1) == y).double().mean())
    qm = quantize(net, x[:256])
    q = float((golden(qm, x).argmax(1) == y).double().mean())
    print(f"\nONNX zoo MNIST CNN, 1,000 test images: float {fp:.1%}, RMSMP 10:5:1 {q:.1%}")
    assert fp >= 0.97 and q >= fp - 0.01


def _graph(nodes, inits=(), shape=(1, 2, 4, 4)):
    from onnx import TensorProto, helper
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_unsupported_onnx_is_refused_naming_the_node():
    from onnx import helper, numpy_helper
    with pytest.raises(UnsupportedOnnxError, match=r"ONNX node 'squash' \(Sigmoid\): not an op the accelerator"):
        from_onnx(_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="squash")]))
    w = numpy_helper.from_array(np.ones((2, 2, 3, 3), np.float32), "w")
    with pytest.raises(UnsupportedOnnxError, match=r"'c' \(Conv\): dilations \[2, 2\]"):
        from_onnx(_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c", dilations=[2, 2])], [w]))
    with pytest.raises(UnsupportedOnnxError, match=r"clip to \[-1, 1\]"):
        from_onnx(_graph([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="k")],
                         [numpy_helper.from_array(np.array(-1, np.float32), "lo"),
                          numpy_helper.from_array(np.array(1, np.float32), "hi")]))
    with pytest.raises(UnsupportedOnnxError, match="adding a constant is supported only as the bias"):
        from_onnx(_graph([helper.make_node("Relu", ["x"], ["r"], name="r"), helper.make_node("Add", ["r", "b"], ["y"])],
                         [numpy_helper.from_array(np.ones((2, 1, 1), np.float32), "b")]))
    with pytest.raises(UnsupportedOnnxError, match="reshape to"):
        from_onnx(_graph([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                         [numpy_helper.from_array(np.array([2, 16], np.int64), "s")]))


def test_bad_onnx_files_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RmsmpError, match="not a readable ONNX model"):
        from_onnx(bad)
    with pytest.raises(RmsmpError, match="give an nn.Module or an ONNX model"):
        quantize(str(tmp_path / "net.pt"), torch.randn(2, 1, 8, 8))
    assert main(["quantize", "--model", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "q")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow      # a Verilator model of the default core
def test_an_onnx_model_quantizes_compiles_and_runs_bit_exact_from_the_cli(tmp_path, capsys):
    """rmsmp quantize --model net.onnx → compile → sim (which checks against golden)."""
    m = mnist_conv()
    onnx.save(m, tmp_path / "mnist.onnx")
    x, _ = mnist("test")
    torch.save(x[:32] * MNIST_CONV_INPUT_SCALE, tmp_path / "calib.pt")
    assert main(["quantize", "--model", str(tmp_path / "mnist.onnx"), "--calib", str(tmp_path / "calib.pt"),
                 "--quiet", "-o", str(tmp_path / "m.rmsmp")]) == 0
    assert main(["compile", str(tmp_path / "m.rmsmp"), "-o", str(tmp_path / "m.prog")]) == 0
    assert main(["sim", str(tmp_path / "m.prog"), "--model", str(tmp_path / "m.rmsmp")]) == 0
    out = capsys.readouterr().out
    assert "bit-exact" in out or "== golden" in out, out[-2000:]


@pytest.mark.slow
def test_the_zoo_mnist_model_runs_bit_exact_on_the_simulator():
    net = from_onnx(mnist_conv())
    x, _ = mnist("test")
    x = x[:4] * MNIST_CONV_INPUT_SCALE
    qm = quantize(net, x)
    cfg = AcceleratorConfig()
    dev = open_device("sim", cfg)
    dev.load(compile_model(qm, cfg, (1, 28, 28)))
    assert torch.equal(dev.run(x), golden(qm, x))
