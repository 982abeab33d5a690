"""Inputs checked at the door (the Python API): NaN and infinity named by position, numpy
arrays taken, empty batches answered, shapes against the model and the program."""
import numpy as np
import pytest
import torch

from rmsmp.generator.config import AcceleratorConfig, ConfigError
from rmsmp.generator.lower import CompileError
from rmsmp.generator.runtime import Device
from rmsmp.host import compile_model, quantize
from rmsmp.host.errors import RmsmpError
from rmsmp.host.models import DigitsNet
from rmsmp.sim import golden

CFG = AcceleratorConfig()


@pytest.fixture(scope="module")
def qm():
    torch.manual_seed(0)
    return quantize(DigitsNet().eval(), torch.randn(16, 1, 8, 8), progress=False)


def test_nan_and_inf_are_refused_with_their_position(qm):
    x = torch.randn(4, 1, 8, 8)
    x[2, 0, 7, 1] = float("inf")
    with pytest.raises(RmsmpError, match=r"golden input: inf at index \[2, 0, 7, 1\]"):
        golden(qm, x)
    calib = torch.randn(8, 1, 8, 8)
    calib[5, 0, 0, 3] = float("nan")
    with pytest.raises(RmsmpError, match=r"calibration batch 0: nan at index \[5, 0, 0, 3\]"):
        quantize(DigitsNet().eval(), calib, progress=False)
    with pytest.raises(RmsmpError, match=r"calibration batch 1: nan"):
        quantize(DigitsNet().eval(), [torch.randn(4, 1, 8, 8), calib], progress=False)


def test_numpy_images_are_taken(qm):
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(golden(qm, x.numpy()), golden(qm, x))
    net = DigitsNet().eval()
    qn = quantize(net, x.numpy().repeat(4, axis=0), progress=False)
    assert torch.equal(golden(qn, x), golden(quantize(net, x.repeat_interleave(4, 0), progress=False), x))
    with pytest.raises(RmsmpError, match="str is not a tensor of numbers"):
        golden(qm, "images")
    with pytest.raises(RmsmpError, match="torch.bool values"):
        golden(qm, np.zeros((1, 1, 8, 8), dtype=bool))


def test_calibration_batches_must_agree():
    with pytest.raises(RmsmpError, match="batch 1 of shape \\[4, 1, 6, 6\\]; batch 0 was"):
        quantize(DigitsNet().eval(), [torch.randn(4, 1, 8, 8), torch.randn(4, 1, 6, 6)], progress=False)
    with pytest.raises(RmsmpError, match="3 labels for 4 images"):
        quantize(DigitsNet().eval(), [(torch.randn(4, 1, 8, 8), torch.zeros(3))], progress=False)
    with pytest.raises(RmsmpError, match="non-empty batch"):
        quantize(DigitsNet().eval(), torch.randn(0, 1, 8, 8), progress=False)


def test_an_empty_batch_gives_an_empty_answer(qm):
    class NoRun(Device):
        mem_words = 1 << 20

        def run_image(self, image, read=None):
            raise AssertionError("nothing to run")

    dev = NoRun(CFG)
    dev.load(compile_model(qm, CFG, (1, 8, 8)))
    out = dev.run(torch.zeros(0, 1, 8, 8))
    assert out.shape == (0, 10) and dev.stats["images"] == 0
    assert golden(qm, torch.zeros(0, 1, 8, 8)).shape == (0, 10)
    with pytest.raises(RmsmpError, match=r"images of shape \[1, 8, 8\]; the program takes a batch \[N, 1, 8, 8\]"):
        dev.run(torch.zeros(1, 8, 8))


def test_compile_checks_its_arguments(qm):
    for batch in (0, -1, 1.5, True):
        with pytest.raises(CompileError, match="batch"):
            compile_model(qm, CFG, (1, 8, 8), batch=batch)
    with pytest.raises(CompileError, match="takes 1 input channels"):
        compile_model(qm, CFG, (3, 8, 8))
    from rmsmp.sim.layer_cases import one_layer_model
    q3, *_ = one_layer_model("conv", cin=4, cout=8, k=3, s=1, p=0, hw=6)
    compile_model(q3, CFG, (4, 3, 3))
    with pytest.raises(CompileError, match=r"a 3×3 window .* does not fit its 2×2 input .*too small"):
        compile_model(q3, CFG, (4, 2, 2))


def test_config_dicts_name_what_is_missing_or_unknown():
    with pytest.raises(ConfigError, match="no 'lane_groups'"):
        AcceleratorConfig.from_dict({"columns": 8})
    with pytest.raises(ConfigError, match="unknown config key.*'colums'"):
        AcceleratorConfig.from_dict({**CFG.to_dict(), "colums": 8})
    with pytest.raises(ConfigError, match="lane_groups"):
        AcceleratorConfig.from_dict({"lane_groups": "pot4"})
    assert AcceleratorConfig.from_dict(CFG.to_dict()) == CFG
