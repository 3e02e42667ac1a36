"""The README's Python API block runs as written (extracted from README.md, so the two cannot drift)."""
import inspect
import re

from conftest import REPO, make_image, make_imagefolder


def _block() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"## Python API\s+```python\n(.*?)```", text, re.S)
    assert m, "README.md has no ```python block under '## Python API'"
    return m.group(1)


def test_readme_python_api_runs_and_its_names_stay_functions(tmp_path, monkeypatch):
    """`edgetl.finetune`, `edgetl.export` and `edgetl.bench` are the functions, before and after their
    stage modules are imported (they used to become the modules after the first call)."""
    make_imagefolder(tmp_path / "photos", classes=("cat", "dog"), n_train=6, n_val=3, size=(64, 56))
    make_image(tmp_path / "frame.jpg", (80, 60), fmt="JPEG")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_block(), str(REPO / "README.md"), "exec"), ns)
    import edgetl
    import edgetl.benchmark  # noqa: F401  (the stage modules, imported: the names must not change)
    import edgetl.exporter  # noqa: F401
    import edgetl.training  # noqa: F401

    for name in ("finetune", "export", "bench"):
        assert inspect.isfunction(getattr(edgetl, name)), (name, getattr(edgetl, name))
    assert ns["report"].variants["int8"]["latency"]["p50_ms"] > 0
    assert (tmp_path / "models").is_dir() and ns["bundle"].int8_model is not None
    assert ns["pred"].label in ("cat", "dog") and set(ns["ms"]) == {"decode", "resize", "crop", "normalize", "run",
                                                                     "postprocess"}
