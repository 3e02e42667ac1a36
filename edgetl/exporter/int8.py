"""The int8 variant of a bundle: calibration and evaluation images, the PTQ search
(edgetl.quantization.search), QAT when the search asks for it, and the tolerance `edgetl verify` uses."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._progress import Progress
from ..config import ExportConfig
from ..data import eval_samples, stratified_sample
from ..errors import DataError
from ..runtime import ort_session
from ..runtime.bundle import VARIANT_FILES
from .onnx_graph import set_metadata
from .source import Source, prepared_inputs

log = logging.getLogger(__name__)


def calibration_samples(src: Source, cfg: ExportConfig, n: int | None) -> tuple[list, Path]:
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


def int8_variant(src: Source, cfg: ExportConfig, stage: Path, fp32_logits: np.ndarray, ck_sha: str,
          progress: Progress) -> dict:
    """model.int8.onnx (and sensitivity.png) in ``stage``; returns the quantization report."""
    import json
    import tempfile

    import onnx

    from ..quantization.search import QUANT_SETTINGS, PTQSearch, QuantOptions

    train = _qat_images(src, cfg, progress) if cfg.qat else None  # before any long work: a missing folder fails now
    calib_samples, calib_dir = calibration_samples(src, cfg, cfg.calib_draw)
    calib = prepared_inputs(src, calib_samples, calib_dir, "calibration images", progress)
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
    set_metadata(proto, meta)
    onnx.save(proto, str(out))
    report["int8_size"] = out.stat().st_size
    return report


def _qat_images(src: Source, cfg: ExportConfig, progress: Progress) -> np.ndarray:
    """QAT's training inputs: the train split the calibration comes from (capped, stratified)."""
    try:
        samples, where = calibration_samples(src, cfg, cfg.qat_images)
    except DataError as e:
        raise DataError(f"--qat trains on the run's train images, which are not reachable ({e}); pass "
                        f"--calib-data DIR with them, or export without --qat") from None
    return prepared_inputs(src, samples, where, "QAT training images", progress)


def _run_qat(search, src: Source, cfg: ExportConfig, train: np.ndarray, work: Path, progress: Progress) -> dict:
    """QAT from the most faithful QDQ candidate; joins the search only if it ends more faithful."""
    from .._dist import resolve_device
    from ..quantization.qat import QATConfig, qat_finetune

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
        from ..quantization.recipes import logits

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


def int8_verify_tolerance(stage: Path, inputs: np.ndarray, ref: np.ndarray) -> dict:
    """What `edgetl verify` accepts for int8 on the stored references (measured here, with margin)."""
    got = ort_session(stage / VARIANT_FILES["int8"]).run(None, {"input": inputs})[0]
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    return {"min_agreement": agree, "max_abs_diff_tol": float(max(np.max(np.abs(got - ref)) * 1.5, 1e-3))}
