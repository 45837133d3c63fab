"""The layers' floors (docs/architecture.md), read from the source: every ``import`` and
``from ... import`` statement (module level or inside a function) and every
``importlib.import_module("...")`` with a literal name counts as an import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "sgdlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The sgdlab modules ``path`` imports: ``from a.b import c`` is ``a.b.c`` when that is a
    module, else ``a.b``."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        if name == "sgdlab" or name.startswith("sgdlab."):
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module"
              and node.args and isinstance(node.args[0], ast.JoinedStr)):
            # f"sgdlab.pkg.{name}": an import of the package's modules, all of them
            head = node.args[0].values[0]
            if isinstance(head, ast.Constant) and str(head.value).startswith("sgdlab."):
                prefix = str(head.value)
                found.update(m for m in modules if m.startswith(prefix) and m != prefix)
    found.discard(here)
    return found


def graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


GRAPH = graph()


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def offenders(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if _in(m, layer)
                  for t in targets if any(_in(t, f) for f in forbidden))


@pytest.mark.parametrize("layer", ["sgdlab.probes", "sgdlab.curvature", "sgdlab.store",
                                   "sgdlab.report", "sgdlab.landscape", "sgdlab.dynamics"])
def test_lower_layers_never_import_the_trainer(layer):
    assert offenders(layer, ("sgdlab.train",)) == []


def test_report_reads_the_store_only():
    assert offenders("sgdlab.report", ("sgdlab.train", "sgdlab.sweep",
                                       "sgdlab.experiments")) == []


@pytest.mark.parametrize("layer", ["sgdlab.curvature", "sgdlab.landscape", "sgdlab.dynamics"])
def test_numerical_layers_stand_alone(layer):
    allowed = {"sgdlab.errors", "sgdlab.curvature"} | {layer}
    bad = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() if _in(m, layer)
                 for t in targets if not any(_in(t, a) for a in allowed) and t != "sgdlab")
    assert bad == []


def test_analyses_of_stored_runs_are_imported_only_from_above():
    """sgdlab.analysis rebuilds runs (train) and redraws reports (report): nothing below it
    may import it; only the command line and the experiments sit above it."""
    above = ("sgdlab.cli", "sgdlab.analysis", "sgdlab.experiments")
    bad = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                 if _in(t, "sgdlab.analysis") and not any(_in(m, a) for a in above))
    assert bad == []


def test_config_and_models_do_not_import_each_other_in_a_circle():
    assert offenders("sgdlab.config", ("sgdlab.models", "sgdlab.data", "sgdlab.probes")) == []


def test_no_import_cycles():
    """Tarjan's strongly connected components over the module graph: none has two modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_local_and_dynamic_imports(tmp_path):
    """A test that cannot fail is a defect: the parser must find each kind of import."""
    src = tmp_path / "sgdlab" / "probes"
    src.mkdir(parents=True)
    path = src / "x.py"
    path.write_text("import importlib\n"
                    "def f():\n    from sgdlab.train.loop import train\n"
                    "    importlib.import_module('sgdlab.sweep')\n"
                    "from . import base\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path / "sgdlab"
    try:
        found = imports_of(path, {"sgdlab.probes.base", "sgdlab.train.loop"})
    finally:
        ROOT = saved
    assert found == {"sgdlab.train.loop", "sgdlab.sweep", "sgdlab.probes.base"}


def test_version_and_curated_names_without_importing_torch():
    import importlib.metadata
    import subprocess
    import sys

    code = ("import sys, sgdlab; print(sgdlab.__version__); print('torch' in sys.modules); "
            "print(callable(sgdlab.hessian_eigs), callable(sgdlab.train), "
            "sgdlab.Store.__name__, callable(sgdlab.run_experiment))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == importlib.metadata.version("sgdlab")
    assert out[1] == "False"  # importing sgdlab alone stays light
    assert out[2] == "True True Store True"


def test_names_used_before_the_options_object_keep_working():
    import torch

    from sgdlab.curvature import curvature_operator, hessian_eigs, hessian_trace
    from sgdlab.testing import dense_hessian, eigh, make_case

    c = make_case("mlp_ce")
    top = eigh(dense_hessian(c.model, c.loss_fn, c.data))[0][:2]
    res = hessian_eigs(c.model, c.loss_fn, c.data, k=2, tol=1e-10, matrix="hessian",
                       chunk_size=7, memory_budget=1 << 30, block_size=2)
    assert torch.allclose(res.values, top, rtol=1e-8)
    op = curvature_operator(c.model, c.loss_fn, c.data, matrix="ggn", chunk_size=5)
    assert op.options.chunk_size == 5
    assert hessian_trace(c.model, c.loss_fn, c.data, block_size=4, max_products=64).products
