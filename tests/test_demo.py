"""`edgetl demo`: the README's first command, run as a newcomer would, with its defaults. The whole demo is
a few minutes on 2 cores, so it is `slow` (python -m pytest -m slow, which CI runs on every change); its
parts are tested one by one in the default suite, and the promise check below is tested on its own."""
import json
import re

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_demo_runs_the_whole_chain_offline_and_prints_its_summary(tmp_path):
    p = run_cli("demo", "--out", tmp_path / "demo", check=True, timeout=900)
    out = " ".join(p.stdout.split())  # (rich wraps long lines)
    assert "edgetl demo" in out and "verify: PASS" in out
    # the three int8 checks, each answered yes on the built-in data with the default settings
    promise = re.search(r"int8 on this host:.*?agreeing on [\d.]+% of the val photos \(\S+: >= 99%\)", out)
    assert promise and promise.group(0).count("(yes:") == 3 and "(no:" not in promise.group(0), promise
    # every predicted photo beside its true class, right or wrong marked
    preds = re.findall(r"predict (\w+)/\S+: (\S+) \([\d.]+\); true class (\S+): (right|wrong)", out)
    assert len(preds) >= 2 and all(folder == truth for folder, _, truth, _ in preds)
    assert all((label == truth) == (mark == "right") for _, label, truth, mark in preds)
    assert re.search(r"time: fine-tune \d+ s, export \d+ s, bench \d+ s, predict \d+ s, verify \d+ s; total \d+ s", out)
    for f in ("best.pt", "curves.png", "bundle/model.int8.onnx", "bundle/bench/host/report.md",
              "bundle/bench/rpi5/report.md", "bundle/bench/host/latency.png"):
        assert (tmp_path / "demo" / f).is_file(), f
    q = json.loads((tmp_path / "demo" / "bundle" / "export.json").read_text())["quantization"]
    assert q["parity"]["agreement_met"] and q["parity"]["n"] >= 200  # judged on at least 200 val photos
    assert q["parity"]["drop_points"] <= q["parity"]["max_drop_effective"] + 1e-9


def test_the_promise_check_reads_the_host_bench():
    """promise(): >= 3.5x smaller, no slower than fp32, >= 99% agreement, each judged from the host bench."""
    from types import SimpleNamespace

    from edgetl.demo import promise

    def host(mb, p50, agree):
        return SimpleNamespace(variants={"fp32": {"size_mb": 13.47, "latency": {"p50_ms": 6.85}},
                                         "int8": {"size_mb": mb, "latency": {"p50_ms": p50}, "agreement": agree}})

    p = promise(host(3.80, 5.20, 0.978))
    assert p["met"] == {"size": True, "speed": True, "agreement": False}
    assert abs(p["smaller"] - 13.47 / 3.80) < 1e-9 and abs(p["speed"] - 5.20 / 6.85) < 1e-9
    assert promise(host(4.0, 7.0, 0.99))["met"] == {"size": False, "speed": False, "agreement": True}
    assert promise(host(3.8, 5.0, None))["met"]["agreement"] is False
