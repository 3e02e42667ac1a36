"""The shape of the code base: stages point down, never back, and no module or function does five jobs.

Read from the source with ``ast`` (every import, function-level ones included), so a new arrow from a
later stage to an earlier one, or an import circle, fails here before it lands.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "edgetl"


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PKG.rglob("*.py")}


def _imports() -> dict[str, set[str]]:
    mods = _modules()
    edges = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for n in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in n.names]
            edges[m] |= {t for t in names if t != m and (t in mods or t.split(".")[0] in ("torch", "torchvision"))}
    return edges


def _reach(edges, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for v in edges.get(todo.pop(), ()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


def test_no_import_circle():
    edges = {m: {t for t in e if t.startswith("edgetl")} for m, e in _imports().items() if m != "edgetl"}
    circles = [m for m in edges if m in _reach(edges, m)]
    assert not circles, circles


@pytest.mark.parametrize("stage,never", [
    ("edgetl.runtime", {"edgetl.training", "edgetl.exporter", "edgetl.zoo", "edgetl.data", "torch", "torchvision"}),
    ("edgetl.benchmark", {"edgetl.training", "edgetl.features"}),
    ("edgetl.exporter", {"edgetl.training", "edgetl.features"}),
    ("edgetl.quantize", {"edgetl.training", "edgetl.exporter", "edgetl.data", "torch"}),
    ("edgetl.timing", {"edgetl.training", "edgetl.data", "edgetl.zoo", "torch"}),
    ("edgetl.scenarios", {"edgetl.training", "edgetl.data", "edgetl.zoo", "edgetl.exporter", "torch"}),
])
def test_stages_point_down_never_back(stage, never):
    direct = _imports()[stage]
    assert not direct & never, f"{stage} imports {sorted(direct & never)}"


def _functions():
    for p in PKG.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = n.body[1:] if (len(n.body) > 1 and isinstance(n.body[0], ast.Expr)
                                      and isinstance(n.body[0].value, ast.Constant)) else n.body
                positional = [a.arg for a in n.args.posonlyargs + n.args.args if a.arg not in ("self", "cls")]
                yield p, n, n.end_lineno - body[0].lineno + 1, positional


def test_no_function_needs_a_screenful_or_a_dozen_positional_parameters():
    long = [(p.name, n.name, size) for p, n, size, _ in _functions() if size > 80]
    # typer commands take their options as parameters by design: the rule is for library code
    wide = [(p.name, n.name, len(pos)) for p, n, _, pos in _functions() if len(pos) > 6 and p.name != "cli.py"]
    assert not long and not wide, {"over 80 lines": long, "over 6 positional parameters": wide}


def test_fine_tuning_module_stays_readable():
    assert len((PKG / "training.py").read_text().splitlines()) <= 460


def test_the_device_side_imports_nothing_of_the_training_side():
    """What a device runs (the CLI itself, bench, the remote runner, the runtime) imports no torch,
    torchvision, onnx or filelock, even transitively: the base install has none of them."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import edgetl.cli, edgetl.benchmark, edgetl.remote, edgetl.runtime, edgetl.sweeps\n"
            "bad = sorted(m for m in ('torch', 'torchvision', 'onnx', 'filelock', 'timm') if m in sys.modules)\n"
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent)
    assert p.returncode == 0, p.stdout + p.stderr
