"""The package layering of docs/architecture.md, asserted from the imports.

Every ``import`` of an rmsmp module — at module level or inside a function — must go to
its own layer or one the table allows, and the module graph has no cycles.  A fresh
interpreter importing a lower layer must not load a higher one (an import of
``rmsmp.host.quant`` runs ``rmsmp/host/__init__.py``, which therefore loads lazily).
"""
import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: most specific prefix first; each layer may import the layers listed (and itself)
LAYERS = [
    ("rmsmp.sim.benches", "testbenches"),      # cocotb benches: test code, may use anything
    ("rmsmp.host.quant", "quant"),
    ("rmsmp.host.errors", "quant"),
    ("rmsmp.host.models", "quant"),
    ("rmsmp.host.wheels", "quant"),
    ("rmsmp.host.datasets", "quant"),
    ("rmsmp.host", "host"),
    ("rmsmp.rtl", "rtl"),
    ("rmsmp.generator", "generator"),
    ("rmsmp.sim", "sim"),
    ("rmsmp.boards", "boards"),
]
ALLOWED = {
    "quant": set(),
    "rtl": set(),
    "generator": {"quant", "rtl"},
    "sim": {"generator", "quant", "rtl"},
    "boards": {"generator", "quant", "rtl"},
    "host": {"boards", "sim", "generator", "quant", "rtl"},
    "testbenches": {"host", "boards", "sim", "generator", "quant", "rtl"},
}


#: ``rmsmp/host/__init__.py`` runs whenever the quantization core is imported; it is a lazy
#: facade (its names load on first use), imports no rmsmp module itself, and so may be
#: passed through from any layer
FACADE = "rmsmp.host"


def layer(module: str) -> str:
    if module == FACADE:
        return "facade"
    return next(name for prefix, name in LAYERS if module == prefix or module.startswith(prefix + "."))


def _modules() -> dict:
    """module name -> source path, from pyproject's package-dir map."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    out = {}
    for pkg, d in cfg["package-dir"].items():
        for f in (ROOT / d).glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def _ancestors(module: str) -> list:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(name: str, path: Path, modules: dict) -> set:
    """The rmsmp modules ``name`` imports (a name from a package that is not a module of
    its own counts as the package), with the packages Python initialises on the way (the
    ancestors of a target that are not ``name``'s own)."""
    pkg = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            out |= {p for p in [*_ancestors(t), t] if p in modules and p != name and p not in _ancestors(name)}
    return out


MODULES = _modules()
GRAPH = {m: _imports(m, p, MODULES) for m, p in MODULES.items()}


def test_every_import_follows_the_layer_table():
    bad = [f"{m} ({layer(m)}) imports {d} ({layer(d)})" for m, deps in sorted(GRAPH.items()) for d in sorted(deps)
           if layer(d) not in (layer(m), "facade") and layer(d) not in ALLOWED[layer(m)]]
    assert not bad, "\n".join(bad)
    assert not GRAPH[FACADE], f"the lazy facade {FACADE} imports {GRAPH[FACADE]} at load time"


def test_no_import_cycles_between_modules():
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):                       # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_table_detects_a_violation():
    assert layer("rmsmp.host.quant.qmodel") == "quant" and layer("rmsmp.host.cli") == "host"
    assert "sim" not in ALLOWED["generator"] and "generator" not in ALLOWED["rtl"]
    assert GRAPH["rmsmp.host.api"] & {"rmsmp.generator.compiler"}    # the parser sees imports


@pytest.mark.parametrize("module, forbidden", [
    ("rmsmp.host.quant", ("rmsmp.generator", "rmsmp.sim", "rmsmp.boards", "rmsmp.rtl", "amaranth")),
    ("rmsmp.rtl.core", ("rmsmp.host", "rmsmp.generator", "rmsmp.sim", "rmsmp.boards", "torch")),
    ("rmsmp.generator.compiler", ("rmsmp.sim", "rmsmp.boards", "rmsmp.host.api", "rmsmp.host.cli")),
    ("rmsmp.sim.golden", ("rmsmp.generator", "rmsmp.boards", "rmsmp.host.api")),
])
def test_a_lower_layer_loads_no_higher_one(module, forbidden):
    code = (f"import sys, {module}; bad = sorted(m for m in sys.modules if m.startswith({forbidden!r})); "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
