"""torch -> ONNX with proven fp32 parity, packed as a self-describing bundle.

    from edgetl.exporter import export                  # also edgetl.export / edgetl.ExportConfig
    bundle = export("models/run", ExportConfig(int8=True))
    bundle.path / "model.onnx", bundle.parity["fp32"]["max_abs_diff"]

Steps: rebuild the model from ``best.pt`` (edgetl.zoo.checkpoint) -> ``torch.onnx.export`` (opset >= 17,
dynamic batch, input ``input`` / output ``logits``; eval mode folds BatchNorm into the convolutions
and constant folding removes the rest) -> ``onnx.checker`` (full check) + shape inference ->
onnxslim where it makes the graph smaller without making it slower (measured, recorded) ->
metadata_props -> parity against torch on the run's real validation images (fails past
``tolerance``) -> optional int8 (edgetl.quantization.search, fed calibration and evaluation arrays loaded here)
-> optional fp16 -> with ``--embed-preprocess``, every variant made to take uint8 frames (edgetl.exporter.embed,
proven identical) -> the bundle folder, written aside and renamed into place.
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
import PIL

from .. import __version__
from .._config import to_dict
from .._io import RunLock, sha256_file, write_json
from .._progress import SILENT, Progress
from ..config import ExportConfig
from ..errors import ExistsError
from ..runtime.bundle import (
    BUNDLE_FORMAT,
    MANIFEST,
    VARIANT_FILES,
    file_entry,
)
from ..runtime.preprocess import require_opencv
from .embed import embed_variants
from .fp16 import fp16_variant
from .int8 import int8_variant, int8_verify_tolerance
from .onnx_graph import fp32_parity, to_onnx
from .source import Source, load_source, resolve_run

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
    src = load_source(run_dir, ck_path, cfg, progress)
    stage = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with RunLock(out.parent, f".{out.name}.lock"), torch.no_grad():
            ck_sha = sha256_file(ck_path)
            simplify_info = to_onnx(src, cfg, stage, ck_sha, progress)
            fp32, ref, got = fp32_parity(src, cfg, stage / VARIANT_FILES["fp32"], progress)
            n_ref = min(8, len(src.inputs))
            np.savez(stage / "parity.npz", inputs=src.inputs[:n_ref], logits=ref[:n_ref].astype(np.float32),
                     labels=src.y[:n_ref], photo=src.photo, photo_frame=src.pp.frame(src.photo))
            parity, quant = {"fp32": fp32}, None
            if cfg.int8:
                quant = int8_variant(src, cfg, stage, got, ck_sha, progress)
                parity["int8"] = quant["parity"]
                parity["int8"]["verify"] = int8_verify_tolerance(stage, src.floats[:n_ref], ref[:n_ref])
            if cfg.fp16:
                parity["fp16"] = fp16_variant(src, stage, ref, n_ref, progress)
            if cfg.embed_preprocess:  # last: every variant above was made and proven on the float input
                parity["embedded"] = embed_variants(stage, src, progress,
                                                    keep_quantizer=bool(quant) and quant.get("preset") == "tensorrt")
            files = _write_manifest(stage, src, cfg, ck_sha, parity=parity, quant=quant, simplify_info=simplify_info)
            _replace_dir(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Bundle(out, src.labels, parity, quant, files)


def _write_manifest(stage: Path, src: Source, cfg: ExportConfig, ck_sha: str, *, parity: dict, quant: dict | None,
                    simplify_info: dict | None) -> dict:
    """export.json and bundle.json (every file's sha256 and size); returns the files table."""
    import onnx
    import onnxruntime
    import torch

    from ..quantization.search import QUANT_SETTINGS

    embed = cfg.embed_preprocess
    files = {name: file_entry(stage / name) for name in sorted(os.listdir(stage)) if (stage / name).is_file()}
    write_json(stage / "export.json", {"config": to_dict(cfg), "parity": parity, "simplify": simplify_info,
                                       "quantization": quant, "checkpoint": str(src.ck_path)})
    files["export.json"] = file_entry(stage / "export.json")
    shape_in = ["batch", *src.inputs.shape[1:]]
    write_json(stage / MANIFEST, {
        "format": BUNDLE_FORMAT, "format_version": src.format_version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "created_by": {"edgetl": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                       "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                       "pillow": PIL.__version__,
                       **({"opencv": require_opencv().__version__} if src.pp.resampler == "opencv" else {})},
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
