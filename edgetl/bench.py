"""Latency, memory, size and accuracy parity a team can put in its design review. No torch needed.

    from edgetl.bench import BenchConfig, bench
    report = bench("models/run/bundle", BenchConfig(target="rpi5", data="photos/"))
    report.variants["int8"]["latency"]["p90_ms"], report.verdict

Per variant (fp32, int8, and the PyTorch eager reference when torch and the checkpoint are
here): session creation time, warm-up, then timed runs until both ``min_runs`` and ``min_time``
are met -> p50/p90/p99, mean, std, CV, throughput; peak RSS measured in a fresh subprocess; file
size. Scenarios after MLPerf Inference (edge): single-stream (batch 1, p90 vs the deadline),
multi-stream (``streams`` frames per tick vs the frame deadline), offline (best throughput over
batch sizes). Accuracy on a labelled ImageFolder, or on the bundle's parity.npz without data.
Writes bench.json (schema ``edgetl/schemas/bench.schema.json``), report.md and PNG plots.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from ._config import coerce_enums, to_dict
from ._io import write_json
from ._progress import SILENT, Progress
from .bundle import read_manifest, verify_files
from .errors import ConfigError, DataError, RuntimeInputError
from .runtime import ort_session
from .targets import Target, get_target

BENCH_SCHEMA_VERSION = 1


class Scenario(str, enum.Enum):
    single_stream = "single-stream"
    multi_stream = "multi-stream"
    offline = "offline"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    target: str = "host"
    data: Path | None = None
    scenario: Scenario | None = None  # default: multi-stream when the target has >1 stream, else single-stream
    threads: int | None = None  # default: the target's
    providers: tuple[str, ...] | None = None  # default: the target's
    min_runs: int = 50
    min_time: float = 2.0
    warmup: int = 10
    max_images: int = 500
    out: Path | None = None
    rss: bool = True
    torch_reference: bool = True

    def __post_init__(self):
        coerce_enums(self, {"scenario": Scenario})
        if self.min_runs < 1 or self.min_time < 0 or self.warmup < 0:
            raise ConfigError("--min-runs must be >= 1, --min-time and warm-up >= 0")
        for name in ("data", "out"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        get_target(self.target)  # unknown target -> clear error now


@dataclasses.dataclass
class BenchReport:
    path: Path
    target: str
    scenario: str
    machine: dict
    variants: dict
    accuracy: dict
    verdict: str
    data: dict = dataclasses.field(default_factory=dict)


def machine_info() -> dict:
    import onnxruntime as ort

    from .targets import host_isa, host_preset

    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = host_isa()
    return {"cpu": model, "cores": os.cpu_count(), "machine": platform.machine(), "os": platform.platform(),
            "isa": {"avx2": isa["avx2"], "vnni": isa["vnni"], "dotprod": isa["dotprod"]},
            "int8_preset_here": host_preset(), "onnxruntime": ort.__version__,
            "providers_available": ort.get_available_providers(), "python": platform.python_version(),
            "edgetl": __version__}


def time_calls(fn, *, warmup: int, min_runs: int, min_time: float) -> list[float]:
    """Warm up, then call until both ``min_runs`` calls and ``min_time`` seconds are done; ms per call."""
    for _ in range(warmup):
        fn()
    ts: list[float] = []
    t_end = time.perf_counter() + min_time
    while len(ts) < min_runs or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return ts


def latency_stats(ts: list[float], batch: int) -> dict:
    a = np.asarray(ts)
    mean = float(a.mean())
    return {"runs": int(a.size), "batch": batch, "p50_ms": float(np.percentile(a, 50)),
            "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": mean,
            "std_ms": float(a.std()), "cv": float(a.std() / mean) if mean else 0.0,
            "throughput_ips": float(batch * 1e3 / mean) if mean else 0.0}


def _peak_rss_mb(model: Path, providers, threads: int, batch: np.ndarray) -> float | None:
    """Peak RSS of a fresh process that loads ``model`` and runs ``batch`` a few times."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as f:
        np.save(f, batch)
    code = ("import json,resource,sys,numpy as np,onnxruntime as ort\n"
            "so=ort.SessionOptions(); so.log_severity_level=3\n"
            f"so.intra_op_num_threads={int(threads)}\n"
            f"s=ort.InferenceSession({str(model)!r},so,providers={list(providers)!r})\n"
            f"x=np.load({f.name!r}); n=s.get_inputs()[0].name\n"
            "[s.run(None,{n:x}) for _ in range(5)]\n"
            # VmHWM belongs to this process's own address space (new at exec); ru_maxrss is not: Linux
            # carries it over from a fat parent through fork+exec (a 4 GB trainer reported 4 GB here)
            "hwm=[int(l.split()[1])/1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')] "
            "if sys.platform.startswith('linux') else []\n"
            "r=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(hwm[0] if hwm else r/(1048576 if sys.platform=='darwin' else 1024))")
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        return float(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    finally:
        os.unlink(f.name)


def _resolve(model: Path) -> tuple[Path | None, dict[str, Path], object]:
    """(bundle dir or None, variant -> model file, manifest or None) for RUN | BUNDLE | MODEL.onnx."""
    model = Path(model)
    if model.is_dir() and not (model / "bundle.json").is_file() and (model / "bundle" / "bundle.json").is_file():
        model = model / "bundle"
    if model.is_dir():
        m = read_manifest(model)
        verify_files(model, m)
        return model, {v: model / f for v, f in m.variants.items()}, m
    if model.is_file() and model.suffix == ".onnx":
        return None, {"int8" if model.name.endswith(".int8.onnx") else "fp32": model}, None
    raise DataError(f"nothing to bench at {model}: pass a run folder, a bundle folder or a .onnx file")


def _providers(cfg: BenchConfig, target: Target) -> tuple[list[str], list[str]]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if cfg.providers:  # asked for explicitly: it must be here
        missing = [p for p in cfg.providers if p not in available]
        if missing:
            raise ConfigError(f"execution provider(s) {', '.join(missing)} are not installed here (available: "
                              f"{', '.join(available)}): pip install onnxruntime-gpu for CUDA/TensorRT, or drop --providers")
        return list(cfg.providers), []
    wanted = list(target.providers)  # a target's list is a fallback order: skip what is missing, say so
    use = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
    return use, [p for p in wanted if p not in available]


def bench(model: str | Path, cfg: BenchConfig | None = None, *, progress: Progress | None = None) -> BenchReport:
    """Benchmark a run / bundle / .onnx for a target; see the module docstring."""
    from .runtime import Predictor

    cfg = cfg or BenchConfig()
    progress = progress or SILENT
    target = get_target(cfg.target)
    scenario = cfg.scenario or (Scenario.multi_stream if target.streams > 1 else Scenario.single_stream)
    bundle_dir, variants, manifest = _resolve(Path(model))
    providers, missing = _providers(cfg, target)
    threads = target.threads if cfg.threads is None else cfg.threads
    machine = machine_info()
    emulated = []
    if target.arch not in ("any", platform.machine()):
        emulated.append(f"target is {target.arch}, this host is {platform.machine()}")
    if missing:
        emulated.append(f"provider(s) {', '.join(missing)} not installed here: fell back to {', '.join(providers)}")
    if threads and threads > (os.cpu_count() or 1):
        emulated.append(f"target uses {threads} threads, this host has {os.cpu_count()} cores")

    predictors = {v: Predictor(bundle_dir if bundle_dir else p, variant=v if bundle_dir else "auto",
                               providers=providers, threads=threads) for v, p in variants.items()}
    ref = next(iter(predictors.values()))
    frame_shape = tuple(d if isinstance(d, int) else 1 for d in ref.input_shape[1:])
    dtype = np.uint8 if ref.embed else np.float32
    rng = np.random.default_rng(0)

    def batch_of(n: int) -> np.ndarray:
        if dtype == np.uint8:
            return rng.integers(0, 256, (n, *frame_shape), dtype=np.uint8)
        return rng.standard_normal((n, *frame_shape)).astype(np.float32)

    batch = {Scenario.single_stream: 1, Scenario.multi_stream: target.streams, Scenario.offline: 1}[scenario]
    deadline = target.deadline_ms
    results: dict[str, dict] = {}
    with progress.task(f"bench {target.name} ({scenario.value})", total=len(variants)) as adv:
        for v, path in variants.items():
            t0 = time.perf_counter()
            sess = ort_session(path, threads, providers)
            create_ms = (time.perf_counter() - t0) * 1e3
            name = sess.get_inputs()[0].name
            x = batch_of(batch)
            ts = time_calls(lambda: sess.run(None, {name: x}), warmup=cfg.warmup, min_runs=cfg.min_runs,
                            min_time=cfg.min_time)
            row = {"file": str(path), "size_mb": path.stat().st_size / 1e6, "session_create_ms": create_ms,
                   "providers_used": sess.get_providers(), "latency": latency_stats(ts, batch), "samples_ms": ts}
            if scenario == Scenario.offline:
                sweep = {}
                for b in (1, 2, 4, 8, 16):
                    xb = batch_of(b)
                    tb = time_calls(lambda: sess.run(None, {name: xb}), warmup=2, min_runs=max(5, cfg.min_runs // 5),
                                    min_time=cfg.min_time / 4)
                    sweep[b] = latency_stats(tb, b)["throughput_ips"]
                best_b = max(sweep, key=sweep.get)
                row["offline"] = {"throughput_by_batch": sweep, "best_batch": best_b, "best_ips": sweep[best_b]}
            row["peak_rss_mb"] = _peak_rss_mb(path, providers, threads, x) if cfg.rss else None
            results[v] = row
            adv(1)
        torch_row = _torch_reference(bundle_dir, batch_of(batch), cfg, threads) if cfg.torch_reference else None
        if torch_row:
            results["torch"] = torch_row

    for v, row in results.items():
        lat = row["latency"]
        if scenario == Scenario.offline:
            value = row.get("offline", {}).get("best_ips", lat["throughput_ips"])
            need = target.fps * target.streams
            ok_lat = value >= need
            row["criterion"] = f"throughput {value:.1f} img/s >= {need:.0f} (fps x streams)"
        else:
            value = lat["p90_ms"]
            ok_lat = value <= deadline
            row["criterion"] = (f"p90 {value:.2f} ms per {'frame' if batch == 1 else f'tick of {batch} frames'} "
                                f"<= {deadline:.1f} ms deadline")
        ok_mem = row["peak_rss_mb"] is None or row["peak_rss_mb"] <= target.memory_budget_mb
        row["pass_latency"], row["pass_memory"] = bool(ok_lat), bool(ok_mem)
        row["status"] = "PASS" if ok_lat and ok_mem else "FAIL"

    accuracy = _accuracy(predictors, bundle_dir, cfg, progress)
    for v, a in accuracy.get("variants", {}).items():
        results.get(v, {})["top1"] = a.get("top1")
        results.get(v, {})["agreement"] = a.get("agreement_with_fp32")

    out = Path(cfg.out or ((bundle_dir or Path(model).parent) / "bench" / target.name))
    verdict = ", ".join(f"{v} {r['status']}" for v, r in results.items() if v != "torch")
    doc = {
        "schema": "edgetl-bench", "schema_version": BENCH_SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model), "target": dataclasses.asdict(target), "scenario": scenario.value,
        "config": to_dict(cfg), "threads": threads, "providers_requested": list(target.providers),
        "providers_used": providers, "emulated": emulated, "machine": machine,
        "variants": {v: {k: val for k, val in r.items() if k != "samples_ms"} for v, r in results.items()},
        "accuracy": accuracy, "verdict": verdict,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", doc)
    _write_report(out, doc, results)
    return BenchReport(out, target.name, scenario.value, machine, doc["variants"], accuracy, verdict,
                       {"emulated": emulated, "providers_used": providers})


def _torch_reference(bundle_dir: Path | None, x: np.ndarray, cfg: BenchConfig, threads: int) -> dict | None:
    """Eager PyTorch on the same batch, when torch and the source checkpoint are here."""
    if bundle_dir is None or x.dtype != np.float32:
        return None
    try:
        import torch
    except ImportError:
        return None
    try:
        ck_path = Path(json.loads((bundle_dir / "export.json").read_text())["checkpoint"])
        from .finetune import load_checkpoint, model_from_checkpoint

        model = model_from_checkpoint(load_checkpoint(ck_path))
    except Exception:  # no checkpoint beside the bundle (e.g. on a device): no reference row, by design
        return None
    if threads:
        torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        ts = time_calls(lambda: model(xt), warmup=cfg.warmup, min_runs=cfg.min_runs, min_time=cfg.min_time)
    return {"file": str(ck_path), "size_mb": ck_path.stat().st_size / 1e6, "session_create_ms": None,
            "providers_used": [f"torch {torch.__version__} eager CPU"], "latency": latency_stats(ts, len(x)),
            "samples_ms": ts, "peak_rss_mb": None}


def _accuracy(predictors: dict, bundle_dir: Path | None, cfg: BenchConfig, progress) -> dict:
    """Top-1/top-5, agreement with fp32, per-class accuracy and confusion matrix per variant."""
    from .data import load_imagefolder

    ref = next(iter(predictors.values()))
    if cfg.data is not None:
        ds = load_imagefolder(cfg.data)
        if ds.classes != list(ref.labels):
            raise DataError(f"classes of {cfg.data} ({', '.join(ds.classes)}) differ from the model's labels "
                            f"({', '.join(ref.labels)}): use images of the same classes")
        samples = ds.val[: cfg.max_images]
        frames, labels = [], []
        with progress.task("accuracy images", total=len(samples)) as adv:
            for s in samples:
                try:
                    frames.append(ref._frame(s.path))
                    labels.append(s.label)
                except RuntimeInputError:
                    pass
                adv(1)
        if not frames:
            raise DataError(f"no readable images in {cfg.data}")
        frames = np.stack(frames)
        source = f"{cfg.data} ({ds.val_source}, {len(frames)} images)"
        inputs = {v: (frames if p.embed else p.preprocess.normalize(frames)) for v, p in predictors.items()}
        y = np.array(labels)
    elif bundle_dir is not None:
        with np.load(bundle_dir / "parity.npz", allow_pickle=False) as z:
            x, y = z["inputs"], z["labels"] if "labels" in z.files else None
        inputs = {v: x for v in predictors}
        source = "parity.npz (no --data given)"
    else:
        return {"source": None, "variants": {}}
    logits = {}
    for v, p in predictors.items():
        xb = inputs[v]
        logits[v] = np.concatenate([p.run(xb[i:i + 32]) for i in range(0, len(xb), 32)])
    base = logits.get("fp32", next(iter(logits.values())))
    n_cls = len(ref.labels)
    out = {"source": source, "n": int(len(base)), "labels": list(ref.labels), "variants": {}}
    for v, lg in logits.items():
        pred = lg.argmax(1)
        row = {"agreement_with_fp32": float(np.mean(pred == base.argmax(1))),
               "max_abs_diff_vs_fp32": float(np.max(np.abs(lg - base)))}
        if y is not None:
            top5 = np.argsort(-lg, 1)[:, : min(5, n_cls)]
            cm = np.zeros((n_cls, n_cls), dtype=int)
            for t, p in zip(y, pred):
                cm[t, p] += 1
            row.update(top1=float(np.mean(pred == y)), top5=float(np.mean([t in r for t, r in zip(y, top5)])),
                       per_class={ref.labels[c]: (float(cm[c, c] / cm[c].sum()) if cm[c].sum() else None)
                                  for c in range(n_cls)},
                       confusion=cm.tolist())
        out["variants"][v] = row
    return out


def _write_report(out: Path, doc: dict, results: dict) -> None:
    from ._io import atomic_write
    from .report import markdown_table

    t = doc["target"]
    rows = []
    for v, r in results.items():
        lat = r["latency"]
        rows.append([v, round(r["size_mb"], 2), r.get("top1"), r.get("agreement"), round(lat["p50_ms"], 2),
                     round(lat["p90_ms"], 2), round(lat["p99_ms"], 2), round(lat["throughput_ips"], 1),
                     round(lat["cv"], 3), r["peak_rss_mb"] and round(r["peak_rss_mb"], 1),
                     r.get("status", "-") if v != "torch" else "reference"])
    m = doc["machine"]
    lines = [f"# edgetl bench: {t['name']} ({doc['scenario']})", "",
             f"{t['description']}. Deadline {t['deadline_ms']} ms, {t['streams']} stream(s) at {t['fps']} FPS, "
             f"memory budget {t['memory_budget_mb']} MB.", "",
             markdown_table(["variant", "size MB", "top-1", "agreement", "p50 ms", "p90 ms", "p99 ms", "FPS",
                             "CV", "peak RSS MB", "status"], rows),
             f"Ran on: {m['cpu']}, {m['cores']} cores, {m['machine']}, ISA avx2={m['isa']['avx2']} "
             f"vnni={m['isa']['vnni'] or 'no'} dotprod={m['isa']['dotprod']}; onnxruntime {m['onnxruntime']}; "
             f"providers used: {', '.join(doc['providers_used'])}; threads {doc['threads'] or 'default'}.", ""]
    if doc["emulated"]:
        lines += [f"**Emulated on a different host:** {'; '.join(doc['emulated'])}. "
                  f"These numbers are this host's, not the target's.", ""]
    acc = doc["accuracy"]
    if acc.get("source"):
        lines += [f"Accuracy on {acc['source']}.", ""]
    atomic_write(out / "report.md", "\n".join(lines))
    try:
        from .report import plot_accuracy_vs_latency, plot_latency

        plot_latency({v: r["samples_ms"] for v, r in results.items()}, out / "latency.png",
                     title=f"{t['name']} · {doc['scenario']}")
        plot_accuracy_vs_latency([{"name": v, "p50_ms": r["latency"]["p50_ms"], "top1": r.get("top1")}
                                  for v, r in results.items()], out / "accuracy_vs_latency.png",
                                 title=f"{t['name']}: top-1 vs p50 latency")
    except ImportError:  # matplotlib is optional on a device: JSON and Markdown are still written
        pass
