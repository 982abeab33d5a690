"""HMQ (arXiv 2007.09952): Gumbel-Softmax search of bit-width × power-of-two threshold."""
import math

import pytest

from rmsmp.host import AcceleratorConfig, compile_model, quantize
from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.schemes import parse_scheme


def bits_per_weight(qm):
    n = sum(l.weight.numel() for l in qm.compute_layers())
    return sum(l.weight.numel() * parse_scheme(l.schemes[0]).bits for l in qm.compute_layers()) / n


@pytest.mark.parametrize("target", [8.0, 10.0])
def test_hmq_meets_the_compression_target_with_pow2_scales(digits_net, target):
    from rmsmp.sim import golden
    m, cal, xte, yte = digits_net
    qm = quantize(m, cal, method="hmq", target_compression=target, hmq_steps=120, grad_steps=60)
    assert 32 / bits_per_weight(qm) >= target - 1e-9              # edge layers (fix8) included
    for l in qm.compute_layers():
        assert len(set(l.schemes)) == 1 and len(set(l.scale.tolist())) == 1
        e = math.log2(float(l.scale[0]))
        assert e == round(e)
    assert qm.meta["layer_bits"] == {l.name: parse_scheme(l.schemes[0]).bits
                                     for l in qm.compute_layers()[1:-1]}
    fp = float((m(xte).argmax(1) == yte).double().mean())
    assert float((golden(qm, xte).argmax(1) == yte).double().mean()) >= fp - 0.02
    # every chosen width runs on the accelerator's fix8 lanes (a b-bit row on a lane of ≥ b bits)
    compile_model(qm, AcceleratorConfig())


def test_hmq_refuses_unreachable_targets_and_unlabelled_data(digits_net):
    m, cal, _, _ = digits_net
    with pytest.raises(RmsmpError, match="target_compression"):
        quantize(m, cal, method="hmq", target_compression=20)
    with pytest.raises(RmsmpError, match="labelled"):
        quantize(m, [x for x, _ in cal], method="hmq")
