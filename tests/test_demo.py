"""`edgetl demo`: the README's first command, run as a newcomer would, with its defaults (QAT included:
on the demo's 90 val images PTQ alone flips 3-5 near-tie images, 2+ of them from right to wrong, and
the --max-drop gate rightly refuses that int8 model)."""
from conftest import run_cli


def test_demo_runs_the_whole_chain_offline_and_prints_its_summary(tmp_path):
    p = run_cli("demo", "--out", tmp_path / "demo", check=True, timeout=900)
    assert "edgetl demo" in p.stdout and "verify: PASS" in p.stdout
    assert p.stdout.count("predict ") == 3 and "int8 on this host:" in p.stdout and "smaller" in p.stdout
    for f in ("best.pt", "curves.png", "bundle/model.int8.onnx", "bundle/bench/host/report.md",
              "bundle/bench/rpi5/report.md", "bundle/bench/host/latency.png"):
        assert (tmp_path / "demo" / f).is_file(), f
