"""Shared by the engine tests: a one-layer quantized model and its expected integers."""
import torch
import torch.nn as nn

from rmsmp.host import quantize
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
