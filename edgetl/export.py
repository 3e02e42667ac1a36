"""torch -> ONNX with proven fp32 parity, packed as a self-describing bundle.

    from edgetl.export import ExportConfig, export
    bundle = export("models/run", ExportConfig(int8=True))
    bundle.path / "model.onnx", bundle.parity["fp32"]["max_abs_diff"]

Steps: rebuild the model from ``best.pt`` -> ``torch.onnx.export`` (opset >= 17, dynamic batch,
input ``input`` / output ``logits``; eval mode folds BatchNorm into the convolutions and constant
folding removes the rest) -> ``onnx.checker`` (full check) + shape inference -> onnxslim where it
makes the graph smaller without making it slower (measured, recorded) -> metadata_props -> parity
against torch on the run's real validation images (fails past ``tolerance``) -> optional int8
(:mod:`edgetl.quantize`) -> the bundle folder, written aside and renamed into place.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
import logging
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from . import __version__
from ._config import coerce_enums, to_dict
from ._io import RunLock, read_json, sha256_file, write_json
from ._progress import SILENT, Progress
from .bundle import (BUNDLE_FORMAT, BUNDLE_VERSION, MANIFEST, VARIANT_FILES, file_entry, onnx_metadata)
from .errors import ArtifactError, ConfigError, DataError, ExistsError
from .preprocess import Preprocess
from .runtime import ort_session

log = logging.getLogger(__name__)


class CalibMethod(str, enum.Enum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class Preset(str, enum.Enum):
    auto = "auto"
    x86_avx2 = "x86-avx2"
    x86_vnni = "x86-vnni"
    arm64 = "arm64"
    tensorrt = "tensorrt"


# options that only mean something with --int8: setting one without it is an error
_INT8_ONLY = ("calib_data", "eval_data", "preset", "calib_method", "calib_size", "max_drop", "per_channel",
              "min_agreement")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Options of ``edgetl export``; written to ``export.json`` in the bundle."""

    out: Path | None = None  # default: RUN/bundle
    opset: int = 17
    embed_preprocess: bool = False
    simplify: bool = True
    parity_images: int = 64
    tolerance: float = 1e-4  # max |logit diff| <= tolerance * max(1, max |logit|)
    int8: bool = False
    calib_data: Path | None = None
    calib_size: int = 200
    calib_method: CalibMethod = CalibMethod.minmax
    preset: Preset = Preset.auto
    per_channel: bool = True
    max_drop: float = 0.5  # top-1 points int8 may lose against fp32
    min_agreement: float = 0.99  # share of images where int8's top-1 should equal fp32's (a target, not a gate)
    eval_data: Path | None = None
    eval_size: int = 300
    seed: int = 0

    def __post_init__(self):
        coerce_enums(self, {"calib_method": CalibMethod, "preset": Preset})
        for name in ("out", "calib_data", "eval_data"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if not 17 <= self.opset <= 23:
            raise ConfigError(f"--opset {self.opset} is not supported: use 17..23")
        if self.tolerance <= 0:
            raise ConfigError("parity tolerance must be positive")
        if not self.int8:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            set_int8 = [n for n in _INT8_ONLY if getattr(self, n) != defaults[n]]
            if set_int8:
                raise ConfigError(f"--{set_int8[0].replace('_', '-')} only applies to int8: add --int8")
        if not 1 <= self.calib_size <= 100_000:
            raise ConfigError("--calib-size must be in 1..100000")
        if not 0 <= self.max_drop <= 100:
            raise ConfigError("--max-drop is in top-1 points, 0..100")
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError("--min-agreement is a share of images, 0..1 (e.g. 0.99)")
        if self.preset == Preset.tensorrt and not self.per_channel:
            raise ConfigError("the tensorrt preset needs per-channel weights (TensorRT's int8 convolutions): "
                              "drop --per-tensor")
        if self.int8 and self.embed_preprocess:
            raise ConfigError("--embed-preprocess with --int8 is not supported yet: export int8 without it, "
                              "or embed preprocessing in an fp32-only bundle")


@dataclasses.dataclass
class Bundle:
    """An exported bundle folder and its figures."""

    path: Path
    labels: list[str]
    parity: dict
    quantization: dict | None
    files: dict

    @property
    def model(self) -> Path:
        return self.path / VARIANT_FILES["fp32"]

    @property
    def int8_model(self) -> Path | None:
        p = self.path / VARIANT_FILES["int8"]
        return p if p.is_file() else None


def resolve_run(run: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint path) from a run folder or a checkpoint file."""
    run = Path(run)
    if run.is_file():
        return run.parent, run
    if not run.is_dir():
        raise ArtifactError(f"run folder not found: {run}; pass the folder edgetl finetune wrote (models/<run>)")
    ck = run / "best.pt"
    if not ck.is_file():
        raise ArtifactError(f"{run} has no best.pt: it is not a finished edgetl run; run edgetl finetune "
                            f"(or --resume it) first")
    return run, ck


def eval_samples(run_dir: Path, labels: list[str], data: Path | None, *, which: str = "val", seed: int = 0):
    """Labelled samples for parity/accuracy: ``data``'s split, else the run's own val split."""
    from .data import load_imagefolder

    if data is None:
        try:
            cfg = read_json(run_dir / "run.json", "run config")
        except ArtifactError:
            raise DataError(f"{run_dir} has no run.json telling where its images are: pass --eval-data DIR") from None
        data = Path(cfg["data"])
        ds = load_imagefolder(data, val_fraction=cfg.get("val_fraction", 0.2), seed=cfg.get("seed", 0))
    else:
        ds = load_imagefolder(data, seed=seed)
    if ds.classes != list(labels):
        raise DataError(f"classes of {data} ({', '.join(ds.classes)}) differ from the model's labels "
                        f"({', '.join(labels)}): use images of the same classes")
    return ds.train if which == "train" else ds.val, data


def _embedded_module(model, pp: Preprocess):
    import torch
    from torch import nn

    class EmbeddedPreprocess(nn.Module):
        """uint8 frames [N,H,W,3] -> float, /255, normalise, NCHW -> the classifier."""

        def __init__(self):
            super().__init__()
            self.model = model
            std = torch.tensor(pp.std, dtype=torch.float32)
            self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 1, 1, 3))
            self.register_buffer("shift", (-torch.tensor(pp.mean, dtype=torch.float32) / std).view(1, 1, 1, 3))

        def forward(self, frames):
            x = frames.to(torch.float32) * self.scale + self.shift
            return self.model(x.permute(0, 3, 1, 2))

    return EmbeddedPreprocess().eval()


def _torch_export(module, example, path: Path, opset: int) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def _check(model_proto, where: str):
    import onnx

    try:
        onnx.checker.check_model(model_proto, full_check=True)
        return onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ArtifactError(f"{where}: the exported graph fails onnx.checker ({str(e).splitlines()[0]})") from None


def quick_latency(model: Path | bytes, x: np.ndarray, runs: int = 30, threads: int = 0) -> float:
    """Median ms of ``runs`` calls after 5 warm-up calls (a short, fixed-iteration comparison)."""
    s = ort_session(model, threads)
    name = s.get_inputs()[0].name
    for _ in range(5):
        s.run(None, {name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ts))


def interleaved_latency(models: list, x: np.ndarray, *, rounds: int = 7, threads: int = 0,
                        budget_s: float = 0.25) -> list[float]:
    """Median ms per call of each model, timed in interleaved rounds (A B C, B C A, C A B, ...).

    On a shared or thermally throttled CPU the speed drifts between two separate timings by more than
    the gap between close int8 variants; interleaving makes every model see the same drift.
    """
    sessions = []
    for m in models:
        s = ort_session(m, threads)
        name = s.get_inputs()[0].name
        t = time.perf_counter()
        for _ in range(3):
            s.run(None, {name: x})
        sessions.append((s, name, (time.perf_counter() - t) / 3))
    calls = max(2, min(20, int(budget_s / max(max(c for *_, c in sessions), 1e-4))))
    times: list[list[float]] = [[] for _ in models]
    for r in range(rounds):
        for k in range(len(models)):
            i = (r + k) % len(models)
            s, name, _ = sessions[i]
            s.run(None, {name: x})  # untimed: the previous session's threads may still be spinning
            for _ in range(calls):
                t = time.perf_counter()
                s.run(None, {name: x})
                times[i].append((time.perf_counter() - t) * 1e3)
    return [float(np.median(t)) for t in times]


def _simplify(model_proto, example: np.ndarray, threads: int = 0) -> tuple[object, dict]:
    """onnxslim the graph; keep it only if it has fewer nodes and is not slower (measured)."""
    info = {"tool": "onnxslim", "nodes_before": len(model_proto.graph.node)}
    try:
        import onnxslim
    except ImportError:
        info["kept"] = False
        info["reason"] = "onnxslim not installed"
        return model_proto, info
    try:
        slim = onnxslim.slim(model_proto)
    except Exception as e:  # onnxslim raises many types; keep the unslimmed graph and say why
        info.update(kept=False, reason=f"onnxslim failed: {type(e).__name__}")
        return model_proto, info
    info["nodes_after"] = len(slim.graph.node)
    # the simplifier must not change the numbers: compare on the example and a random batch
    probe = np.concatenate([example, np.random.default_rng(0).standard_normal(example.shape).astype(example.dtype)]) \
        if example.dtype == np.float32 else np.concatenate([example, example[::-1]])
    ra = ort_session(model_proto.SerializeToString()).run(None, {"input": probe})[0]
    rb = ort_session(slim.SerializeToString()).run(None, {"input": probe})[0]
    info["max_abs_diff"] = float(np.max(np.abs(ra - rb)))
    if info["max_abs_diff"] > 1e-4 * max(1.0, float(np.max(np.abs(ra)))):
        info.update(kept=False, reason="changed the outputs")
        log.warning("onnxslim changed the model's outputs (max |diff| %.3g): kept the unsimplified graph",
                    info["max_abs_diff"])
        return model_proto, info
    a = quick_latency(model_proto.SerializeToString(), example, threads=threads)
    b = quick_latency(slim.SerializeToString(), example, threads=threads)
    info.update(p50_ms_before=round(a, 3), p50_ms_after=round(b, 3))
    keep = info["nodes_after"] < info["nodes_before"] and b <= a * 1.03
    info["kept"] = keep
    if not keep:
        info["reason"] = "not smaller" if info["nodes_after"] >= info["nodes_before"] else "not faster"
    return (slim if keep else model_proto), info


def _set_metadata(model_proto, meta: dict[str, str]) -> None:
    del model_proto.metadata_props[:]
    for k, v in meta.items():
        p = model_proto.metadata_props.add()
        p.key, p.value = k, v
    model_proto.producer_name = "edgetl"
    model_proto.producer_version = __version__


def parity_figures(ref: np.ndarray, got: np.ndarray) -> dict:
    """max abs diff, its relative size, and top-1 agreement of two logit arrays [N, C]."""
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    return {"n": int(len(ref)), "max_abs_diff": diff, "rel_diff": diff / scale,
            "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))) if len(ref) else 1.0}


def export(run: str | Path, cfg: ExportConfig | None = None, *, force: bool = False,
           progress: Progress | None = None) -> Bundle:
    """Export a fine-tuned run to a bundle; see the module docstring."""
    import onnx
    import torch

    from .data import ImageCache, validate
    from .finetune import load_checkpoint, model_from_checkpoint

    cfg = cfg or ExportConfig()
    progress = progress or SILENT
    run_dir, ck_path = resolve_run(run)
    out = Path(cfg.out or run_dir / "bundle")
    if out.exists() and not force:
        raise ExistsError(f"bundle {out} already exists: pass --force to overwrite it, or --out another folder")
    ck = load_checkpoint(ck_path)
    model = model_from_checkpoint(ck)
    labels = list(ck["labels"])
    pp = Preprocess.from_dict(ck["preprocess"])
    if cfg.embed_preprocess:
        pp = dataclasses.replace(pp, layout="NHWC-uint8")

    # real validation images of the run (or --eval-data): parity, and int8's accuracy check
    samples, data_dir = eval_samples(run_dir, labels, cfg.eval_data, seed=cfg.seed)
    from .data import stratified_sample

    samples = stratified_sample(samples, max(cfg.parity_images, cfg.eval_size if cfg.int8 else 0), seed=cfg.seed)
    cache = ImageCache()
    with progress.task("load validation images", total=len(samples)) as adv:
        samples, _ = validate(samples, Preprocess.from_dict(ck["preprocess"]), cache, progress=adv, where=str(data_dir))
    frames = cache.frames(samples, pp)  # [N,H,W,3]
    floats = pp.normalize(frames)  # [N,3,H,W]
    y = np.array([s.label for s in samples])

    stage = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    lock = RunLock(out.parent, f".{out.name}.lock")
    try:
        with lock:
            torch.set_grad_enabled(False)
            module = _embedded_module(model, pp) if cfg.embed_preprocess else model
            example = torch.from_numpy(frames[:1]) if cfg.embed_preprocess else torch.from_numpy(floats[:1])
            onnx_path = stage / VARIANT_FILES["fp32"]
            with progress.task("export to ONNX", total=3) as adv:
                _torch_export(module, example, onnx_path, cfg.opset)
                adv(1)
                proto = _check(onnx.load(str(onnx_path)), str(ck_path))
                adv(1)
                simplify_info = None
                if cfg.simplify:
                    proto, simplify_info = _simplify(proto, example.numpy())
                    proto = _check(proto, f"{ck_path} (simplified)")
                adv(1)
            ck_sha = sha256_file(ck_path)
            _set_metadata(proto, onnx_metadata(labels, pp, backbone=ck["backbone"],
                                               weights_source=ck.get("weights_source"), version=__version__,
                                               checkpoint_sha256=ck_sha, embed_preprocess=cfg.embed_preprocess))
            onnx.save(proto, str(onnx_path))

            # parity vs torch on real images
            inputs = frames if cfg.embed_preprocess else floats
            with progress.task("fp32 parity vs torch", total=len(inputs)) as adv:
                ref = np.concatenate([model(torch.from_numpy(floats[i:i + 16])).numpy()
                                      for i in range(0, len(floats), 16)])
                sess = ort_session(onnx_path)
                got = np.concatenate([sess.run(None, {"input": inputs[i:i + 16]})[0] for i in range(0, len(inputs), 16)])
                adv(len(inputs))
            fp32 = parity_figures(ref, got)
            fp32.update(tolerance=cfg.tolerance, images=str(data_dir), top1_torch=float(np.mean(ref.argmax(1) == y)),
                        top1_onnx=float(np.mean(got.argmax(1) == y)))
            if fp32["rel_diff"] > cfg.tolerance or fp32["top1_agreement"] < 1.0:
                raise ArtifactError(
                    f"fp32 parity failed for {ck_path}: max |diff| {fp32['max_abs_diff']:.3g} "
                    f"(relative {fp32['rel_diff']:.3g} > tolerance {cfg.tolerance:g}), top-1 agreement "
                    f"{fp32['top1_agreement']:.3f}; nothing was written. Try another --opset")
            n_ref = min(8, len(inputs))
            np.savez(stage / "parity.npz", inputs=inputs[:n_ref], logits=ref[:n_ref].astype(np.float32),
                     labels=y[:n_ref])

            parity = {"fp32": fp32}
            quant = None
            if cfg.int8:
                from .quantize import quantize_into_bundle

                quant = quantize_into_bundle(stage, cfg, run_dir=run_dir, labels=labels, pp=pp,
                                             eval_floats=floats, eval_labels=y, fp32_logits=got,
                                             meta=onnx_metadata(labels, pp, backbone=ck["backbone"],
                                                                weights_source=ck.get("weights_source"),
                                                                version=__version__, checkpoint_sha256=ck_sha,
                                                                embed_preprocess=cfg.embed_preprocess),
                                             progress=progress)
                parity["int8"] = quant["parity"]
                # int8 vs torch on the stored references, for `edgetl verify` on the device
                s8 = ort_session(stage / VARIANT_FILES["int8"])
                ref8 = s8.run(None, {"input": inputs[:n_ref]})[0]
                parity["int8"]["verify"] = {
                    "min_agreement": 1.0 if np.all(ref8.argmax(1) == ref[:n_ref].argmax(1)) else
                    float(np.mean(ref8.argmax(1) == ref[:n_ref].argmax(1))),
                    "max_abs_diff_tol": float(max(np.max(np.abs(ref8 - ref[:n_ref])) * 1.5, 1e-3))}

            shapes = {"input": ["batch", *inputs.shape[1:]], "logits": ["batch", len(labels)]}
            files = {name: file_entry(stage / name) for name in sorted(os.listdir(stage))
                     if (stage / name).is_file()}
            write_json(stage / "export.json", {"config": to_dict(cfg), "parity": parity, "simplify": simplify_info,
                                               "quantization": quant, "checkpoint": str(ck_path)})
            files["export.json"] = file_entry(stage / "export.json")
            manifest = {
                "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "created_by": {"edgetl": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                               "onnxruntime": __import__("onnxruntime").__version__, "python": platform.python_version()},
                "backbone": ck["backbone"], "weights_source": ck.get("weights_source"), "checkpoint_sha256": ck_sha,
                "labels": labels, "preprocess": pp.to_dict(), "embed_preprocess": cfg.embed_preprocess,
                "input": {"name": "input", "shape": shapes["input"],
                          "dtype": "uint8" if cfg.embed_preprocess else "float32",
                          "layout": "NHWC" if cfg.embed_preprocess else "NCHW"},
                "output": {"name": "logits", "shape": shapes["logits"], "dtype": "float32"},
                "opset": cfg.opset, "files": files,
                "variants": {v: f for v, f in VARIANT_FILES.items() if f in files},
                "parity": {"fp32": {"tolerance": cfg.tolerance, "max_abs_diff": fp32["max_abs_diff"]},
                           **({"int8": parity["int8"]["verify"]} if "int8" in parity else {})},
                "quantization": quant and {k: quant[k] for k in ("preset", "format", "activation_type", "weight_type",
                                                                   "per_channel", "reduce_range", "calib_method",
                                                                   "calib_size", "nodes_excluded", "op_types_float")},
            }
            write_json(stage / MANIFEST, manifest)
            _replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        torch.set_grad_enabled(True)
    return Bundle(out, labels, parity, quant, files)


def _replace_dir(stage: Path, out: Path) -> None:
    """Move the finished staging folder to ``out``; an old bundle is only removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
