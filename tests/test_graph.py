"""Graph capture: BN folding, ReLU fusion, unsupported layers, torchvision-compatible ResNet-18."""
import pytest
import torch
import torch.nn as nn

from rmsmp.host import UnsupportedLayerError, quantize
from rmsmp.host.models import DigitsNet, resnet18
from rmsmp.host.quant import GraphModule, capture


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g) * 0.5 + 1)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize("make, shape", [(lambda: DigitsNet(16), (4, 1, 8, 8)),
                                         (lambda: resnet18(num_classes=10), (2, 3, 64, 64))])
def test_bn_folding_is_exact_in_float(make, shape):
    torch.manual_seed(0)
    model = _randomize_bn(make())
    x = torch.randn(shape)
    layers = capture(model)
    assert not any(l.op == "bn" for l in layers)
    with torch.no_grad():
        ref = model(x)
        got = GraphModule(layers, mode="float")(x)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_resnet18_graph_shape():
    layers = capture(resnet18())
    ops = [l.op for l in layers]
    assert ops.count("conv") == 20 and ops.count("linear") == 1 and ops.count("add") == 8
    assert ops.count("maxpool") == 1 and ops.count("avgpool") == 1
    assert "relu" not in ops                            # every ReLU fused into its producer
    assert sum(1 for l in layers if l.attrs.get("relu")) == 17 - 8 + 8  # conv1 + 8 block conv1 + 8 adds
    names = {l.name for l in layers}
    assert {"conv1", "layer1.0.conv1", "layer4.1.conv2", "layer2.0.downsample.0", "fc"} <= names


def test_resnet18_state_dict_matches_torchvision_layout():
    sd = resnet18().state_dict()
    assert len(sd) == 122                               # torchvision resnet18: 122 entries
    expect = {"conv1.weight": (64, 3, 7, 7), "bn1.num_batches_tracked": (),
              "layer1.0.conv1.weight": (64, 64, 3, 3), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
              "layer2.0.downsample.1.running_var": (128,), "layer4.1.bn2.bias": (512,),
              "fc.weight": (1000, 512), "fc.bias": (1000,)}
    for k, s in expect.items():
        assert tuple(sd[k].shape) == s, k
    assert "layer1.0.downsample.0.weight" not in sd


def test_resnet18_loads_a_weights_file(tmp_path):
    a = resnet18()
    torch.save(a.state_dict(), tmp_path / "w.pth")
    b = resnet18(weights=str(tmp_path / "w.pth"))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(4, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=4)

    def forward(self, x):
        return self.dw(self.stem(x))


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.rnn = nn.LSTM(4, 4)

    def forward(self, x):
        return self.rnn(self.fc(x))[0]


class WithSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


class BNAfterAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(self.a(x) + self.b(x))


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3, dilation=2)

    def forward(self, x):
        return self.c(x)


@pytest.mark.parametrize("model, node, op", [
    (Grouped(), "dw", "groups=4"),
    (WithLSTM(), "rnn", "LSTM"),
    (WithSigmoid(), "sigmoid", "sigmoid"),
    (BNAfterAdd(), "bn", "BatchNorm2d"),
    (Dilated(), "c", "dilation"),
])
def test_unsupported_layers_name_node_and_op(model, node, op):
    with pytest.raises(UnsupportedLayerError, match=rf"'{node}'.*{op}"):
        capture(model)
    with pytest.raises(UnsupportedLayerError):
        quantize(model, torch.randn(2, 4, 4, 4))
