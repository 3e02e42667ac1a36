"""Latency, memory, size and accuracy parity a team can put in its design review. No torch needed.

    from edgetl.benchmark import bench                 # also edgetl.bench / edgetl.BenchConfig
    report = bench("models/run/bundle", BenchConfig(target="rpi5", data="photos/val"))
    report.variants["int8"]["latency"]["p90_ms"], report.verdict

Per variant (fp32, int8, fp16 where a provider computes float16, and the PyTorch eager reference when
torch and the checkpoint are here): session creation time, then timed calls in interleaved rounds
(fp32 int8 torch, int8 torch fp32, ...: every variant sees the same CPU, so their ratio holds on a
noisy machine) until both ``min_runs`` per variant and ``min_time`` per variant are met -> p50/p90/p99,
mean, std, CV, throughput; peak RSS measured in a fresh subprocess; file size. Beside each model row an
end-to-end row: encoded image bytes -> label through ``Predictor.predict_staged`` (the device code),
with each stage's time. Scenarios: single-stream (batch 1, p90 vs the deadline), camera-rig (the
target's streams as concurrent cameras at its FPS, ``edgetl.scenarios``), multi-stream (``streams``
frames batched per tick vs the frame deadline), offline (best throughput over batch sizes); and with
``duration`` a sustained run. Accuracy on a labelled folder (its val/ split, or every image of a folder
of class folders), or on the bundle's parity.npz.

A target's thread count is capped at this host's cores (4 threads on 2 cores made p50 1.76x worse
than 2 threads and ranked the variants wrongly); the report says so, with the target's count.
Writes bench.json (schema ``edgetl/schemas/bench.schema.json``, per-call samples included), and
from it alone report.md and the plots (edgetl.report.write_bench_report), so a bench run on a
device (edgetl.remote) gives the same report here.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import itertools
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from ._config import to_dict
from ._io import read_json, write_json
from ._progress import SILENT, Progress
from .bundle import read_manifest, verify_files
from .config import BenchConfig, Scenario
from .data import bench_samples
from .errors import DataError, EdgetlError, RuntimeInputError
from .preprocess import load_image
from .runtime import STAGES, Predictor, float16_unsupported, ort_session, resolve_providers, variant_of_file
from .scenarios import camera_rig, rig_summary, sustained
from .targets import Target, cpu_info, get_target, host_isa, host_preset
from .timing import interleaved, latency_stats, time_calls

log = logging.getLogger(__name__)
BENCH_SCHEMA_VERSION = 1


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

    @classmethod
    def from_doc(cls, path: Path, doc: dict) -> "BenchReport":
        return cls(path, doc["target"]["name"], doc["scenario"], doc["machine"], doc["variants"], doc["accuracy"],
                   doc["verdict"], {"emulated": doc["emulated"], "providers_used": doc["providers_used"],
                                    "measured_on": doc.get("measured_on"), "skipped": doc.get("skipped") or {},
                                    "sustained": doc.get("sustained"), "images": doc.get("images")})


def machine_info() -> dict:
    """What ran the bench: CPU, cores, ISA, onnxruntime and its providers."""
    import onnxruntime as ort

    isa = host_isa()
    return {"hostname": platform.node(), "cpu": cpu_info()["model"], "cores": cpu_info()["cores"],
            "machine": platform.machine(), "os": platform.platform(),
            "isa": {"avx2": isa["avx2"], "vnni": isa["vnni"], "dotprod": isa["dotprod"]},
            "int8_preset_here": host_preset(), "onnxruntime": ort.__version__,
            "providers_available": ort.get_available_providers(), "python": platform.python_version(),
            "edgetl": __version__}


def _peak_rss_mb(model: Path, providers, threads: int, batch: np.ndarray) -> float | None:
    """Peak RSS of a fresh process that loads ``model`` and runs ``batch`` a few times."""
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


def resolve_model(model: Path) -> tuple[Path | None, dict[str, Path]]:
    """(bundle dir or None, variant -> model file) for RUN | BUNDLE | MODEL.onnx; bundles are verified."""
    model = Path(model)
    if model.is_dir() and not (model / "bundle.json").is_file() and (model / "bundle" / "bundle.json").is_file():
        model = model / "bundle"
    if model.is_dir():
        m = read_manifest(model)
        verify_files(model, m)
        return model, {v: model / f for v, f in m.variants.items()}
    if model.is_file() and model.suffix == ".onnx":
        return None, {variant_of_file(model): model}
    raise DataError(f"nothing to bench at {model}: pass a run folder, a bundle folder or a .onnx file")


def plan_threads(target: Target, asked: int | None, cores: int) -> tuple[int, str | None]:
    """Intra-op threads to run (never more than this host's cores) and a line saying so when capped."""
    want = target.threads if asked is None else asked
    if want and want > cores:
        return cores, (f"target uses {want} threads; this host has {cores} cores, so {cores} threads ran "
                       f"(more threads than cores only adds contention)")
    return want, None


def bench(model: str | Path, cfg: BenchConfig | None = None, *, progress: Progress | None = None) -> BenchReport:
    """Benchmark a run / bundle / .onnx for a target; see the module docstring."""
    cfg = cfg or BenchConfig()
    progress = progress or SILENT
    target = get_target(cfg.target)
    if cfg.streams is not None:
        target = dataclasses.replace(target, streams=cfg.streams)
    scenario = cfg.scenario or (Scenario.camera_rig if target.streams > 1 else Scenario.single_stream)
    bundle_dir, variants = resolve_model(Path(model))
    try:
        providers, missing = resolve_providers(cfg.providers or target.providers, explicit=bool(cfg.providers))
    except RuntimeInputError as e:
        raise DataError(str(e)) from None
    machine = machine_info()
    threads, capped = plan_threads(target, cfg.threads, machine["cores"])
    emulated = []
    if target.arch not in ("any", platform.machine()):
        emulated.append(f"target is {target.arch}, this host is {platform.machine()}")
    if missing:
        emulated.append(f"provider(s) {', '.join(missing)} not installed here: fell back to {', '.join(providers)}")
    if capped:
        emulated.append(capped)
    skipped = {}
    if "fp16" in variants and (why := float16_unsupported(providers)):
        skipped["fp16"] = why
        del variants["fp16"]
        if not variants:
            raise DataError(f"{model}: {why}")

    def make(v: str, n_threads: int) -> Predictor:
        return Predictor(bundle_dir if bundle_dir else variants[v], variant=v if bundle_dir else "auto",
                         providers=providers, threads=n_threads)

    predictors = {v: make(v, threads) for v in variants}
    batch = target.streams if scenario == Scenario.multi_stream else 1
    x = _random_batch(next(iter(predictors.values())), batch)
    torch_ref = (_TorchReference.find(bundle_dir, x, threads) if cfg.torch_reference
                 else _TorchReference("off (BenchConfig.torch_reference=False)"))
    results = _time_variants(predictors, variants, x, cfg, threads=threads, torch_ref=torch_ref, progress=progress)
    images, frames, images_source = (_encoded_images(cfg) if cfg.end_to_end or scenario == Scenario.camera_rig
                                     else (None, None, None))
    if cfg.end_to_end:
        for v, row in _end_to_end(predictors, images, cfg, progress).items():
            results[v]["end_to_end"] = row
    if scenario == Scenario.offline:
        for v, p in predictors.items():
            results[v]["offline"] = _offline_sweep(p, cfg)
    if scenario == Scenario.camera_rig:
        for v in predictors:
            results[v]["rig"] = _camera_rig(make, v, frames, target, threads or machine["cores"], cfg, progress=progress)
    for v, row in results.items():
        row["peak_rss_mb"] = _peak_rss_mb(variants[v], providers, threads, x) if cfg.rss and v in variants else None
        if v != "torch":
            _judge(row, scenario, target, batch)
    accuracy = _accuracy(predictors, bundle_dir, cfg, progress)
    for v, a in accuracy.get("variants", {}).items():
        results[v]["top1"], results[v]["agreement"] = a.get("top1"), a.get("agreement_with_fp32")
    long_run = None
    if cfg.duration:
        fns = {v: _model_call(p, x) for v, p in predictors.items()}
        with progress.task(f"sustained run, {cfg.duration:g} s", total=None):
            long_run = sustained(fns, cfg.duration)
    doc = {
        "schema": "edgetl-bench", "schema_version": BENCH_SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model), "target": dataclasses.asdict(target), "scenario": scenario.value,
        "config": to_dict(cfg), "threads": threads, "threads_target": target.threads,
        "providers_requested": list(target.providers), "providers_used": providers, "emulated": emulated,
        "measured_on": None, "machine": machine, "timing": "interleaved rounds, one untimed call per block",
        "torch_reference": torch_ref.note, "skipped": skipped, "images": images_source,
        "variants": results, "accuracy": accuracy, "sustained": long_run,
        "verdict": ", ".join(f"{v} {r['status']}" for v, r in results.items() if v != "torch"),
    }
    out = Path(cfg.out or ((bundle_dir or Path(model).parent) / "bench" / target.name))
    return write_bench(out, doc)


def write_bench(out: Path, doc: dict) -> BenchReport:
    """bench.json, then report.md and the plots from it alone (also for a bench fetched from a device)."""
    from .report import write_bench_report

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", doc)
    write_bench_report(out, doc)
    return BenchReport.from_doc(out, doc)


def read_bench(out: Path) -> BenchReport:
    return BenchReport.from_doc(out, read_json(out / "bench.json", "bench report"))


def _random_batch(p: Predictor, n: int) -> np.ndarray:
    shape = tuple(d if isinstance(d, int) else 1 for d in p.input_shape[1:])
    rng = np.random.default_rng(0)
    if p.embed:
        return rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return rng.standard_normal((n, *shape)).astype(np.float32)


class _TorchReference:
    """Eager PyTorch on the bundle's source checkpoint, when torch and the checkpoint are here.
    ``run`` is None when there is no reference; ``note`` says why, or what ran."""

    def __init__(self, note: str, ck_path: Path | None = None, run=None):
        self.note, self.ck_path, self.run = note, ck_path, run

    @classmethod
    def find(cls, bundle_dir: Path | None, x: np.ndarray, threads: int) -> "_TorchReference":
        if x.dtype != np.float32:
            return cls("skipped: the bundle takes uint8 frames (--embed-preprocess); torch takes float tensors")
        if bundle_dir is None or not (bundle_dir / "export.json").is_file():
            return cls("skipped: a lone .onnx has no source checkpoint (bench its bundle folder)")
        ck = read_json(bundle_dir / "export.json", "export report").get("checkpoint")
        if not ck:
            return cls("skipped: export.json names no checkpoint")
        ck = Path(ck) if Path(ck).is_absolute() else bundle_dir.parent / Path(ck).name  # (older bundles: relative)
        if not ck.is_file():
            return cls(f"skipped: the source checkpoint {ck} is not here")
        try:
            import torch

            from .checkpoint import load_checkpoint, model_from_checkpoint

            model = model_from_checkpoint(load_checkpoint(ck))
        except ImportError as e:  # the device install, or torch without torchvision / timm
            return cls(f"skipped: {e.name or 'torch'} is not installed here (the device install has no torch)")
        except EdgetlError as e:  # a checkpoint that no longer loads: the ONNX rows still mean something
            return cls(f"skipped: {e}")
        xt = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                model(xt)
        return cls(f"eager PyTorch on {ck} ({threads or 'default'} threads)", ck, run)


def _model_call(p: Predictor, x: np.ndarray):
    """A zero-argument call of ``p``'s session on the prepared batch ``x`` (the model alone)."""
    sess, feed = p.session, {p.input_name: x}
    return lambda: sess.run(None, feed)


def _time_variants(predictors: dict, files: dict, x: np.ndarray, cfg: BenchConfig, *, threads: int,
                   torch_ref: _TorchReference, progress: Progress) -> dict:
    """Every variant (and the torch reference) timed in interleaved rounds on the same batch."""
    rows, fns = {}, []
    for v, p in predictors.items():
        t0 = time.perf_counter()
        ort_session(p.model_path, threads, p.providers)  # what loading costs on its own (the bench reuses p's)
        rows[v] = {"file": str(files[v]), "size_mb": files[v].stat().st_size / 1e6,
                   "session_create_ms": (time.perf_counter() - t0) * 1e3, "providers_used": p.providers}
        fns.append(_model_call(p, x))
    names = list(rows)
    caller_threads = None
    try:
        if torch_ref.run is not None:
            import torch

            caller_threads = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            fns.append(torch_ref.run)
            names.append("torch")
            rows["torch"] = {"file": str(torch_ref.ck_path), "size_mb": torch_ref.ck_path.stat().st_size / 1e6,
                             "session_create_ms": None, "providers_used": [f"torch {torch.__version__} eager CPU"]}
        with progress.task(f"timing {len(fns)} variant(s), interleaved", total=None):
            # blocks of ~0.5 s: a robot runs one model back to back, so the first calls after a switch
            # (caches the other variant filled) must be a small share of what is timed
            samples = interleaved(fns, rounds=3, warmup=cfg.warmup, min_runs=cfg.min_runs, min_time=cfg.min_time,
                                  budget_s=0.5)
    finally:
        if caller_threads is not None:  # the caller's torch keeps its own thread count
            import torch

            torch.set_num_threads(caller_threads)
    for name, ts in zip(names, samples):
        rows[name]["latency"] = latency_stats(ts, len(x))
        rows[name]["samples_ms"] = [round(t, 4) for t in ts]
    return rows


def _offline_sweep(p: Predictor, cfg: BenchConfig) -> dict:
    """Best throughput over batch sizes (MLPerf offline)."""
    sweep = {}
    for b in (1, 2, 4, 8, 16):
        xb = _random_batch(p, b)
        ts = time_calls(lambda: p.run(xb), warmup=2, min_runs=max(5, cfg.min_runs // 5), min_time=cfg.min_time / 4)
        sweep[b] = latency_stats(ts, b)["throughput_ips"]
    best = max(sweep, key=sweep.get)
    return {"throughput_by_batch": sweep, "best_batch": best, "best_ips": sweep[best]}


def synthetic_jpegs(n: int = 8, size: tuple[int, int] = (640, 480), quality: int = 90) -> list[bytes]:
    """Camera-like JPEG frames with no dataset: smooth random scenes, upsampled, as a camera encodes them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def _encoded_images(cfg: BenchConfig, n: int = 16) -> tuple[list[bytes], list[np.ndarray], str]:
    """Encoded images (as files store them) for the end-to-end rows, the same decoded (the camera rig's
    frames), and where they came from. Each is decoded once: unreadable files are skipped."""
    blobs, frames = [], []
    if cfg.data is not None:
        samples = bench_samples(cfg.data, cfg.max_images)[0]
        for s in samples[:: max(1, len(samples) // n)]:
            b = s.path.read_bytes()
            try:
                frames.append(np.asarray(load_image(b)))
            except RuntimeInputError:
                continue
            blobs.append(b)
            if len(blobs) == n:
                break
        if blobs:
            sizes = ", ".join(f"{f.shape[1]}x{f.shape[0]}" for f in frames[:4])
            return blobs, frames, (f"{len(blobs)} photos of {cfg.data} as stored "
                                   f"({np.mean([len(b) for b in blobs]) / 1e3:.0f} KB on average; e.g. {sizes})")
    blobs = synthetic_jpegs()
    return blobs, [np.asarray(load_image(b)) for b in blobs], (
        f"{len(blobs)} synthetic 640x480 JPEG frames (quality 90, {np.mean([len(b) for b in blobs]) / 1e3:.0f} "
        f"KB on average): pass --data for real photos")


def _end_to_end(predictors: dict, images: list[bytes], cfg: BenchConfig, progress: Progress) -> dict:
    """Encoded bytes -> label per variant through the runtime's own code (Predictor.predict_staged),
    timed in interleaved rounds, with what each stage took."""
    names = list(predictors)
    stages: dict[str, list[dict]] = {v: [] for v in names}
    fns = [(lambda p=p, it=itertools.cycle(images): p.predict_staged(next(it))) for p in predictors.values()]
    with progress.task(f"end-to-end, {len(names)} variant(s), interleaved", total=None):
        # blocks of min_runs/3 calls (an image is ms, not us: a time budget would make short benches long)
        samples = interleaved(fns, rounds=3, calls=-(-cfg.min_runs // 3), warmup=min(cfg.warmup, 5),
                              min_runs=cfg.min_runs, min_time=cfg.min_time,
                              on_call=lambda i, res: stages[names[i]].append(res[1]))
    rows = {}
    for v, ts in zip(names, samples):
        mean = float(np.mean(ts))
        st = {s: [d[s] for d in stages[v]] for s in STAGES}
        means = {s: float(np.mean(st[s])) for s in STAGES}
        rows[v] = {"latency": latency_stats(ts, 1), "samples_ms": [round(t, 4) for t in ts],
                   "stages_mean_ms": means, "stages_p50_ms": {s: float(np.median(st[s])) for s in STAGES},
                   "shares": {s: means[s] / mean for s in STAGES}, "model_share": means["run"] / mean,
                   "unaccounted_ms": mean - sum(means.values())}
    return rows


def _camera_rig(make, v: str, frames: list, target: Target, threads: int, cfg: BenchConfig, *,
                progress: Progress) -> dict:
    """The rig with one session shared by every stream, and with one session per stream (the threads
    split between them); a short probe of each, then the full run on whichever missed fewer frames."""
    n = target.streams
    per = max(1, threads // n)
    modes = {"shared": lambda: [make(v, threads).predict] * n}
    if n > 1:  # (one stream: the two are the same)
        modes["per-stream"] = lambda: [make(v, per).predict for _ in range(n)]
    probe_s = min(2.0, max(0.25, cfg.rig_seconds / 4))
    probes, fns = {}, {}
    with progress.task(f"camera rig {v}: {n} streams at {target.fps:g} FPS", total=None):
        for mode, build in modes.items():
            fns[mode] = build()
            r = camera_rig(fns[mode], frames, fps=target.fps, deadline_ms=target.deadline_ms, seconds=probe_s)
            probes[mode] = {"worst_p99_ms": r["worst_p99_ms"], "missed": r["missed"], "captured": r["captured"],
                            "threads_per_session": threads if mode == "shared" else per}
        mode = min(probes, key=lambda m: (probes[m]["missed"], probes[m]["worst_p99_ms"] or float("inf")))
        rig = camera_rig(fns[mode], frames, fps=target.fps, deadline_ms=target.deadline_ms, seconds=cfg.rig_seconds)
    rig.update(mode=mode, threads_per_session=probes[mode]["threads_per_session"], probes=probes, probe_seconds=probe_s,
               per_frame="Predictor.predict on a decoded camera frame (resize, crop, normalize, run, softmax)")
    rig["summary"] = f"{rig_summary(rig)}; {mode} session(s)"
    return rig


def _judge(row: dict, scenario: Scenario, target: Target, batch: int) -> None:
    """PASS/FAIL against the target's deadline (or throughput) and memory budget."""
    lat = row["latency"]
    if scenario == Scenario.offline:
        value, need = row["offline"]["best_ips"], target.fps * target.streams
        ok_lat = value >= need
        row["criterion"] = f"throughput {value:.1f} img/s >= {need:.0f} (fps x streams)"
    elif scenario == Scenario.camera_rig:
        ok_lat = row["rig"]["pass"]
        row["criterion"] = (f"every stream answers >= 99% of its frames within {target.deadline_ms:g} ms "
                            f"(p99, dropped frames as misses)")
    else:
        value = lat["p90_ms"]
        ok_lat = value <= target.deadline_ms
        row["criterion"] = (f"p90 {value:.2f} ms per {'frame' if batch == 1 else f'tick of {batch} frames'} "
                            f"<= {target.deadline_ms:.1f} ms deadline")
    ok_mem = row["peak_rss_mb"] is None or row["peak_rss_mb"] <= target.memory_budget_mb
    row["pass_latency"], row["pass_memory"] = bool(ok_lat), bool(ok_mem)
    row["status"] = "PASS" if ok_lat and ok_mem else "FAIL"


def _accuracy_inputs(predictors: dict, bundle_dir: Path | None, cfg: BenchConfig, progress: Progress):
    """(inputs per variant, labels or None, source line) from --data, else parity.npz."""
    ref = next(iter(predictors.values()))
    if cfg.data is not None:
        samples, classes, how, total = bench_samples(cfg.data, cfg.max_images)
        if classes != list(ref.labels):
            raise DataError(f"classes of {cfg.data} ({', '.join(classes)}) differ from the model's labels "
                            f"({', '.join(ref.labels)}): use images of the same classes")
        frames, labels, unreadable = [], [], 0
        with progress.task("accuracy images", total=len(samples)) as adv:
            for s in samples:
                try:
                    frames.append(ref._frame(s.path))
                    labels.append(s.label)
                except RuntimeInputError:
                    unreadable += 1
                adv(1)
        if not frames:
            raise DataError(f"no readable images in {cfg.data}")
        if unreadable:
            log.warning("skipped %d unreadable image(s) in %s", unreadable, cfg.data)
        frames = np.stack(frames)
        capped = f" (a stratified {len(samples)} of {total}: --max-images)" if len(samples) < total else ""
        bad = f", {unreadable} unreadable skipped" if unreadable else ""
        source = f"{cfg.data}: {how}, {len(frames)} images scored{capped}{bad}"
        return {v: (frames if p.embed else p.preprocess.normalize(frames)) for v, p in predictors.items()}, \
            np.array(labels), source
    if bundle_dir is not None:
        with np.load(bundle_dir / "parity.npz", allow_pickle=False) as z:
            x, y = z["inputs"], (z["labels"] if "labels" in z.files else None)
        return {v: x for v in predictors}, y, f"parity.npz (no --data given), {len(x)} images scored"
    return None, None, None


def _accuracy(predictors: dict, bundle_dir: Path | None, cfg: BenchConfig, progress: Progress) -> dict:
    """Top-1/top-5, agreement with fp32, per-class accuracy and confusion matrix per variant."""
    inputs, y, source = _accuracy_inputs(predictors, bundle_dir, cfg, progress)
    if inputs is None:
        return {"source": None, "variants": {}}
    ref = next(iter(predictors.values()))
    logits = {v: np.concatenate([p.run(inputs[v][i:i + 32]) for i in range(0, len(inputs[v]), 32)])
              for v, p in predictors.items()}
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
            np.add.at(cm, (y, pred), 1)
            row.update(top1=float(np.mean(pred == y)), top5=float(np.mean([t in r for t, r in zip(y, top5)])),
                       per_class={ref.labels[c]: (float(cm[c, c] / cm[c].sum()) if cm[c].sum() else None)
                                  for c in range(n_cls)},
                       confusion=cm.tolist())
        out["variants"][v] = row
    return out


__all__ = ["BenchConfig", "BenchReport", "bench", "read_bench", "write_bench", "machine_info", "EdgetlError"]
