"""Static int8 post-training quantization that keeps accuracy and is measured, never assumed, faster.

    from edgetl.quantize import quantize_into_bundle     # called by edgetl.export with --int8
    PRESETS["x86-avx2"]                                  # presets per target, as data

Recipe: ``quant_pre_process`` (shape inference, graph optimisation, BN fusion) -> calibration on a
seeded, class-stratified sample of the run's *train* split -> ``quantize_static`` with a preset.
With ``--preset auto`` the host's ISA picks the preset and the candidate variants (QDQ and
QOperator, with and without the preset's float op types) are checked for accuracy on held-out
images; those that pass are timed in interleaved rounds with fp32 and the same session options (so
drift on a shared CPU hits all alike). The fastest wins; of those within 3% of it (timing noise),
the smallest file. If none is faster than fp32, the fastest of the accurate ones whose file is
within 5% of the smallest is kept, and the verdict says int8 bought size, not speed.
If int8 loses more than ``max_drop`` top-1 points, nodes are ranked by quantization sensitivity
(SQNR of each activation, onnxruntime's QDQ debugging helpers) and the most sensitive stay in
float until the drop fits; if nothing fits, export fails with the figures and writes nothing.

No torch here: calibration and evaluation inputs arrive as numpy arrays.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from .bundle import VARIANT_FILES
from .errors import ArtifactError, DataError
from .targets import host_isa, host_preset

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantPreset:
    """How to quantize for one kind of target."""

    name: str
    activation_type: str  # "QUInt8" | "QInt8"
    weight_type: str  # "QInt8"
    reduce_range: bool  # 7-bit weights: avoids int16 overflow in AVX2 u8s8 (vpmaddubsw) without VNNI
    symmetric_activations: bool
    formats: tuple[str, ...]  # candidate formats: "QDQ" (portable) and/or "QOperator" (fastest ORT CPU kernels)
    op_types_float: tuple[str, ...]  # op types int8 makes slower on this target: a candidate keeps them float
    note: str


PRESETS: dict[str, QuantPreset] = {p.name: p for p in [
    QuantPreset("x86-avx2", "QUInt8", "QInt8", True, False, ("QOperator", "QDQ"),
                ("Add", "Mul", "Sigmoid", "HardSigmoid", "HardSwish", "GlobalAveragePool"),
                "AVX2 without VNNI: U8S8 with reduce_range keeps vpmaddubsw from saturating"),
    QuantPreset("x86-vnni", "QUInt8", "QInt8", False, False, ("QOperator", "QDQ"), ("Sigmoid", "HardSigmoid"),
                "AVX512-VNNI / AVX-VNNI / AMX: full 8-bit range, dot-product instructions"),
    QuantPreset("arm64", "QUInt8", "QInt8", False, False, ("QDQ", "QOperator"), ("Sigmoid", "HardSigmoid"),
                "ARMv8.2 dot-product (Pi 5 / Orin CPU): U8S8 QDQ, full range"),
    QuantPreset("tensorrt", "QInt8", "QInt8", False, True, ("QDQ",), (),
                "TensorRT takes explicit QDQ with symmetric int8 activations and per-channel weights"),
]}


class _BatchReader(CalibrationDataReader):
    """onnxruntime's CalibrationDataReader over any re-iterable of batches (restartable)."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self._name, self._batches, self._it = input_name, batches, None

    def get_next(self):
        if self._it is None:
            self._it = iter(self._batches)
        b = next(self._it, None)
        return None if b is None else {self._name: b}

    def rewind(self):
        self._it = None


def _batches(x: np.ndarray, bs: int = 16) -> list[np.ndarray]:
    return [x[i:i + bs] for i in range(0, len(x), bs)]


def _quantize(pre: Path, out: Path, calib: np.ndarray, preset: QuantPreset, fmt: str, per_channel: bool,
              method: str, exclude: Iterable[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra = {"ActivationSymmetric": preset.symmetric_activations, "WeightSymmetric": True}
    if method == "percentile":
        extra["CalibPercentile"] = 99.99
    # histogram calibrators (entropy, percentile) stack batches: they need equal batch sizes
    reader = _BatchReader("input", _batches(calib, 16 if method == "minmax" else 1))
    quantize_static(str(pre), str(out), reader,
                    quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                    per_channel=per_channel, reduce_range=preset.reduce_range,
                    activation_type=getattr(QuantType, preset.activation_type),
                    weight_type=getattr(QuantType, preset.weight_type),
                    nodes_to_exclude=list(exclude),
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method],
                    extra_options=extra,
                    # calibrate once per method: every candidate reuses the tensor ranges
                    calibration_cache_path=str(pre.parent / f"calib-{method}.json"))


def _logits(model: Path, x: np.ndarray, threads: int = 0) -> np.ndarray:
    from .runtime import ort_session

    s = ort_session(model, threads)
    return np.concatenate([s.run(None, {"input": b})[0] for b in _batches(x, 32)])


def _nodes_of_types(model: Path, op_types: Iterable[str]) -> list[str]:
    import onnx

    ops = set(op_types)
    return [n.name for n in onnx.load(str(model)).graph.node if n.op_type in ops]


# ops that pass a tensor through (ORT fuses Clip/Relu into the producing Conv's output quantization):
# a "layer" for sensitivity is a compute node plus the pass-through ops right after it
_PASS_THROUGH = {"Clip", "Relu", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"}


def sensitivity(pre: Path, qdq: Path, x: np.ndarray, work: Path) -> list[dict]:
    """Per-layer SQNR lost to int8 (dB), most sensitive first.

    Each row is one layer: a compute node and the pass-through ops fused after it (Conv+Clip), with
    ``nodes`` listing all of them so that keeping the layer float excludes the whole fused group.
    A layer's sensitivity is the SQNR (float model vs int8 model activations, onnxruntime's QDQ
    debugging helpers) it loses: SQNR of its input minus SQNR of its output. The local Q/DQ error
    alone misses error amplification in linear bottlenecks; the cumulative one blames every late layer.
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    aug_f, aug_q = work / "aug_f.onnx", work / "aug_q.onnx"
    modify_model_output_intermediate_tensors(str(pre), str(aug_f))
    modify_model_output_intermediate_tensors(str(qdq), str(aug_q))
    reader = _BatchReader("input", _batches(x[:16], 8))
    fa = collect_activations(str(aug_f), reader)
    reader.rewind()
    qa = collect_activations(str(aug_q), reader)
    errs = compute_activation_error(create_activation_matching(qa, fa))
    xm = {t: float(np.mean(e["xmodel_err"])) for t, e in errs.items() if "xmodel_err" in e}
    graph = onnx.load(str(pre)).graph
    # the graph input is the same tensor in both models: what it loses is its own 8-bit rounding
    lo, hi = float(min(x.min(), 0.0)), float(max(x.max(), 0.0))
    step = (hi - lo) / 255 or 1.0
    err = x - (np.round((x - lo) / step) * step + lo)
    # (capped at 60 dB: an input on the 8-bit grid, e.g. (u8 - 127) / 128, is exact)
    xm["input"] = min(60.0, 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / max(np.sum(err.astype(np.float64) ** 2), 1e-30)))
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    consts = {i.name for i in graph.initializer}

    def measured_source(t: str) -> str:  # walk up through pass-through ops to a measured tensor
        while t not in xm and t in producer and producer[t].op_type in _PASS_THROUGH:
            t = producer[t].input[0]
        return t

    rows = []
    for node in graph.node:
        if node.op_type in _PASS_THROUGH or not node.output:
            continue
        members, out = [node.name], node.output[0]
        while out not in xm and len(consumers.get(out, [])) == 1 and consumers[out][0].op_type in _PASS_THROUGH:
            members.append(consumers[out][0].name)
            out = consumers[out][0].output[0]
        if out not in xm:
            continue
        ins = [xm[s] for s in (measured_source(i) for i in node.input if i and i not in consts) if s in xm]
        if not ins:
            continue
        rows.append({"node": node.name, "op_type": node.op_type, "nodes": members, "tensor": out,
                     "sqnr_db": xm[out], "sqnr_loss_db": min(ins) - xm[out]})
    return sorted(rows, key=lambda r: -r["sqnr_loss_db"])


def quantize_into_bundle(stage: Path, cfg, *, run_dir: Path, labels, pp, eval_floats: np.ndarray,
                         eval_labels: np.ndarray, fp32_logits: np.ndarray, meta: dict, progress) -> dict:
    """Write ``model.int8.onnx`` (and ``sensitivity.png``) into the staging bundle folder; return the report."""
    import onnx

    from .data import ImageCache, stratified_sample, validate
    from .export import eval_samples

    # calibration: a seeded, class-stratified sample of the *train* split (or --calib-data)
    samples, calib_dir = eval_samples(run_dir, labels, cfg.calib_data, which="train", seed=cfg.seed)
    if not samples:
        raise DataError(f"no calibration images in {calib_dir}: pass --calib-data DIR with train/<class>/ images")
    samples = stratified_sample(samples, cfg.calib_size, seed=cfg.seed)
    cache = ImageCache()
    with progress.task("calibration images", total=len(samples)) as adv:
        samples, _ = validate(samples, dataclasses.replace(pp, layout="NCHW"), cache, progress=adv, where=str(calib_dir))
    calib = pp.normalize(cache.frames(samples, pp))
    if calib.shape[1:] != eval_floats.shape[1:]:
        raise DataError(f"calibration images give inputs {calib.shape[1:]}, the model takes {eval_floats.shape[1:]}")
    out = stage / VARIANT_FILES["int8"]
    report = quantize_model(stage / VARIANT_FILES["fp32"], out, calib, eval_floats, eval_labels, fp32_logits,
                            preset=cfg.preset.value, per_channel=cfg.per_channel, calib_method=cfg.calib_method.value,
                            max_drop=cfg.max_drop, min_agreement=cfg.min_agreement, plot=stage / "sensitivity.png",
                            progress=progress)
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    qinfo = {k: report[k] for k in QUANT_SETTINGS}
    for k, v in {**meta, "edgetl.quantization": json.dumps(qinfo)}.items():
        p = proto.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(proto, str(out))
    report["int8_size"] = out.stat().st_size
    return report


# the settings that reproduce an int8 model (bundle.json and the model's metadata record them)
QUANT_SETTINGS = ("preset", "format", "activation_type", "weight_type", "per_channel", "reduce_range", "calib_method",
                  "calib_size", "nodes_excluded", "op_types_float")


def pick_variant(variants: list[dict], fp32_ms: float) -> dict:
    """The int8 variant to keep, from timed ones ({"p50_ms", "size", ...}) that all passed the accuracy checks.

    The fastest, if it beats fp32; of those within 3% of it (timing noise) the smallest file. If none
    beats fp32, int8 buys size only: files within 5% of the smallest count as equally small and the
    fastest of them is kept (mobilenet_v3_large: keeping HardSwish in float saved 0.3% of the file
    and cost 8% of the latency).
    """
    fastest = min(c["p50_ms"] for c in variants)
    if fastest <= fp32_ms:
        ties = [c for c in variants if c["p50_ms"] <= min(1.03 * fastest, fp32_ms)]
        return min(ties, key=lambda c: (c["size"], c["p50_ms"]))
    smallest = min(c["size"] for c in variants)
    return min((c for c in variants if c["size"] <= 1.05 * smallest), key=lambda c: c["p50_ms"])


def quantize_model(fp32: Path, out: Path, calib: np.ndarray, eval_floats: np.ndarray, eval_labels: np.ndarray,
                   fp32_logits: np.ndarray | None = None, *, preset: str = "auto", per_channel: bool = True,
                   calib_method: str = "minmax", max_drop: float = 0.5, min_agreement: float = 0.99,
                   plot: Path | None = None, report_sensitivity: bool = True, progress=None) -> dict:
    """Quantize the fp32 ONNX model ``fp32`` into ``out`` and return the report.

    ``calib`` and ``eval_floats`` are preprocessed NCHW float32 inputs; ``eval_labels`` the true classes
    of ``eval_floats``. Raises ArtifactError (and writes nothing) if no variant keeps the drop within
    ``max_drop`` top-1 points (at least one image: 100/N points on N images, the finest drop N images
    can show). ``min_agreement`` is a target, not a gate: below it the sensitive layers
    go back to float until it is met; if it never is, the result says so.
    """
    import shutil

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ._progress import SILENT
    from .export import interleaved_latency, parity_figures

    progress = progress or SILENT
    fp32, out = Path(fp32), Path(out)
    if fp32_logits is None:
        fp32_logits = _logits(fp32, eval_floats)
    preset_name = host_preset() if preset == "auto" else preset
    preset = PRESETS[preset_name]
    on_host = preset_name == host_preset()
    top1_fp32 = float(np.mean(fp32_logits.argmax(1) == eval_labels))
    bench_x = eval_floats[:1]
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        work = Path(tmp)
        pre = work / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        fp32_ms = None

        def evaluate(path: Path, fmt: str, exclude: list[str], why: str) -> dict:
            logits = _logits(path, eval_floats)
            fig = parity_figures(fp32_logits, logits)
            top1 = float(np.mean(logits.argmax(1) == eval_labels))
            return {"path": path, "format": fmt, "nodes_excluded": exclude, "why": why, "top1_int8": top1,
                    "drop_points": 100 * (top1_fp32 - top1), "top1_agreement": fig["top1_agreement"],
                    "max_abs_diff": fig["max_abs_diff"], "size": path.stat().st_size,
                    "p50_ms": None}  # timed below, if still in the running

        # the candidates: each format, with and without the preset's slow-in-int8 op types in float
        plans = []
        float_nodes = _nodes_of_types(pre, preset.op_types_float)
        for fmt in preset.formats if on_host else preset.formats[:1]:
            plans.append((fmt, [], "all ops int8"))
            if float_nodes and on_host:
                plans.append((fmt, float_nodes, f"{'/'.join(preset.op_types_float)} kept float"))
        cands, failed = [], []
        with progress.task(f"int8 candidates ({preset_name})", total=len(plans)) as adv:
            for i, (fmt, excl, why) in enumerate(plans):
                path = work / f"cand{i}.onnx"
                try:
                    _quantize(pre, path, calib, preset, fmt, per_channel, calib_method, excl)
                    cands.append(evaluate(path, fmt, excl, why))
                except Exception as e:  # onnxruntime's quantizer can emit a graph its runtime refuses
                    # (e.g. QOperator QLinearAdd fed an int32 bias in ConvNeXt): skip that candidate
                    failed.append({"format": fmt, "why": why, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                    log.warning("int8 candidate %s (%s) failed: %s", fmt, why, failed[-1]["error"])
                adv(1)
        if not cands:
            raise ArtifactError(f"every int8 candidate failed to quantize or load ({failed[0]['error']}): "
                                f"nothing was written; export without --int8, or try another --preset")

        # a gate finer than one image cannot be measured: on N images it is at least one image (100/N points)
        gate = max(max_drop, 100.0 / len(eval_labels)) if len(eval_labels) else max_drop

        def fits(c: dict) -> bool:
            return c["drop_points"] <= gate + 1e-9

        def agrees(c: dict) -> bool:
            return c["top1_agreement"] >= min_agreement - 1e-12

        ok = [c for c in cands if fits(c)]
        sens: list[dict] = []
        # accuracy-aware fallback, when the drop is over --max-drop or the agreement under --min-agreement:
        # keep the most sensitive layers in float, more at each step, until both are met
        if not any(agrees(c) for c in ok):
            qdq = work / "sens_qdq.onnx"
            _quantize(pre, qdq, calib, preset, "QDQ", per_channel, calib_method, [])
            sens = sensitivity(pre, qdq, calib, work)
            base = max(cands, key=lambda c: (fits(c), c["top1_agreement"], -c["drop_points"]))
            steps = [k for k in (1, 2, 4, 8, 12, 16, 24, 32, 48) if k <= len(sens)]
            with progress.task("sensitivity fallback", total=len(steps)) as adv:
                for k in steps:
                    path = work / f"fallback{k}.onnx"
                    excl = sorted(set(base["nodes_excluded"]) | {n for r in sens[:k] for n in r["nodes"]})
                    _quantize(pre, path, calib, preset, base["format"], per_channel, calib_method, excl)
                    c = evaluate(path, base["format"], excl, f"{k} most sensitive layer(s) kept float")
                    cands.append(c)
                    adv(1)
                    if fits(c):
                        ok.append(c)
                        if agrees(c):
                            break
        if not ok:
            best = min(cands, key=lambda c: c["drop_points"])
            raise ArtifactError(
                f"int8 loses {best['drop_points']:.2f} top-1 points (fp32 {100 * top1_fp32:.1f}%, int8 "
                f"{100 * best['top1_int8']:.1f}%, agreement {100 * best['top1_agreement']:.1f}%) even with "
                f"{len(best['nodes_excluded'])} node(s) in float, over --max-drop {max_drop:g} (1 image = "
                f"{100 / len(eval_labels):.2f} points on these {len(eval_labels)} images): nothing was written; "
                f"try --eval-data with more images, --calib-method entropy/percentile, or a larger --max-drop")
        agreeing = [c for c in ok if agrees(c)]
        if agreeing:
            ok = agreeing
        if on_host:  # every variant still in the running, timed in interleaved rounds with fp32: one-by-one
            # timings drifted apart by up to 15% for identical models on a shared CPU (see interleaved_latency)
            ms = interleaved_latency([fp32] + [c["path"] for c in ok], bench_x, threads=2)
            fp32_ms = ms[0]
            for c, m in zip(ok, ms[1:]):
                c["p50_ms"] = m
        if not agreeing:  # the most faithful variant within --max-drop that is no slower than fp32 (if any); said below
            fast = [c for c in ok if on_host and c["p50_ms"] <= fp32_ms]
            most = max(c["top1_agreement"] for c in fast or ok)
            ok = [c for c in fast or ok if c["top1_agreement"] == most]
        if on_host:
            chosen = pick_variant(ok, fp32_ms)
            if chosen["p50_ms"] <= fp32_ms:
                verdict = (f"int8 runs at {chosen['p50_ms'] / fp32_ms:.2f}x the fp32 latency on this CPU "
                           f"({chosen['p50_ms']:.2f} vs {fp32_ms:.2f} ms p50, batch 1, 2 threads), "
                           f"{fp32.stat().st_size / chosen['size']:.1f}x smaller")
            else:
                why = ("this CPU has no VNNI" if preset_name == "x86-avx2" else "int8 kernels are slower here")
                verdict = (f"{why}: int8 gives a {fp32.stat().st_size / chosen['size']:.1f}x smaller file, not speed "
                           f"(int8 {chosen['p50_ms']:.2f} ms vs fp32 {fp32_ms:.2f} ms p50 measured here)")
        else:
            chosen = ok[0]
            verdict = (f"preset {preset_name} is for another target than this host ({host_preset()}): "
                       f"accuracy checked here, latency not measured (run edgetl bench on the target)")
        if not agreeing:
            how = ("the most faithful variant no slower than fp32" if fast else
                   "the most faithful variant, even with the most sensitive layers in float")
            verdict += (f"; int8 agrees with fp32 on {100 * chosen['top1_agreement']:.1f}% of the "
                        f"{len(eval_labels)} held-out images, under the --min-agreement target "
                        f"{100 * min_agreement:.1f}%: {how} (top-1 drop {chosen['drop_points']:+.2f} points, "
                        f"within --max-drop {gate:.2g}; every candidate is in export.json)")
        qinfo = {"preset": preset_name, "format": chosen["format"], "activation_type": preset.activation_type,
                 "weight_type": preset.weight_type, "per_channel": per_channel,
                 "reduce_range": preset.reduce_range, "calib_method": calib_method,
                 "calib_size": len(calib), "nodes_excluded": chosen["nodes_excluded"],
                 "op_types_float": list(preset.op_types_float) if chosen["nodes_excluded"] == float_nodes else []}
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chosen["path"], out)
        if not sens and report_sensitivity:  # report the chosen model's sensitivity anyway (16 images),
            qdq = work / "qdq.onnx"          # reusing the pre-processed graph and the calibration cache
            _quantize(pre, qdq, calib, preset, "QDQ", per_channel, calib_method, chosen["nodes_excluded"])
            sens = sensitivity(pre, qdq, calib, work)

    keys = ("node", "op_type", "sqnr_db", "sqnr_loss_db")
    top10 = [{k: r[k] for k in keys} for r in sens[:10]]
    try:
        from .report import plot_bars

        if top10 and plot is not None:
            plot_bars([f"{r['node']} ({r['op_type']})" for r in top10], [r["sqnr_loss_db"] for r in top10],
                      plot, xlabel="SQNR lost at the layer, dB (higher = more sensitive to int8)",
                      title="10 most int8-sensitive layers")
    except ImportError:
        pass
    return {
        **qinfo,
        "verdict": verdict,
        "fp32_p50_ms": fp32_ms, "int8_p50_ms": chosen["p50_ms"],
        "fp32_size": fp32.stat().st_size, "int8_size": out.stat().st_size,
        "host": host_isa(),
        "candidates": [{k: v for k, v in c.items() if k != "path"} | {"nodes_excluded": len(c["nodes_excluded"])}
                       for c in cands],
        "failed_candidates": failed,
        "most_sensitive": top10,
        "parity": {"n": int(len(eval_labels)), "top1_fp32": top1_fp32, "top1_int8": chosen["top1_int8"],
                   "drop_points": chosen["drop_points"], "top1_agreement": chosen["top1_agreement"],
                   "max_abs_diff": chosen["max_abs_diff"], "max_drop": max_drop,
                   "max_drop_effective": gate, "min_agreement": min_agreement, "agreement_met": bool(agreeing)},
    }
