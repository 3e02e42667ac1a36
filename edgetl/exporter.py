"""torch -> ONNX with proven fp32 parity, packed as a self-describing bundle.

    from edgetl.exporter import export                  # also edgetl.export / edgetl.ExportConfig
    bundle = export("models/run", ExportConfig(int8=True))
    bundle.path / "model.onnx", bundle.parity["fp32"]["max_abs_diff"]

Steps: rebuild the model from ``best.pt`` (edgetl.checkpoint) -> ``torch.onnx.export`` (opset >= 17,
dynamic batch, input ``input`` / output ``logits``; eval mode folds BatchNorm into the convolutions
and constant folding removes the rest) -> ``onnx.checker`` (full check) + shape inference ->
onnxslim where it makes the graph smaller without making it slower (measured, recorded) ->
metadata_props -> parity against torch on the run's real validation images (fails past
``tolerance``) -> optional int8 (edgetl.quantize, fed calibration and evaluation arrays loaded here)
-> the bundle folder, written aside and renamed into place.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import shutil
from pathlib import Path

import numpy as np

from . import __version__
from ._config import to_dict
from ._io import RunLock, sha256_file, write_json
from ._progress import SILENT, Progress
from .bundle import BUNDLE_FORMAT, MANIFEST, VARIANT_FILES, file_entry, format_version, onnx_metadata
from .config import ExportConfig
from .data import ImageCache, eval_samples, stratified_sample, validate
from .errors import ArtifactError, DataError, ExistsError
from .metrics import parity_figures, top1
from .preprocess import Preprocess
from .runtime import ort_session
from .timing import interleaved_latency

log = logging.getLogger(__name__)


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


@dataclasses.dataclass
class _Source:
    """The run being exported and the held-out images that prove the export."""

    run_dir: Path
    ck_path: Path
    ck: dict
    model: object  # the rebuilt torch classifier, eval mode
    labels: list[str]
    pp: Preprocess  # as the bundle's model takes it (NHWC-uint8 layout with --embed-preprocess)
    frames: np.ndarray  # uint8 [N, H, W, 3]
    floats: np.ndarray  # float32 [N, 3, H, W], normalised
    y: np.ndarray  # labels [N]
    data_dir: Path

    @property
    def inputs(self) -> np.ndarray:
        return self.frames if self.pp.layout == "NHWC-uint8" else self.floats

    def metadata(self, ck_sha: str, embed: bool) -> dict[str, str]:
        return onnx_metadata(self.labels, self.pp, backbone=self.ck["backbone"],
                             weights_source=self.ck.get("weights_source"), version=__version__,
                             checkpoint_sha256=ck_sha, embed_preprocess=embed)


def resolve_run(run: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint path), both absolute, from a run folder or a checkpoint file."""
    run = Path(run).expanduser().absolute()
    if run.is_file():
        return run.parent, run
    if not run.is_dir():
        raise ArtifactError(f"run folder not found: {run}; pass the folder edgetl finetune wrote (models/<run>)")
    ck = run / "best.pt"
    if not ck.is_file():
        raise ArtifactError(f"{run} has no best.pt: it is not a finished edgetl run; run edgetl finetune "
                            f"(or --resume it) first")
    return run, ck


def torch_export(module, example, path: Path, opset: int) -> None:
    """torch.onnx.export with edgetl's I/O names and a dynamic batch axis."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def check_onnx(model_proto, where: str):
    """onnx.checker (full) and strict shape inference, or one line naming ``where``."""
    import onnx

    try:
        onnx.checker.check_model(model_proto, full_check=True)
        return onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ArtifactError(f"{where}: the exported graph fails onnx.checker ({str(e).splitlines()[0]})") from None


def simplify(model_proto, example: np.ndarray, threads: int = 0) -> tuple[object, dict]:
    """onnxslim the graph; keep it only if it has fewer nodes, the same outputs, and is not slower."""
    info = {"tool": "onnxslim", "nodes_before": len(model_proto.graph.node)}
    try:
        import onnxslim
    except ImportError:
        return model_proto, {**info, "kept": False, "reason": "onnxslim not installed"}
    try:
        slim = onnxslim.slim(model_proto)
    except Exception as e:  # onnxslim raises many types; keep the unslimmed graph and say why
        return model_proto, {**info, "kept": False, "reason": f"onnxslim failed: {type(e).__name__}"}
    info["nodes_after"] = len(slim.graph.node)
    # the simplifier must not change the numbers: compare on the example and a random batch
    probe = np.concatenate([example, np.random.default_rng(0).standard_normal(example.shape).astype(example.dtype)]) \
        if example.dtype == np.float32 else np.concatenate([example, example[::-1]])
    before, after = model_proto.SerializeToString(), slim.SerializeToString()
    ra = ort_session(before).run(None, {"input": probe})[0]
    rb = ort_session(after).run(None, {"input": probe})[0]
    info["max_abs_diff"] = float(np.max(np.abs(ra - rb)))
    if info["max_abs_diff"] > 1e-4 * max(1.0, float(np.max(np.abs(ra)))):
        log.warning("onnxslim changed the model's outputs (max |diff| %.3g): kept the unsimplified graph",
                    info["max_abs_diff"])
        return model_proto, {**info, "kept": False, "reason": "changed the outputs"}
    a, b = interleaved_latency([before, after], example, rounds=3, threads=threads)
    info.update(p50_ms_before=round(a, 3), p50_ms_after=round(b, 3))
    keep = info["nodes_after"] < info["nodes_before"] and b <= a * 1.03
    info["kept"] = keep
    if not keep:
        info["reason"] = "not smaller" if info["nodes_after"] >= info["nodes_before"] else "not faster"
    return (slim if keep else model_proto), info


def export(run: str | Path, cfg: ExportConfig | None = None, *, force: bool = False,
           progress: Progress | None = None) -> Bundle:
    """Export a fine-tuned run to a bundle; see the module docstring."""
    import torch

    cfg = cfg or ExportConfig()
    progress = progress or SILENT
    run_dir, ck_path = resolve_run(run)
    out = Path(cfg.out or run_dir / "bundle")
    if out.exists() and not force:
        raise ExistsError(f"bundle {out} already exists: pass --force to overwrite it, or --out another folder")
    src = _load_source(run_dir, ck_path, cfg, progress)
    stage = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with RunLock(out.parent, f".{out.name}.lock"), torch.no_grad():
            ck_sha = sha256_file(ck_path)
            simplify_info = _to_onnx(src, cfg, stage, ck_sha, progress)
            fp32, ref, got = _fp32_parity(src, cfg, stage / VARIANT_FILES["fp32"], progress)
            n_ref = min(8, len(src.inputs))
            np.savez(stage / "parity.npz", inputs=src.inputs[:n_ref], logits=ref[:n_ref].astype(np.float32),
                     labels=src.y[:n_ref])
            parity, quant = {"fp32": fp32}, None
            if cfg.int8:
                quant = _int8(src, cfg, stage, got, ck_sha, progress)
                parity["int8"] = quant["parity"]
                parity["int8"]["verify"] = _int8_verify_tolerance(stage, src.inputs[:n_ref], ref[:n_ref])
            if cfg.fp16:
                parity["fp16"] = _fp16(src, stage, ref, n_ref, progress)
            files = _write_manifest(stage, src, cfg, ck_sha, parity=parity, quant=quant, simplify_info=simplify_info)
            _replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Bundle(out, src.labels, parity, quant, files)


def _load_source(run_dir: Path, ck_path: Path, cfg: ExportConfig, progress: Progress) -> _Source:
    from .checkpoint import load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(ck_path)
    model = model_from_checkpoint(ck)
    labels = list(ck["labels"])
    pp_train = Preprocess.from_dict(ck["preprocess"])
    pp = dataclasses.replace(pp_train, layout="NHWC-uint8") if cfg.embed_preprocess else pp_train
    # real validation images of the run (or --eval-data): parity, and int8's accuracy check
    samples, data_dir = eval_samples(run_dir, labels, cfg.eval_data, seed=cfg.seed)
    samples = stratified_sample(samples, max(cfg.parity_images, cfg.eval_size if cfg.int8 else 0), seed=cfg.seed)
    cache = ImageCache()
    with progress.task("load validation images", total=len(samples)) as adv:
        samples, _ = validate(samples, pp_train, cache, progress=adv, where=str(data_dir))
    frames = cache.frames(samples, pp)  # [N,H,W,3]
    return _Source(run_dir, ck_path, ck, model, labels, pp, frames, pp.normalize(frames),
                   np.array([s.label for s in samples]), data_dir)


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


def _set_metadata(model_proto, meta: dict[str, str]) -> None:
    import onnx

    onnx.helper.set_model_props(model_proto, meta)  # replaces any earlier metadata_props
    model_proto.producer_name = "edgetl"
    model_proto.producer_version = __version__


def _to_onnx(src: _Source, cfg: ExportConfig, stage: Path, ck_sha: str, progress: Progress) -> dict | None:
    """model.onnx in ``stage``: exported, checked, maybe simplified, with metadata. Returns onnxslim's report."""
    import onnx
    import torch

    embed = cfg.embed_preprocess
    module = _embedded_module(src.model, src.pp) if embed else src.model
    example = torch.from_numpy(src.frames[:1] if embed else src.floats[:1])
    path = stage / VARIANT_FILES["fp32"]
    simplify_info = None
    with progress.task("export to ONNX", total=3) as adv:
        torch_export(module, example, path, cfg.opset)
        adv(1)
        proto = check_onnx(onnx.load(str(path)), str(src.ck_path))
        adv(1)
        if cfg.simplify:
            proto, simplify_info = simplify(proto, example.numpy())
            proto = check_onnx(proto, f"{src.ck_path} (simplified)")
        adv(1)
    _set_metadata(proto, src.metadata(ck_sha, embed))
    onnx.save(proto, str(path))
    return simplify_info


def _fp32_parity(src: _Source, cfg: ExportConfig, onnx_path: Path, progress: Progress):
    """(figures, torch logits, onnxruntime logits) on the held-out images; raises past the tolerance."""
    import torch

    inputs = src.inputs
    with progress.task("fp32 parity vs torch", total=len(inputs)) as adv:
        ref = np.concatenate([src.model(torch.from_numpy(src.floats[i:i + 16])).numpy()
                              for i in range(0, len(src.floats), 16)])
        sess = ort_session(onnx_path)
        got = np.concatenate([sess.run(None, {"input": inputs[i:i + 16]})[0] for i in range(0, len(inputs), 16)])
        adv(len(inputs))
    fp32 = parity_figures(ref, got)
    fp32.update(tolerance=cfg.tolerance, images=str(src.data_dir), top1_torch=top1(ref, src.y),
                top1_onnx=top1(got, src.y))
    if fp32["rel_diff"] > cfg.tolerance or fp32["top1_agreement"] < 1.0:
        raise ArtifactError(
            f"fp32 parity failed for {src.ck_path}: max |diff| {fp32['max_abs_diff']:.3g} "
            f"(relative {fp32['rel_diff']:.3g} > tolerance {cfg.tolerance:g}), top-1 agreement "
            f"{fp32['top1_agreement']:.3f}; nothing was written. Try another --opset")
    return fp32, ref, got


def _calibration_samples(src: _Source, cfg: ExportConfig, n: int | None) -> tuple[list, Path]:
    """A seeded, class-stratified sample of the *train* split (or --calib-data), classes interleaved so
    that any prefix is stratified too (the search calibrates on a prefix first)."""
    samples, calib_dir = eval_samples(src.run_dir, src.labels, cfg.calib_data, which="train", seed=cfg.seed)
    if not samples:
        raise DataError(f"no calibration images in {calib_dir}: pass --calib-data DIR with train/<class>/ images")
    picked = samples if n is None else stratified_sample(samples, n, seed=cfg.seed)
    by_class: dict[int, list] = {}
    for s in picked:
        by_class.setdefault(s.label, []).append(s)
    order = [c[i] for i in range(max(map(len, by_class.values()))) for c in by_class.values() if i < len(c)]
    return order, calib_dir


def _inputs(src: _Source, samples: list, where: Path, what: str, progress: Progress) -> np.ndarray:
    """Preprocessed float NCHW inputs of ``samples`` (decoded once, through the image cache)."""
    cache = ImageCache()
    pp = dataclasses.replace(src.pp, layout="NCHW")
    with progress.task(what, total=len(samples)) as adv:
        samples, _ = validate(samples, pp, cache, progress=adv, where=str(where))
    x = pp.normalize(cache.frames(samples, pp))
    if x.shape[1:] != src.floats.shape[1:]:
        raise DataError(f"{what} give inputs {x.shape[1:]}, the model takes {src.floats.shape[1:]}")
    return x


def _int8(src: _Source, cfg: ExportConfig, stage: Path, fp32_logits: np.ndarray, ck_sha: str,
          progress: Progress) -> dict:
    """model.int8.onnx (and sensitivity.png) in ``stage``; returns the quantization report."""
    import json
    import tempfile

    import onnx

    from .quantize import QUANT_SETTINGS, PTQSearch, QuantOptions

    train = _qat_images(src, cfg, progress) if cfg.qat else None  # before any long work: a missing folder fails now
    calib_samples, calib_dir = _calibration_samples(src, cfg, cfg.calib_draw)
    calib = _inputs(src, calib_samples, calib_dir, "calibration images", progress)
    out = stage / VARIANT_FILES["int8"]
    opts = QuantOptions(preset=cfg.preset.value, per_channel=cfg.per_channel, calib_method=cfg.calib_method.value,
                        calib_size=min(cfg.calib_size, len(calib)), max_drop=cfg.max_drop,
                        min_agreement=cfg.min_agreement)
    with tempfile.TemporaryDirectory(dir=stage.parent) as tmp:
        search = PTQSearch(stage / VARIANT_FILES["fp32"], calib, src.floats, src.y, fp32_logits=fp32_logits,
                           opts=opts, work=Path(tmp), progress=progress)
        search.run()
        qat = _run_qat(search, src, cfg, train, Path(tmp), progress) if cfg.qat else None
        report = search.finish(out, plot=stage / "sensitivity.png")
    report["qat"] = qat
    if not report["parity"]["agreement_met"] and not cfg.qat:
        report["next_step"] = f"edgetl export {src.run_dir} --int8 --qat --force"
        report["verdict"] += (f"; PTQ missed the agreement target: quantization-aware training is the next step "
                              f"({report['next_step']})")
    proto = onnx.load(str(out))
    meta = {**src.metadata(ck_sha, cfg.embed_preprocess),
            "edgetl.quantization": json.dumps({k: report[k] for k in QUANT_SETTINGS})}
    _set_metadata(proto, meta)
    onnx.save(proto, str(out))
    report["int8_size"] = out.stat().st_size
    return report


def _qat_images(src: _Source, cfg: ExportConfig, progress: Progress) -> np.ndarray:
    """QAT's training inputs: the train split the calibration comes from (capped, stratified)."""
    try:
        samples, where = _calibration_samples(src, cfg, cfg.qat_images)
    except DataError as e:
        raise DataError(f"--qat trains on the run's train images, which are not reachable ({e}); pass "
                        f"--calib-data DIR with them, or export without --qat") from None
    return _inputs(src, samples, where, "QAT training images", progress)


def _run_qat(search, src: _Source, cfg: ExportConfig, train: np.ndarray, work: Path, progress: Progress) -> dict:
    """QAT from the most faithful QDQ candidate; joins the search only if it ends more faithful."""
    from ._dist import resolve_device
    from .qat import QATConfig, qat_finetune

    if search.met_fast:
        progress.log("PTQ met the agreement target on the fast kernels: QAT skipped")
        return {"skipped": "PTQ met the agreement target"}
    base = search.qat_base()
    if base is None:
        progress.log("no QDQ candidate to start QAT from (every one failed to quantize): QAT skipped")
        return {"skipped": "no QDQ candidate to start from"}
    teacher = ort_session(search.fp32)

    def batches(rng: np.random.Generator) -> list[np.ndarray]:
        idx = rng.permutation(len(train))
        return [train[idx[i:i + cfg.qat_batch_size]] for i in range(0, len(idx), cfg.qat_batch_size)]

    def evaluate(path: Path) -> dict:
        from .ptq import logits

        q = logits(path, search.x)
        return {"top1_agreement": float(np.mean(q.argmax(1) == search.ref.argmax(1))),
                "mean_abs_diff": float(np.mean(np.abs(q - search.ref))), "top1": float(np.mean(q.argmax(1) == search.y))}

    device = resolve_device(cfg.qat_device.value)
    rep = qat_finetune(base["path"], work / "qat.onnx", teacher=lambda x: teacher.run(None, {"input": x})[0],
                       train=batches, evaluate=evaluate, device=str(device), progress=progress,
                       cfg=QATConfig(epochs=cfg.qat_epochs, lr=cfg.qat_lr, batch_size=cfg.qat_batch_size, seed=cfg.seed))
    rep.update(started_from=base["method"], train_images=len(train))
    end = rep["history"][-1]
    if rep["best_epoch"] == 0:
        rep["dropped"] = (f"QAT ({cfg.qat_epochs} epochs, {rep['seconds']:.0f} s) ended at "
                          f"{100 * end['top1_agreement']:.1f}% agreement, no more faithful than PTQ's "
                          f"{100 * base['top1_agreement']:.1f}%: kept PTQ")
        progress.log(rep["dropped"])
        log.warning("%s", rep["dropped"])
        return rep
    search.add(work / "qat.onnx", method=f"qat: {rep['best_epoch']} of {cfg.qat_epochs} epochs on {device.type} from "
               f"{base['method']}", fmt="QDQ", recipe=base["recipe"], kind="qat", why="quantization-aware training")
    return rep


FP16_TOLERANCE = 0.02  # max |logit diff| vs torch's float16 forward <= this * max(1, max |logit|)


def _fp16(src: _Source, stage: Path, ref: np.ndarray, n_ref: int, progress: Progress) -> dict:
    """model.fp16.onnx (float16 weights and compute, float32 input/output: the runtime does not change),
    proven against torch's own float16 forward of the same checkpoint on the held-out images."""
    import copy

    import onnx
    import torch
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = stage / VARIANT_FILES["fp16"]
    with progress.task("fp16 export and parity vs torch float16", total=2) as adv:
        proto = convert_float_to_float16(onnx.load(str(stage / VARIANT_FILES["fp32"])), keep_io_types=True)
        _toposort(proto.graph)  # the converter appends its input Casts after their consumers
        onnx.save(check_onnx(proto, f"{src.ck_path} (float16)"), str(out))  # metadata_props carried over
        adv(1)
        model16 = copy.deepcopy(src.model).half()
        ref16 = np.concatenate([model16(torch.from_numpy(src.floats[i:i + 16]).half()).float().numpy()
                                for i in range(0, len(src.floats), 16)])
        sess = ort_session(out)  # on a CPU without float16 kernels onnxruntime computes each op in float32
        got = np.concatenate([sess.run(None, {"input": src.inputs[i:i + 16]})[0] for i in range(0, len(src.inputs), 16)])
        adv(1)
    fig = parity_figures(ref16, got)
    vs_fp32 = parity_figures(ref, got)
    fig.update(tolerance=FP16_TOLERANCE, reference="torch float16 forward", top1_fp16=top1(got, src.y),
               top1_torch_fp16=top1(ref16, src.y), agreement_with_fp32=vs_fp32["top1_agreement"],
               max_abs_diff_vs_fp32=vs_fp32["max_abs_diff"], images=str(src.data_dir))
    if fig["rel_diff"] > FP16_TOLERANCE:
        raise ArtifactError(f"fp16 parity failed for {src.ck_path}: max |diff| {fig['max_abs_diff']:.3g} against torch's "
                            f"float16 forward (relative {fig['rel_diff']:.3g} > {FP16_TOLERANCE:g}); nothing was "
                            f"written. Export without --fp16 (this model overflows or underflows in float16)")
    head = got[:n_ref]
    scale = max(1.0, float(np.max(np.abs(ref[:n_ref]))))
    agree = float(np.mean(head.argmax(1) == ref[:n_ref].argmax(1)))
    fig["verify"] = {"min_agreement": max(0.0, agree - 1.0 / n_ref),  # one near-tie may flip on a GPU
                     # a GPU's float16 kernels round differently from the CPU's cast-per-op: a wider margin than int8's
                     "max_abs_diff_tol": float(max(3.0 * np.max(np.abs(head - ref[:n_ref])), 1e-2 * scale))}
    return fig


def _toposort(graph) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs (Kahn)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:  # a cycle or a dangling input: leave it to onnx.checker to name
            order += rest
            break
        order += done
        ready.update(o for n in done for o in n.output)
        pending = rest
    nodes = [type(n)() for n in order]
    for dst, src in zip(nodes, order):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


def _int8_verify_tolerance(stage: Path, inputs: np.ndarray, ref: np.ndarray) -> dict:
    """What `edgetl verify` accepts for int8 on the stored references (measured here, with margin)."""
    got = ort_session(stage / VARIANT_FILES["int8"]).run(None, {"input": inputs})[0]
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    return {"min_agreement": agree, "max_abs_diff_tol": float(max(np.max(np.abs(got - ref)) * 1.5, 1e-3))}


def _write_manifest(stage: Path, src: _Source, cfg: ExportConfig, ck_sha: str, *, parity: dict, quant: dict | None,
                    simplify_info: dict | None) -> dict:
    """export.json and bundle.json (every file's sha256 and size); returns the files table."""
    import onnx
    import onnxruntime
    import torch

    from .quantize import QUANT_SETTINGS

    embed = cfg.embed_preprocess
    files = {name: file_entry(stage / name) for name in sorted(os.listdir(stage)) if (stage / name).is_file()}
    write_json(stage / "export.json", {"config": to_dict(cfg), "parity": parity, "simplify": simplify_info,
                                       "quantization": quant, "checkpoint": str(src.ck_path)})
    files["export.json"] = file_entry(stage / "export.json")
    shape_in = ["batch", *src.inputs.shape[1:]]
    write_json(stage / MANIFEST, {
        "format": BUNDLE_FORMAT, "format_version": format_version(parity),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "created_by": {"edgetl": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                       "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "backbone": src.ck["backbone"], "weights_source": src.ck.get("weights_source"), "checkpoint_sha256": ck_sha,
        "labels": src.labels, "preprocess": src.pp.to_dict(), "embed_preprocess": embed,
        "input": {"name": "input", "shape": shape_in, "dtype": "uint8" if embed else "float32",
                  "layout": "NHWC" if embed else "NCHW"},
        "output": {"name": "logits", "shape": ["batch", len(src.labels)], "dtype": "float32"},
        "opset": cfg.opset, "files": files,
        "variants": {v: f for v, f in VARIANT_FILES.items() if f in files},
        "parity": {"fp32": {"tolerance": cfg.tolerance, "max_abs_diff": parity["fp32"]["max_abs_diff"]},
                   **{v: parity[v]["verify"] for v in ("int8", "fp16") if v in parity}},
        "quantization": quant and {k: quant[k] for k in QUANT_SETTINGS},
    })
    return files


def _replace_dir(stage: Path, out: Path) -> None:
    """Move the finished staging folder to ``out``; an old bundle is only removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
