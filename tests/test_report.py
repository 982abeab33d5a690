"""The HTML report (rmsmp report --html): what it shows is what the model, program, run and
build hold — each figure checked against its source — and it is one self-contained file."""
import json
import math
import re

import pytest
import torch

from rmsmp.host.cli import main
from rmsmp.host.errors import RmsmpError
from rmsmp.host.quant.schemes import parse_scheme
from rmsmp.host.report import layer_rows, weight_sqnr_db, write_report

RUN = {"images": 1, "cycles": 5000, "cycles_per_image": 5000.0, "mac_utilization": 0.4321,
       "time_per_image_at_clock_s": 1.25e-4,
       "layers": [{"layer": "conv1", "macs": 9216, "cycles": 1234, "mac_utilization": 0.0467, "bytes_moved": 4096,
                   "engine_busy": 987, "dma_busy": 617, "both_busy": 494, "mac_beats": 691},
                  {"layer": "fc", "macs": 640, "cycles": 321, "mac_utilization": 0.0125, "bytes_moved": 128,
                   "engine_busy": 32, "dma_busy": 289, "both_busy": 0, "mac_beats": 20}]}
BUILD = {"board": "ulx3s-85f", "device": "LFE5U-85F", "config": "10×pot4 + 6×fix8 × 8",
         "resources": {"LUT": {"cell": "TRELLIS_COMB", "used": 50165, "available": 83640},
                       "DSP": {"cell": "MULT18X18D", "used": 69, "available": 156}},
         "fmax_mhz": 34.4, "target_mhz": 12.5, "timing_met": True, "build_s": 2436,
         "critical_paths": [{"from": "engine", "to": "vector", "delay_ns": 29.07, "logic_ns": 9.1,
                             "routing_ns": 19.97, "clocks": "clk -> clk"}]}


def test_weight_sqnr_is_the_dequantization_error(digits_q):
    l = digits_q.compute_layers()[1]
    s = l.scale.double().reshape(-1, 1, 1, 1)
    noise = ((l.qweight * s - l.weight.double()) ** 2).sum()
    assert weight_sqnr_db(l) == pytest.approx(float(10 * torch.log10((l.weight.double() ** 2).sum() / noise)))
    rows = layer_rows(digits_q)
    assert [r["layer"] for r in rows] == [l.name for l in digits_q.compute_layers()]
    for r, l in zip(rows, digits_q.compute_layers()):
        assert sum(r["schemes"].values()) == r["rows"] == l.rows
        assert r["weight_bits"] == pytest.approx(sum(parse_scheme(s).bits for s in l.schemes) / l.rows)
    # the fix8 edge layers keep far more of their weights than the 4-bit ones
    assert rows[0]["sqnr_db"] > rows[1]["sqnr_db"] + 10


def test_the_page_shows_the_model_program_run_and_build(tmp_path, digits_q, prog):
    out = write_report(tmp_path / "sub" / "r.html", digits_q, program=prog, run=RUN, build=BUILD)
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.endswith("</html>")
    assert len(re.findall(r'<img alt="plot" src="data:image/png;base64,', page)) == 4
    assert not re.search(r'(src|href)="(https?:|//|/)', page)             # self-contained
    for r in layer_rows(digits_q):
        assert f"<td>{r['layer']}</td>" in page and f"<td>{r['sqnr_db']:.1f}</td>" in page
    assert "pot4:" in page and "fix8:" in page
    assert f"{prog.config_hash:#010x}" in page
    for r in RUN["layers"]:
        assert f"<td>{r['cycles']:,}</td>" in page and f"<td>{r['mac_utilization']:.1%}</td>" in page
    # conv1: engine busy, its beats' share, DMA busy, both idle
    assert "<td>80%</td><td>70%</td><td>50%</td><td>10%</td>" in page
    assert "43.2%" in page and "5,000" in page
    assert "50,165" in page and "83,640" in page and "34.4" in page and "engine" in page
    assert not (tmp_path / "sub" / "r.html.tmp").exists()


def test_a_model_alone_and_bad_inputs(tmp_path, digits_q, capsys):
    m = tmp_path / "d.rmsmp"
    digits_q.save(m)
    assert main(["report", str(m), "--html", str(tmp_path / "m.html")]) == 0
    page = (tmp_path / "m.html").read_text()
    assert page.count("<img") == 2 and "Run:" not in page and "Board build" not in page
    (tmp_path / "run.json").write_text(json.dumps(RUN))
    (tmp_path / "build.json").write_text(json.dumps(BUILD))
    assert main(["report", str(m), "--html", str(tmp_path / "all.html"), "--run", str(tmp_path / "run.json"),
                 "--build", str(tmp_path / "build.json")]) == 0
    assert "Board build" in (tmp_path / "all.html").read_text()
    # text mode stays as it was; the extra files need the page
    assert main(["report", str(m)]) == 0 and "realized ratio" in capsys.readouterr().out
    assert main(["report", str(m), "--run", str(tmp_path / "run.json")]) == 2
    assert "--html" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{cycles")
    for arg, text in [("--run", "not JSON"), ("--build", "no such file")]:
        src = str(tmp_path / "bad.json") if arg == "--run" else str(tmp_path / "nope.json")
        assert main(["report", str(m), "--html", str(tmp_path / "x.html"), arg, src]) == 2
        assert text in capsys.readouterr().err
    with pytest.raises(RmsmpError, match="not a board build"):
        write_report(tmp_path / "y.html", digits_q, build={"fmax": 3})
    with pytest.raises(RmsmpError, match="not a device's stats"):
        write_report(tmp_path / "y.html", digits_q, run={"layers": []})
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "y.html").exists()


def test_sqnr_of_an_exact_layer_is_infinite(digits_q):
    l = digits_q.compute_layers()[0]
    s = l.scale.double().reshape(-1, 1, 1, 1)
    exact = type(l)(l.name, l.op, l.inputs, dict(l.attrs), weight=(l.qweight * s).float(), bias=l.bias, out=l.out,
                    schemes=l.schemes, qweight=l.qweight, scale=l.scale)
    assert weight_sqnr_db(exact) == math.inf or weight_sqnr_db(exact) > 120
