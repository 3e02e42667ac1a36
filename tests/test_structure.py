"""The shape of the code base: the sides, the stages pointing down, no import circle, no module doing four jobs.

Read from the source with ``ast`` (every import, function-level ones included). Importing ``a.b.c`` runs
``a/__init__`` and ``a/b/__init__`` first, so an import is an arrow to the module it names *and* to every
package above it that the importer is not itself inside: a package ``__init__`` that imports its
submodules is part of the graph, as Python runs it.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "edgetl"
HEAVY = ("torch", "torchvision", "onnx", "onnxslim", "filelock", "timm", "matplotlib")


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PKG.rglob("*.py")}


MODS = _modules()


def _targets(m: str, p: Path, node) -> list[str]:
    """The modules an import statement names (a name imported from a package counts when it is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        parts = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODS]


def _parents_run(importer: str, target: str) -> list[str]:
    """``target`` and the packages above it that importing it runs (not those the importer is inside)."""
    parts = target.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [c for c in chain if not (importer == c or importer.startswith(c + "."))]


def _graph() -> dict[str, set[str]]:
    """module -> modules (of edgetl, and the heavy third-party ones) whose code its imports run."""
    edges = {m: set() for m in MODS}
    for m, p in MODS.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                for t in _targets(m, p, n):
                    for c in _parents_run(m, t):
                        if c in MODS or c.split(".")[0] in HEAVY:
                            edges[m].add(c if c in MODS else c.split(".")[0])
    return edges


EDGES = _graph()


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for v in EDGES.get(todo.pop(), ()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


def test_the_graph_reader_sees_package_inits_and_function_level_imports():
    # config reads the target registry; bench's orchestrate imports its measurements inside the package
    assert "edgetl.targets" in EDGES["edgetl.config"]
    assert "edgetl.benchmark.accuracy" in EDGES["edgetl.benchmark.orchestrate"]
    assert "edgetl.benchmark" not in EDGES["edgetl.benchmark.orchestrate"]  # its own package: already running
    assert "torch" in EDGES["edgetl.zoo.checkpoint"]  # (imported inside a function)
    assert "edgetl.runtime" in EDGES["edgetl.benchmark.orchestrate"]


def test_no_import_circle_transitively_inits_included():
    circles = sorted(m for m in MODS if m in _reach(m))
    assert not circles, circles


def test_the_device_side_imports_nothing_else_of_edgetl():
    """edgetl.runtime is what a robot runs: it reaches no other edgetl module (edgetl/__init__ is lazy and
    imports none) and no torch, torchvision, onnx or other training-side package."""
    device = [m for m in MODS if m == "edgetl.runtime" or m.startswith("edgetl.runtime.")]
    assert len(device) >= 8
    for m in device:
        outside = {t for t in _reach(m) if not t.startswith("edgetl.runtime")} - {"edgetl"}
        assert not outside, f"{m} reaches {sorted(outside)}"
    assert not {t for t in EDGES["edgetl"] if t.startswith("edgetl")}, "edgetl/__init__ must import lazily"


# each stage (a folder) and what it must never reach, even through another module
STAGES = {
    "edgetl.data": {"edgetl.zoo", "edgetl.training", "edgetl.exporter", "edgetl.quantization", "edgetl.benchmark"},
    "edgetl.zoo": {"edgetl.data", "edgetl.training", "edgetl.exporter", "edgetl.quantization", "edgetl.benchmark"},
    "edgetl.training": {"edgetl.exporter", "edgetl.quantization", "edgetl.benchmark"},
    "edgetl.exporter": {"edgetl.training", "edgetl.benchmark"},
    "edgetl.quantization": {"edgetl.data", "edgetl.training", "edgetl.exporter", "edgetl.benchmark"},
    "edgetl.benchmark": {"edgetl.training", "edgetl.exporter", "edgetl.quantization"},
    "edgetl.devices": {"edgetl.training", "edgetl.exporter", "edgetl.quantization", "edgetl.benchmark", "edgetl.zoo"},
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_point_down_never_back_transitively(stage):
    members = [m for m in MODS if m == stage or m.startswith(stage + ".")]
    assert members, stage
    for m in members:
        bad = {t for t in _reach(m) if any(t == s or t.startswith(s + ".") for s in STAGES[stage])}
        assert not bad, f"{m} reaches {sorted(bad)}"


def test_the_sides_are_folders_and_no_package_is_named_like_a_public_function():
    import edgetl

    for folder in ("runtime", "data", "zoo", "training", "exporter", "quantization", "benchmark", "cli", "report",
                   "targets", "devices"):
        assert (PKG / folder / "__init__.py").is_file(), folder
    for public in ("finetune", "export", "bench", "sweep"):
        assert f"edgetl.{public}" not in MODS, public
        assert callable(getattr(edgetl, public))


def _defs():
    for p in PKG.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                body = n.body[1:] if (len(n.body) > 1 and isinstance(n.body[0], ast.Expr)
                                      and isinstance(n.body[0].value, ast.Constant)) else n.body
                yield p, n, n.end_lineno - body[0].lineno + 1


def test_no_file_class_or_function_does_four_jobs():
    """~500 lines a file, ~200 a class, ~80 a function (typer commands take their options as parameters,
    so the command modules are held to the file size only), at most 6 positional parameters."""
    files = [(str(p.relative_to(PKG)), n) for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500]
    classes = [(p.name, n.name, size) for p, n, size in _defs() if isinstance(n, ast.ClassDef) and size > 200]
    funcs = [(p.name, n.name, size) for p, n, size in _defs()
             if not isinstance(n, ast.ClassDef) and size > 80 and p.parent.name != "cli"]
    wide = [(p.name, n.name) for p, n, _ in _defs() if not isinstance(n, ast.ClassDef) and p.parent.name != "cli"
            and len([a for a in n.args.posonlyargs + n.args.args if a.arg not in ("self", "cls")]) > 6]
    assert not (files or classes or funcs or wide), {"files > 500": files, "classes > 200": classes,
                                                      "functions > 80": funcs, "> 6 positional": wide}


def test_what_a_device_runs_imports_no_training_side_package():
    """What a device runs (the CLI itself, bench, the remote runner, the runtime, sweep's remote half) with the
    heavy packages made unimportable: it must load, and load none of them."""
    code = ("import sys\n"
            f"for m in {HEAVY!r}: sys.modules[m] = None\n"
            "import edgetl.cli, edgetl.benchmark.orchestrate, edgetl.benchmark.remote, edgetl.runtime, edgetl.sweeps\n"
            "import edgetl.devices.emulated, edgetl.devices.verify, edgetl.devices.install, edgetl.devices.probe\n"
            "from edgetl.runtime import Predictor, verify_bundle\n"
            "print('ok')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert p.returncode == 0 and "ok" in p.stdout, p.stdout + p.stderr


def test_the_runtime_alone_loads_no_other_edgetl_module():
    code = ("import sys\n"
            f"for m in {HEAVY!r}: sys.modules[m] = None\n"
            "import edgetl.runtime, edgetl.runtime.timing, edgetl.runtime.cpu\n"
            "print(sorted(m for m in sys.modules if m.startswith('edgetl') and m != 'edgetl'"
            " and not m.startswith('edgetl.runtime')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_the_readme_layout_names_every_folder():
    text = (PKG.parent / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("## Commands")]
    folders = sorted(p.parent.name for p in PKG.glob("*/__init__.py"))
    missing = [f for f in folders if f"  {f}/" not in layout]
    assert folders and not missing, missing
