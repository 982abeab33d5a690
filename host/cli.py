"""``rmsmp`` command line: quantize, compile, simulate, report, size and build.

    rmsmp quantize --model resnet18 --calib random:8x3x32x32 -o r18.rmsmp
    rmsmp quantize --model mypkg.nets:build --weights w.pth --calib calib.pt -o m.rmsmp
    rmsmp quantize --model resnet8 --calib samples:cifar10 -o r8.rmsmp   # MLPerf Tiny, real images
    rmsmp compile r18.rmsmp -o r18.prog
    rmsmp sim r18.prog --model r18.rmsmp          # runs on Verilator, checks vs golden
    rmsmp sim r18.prog --model other.rmsmp --localize   # on a mismatch: the first layer that differs
    rmsmp report r18.rmsmp
    rmsmp report r18.rmsmp --html r18.html --program r18.prog --run run.json --build build/ulx3s-85f/report.json
    rmsmp config --board ulx3s-85f -o cfg.json    # AcceleratorConfig.for_board
    rmsmp build --board ulx3s-85f [--config cfg.json] [--program net.prog]   # make bitstream BOARD=…

Every error is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

from .errors import RmsmpError
from .quant.api import METHODS

#: name -> (module, factory, input shape, factory keywords); the MLPerf Tiny models come with
#: their published weights (and take no --num-classes / --weights)
BUILTIN_MODELS = {
    "resnet18": ("rmsmp.host.models", "resnet18", (3, 224, 224), {}),
    "digits": ("rmsmp.host.models", "DigitsNet", (1, 8, 8), {}),
    "lenet": ("rmsmp.host.models", "LeNet", (1, 28, 28), {}),
    "mobilenet_v2": ("rmsmp.host.models", "mobilenet_v2", (3, 224, 224), {}),
    "resnet8": ("rmsmp.host.models", "mlperf_tiny", (3, 32, 32), {"name": "resnet8"}),
    "mobilenet_v1_vww": ("rmsmp.host.models", "mlperf_tiny", (3, 96, 96), {"name": "mobilenet_v1_vww"}),
}


def parse_ratio_arg(text: str) -> dict:
    """``"pot4=10/16,fix4=5/16,fix8=1/16"`` → ``{"pot4": 0.625, …}``."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise RmsmpError(f"--ratio entry {part!r}: expected scheme=fraction, e.g. pot4=10/16")
        k, v = part.split("=", 1)
        if k.strip() in out:
            raise RmsmpError(f"--ratio names {k.strip()!r} twice")
        try:
            out[k.strip()] = float(Fraction(v.strip()))
        except (ValueError, ZeroDivisionError):
            raise RmsmpError(f"--ratio entry {part!r}: {v!r} is not a fraction") from None
    return out


def _load_model(spec: str, weights: str | None, num_classes: int | None):
    kw = {}
    if spec.endswith(".onnx"):
        from .quant.onnx_net import from_onnx
        if weights or num_classes:
            raise RmsmpError(f"--model {spec}: an ONNX model carries its weights (no --weights / --num-classes)")
        if not Path(spec).exists():
            raise RmsmpError(f"--model {spec}: no such file")
        net = from_onnx(spec)
        return net, net.input_shape
    if spec in BUILTIN_MODELS:
        mod, fn, shape, kw = BUILTIN_MODELS[spec]
        if kw and (weights or num_classes):
            raise RmsmpError(f"--model {spec}: the MLPerf Tiny model comes with its published weights "
                             "(no --weights / --num-classes)")
    else:
        if ":" not in spec:
            raise RmsmpError(f"--model {spec!r}: use a built-in name ({', '.join(BUILTIN_MODELS)}), "
                             "module.path:callable or an ONNX file (net.onnx)")
        mod, fn = spec.split(":", 1)
        shape = None
    try:
        factory = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise RmsmpError(f"--model {spec!r}: cannot import ({e})") from None
    model = factory(num_classes=num_classes, **kw) if num_classes else factory(**kw)
    if weights:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(sd.get("state_dict", sd) if isinstance(sd, dict) else sd)
    return model.eval(), shape


def _calibration(spec: str, shape, seed: int, model=None):
    """``--calib``: ``random:N[xCxHxW]``, ``samples:NAME[:N]`` (foolbox's real images),
    ``mnist:N`` (the first N MNIST training images) or a tensor file.  Real images go
    through the model's ``preprocess`` when it has one (the MLPerf Tiny models)."""
    if spec.startswith(("samples:", "mnist:")):
        from .datasets import mnist, samples
        kind, _, rest = spec.partition(":")
        name, _, n = rest.partition(":") if kind == "samples" else ("", "", rest)
        try:
            count = int(n) if n else None
        except ValueError:
            raise RmsmpError(f"--calib {spec!r}: {n!r} is not a number of images") from None
        x = samples(name)[0] if kind == "samples" else mnist("train")[0]
        x = x[:count] if count else x
        if len(x) == 0:
            raise RmsmpError(f"--calib {spec!r}: calibrate on at least one image")
        if shape is not None and tuple(x.shape[1:]) != tuple(shape):
            raise RmsmpError(f"--calib {spec!r}: images of shape {list(x.shape[1:])}; the model takes {list(shape)}")
        pre = getattr(model, "preprocess", None)
        return pre(x) if pre is not None else x
    if spec.startswith("random:"):
        body = spec[len("random:"):]
        n, _, size = body.partition("x")
        if shape is None and not size:
            raise RmsmpError("--calib random:N needs the input shape for a custom model: random:NxCxHxW")
        dims = _dims(f"--calib {spec!r}", f"{n}x{size}" if size else n)
        if dims[0] < 1:
            raise RmsmpError(f"--calib {spec!r}: calibrate on at least one image")
        g = torch.Generator().manual_seed(seed)
        return torch.randn(dims[0], *(dims[1:] if size else shape), generator=g)
    return _load_tensor("--calib", spec)


def _dims(what: str, text: str) -> list[int]:
    """``"3x8x8"`` → ``[3, 8, 8]``, each a non-negative integer."""
    try:
        dims = [int(v) for v in text.split("x")]
    except ValueError:
        dims = [-1]
    if min(dims) < 0:
        raise RmsmpError(f"{what}: {text!r} is not a list of sizes like 3x8x8")
    return dims


def _load_tensor(what: str, path: str):
    p = Path(path)
    if not p.is_file():
        raise RmsmpError(f"{what} {path!r}: no such file (give a tensor saved with torch.save)")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:              # torch raises many types for a file it cannot read
        raise RmsmpError(f"{what} {path!r}: not a tensor file saved with torch.save ({type(e).__name__})") from None


def cmd_quantize(a) -> int:
    from .quant import quantize
    from .quant.fileio import check_writable
    check_writable(a.output)                     # before the work, not after it
    model, shape = _load_model(a.model, a.weights, a.num_classes)
    calib = _calibration(a.calib, shape, a.seed, model)
    ratio = parse_ratio_arg(a.ratio) if a.ratio else None
    from .quant.distributed import is_main, join_from_env, world_size
    join_from_env(a.device)                      # under torchrun: one process group for every rank
    t = time.perf_counter()
    extra = {"target_compression": a.target_compression, "hmq_steps": a.hmq_steps} if a.method == "hmq" else {}
    if a.qat_steps:
        from .quant.calibrate import as_batches
        if any(y is None for _, y in as_batches(calib)):
            raise RmsmpError("--qat-steps trains on the task loss: give a calibration file of [(images, labels)]")
    qm = quantize(model, calib, a.method, ratio=ratio, act_bits=a.act_bits, assign=a.assign, **extra,
                  edge_scheme=None if a.edge_scheme == "none" else a.edge_scheme, grad_steps=a.grad_steps,
                  seed=a.seed, progress=not a.quiet, device=a.device)
    if a.qat_steps:
        from .quant import qat
        qm = qat(qm, calib, steps=a.qat_steps, seed=a.seed, progress=not a.quiet, device=a.device,
                 pow2=a.method in ("grad", "hmq"))
        qm = qm.with_meta({**qm.meta, "qat_steps": a.qat_steps})
    dt = time.perf_counter() - t
    if not is_main():                            # torchrun: every rank holds the same model
        return 0
    qm.save(a.output)
    ranks = f" on {world_size()} ranks" if world_size() > 1 else ""
    print(f"quantized {a.model} in {dt:.1f} s{ranks} -> {a.output}")
    print(f"rows per scheme: {dict(sorted(qm.scheme_rows().items()))}; "
          f"weights {qm.weight_bits() / 8 / 1024:.1f} KiB packed")
    return 0


def cmd_report(a) -> int:
    from .quant import QuantizedModel
    qm = QuantizedModel.load(a.model)
    if a.html:
        from .report import write_report
        out = write_report(a.html, qm, program=a.program, run=a.run, build=a.build)
        print(f"wrote {out}")
        return 0
    if a.program or a.run or a.build:
        raise RmsmpError("--program / --run / --build go into the HTML report: add --html report.html")
    print(qm.summary())
    print()
    print(f"{qm!r}; meta {qm.meta}")
    print("realized ratio: " + ", ".join(f"{k} {v:.4f}" for k, v in qm.realized_ratio.items()))
    return 0


def _config(path):
    from rmsmp.generator.config import AcceleratorConfig
    return AcceleratorConfig.load(path) if path else AcceleratorConfig()


def cmd_compile(a) -> int:
    from . import compile_model
    from .quant import QuantizedModel
    from .quant.fileio import check_writable
    check_writable(a.output)
    qm = QuantizedModel.load(a.model)
    cfg = _config(a.config)
    shape = _dims("--input-shape", a.input_shape) if a.input_shape else None
    words = None
    if a.board:
        from rmsmp.generator.catalog import board
        words = board(a.board).memory_words()
    t = time.perf_counter()
    prog = compile_model(qm, cfg, shape, batch=a.batch, memory_words=words)
    prog.save(a.output)
    io = prog.io
    print(f"compiled {a.model} for {cfg.describe()} in {time.perf_counter() - t:.1f} s -> {a.output}")
    print(f"input {io.input_shape}, output {io.output_shape}, batch {io.batch}, "
          f"{len(prog.image) * prog.bus_width // 8 / 2**20:.1f} MiB image, weights "
          f"{'resident' if io.resident else 'streamed per layer'}; {len(prog.layers)} layer steps")
    return 0


def cmd_sim(a) -> int:
    from rmsmp.generator.config import AcceleratorConfig
    from rmsmp.generator.program import Program

    from . import open_device
    prog = Program.load(a.program)
    cfg = AcceleratorConfig.from_dict(prog.config)
    if prog.io is None or not prog.io.is_network:
        raise RmsmpError(f"{a.program}: not a whole-network program")
    if a.localize and not a.model:
        raise RmsmpError("--localize compares against golden: give the model with --model")
    if a.images < 1:
        raise RmsmpError(f"--images {a.images}: run at least one image")
    if a.input:
        x = _load_tensor("--input", a.input)
        if not isinstance(x, torch.Tensor):
            raise RmsmpError(f"--input {a.input!r}: holds a {type(x).__name__}, not a tensor of images")
        x = x.unsqueeze(0) if x.dim() == 3 else x
    else:
        x = torch.randn(a.images, *prog.io.input_shape, generator=torch.Generator().manual_seed(a.seed))
    from .quant.layer import as_images
    x = as_images(x, f"--input {a.input!r}" if a.input else "input")     # before the model is built
    if tuple(x.shape[1:]) != tuple(prog.io.input_shape) or x.dim() != 4:
        raise RmsmpError(f"--input {a.input!r}: images of shape {list(x.shape)}; {a.program} takes "
                         f"[N, {', '.join(map(str, prog.io.input_shape))}]")
    dev = open_device("sim", cfg)
    print(f"building/loading the Verilator model of {cfg.describe()} …")
    dev.build()
    dev.load(prog)
    logits = dev.run(x)
    for i, row in enumerate(logits):
        top = torch.topk(row, min(5, row.numel()))
        print(f"image {i}: top-5 " + ", ".join(f"{int(j)}:{float(v):.3f}" for v, j in zip(top.values, top.indices)))
    if a.model:
        from rmsmp.sim import golden

        from .quant import QuantizedModel
        qm = QuantizedModel.load(a.model)
        ref = golden(qm, x)
        ok = torch.equal(logits, ref)
        print(f"simulator vs golden: {'bit-exact' if ok else 'MISMATCH'}")
        if not ok:
            bad = int((logits != ref).any(1).nonzero()[0])
            print(f"first differing image: {bad} of {len(x)}")
            if a.localize:
                from rmsmp.sim import localize
                print("localizing (layer by layer on the simulator) …")
                m = localize(qm, prog, x, device=dev, image=bad)
                print(m if m else "every traced layer matches golden: the difference is in the output "
                                  "read-back or dequantization")
            return 1
    s = dev.stats
    if a.stats:
        from .report import stats_json
        Path(a.stats).write_text(stats_json(s))
    print(dev.layer_table())
    print(f"{s['cycles_per_image']:,.0f} cycles/image, MAC utilization {s['mac_utilization']:.1%}, "
          f"{s['time_per_image_at_clock_s'] * 1e3:.3f} ms/image at {cfg.clock_hz / 1e6:g} MHz, "
          f"{s['sim_cycles_per_s'] / 1e3:.0f} kcycles/s simulated")
    return 0


def cmd_build(a) -> int:
    from rmsmp.boards.build import build_bitstream
    from rmsmp.boards.toolchain import ROUTE_PATIENCE
    from rmsmp.generator.catalog import BOARDS, BoardError, board
    from rmsmp.generator.config import AcceleratorConfig
    from rmsmp.generator.program import Program
    if not a.board:
        raise BoardError(f"give a board: --board <name> (BOARD= with make); supported boards: "
                         f"{', '.join(sorted(BOARDS))}")
    spec = board(a.board)
    cfg = None
    if a.config:
        try:
            cfg = AcceleratorConfig.load(a.config)
        except (OSError, ValueError, TypeError, KeyError) as e:    # JSON and ConfigError are ValueErrors
            raise BoardError(f"bad config {a.config!r}: {e}") from None
    if a.clock_mhz is not None:
        clock = round(a.clock_mhz * 1e6)
        if cfg is not None and cfg.clock_hz != clock:
            raise BoardError(f"--clock-mhz {a.clock_mhz:g} but the config {a.config!r} is for "
                             f"{cfg.clock_hz / 1e6:g} MHz (size it with rmsmp config --clock-mhz)")
        cfg = cfg or AcceleratorConfig.for_board(spec.name, memory=a.memory, clock_hz=clock, flash_boot=a.flash_boot)
    program = Program.load(a.program) if a.program else None
    r = build_bitstream(spec.name, cfg, out_dir=a.output, program=program, synth_opts=a.synth_opts.split(),
                        pnr_opts=a.pnr_opts.split(), memory=a.memory, flash_boot=a.flash_boot,
                        route_patience=ROUTE_PATIENCE if a.route_patience is None else a.route_patience,
                        seeds=a.seeds)
    print(r.markdown())
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers separated by commas, e.g. 1,2,3; got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. 1,2,3")
    return seeds


def cmd_config(a) -> int:
    import json

    from rmsmp.generator.catalog import board
    from rmsmp.generator.config import AcceleratorConfig
    from rmsmp.generator.cost import estimate
    ratio = {k: float(v) for k, v in parse_ratio_arg(a.ratio).items()} if a.ratio else None
    cfg = AcceleratorConfig.for_board(a.board, ratio, memory=a.memory, split_fix=a.split_fix, act_bits=a.act_bits,
                                      lut_fix=a.lut_fix, edge_fraction=a.edge_fraction,
                                      clock_hz=None if a.clock_mhz is None else round(a.clock_mhz * 1e6),
                                      flash_boot=a.flash_boot, acc_bits=a.acc_bits)
    spec = board(a.board)
    est, avail = estimate(cfg, spec.family), spec.core_budget(a.memory, a.flash_boot)
    print(cfg.describe())
    print("estimated core: " + ", ".join(f"{k} {est[k]:,}/{avail[k]:,}" for k in ("LUT", "DSP", "BRAM")))
    if a.output:
        Path(a.output).write_text(json.dumps(cfg.to_dict(), indent=1))
        print(f"wrote {a.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rmsmp", description="RMSMP quantization and FPGA accelerator generator")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize", help="quantize a PyTorch model post-training (RMSMP)")
    q.add_argument("--model", default="resnet18",
                   help="resnet18 | digits | lenet | mobilenet_v2 | resnet8 | mobilenet_v1_vww | module.path:callable")
    q.add_argument("--weights", help="state_dict file (e.g. torchvision resnet18 weights)")
    q.add_argument("--num-classes", type=int)
    q.add_argument("--calib", default="random:32",
                   help="calibration tensor file (torch.save of images or [(images, labels)]), random:N[xCxHxW], "
                        "samples:cifar10[:N] (real images; also cifar100, mnist, fashion_mnist, imagenet) or mnist:N")
    q.add_argument("--method", default="rmsmp", choices=list(METHODS),
                   help="rmsmp (default) | msqe | mxqn | grad, hmq (need a calibration file of (images, labels))")
    q.add_argument("--target-compression", type=float, default=8.0, help="hmq: weight compression vs fp32")
    q.add_argument("--hmq-steps", type=int, default=200, help="hmq: search steps (default 200)")
    q.add_argument("--grad-steps", type=int, default=200,
                   help="grad, hmq: training steps of the learned scales / the fine-tuning (default 200)")
    q.add_argument("--qat-steps", type=int, default=0,
                   help="quantization-aware fine-tuning steps after the method (default 0: post-training only)")
    q.add_argument("--device", default="cpu",
                   help="where grad/hmq/QAT steps train: cpu (default) or cuda (under torchrun: each rank's GPU)")
    q.add_argument("--ratio", help="scheme ratio, e.g. pot4=10/16,fix4=5/16,fix8=1/16 (default)")
    q.add_argument("--act-bits", type=int, default=4)
    q.add_argument("--assign", default="hessian", choices=["hessian", "variance", "random"])
    q.add_argument("--edge-scheme", default="fix8", help="scheme of the first/last layer, or 'none'")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--quiet", action="store_true")
    q.add_argument("-o", "--output", required=True)
    q.set_defaults(func=cmd_quantize)
    c = sub.add_parser("compile", help="compile a quantized model into a program for an accelerator config")
    c.add_argument("model")
    c.add_argument("--config", help="AcceleratorConfig JSON (default: 10 pot4 + 6 fix8 rows x 8 columns)")
    c.add_argument("--input-shape", help="CxHxW (default: the calibration images' shape)")
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--board", help="fit the program in this board's memory (its default backend; e.g. ulx3s-85f: "
                                   "the 32 MB SDRAM): a batch gives up output parts to fit, or is refused")
    c.add_argument("-o", "--output", required=True)
    c.set_defaults(func=cmd_compile)
    s = sub.add_parser("sim", help="run a compiled program on the cycle-accurate simulator")
    s.add_argument("program")
    s.add_argument("--model", help="the QuantizedModel file, to check the result against golden")
    s.add_argument("--input", help="images as a saved tensor [N, C, H, W] (default: random)")
    s.add_argument("--images", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--localize", action="store_true",
                   help="on a mismatch, run the program layer by layer and name the first layer that differs")
    s.add_argument("--stats", help="write the run's stats (cycles, per-layer table) as JSON, for rmsmp report --run")
    s.set_defaults(func=cmd_sim)
    r = sub.add_parser("report", help="a quantized model's layers, schemes and formats (text, or an HTML page)")
    r.add_argument("model")
    r.add_argument("--html", help="write a self-contained HTML page with plots (matplotlib) here")
    r.add_argument("--program", help="with --html: the compiled program (its config and MACs)")
    r.add_argument("--run", help="with --html: a run's stats (rmsmp sim … --stats run.json)")
    r.add_argument("--build", help="with --html: a board build's report.json (make bitstream)")
    r.set_defaults(func=cmd_report)
    b = sub.add_parser("build", help="build a board's bitstream with the open toolchain (yosys, nextpnr)")
    b.add_argument("--board", help="ulx3s-85f | icebreaker")
    b.add_argument("--config", help="AcceleratorConfig JSON (default: AcceleratorConfig.for_board)")
    b.add_argument("--program", help="a compiled program (rmsmp compile) for the board to boot with: written into "
                                     "flash.bin beside the bitstream (with --memory bram: baked into the on-chip RAM)")
    b.add_argument("--flash-boot", action="store_true", default=None,
                   help="build the unit that boots a program from the board's flash (default: with --program; "
                        "the ULX3S always has it)")
    b.add_argument("-o", "--output", help="build directory (default build/<board>)")
    b.add_argument("--memory", choices=("sdram", "spram", "bram"),
                   help="memory backend (default: the board's SDRAM or SPRAM if it has one; block RAM with --program)")
    b.add_argument("--clock-mhz", type=float,
                   help="the design's clock (default: the board's target; the link rate and SDRAM timings follow it)")
    b.add_argument("--synth-opts", default="", help="extra yosys synth_<family> options, e.g. -nowidelut")
    b.add_argument("--pnr-opts", default="",
                   help="extra nextpnr options, e.g. '--router router1' "
                        "(ECP5 default: --placer static --router router2)")
    b.add_argument("--route-patience", type=int, metavar="N",
                   help="stop a build whose router has not reduced its overused wires for N iterations "
                        "(default 20, rmsmp.boards.toolchain.ROUTE_PATIENCE; 0: wait however long it takes)")
    b.add_argument("--seeds", type=_seed_list, metavar="N,N,...",
                   help="nextpnr placement seeds to try in turn until one routes and meets the clock (the netlist "
                        "is synthesized once); e.g. 1,2,3 (default: the board's, rmsmp.generator.catalog)")
    b.set_defaults(func=cmd_build)
    k = sub.add_parser("config", help="size an accelerator for a board (AcceleratorConfig.for_board)")
    k.add_argument("--board", required=True)
    k.add_argument("--ratio", help="scheme ratio, e.g. pot4=10/16,fix4=5/16,fix8=1/16 (default: chosen by the "
                                   "hardware, pot4 rows on LUTs beside fix8 rows on DSPs)")
    k.add_argument("--memory", choices=("sdram", "spram", "bram"), help="memory backend (default: the board's)")
    k.add_argument("--split-fix", action="store_true",
                   help="also try each fixed-point scheme's rows on lanes of its own (more MACs where block "
                        "RAM is the limit; slower for networks with all-fix8 edge layers)")
    k.add_argument("--act-bits", type=int, default=4,
                   help="activation bits of the networks it will run: LUT lanes are built for them (default 4)")
    k.add_argument("--lut-fix", action="store_true",
                   help="with an all-fixed-point --ratio (e.g. fix4=1): fix8 rows on DSPs beside LUT-built lanes "
                        "of the ratio's narrowest scheme (the DSP + LUT fixed-point baseline)")
    k.add_argument("--edge-fraction", type=float, default=0.0,
                   help="share of the network's MACs in all-fix8 edge layers (ResNet-18: 0.065): maximize "
                        "MACs/cycle on that mix instead of the peak")
    k.add_argument("--clock-mhz", type=float, help="the design's clock (default: the board's target clock)")
    k.add_argument("--acc-bits", type=int, help="accumulator width (default: the family's, 25 on ECP5 and 24 on "
                                                "iCE40; the compiler refuses a layer whose sums need more)")
    k.add_argument("--flash-boot", action="store_true", default=None,
                   help="leave room for the unit that boots a program from the board's flash (make bitstream "
                        "PROGRAM=…; default: the board's — the ULX3S has it, the iCEBreaker only when asked)")
    k.add_argument("-o", "--output", help="write the config JSON here")
    k.set_defaults(func=cmd_config)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (ValueError, OSError) as e:       # RmsmpError, CompileError, ConfigError; missing or unwritable files
        msg = " ".join(str(e).split()) if isinstance(e, ValueError) else str(e)
        print(f"rmsmp {a.cmd}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
