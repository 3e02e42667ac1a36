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
target's streams as concurrent cameras at its FPS, ``edgetl.benchmark.rig``), multi-stream (``streams``
frames batched per tick vs the frame deadline), offline (best throughput over batch sizes); and with
``duration`` a sustained run. Accuracy on a labelled folder (its val/ split, or every image of a folder
of class folders), or on the bundle's parity.npz.

A target's thread count is capped at this host's cores (4 threads on 2 cores made p50 1.76x worse
than 2 threads and ranked the variants wrongly); the report says so, with the target's count.
Writes bench.json (schema ``edgetl/schemas/bench.schema.json``, per-call samples included), and
from it alone report.md and the plots (edgetl.benchmark.report), so a bench run on a
device (edgetl.benchmark.remote) gives the same report here.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import platform
from pathlib import Path

from .. import __version__
from .._config import to_dict
from .._io import read_json, write_json
from .._progress import SILENT, Progress
from ..config import BenchConfig, Scenario
from ..errors import DataError, EdgetlError, RuntimeInputError
from ..runtime import Predictor, float16_unsupported, resolve_providers, variant_of_file
from ..runtime.bundle import Manifest, read_manifest, verify_files
from ..runtime.cpu import cpu_info, host_isa, host_preset
from .accuracy import score_accuracy
from .end_to_end import encoded_images, end_to_end_rows, rig_inputs
from .judge import judge, plan_threads
from .memory import peak_rss_mb
from .model_rows import model_call, offline_sweep, random_batch, time_variants
from .serving import rig_for_variant, streams_max
from .sustained import sustained
from ..targets import Target, get_target, parse_frame_size
from .torch_ref import TorchReference

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
    """What ran the bench: CPU (and whether it is emulated), cores, ISA, onnxruntime and its providers."""
    import onnxruntime as ort

    isa, cpu = host_isa(), cpu_info()
    return {"hostname": platform.node(), "cpu": cpu["model"], "cores": cpu["cores"],
            "machine": platform.machine(), "os": platform.platform(),
            "isa": {"avx2": isa["avx2"], "vnni": isa["vnni"], "dotprod": isa["dotprod"],
                    "i8mm": "i8mm" in cpu["flags"], "fp16": "asimdhp" in cpu["flags"]},
            "cpu_flags_source": cpu["source"], "emulated": cpu["emulated"],
            "int8_preset_here": host_preset(), "onnxruntime": ort.__version__,
            "providers_available": ort.get_available_providers(), "python": platform.python_version(),
            "edgetl": __version__}


def resolve_model(model: Path) -> tuple[Path | None, dict[str, Path], Manifest | None]:
    """(bundle dir or None, variant -> model file, the bundle's manifest or None) for RUN | BUNDLE | MODEL.onnx;
    a bundle's files are verified here, once."""
    model = Path(model)
    if model.is_dir() and not (model / "bundle.json").is_file() and (model / "bundle" / "bundle.json").is_file():
        model = model / "bundle"
    if model.is_dir():
        m = read_manifest(model)
        verify_files(model, m)
        return model, {v: model / f for v, f in m.variants.items()}, m
    if model.is_file() and model.suffix == ".onnx":
        return None, {variant_of_file(model): model}, None
    raise DataError(f"nothing to bench at {model}: pass a run folder, a bundle folder or a .onnx file")


@dataclasses.dataclass
class _Plan:
    """What a bench measures, decided before anything is timed."""

    model: Path
    target: Target
    scenario: Scenario
    bundle_dir: Path | None
    variants: dict  # variant -> model file
    providers: list
    threads: int
    machine: dict
    emulated: list
    skipped: dict
    frame_size: tuple[int, int] | None  # camera frames (--frame-size, or the rig target's resolution)
    manifest: Manifest | None = None  # the bundle's, its files verified by resolve_model

    def make(self, v: str, n_threads: int, *, spinning: bool | None = None, fast_decode: bool = False) -> Predictor:
        return Predictor(self.bundle_dir if self.bundle_dir else self.variants[v],
                         variant=v if self.bundle_dir else "auto", providers=self.providers, threads=n_threads,
                         spinning=spinning, fast_decode=fast_decode, verified=self.manifest)


def _plan(model: Path, cfg: BenchConfig) -> _Plan:
    target = get_target(cfg.target)
    if cfg.streams is not None:
        target = dataclasses.replace(target, streams=cfg.streams)
    scenario = cfg.scenario or (Scenario.camera_rig if target.streams > 1 or cfg.streams_max else Scenario.single_stream)
    bundle_dir, variants, manifest = resolve_model(model)
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
    if machine["emulated"]:
        emulated.append(f"{machine['emulated']}: every latency, memory and rig figure is the emulator's, and "
                        f"PASS/FAIL does not apply; accuracy, agreement and verify results stand")
    skipped = {}
    if "fp16" in variants and (why := float16_unsupported(providers)):
        skipped["fp16"] = why
        del variants["fp16"]
        if not variants:
            raise DataError(f"{model}: {why}")
    size = cfg.frame_size or (target.resolution if scenario == Scenario.camera_rig else None)
    return _Plan(model, target, scenario, bundle_dir, variants, providers, threads, machine, emulated, skipped,
                 parse_frame_size(size) if size else None, manifest)


def bench(model: str | Path, cfg: BenchConfig | None = None, *, progress: Progress | None = None) -> BenchReport:
    """Benchmark a run / bundle / .onnx for a target; see the module docstring."""
    cfg = cfg or BenchConfig()
    progress = progress or SILENT
    plan = _plan(Path(model), cfg)
    target, scenario = plan.target, plan.scenario
    predictors = {v: plan.make(v, plan.threads, fast_decode=cfg.fast_decode) for v in plan.variants}
    batch = target.streams if scenario == Scenario.multi_stream else 1
    x = random_batch(next(iter(predictors.values())), batch)
    torch_ref = (TorchReference.find(plan.bundle_dir, x, plan.threads) if cfg.torch_reference
                 else TorchReference("off (BenchConfig.torch_reference=False)"))
    results = time_variants(predictors, plan.variants, x, cfg, threads=plan.threads, torch_ref=torch_ref,
                            progress=progress)
    e2e_inputs, inputs, images_source = None, None, None
    if cfg.end_to_end or scenario == Scenario.camera_rig:
        e2e_inputs, inputs, images_source = rig_inputs(cfg, plan.frame_size, *encoded_images(cfg))
    if cfg.end_to_end:
        for v, row in end_to_end_rows(predictors, e2e_inputs, cfg, progress).items():
            results[v]["end_to_end"] = row
    _scenario_rows(plan, cfg, results, predictors, inputs, progress)
    for v, row in results.items():
        row["peak_rss_mb"] = (peak_rss_mb(plan.variants[v], plan.providers, plan.threads, x)
                              if cfg.rss and v in plan.variants else None)
        if v != "torch":
            judge(row, scenario, target, batch, emulated=bool(plan.machine["emulated"]))
    accuracy = score_accuracy(predictors, plan.bundle_dir, cfg, progress)
    for v, a in accuracy.get("variants", {}).items():
        results[v]["top1"], results[v]["agreement"] = a.get("top1"), a.get("agreement_with_fp32")
    long_run = None
    if cfg.duration:
        fns = {v: model_call(p, x) for v, p in predictors.items()}
        with progress.task(f"sustained run, {cfg.duration:g} s", total=None):
            long_run = sustained(fns, cfg.duration)
    doc = {
        "schema": "edgetl-bench", "schema_version": BENCH_SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model), "target": dataclasses.asdict(target), "scenario": scenario.value,
        "config": to_dict(cfg), "threads": plan.threads, "threads_target": target.threads,
        "providers_requested": list(target.providers), "providers_used": plan.providers, "emulated": plan.emulated,
        "measured_on": None, "machine": plan.machine, "timing": "interleaved rounds, one untimed call per block",
        "torch_reference": torch_ref.note, "skipped": plan.skipped, "images": images_source,
        "variants": results, "accuracy": accuracy, "sustained": long_run,
        "verdict": ", ".join(f"{v} {r['status']}" for v, r in results.items() if v != "torch"),
    }
    out = Path(cfg.out or ((plan.bundle_dir or Path(model).parent) / "bench" / target.name))
    return write_bench(out, doc)


def _scenario_rows(plan: _Plan, cfg: BenchConfig, results: dict, predictors: dict, inputs: list | None,
                   progress: Progress) -> None:
    """The offline sweep, or the camera rig (and the --streams max search), per variant."""
    cores = plan.threads or plan.machine["cores"]

    def make(v: str, n: int, spinning: bool | None = None) -> Predictor:
        return plan.make(v, n, spinning=spinning, fast_decode=cfg.fast_decode)

    for v, p in predictors.items():
        if plan.scenario == Scenario.offline:
            results[v]["offline"] = offline_sweep(p, cfg)
        elif plan.scenario == Scenario.camera_rig:
            results[v]["rig"] = rig_for_variant(make, v, inputs, plan.target, cores, cfg, progress=progress)
            if cfg.streams_max:
                results[v]["rig"]["streams_max"] = streams_max(make, v, inputs, plan.target, cores, cfg,
                                                               progress=progress)


def write_bench(out: Path, doc: dict) -> BenchReport:
    """bench.json, then report.md and the plots from it alone (also for a bench fetched from a device)."""
    from .report import write_bench_report

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "bench.json", doc)
    write_bench_report(out, doc)
    return BenchReport.from_doc(out, doc)


def read_bench(out: Path) -> BenchReport:
    return BenchReport.from_doc(out, read_json(out / "bench.json", "bench report"))


__all__ = ["BenchConfig", "BenchReport", "bench", "read_bench", "write_bench", "machine_info", "EdgetlError"]
