"""torch -> ONNX: the graph exported, checked, simplified where that measures no slower, its metadata
written, and its fp32 parity against torch proven on real images."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import __version__
from .._progress import Progress
from ..config import ExportConfig
from ..errors import ArtifactError
from ..runtime import ort_session
from ..runtime.bundle import VARIANT_FILES
from ..runtime.metrics import parity_figures, top1
from ..runtime.timing import interleaved_latency
from .source import Source

log = logging.getLogger(__name__)


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
    probe = np.concatenate([example, np.random.default_rng(0).standard_normal(example.shape).astype(example.dtype)])
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


def set_metadata(model_proto, meta: dict[str, str]) -> None:
    import onnx

    onnx.helper.set_model_props(model_proto, meta)  # replaces any earlier metadata_props
    model_proto.producer_name = "edgetl"
    model_proto.producer_version = __version__


def to_onnx(src: Source, cfg: ExportConfig, stage: Path, ck_sha: str, progress: Progress) -> dict | None:
    """model.onnx in ``stage``: exported, checked, maybe simplified, with metadata. Returns onnxslim's report."""
    import onnx
    import torch

    example = torch.from_numpy(src.floats[:1])  # float NCHW: --embed-preprocess is applied last (exporter.embed)
    path = stage / VARIANT_FILES["fp32"]
    simplify_info = None
    with progress.task("export to ONNX", total=3) as adv:
        torch_export(src.model, example, path, cfg.opset)
        adv(1)
        proto = check_onnx(onnx.load(str(path)), str(src.ck_path))
        adv(1)
        if cfg.simplify:
            proto, simplify_info = simplify(proto, example.numpy())
            proto = check_onnx(proto, f"{src.ck_path} (simplified)")
        adv(1)
    set_metadata(proto, src.metadata(ck_sha, cfg.embed_preprocess))
    onnx.save(proto, str(path))
    return simplify_info


def fp32_parity(src: Source, cfg: ExportConfig, onnx_path: Path, progress: Progress):
    """(figures, torch logits, onnxruntime logits) on the held-out images; raises past the tolerance."""
    import torch

    from ..quantization.recipes import logits

    with progress.task("fp32 parity vs torch", total=len(src.floats)) as adv:
        ref = np.concatenate([src.model(torch.from_numpy(src.floats[i:i + 16])).numpy()
                              for i in range(0, len(src.floats), 16)])
        got = logits(onnx_path, src.floats)
        adv(len(src.floats))
    fp32 = parity_figures(ref, got)
    fp32.update(tolerance=cfg.tolerance, images=str(src.data_dir), top1_torch=top1(ref, src.y),
                top1_onnx=top1(got, src.y))
    if fp32["rel_diff"] > cfg.tolerance or fp32["top1_agreement"] < 1.0:
        raise ArtifactError(
            f"fp32 parity failed for {src.ck_path}: max |diff| {fp32['max_abs_diff']:.3g} "
            f"(relative {fp32['rel_diff']:.3g} > tolerance {cfg.tolerance:g}), top-1 agreement "
            f"{fp32['top1_agreement']:.3f}; nothing was written. Try another --opset")
    return fp32, ref, got
