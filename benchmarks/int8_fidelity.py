"""int8 that is small, fast and faithful: onnxruntime's defaults vs edgetl before issue #18 vs PTQ vs QAT.

    python benchmarks/int8_fidelity.py [--backbones efficientnet_lite0,...] [--datasets DIR ...]
                                       [--strategies linear,full] [--no-qat] [--before REV] [--json PATH]

For every backbone with real offline weights, dataset and fine-tuning strategy (edgetl's default
settings): fine-tune, export fp32, then four int8 variants of the same model, scored on the whole
val split and timed together in interleaved rounds in one process (batch 1, 2 threads):

  ort-defaults  quantize_static with its defaults (the onnxruntime tutorial recipe)
  before        `edgetl export --int8` as it was before issue #18 (git revision --before, default
                f3e1acd, run from a worktree on the same checkpoint)
  ptq           `edgetl export --int8` now (PTQ only: default settings)
  qat           `edgetl export --int8 --qat` (default settings; QAT runs only where PTQ missed 99%)

Columns: top-1, agreement with fp32, file size and p50 as a ratio to fp32, the export's wall time.
Goals (#18): all layers int8 (file <= 0.30x), agreement >= 99% (>= 99.5% where one image is < 0.5%),
top-1 drop <= 0.5 point (never more than one image), int8/fp32 p50 <= 0.75 for Lite0; PTQ export in
under 2 minutes for Lite0.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, SHARED, int8_figures, ort_defaults, save  # noqa: E402

THREADS = 2
DEMO = ROOT / "edgetl" / "demo_data" / "trashnet3"


def _before(run: Path, out: Path, tree: Path) -> float:
    """The old exporter, from a worktree of the revision before #18, on the same run."""
    code = (f"import sys; sys.path.insert(0, {str(tree)!r})\n"
            "import logging; logging.getLogger().setLevel(logging.ERROR)\n"
            "from edgetl.export import ExportConfig, export\n"
            f"export({str(run)!r}, ExportConfig(int8=True, out={str(out)!r}), force=True)")
    t = time.time()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    return time.time() - t


def one(backbone: str, data: Path, strategy: str, work: Path, tree: Path | None, qat: bool) -> dict:
    from edgetl.config import ExportConfig, FinetuneConfig
    from edgetl.data import ImageCache, load_imagefolder
    from edgetl.errors import ArtifactError
    from edgetl.exporter import export
    from edgetl.runtime.preprocess import Preprocess
    from edgetl.quantization.recipes import logits
    from edgetl.runtime.timing import interleaved_latency
    from edgetl.training import finetune

    t0 = time.time()
    kw = dict(epochs=30, lr=3e-3) if Path(data).resolve() == DEMO.resolve() else {}  # the demo's own settings (edgetl demo)
    run = finetune(FinetuneConfig(data=data, backbone=backbone, strategy=strategy, out=work / "run", **kw), force=True)
    ft_s = time.time() - t0
    row = {"backbone": backbone, "dataset": data.name, "strategy": strategy, "best_val": run.best_val_acc,
           "finetune_s": round(ft_s, 1)}
    t = time.time()
    try:
        ptq = export(run.out, ExportConfig(int8=True, out=work / "ptq"), force=True)
    except ArtifactError as e:  # the --max-drop gate refused every PTQ variant: that is a result too
        row["ptq_refused"] = str(e)
        ptq = export(run.out, ExportConfig(out=work / "ptq"), force=True)  # fp32 only: the reference
    row["ptq_export_s"] = round(time.time() - t, 1)
    pp = Preprocess.from_dict(json.loads((ptq.path / "bundle.json").read_text())["preprocess"])
    split = load_imagefolder(data)
    x = pp.normalize(ImageCache().frames(split.val, pp))
    y = np.array([s.label for s in split.val])
    fp32 = ptq.model
    ref = logits(fp32, x, THREADS)
    row.update(val_images=len(y), top1_fp32=float(np.mean(ref.argmax(1) == y)))
    models = {"ort-defaults": work / "ort_defaults.onnx"} | ({"ptq": ptq.int8_model} if ptq.int8_model else {})
    from edgetl.data import stratified_sample

    calib = pp.normalize(ImageCache().frames(stratified_sample(split.train, 200), pp))
    ort_defaults(fp32, models["ort-defaults"], calib)
    if tree is not None and backbone == "efficientnet_lite0":
        try:
            row["before_export_s"] = round(_before(run.out, work / "before", tree), 1)
            models["before"] = work / "before" / "model.int8.onnx"
        except RuntimeError as e:
            row["before_error"] = str(e)[-300:]
    row["ptq_method"] = ptq.quantization["method"] if ptq.quantization else "refused: " + row["ptq_refused"]
    if qat:
        t = time.time()
        q = export(run.out, ExportConfig(int8=True, qat=True, out=work / "qat"), force=True)
        row["qat_export_s"] = round(time.time() - t, 1)
        models["qat"] = q.int8_model
        info = q.quantization.get("qat") or {}
        row["qat_info"] = {"method": q.quantization["method"], "skipped": info.get("skipped"), "dropped": info.get("dropped"),
                      "seconds": info.get("seconds"), "history": [h.get("top1_agreement") for h in info.get("history", [])]}
    for k, m in models.items():
        row[k] = int8_figures(m, x, y, ref, fp32.stat().st_size, THREADS) | {"file": str(m)}
    names = list(models)
    ms = interleaved_latency([fp32] + [models[k] for k in names], x[:1], rounds=15, threads=THREADS, budget_s=0.5)
    row["fp32_p50_ms"] = ms[0]
    for k, m in zip(names, ms[1:]):
        row[k]["p50_ms"], row[k]["p50_ratio"] = m, m / ms[0]
    row["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({k: row[k] for k in ("backbone", "dataset", "strategy", "val_images", "top1_fp32")}),
          {k: (round(row[k]["agreement"], 4), round(row[k]["size_ratio"], 3), round(row[k]["p50_ratio"], 2))
           for k in names}, f"ptq {row['ptq_export_s']} s", f"[{row['seconds']} s]", flush=True)
    return row


def main(argv=None) -> dict:
    from edgetl.runtime.cpu import host_isa

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    ap.add_argument("--datasets", nargs="*", type=Path,
                    default=[SHARED / d for d in ("hymenoptera", "trashnet", "vehicles")] + [DEMO])
    ap.add_argument("--strategies", default="linear,full")
    ap.add_argument("--full-backbones", default="efficientnet_lite0", help="backbones that also run --strategy full")
    ap.add_argument("--no-qat", action="store_true")
    ap.add_argument("--before", default="f3e1acd", help="git revision of edgetl before issue #18 ('' to skip)")
    ap.add_argument("--json", type=Path, default=RESULTS / "int8_fidelity.json")
    a = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    doc = json.loads(a.json.read_text()) if a.json.is_file() else {"rows": []}
    doc.update({"benchmark": "int8_fidelity", "date": time.strftime("%Y-%m-%d"), "host": host_isa(),
                "machine": platform.machine(), "threads": THREADS, "timing": "interleaved rounds, 15 per model"})
    with tempfile.TemporaryDirectory() as tmp:
        tree = None
        if a.before:
            tree = Path(tmp) / "before"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), a.before],
                           check=True, capture_output=True)
        try:
            for b in a.backbones.split(","):
                for strategy in a.strategies.split(","):
                    if strategy == "full" and b not in a.full_backbones.split(","):
                        continue
                    for d in a.datasets:
                        work = Path(tmp) / f"{b}-{d.name}-{strategy}"
                        row = one(b, d, strategy, work, tree, not a.no_qat)
                        key = (b, d.name, strategy)
                        doc["rows"] = [r for r in doc["rows"] if (r["backbone"], r["dataset"], r["strategy"]) != key]
                        doc["rows"].append(row)
                        save(a.json, doc)  # after every row: a crash keeps what was measured
        finally:
            if tree is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    return doc


if __name__ == "__main__":
    main()
