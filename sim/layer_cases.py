"""Quantized one-layer models and a mini ResNet block with their golden integers, for the
RTL layer benches (tests/rtl) and bench/layer_benches.py."""
import torch
import torch.nn as nn

from rmsmp.host.quant import quantize
from rmsmp.sim import golden_trace


def one_layer_model(op, cin, cout, k=3, s=1, p=1, hw=6, relu=True, seed=0, ratio=None, edge=False):
    """Quantize a single conv (+BN, ReLU) or linear layer; returns (qm, layer, x_int, y_int)."""
    torch.manual_seed(seed)
    if op == "conv":
        mods = [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout)]
        x = torch.randn(16, cin, hw, hw)
    else:
        mods = [nn.Linear(cin, cout)]
        x = torch.randn(16, cin)
    if relu:
        mods.append(nn.ReLU())
    model = nn.Sequential(*mods).eval()
    for mm in model.modules():
        if isinstance(mm, nn.BatchNorm2d):
            mm.running_mean.uniform_(-0.5, 0.5)
            mm.running_var.uniform_(0.5, 2.0)
            mm.bias.data.uniform_(-0.5, 0.5)
    kw = {} if edge else {"edge_scheme": None, "edge_act_bits": None}
    qm = quantize(model, x, ratio=ratio, assign="variance", out_bits=8, **kw)
    tr = golden_trace(qm, x[:1])
    layer = qm.compute_layers()[0]
    return qm, layer, tr["input"][0], tr[layer.name][0]


class MiniBlock(nn.Module):
    """conv-bn-relu, max-pool 3x3/2, a residual basic-block half, global average pool, fc
    (``signed_pool``: the ReLU after the max-pool, so the pool's input is signed)."""

    def __init__(self, cin=3, width=20, signed_pool=False):
        super().__init__()
        self.signed_pool = signed_pool
        self.conv1 = nn.Conv2d(cin, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        if self.signed_pool:
            x = self.relu(self.maxpool(self.bn1(self.conv1(x))))
        else:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        y = self.relu(self.bn2(self.conv2(x)) + x)
        return self.fc(torch.flatten(self.avgpool(y), 1))


def mini_block(hw=9, seed=0, signed_pool=False):
    """(qm, golden trace of one image) of a quantized MiniBlock."""
    torch.manual_seed(seed)
    model = MiniBlock(signed_pool=signed_pool).eval()
    for mm in model.modules():
        if isinstance(mm, nn.BatchNorm2d):
            mm.running_mean.uniform_(-0.3, 0.3)
            mm.running_var.uniform_(0.5, 2.0)
            mm.bias.data.uniform_(-0.3, 0.3)
    x = torch.randn(8, 3, hw, hw)
    qm = quantize(model, x, assign="variance")
    return qm, {k: v[0] for k, v in golden_trace(qm, x[:1]).items()}


def vec_case(qm, tr, name):
    layer = qm[name]
    return layer, [tr[i] for i in layer.inputs], tr[name]


#: The layer benches of issue 3, on the default array (channel counts off the array size).
LAYER_CASES = {
    "3x3s1p1": dict(op="conv", cin=20, cout=24, k=3, s=1, p=1, hw=8),
    "3x3s2p1": dict(op="conv", cin=12, cout=40, k=3, s=2, p=1, hw=9),
    "1x1s2": dict(op="conv", cin=24, cout=36, k=1, s=2, p=0, hw=8, relu=False),
    "7x7s2p3": dict(op="conv", cin=3, cout=16, k=7, s=2, p=3, hw=16, edge=True),
    "linear": dict(op="linear", cin=40, cout=20, relu=False),
}
VEC_CASES = ("maxpool", "add", "avgpool")
