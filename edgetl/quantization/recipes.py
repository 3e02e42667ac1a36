"""Post-training quantization passes on ONNX graphs: the steps the int8 search (edgetl.quantization.search)
combines into candidates. numpy + onnx + onnxruntime, no torch.

    Recipe("dw8", "QDQ", reduce_range=True, depthwise_8bit=True)   # how one candidate is made
    quantize(pre, out, calib, recipe, preset)                     # onnxruntime.quantization + the passes below
    equalize(model)               # cross-layer equalization (Nagel et al. 2019), exact pairs only (a second-
                                  # round candidate where a graph has them: ReLU nets, not ReLU6 ones)
    bias_correct(pre, qdq, calib) # fold each conv's int8-vs-fp32 mean output shift into its bias
    sensitivity(pre, qdq, x, work)   # per-layer SQNR lost to int8, most sensitive first

What each one is for, measured on a fine-tuned EfficientNet-Lite0 (trashnet, 150 val images; the
mean |logit error| against fp32, which 150 images measure far better than top-1 agreement; the
full table is benchmarks/int8_fidelity.py's): 7-bit symmetric weights everywhere (U8S8 +
reduce_range, what keeps AVX2's vpmaddubsw from saturating) 0.201, at 0.69x the fp32 latency;
the 16 depthwise kernels in full 8 bits 0.142 at the same speed; bias correction on top of either
roughly halves what is left; all weights 8-bit uint8 (U8U8) 0.113, but at 0.93x fp32.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..runtime import ort_session

log = logging.getLogger(__name__)
MIN_REAL_RANGE = 1e-3  # a dead channel (all-zero weights after BN folding) keeps a scale its int32 bias fits


def _has_calibration_cache() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


_HAS_CALIB_CACHE = _has_calibration_cache()  # (older onnxruntime releases calibrate every candidate afresh)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one int8 candidate is made."""

    name: str
    fmt: str = "QDQ"  # QDQ (portable; onnxruntime fuses it into QLinear kernels) | QOperator
    reduce_range: bool = False  # 7-bit weights (x86 without VNNI)
    depthwise_8bit: bool = False  # depthwise kernels in full 8-bit int8 (dense ones keep reduce_range)
    all_u8: bool = False  # every weight uint8 asymmetric (U8U8)
    calib_method: str = "minmax"
    calib_size: int | None = None  # None: every calibration image given
    bias_correction: bool = False
    cle: bool = False
    exclude: tuple[str, ...] = ()  # nodes kept in float
    per_channel: bool = True
    kind: str = "ptq"  # ptq | ops-float (the preset's slow op types float) | fallback (sensitive layers float)
    why: str = ""

    @property
    def method(self) -> str:
        """What made it, for export.json and the export line."""
        parts = [f"ptq:{self.name}", self.calib_method + (f"@{self.calib_size}" if self.calib_size else "")]
        parts += ["bias-correction"] * self.bias_correction + ["cle"] * self.cle
        if self.exclude:
            parts.append(f"{len(self.exclude)} nodes float")
        return " + ".join(parts)


class BatchReader(CalibrationDataReader):
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


def batches(x: np.ndarray, bs: int = 16, *, equal: bool = False) -> list[np.ndarray]:
    """Slices of ``bs``; ``equal`` drops the remainder (histogram calibrators stack their batches and
    crash with "inhomogeneous shape" on a short last one)."""
    n = (len(x) // bs) * bs if equal and len(x) >= bs else len(x)
    return [x[i:i + bs] for i in range(0, n, bs)]


def logits(model: Path | bytes, x: np.ndarray, threads: int = 0) -> np.ndarray:
    s = ort_session(model, threads)
    return np.concatenate([s.run(None, {"input": b})[0] for b in batches(x, 32)])


def quantize(pre: Path, out: Path, calib: np.ndarray, recipe: Recipe, preset, *, work: Path) -> None:
    """One candidate: the recipe's passes around onnxruntime's quantize_static with the preset."""
    import onnx

    src = pre
    if recipe.cle:
        src = work / "cle.onnx"
        if not src.is_file():
            m = onnx.load(str(pre))
            equalize(m)
            onnx.save(m, str(src))
    x = calib[: recipe.calib_size] if recipe.calib_size else calib
    tag = f"{recipe.calib_method}-{len(x)}-{'cle' if recipe.cle else 'plain'}"
    _quantize_static(src, out, x, recipe, preset, work / f"calib-{tag}.json")
    if recipe.bias_correction:  # the corrected float model reuses these ranges (same tensor names)
        if recipe.fmt != "QDQ":  # the weights are read from a QDQ twin
            _quantize_static(src, work / "bc-twin.onnx", x, dataclasses.replace(recipe, fmt="QDQ"), preset,
                             work / f"calib-{tag}.json")
        corrected = bias_correct(src, out if recipe.fmt == "QDQ" else work / "bc-twin.onnx", x[:64],
                                 lambda p, o: _quantize_static(p, o, x, recipe, preset, work / f"calib-{tag}.json"),
                                 work=work)
        out.write_bytes(corrected.read_bytes())


def _quantize_static(src: Path, out: Path, x: np.ndarray, recipe: Recipe, preset, cache: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = recipe.calib_method
    extra = {"ActivationSymmetric": preset.symmetric_activations, "WeightSymmetric": not recipe.all_u8,
             "MinimumRealRange": MIN_REAL_RANGE}
    if method == "percentile":
        extra["CalibPercentile"] = 99.99
    # (the calibration cache: calibrate once per method and size, every candidate reuses the ranges)
    cache_kw = {"calibration_cache_path": str(cache)} if _HAS_CALIB_CACHE else {}
    quantize_static(str(src), str(out), BatchReader("input", batches(x, 8, equal=method != "minmax")),
                    quant_format=getattr(QuantFormat, recipe.fmt), per_channel=recipe.per_channel,
                    reduce_range=recipe.reduce_range, activation_type=getattr(QuantType, preset.activation_type),
                    weight_type=QuantType.QUInt8 if recipe.all_u8 else getattr(QuantType, preset.weight_type),
                    nodes_to_exclude=list(recipe.exclude),
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[method],
                    extra_options=extra, **cache_kw)
    if recipe.depthwise_8bit and recipe.per_channel:
        requantize_depthwise(out, src)


# --- depthwise kernels in full 8 bits ---------------------------------------------------------------------

def _int8_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q int8 in [-127, 127], scale float32 [C], zero point int8 [C] = 0): symmetric, 8-bit, per output
    channel, as onnxruntime's compute_scale_zp does it (float64 ranges, MinimumRealRange)."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    lo, hi = np.minimum(flat.min(1), 0.0), np.maximum(flat.max(1), 0.0)
    hi = np.maximum(hi, lo + MIN_REAL_RANGE)
    scale = 2 * np.maximum(np.abs(lo), hi) / 254.0
    q = np.clip(np.round(flat / scale[:, None]), -127, 127).reshape(w.shape)
    return q.astype(np.int8), scale.astype(np.float32), np.zeros(len(scale), np.int8)


def requantize_depthwise(qdq: Path, pre: Path) -> int:
    """Re-quantize the depthwise kernels of a QDQ model with full 8-bit symmetric int8 weights (and
    their int32 biases to match), from the float weights of ``pre``; dense kernels keep their grid.
    Depthwise kernels widen to 16 bits before multiplying (MlasConvDepthwise / ConvSymDepthwise), so
    unlike dense ones they never saturate on AVX2. (uint8 asymmetric per channel was as accurate
    but onnxruntime runs per-channel zero points 30x slower there.) Returns how many kernels changed."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(qdq))
    g = m.graph
    floats = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(pre)).graph.initializer}
    inits = {i.name: i for i in g.initializer}
    dq = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    done = 0
    for n in g.node:
        if n.op_type != "Conv" or _group(n) == 1:
            continue
        w_dq, x_dq = dq.get(n.input[1]), dq.get(n.input[0])
        if w_dq is None or x_dq is None or w_dq.input[0] not in inits:
            continue
        name = w_dq.input[0].removesuffix("_quantized")
        if name not in floats:
            continue
        q, scale, zp = _int8_per_channel(floats[name])
        inits[w_dq.input[0]].CopyFrom(numpy_helper.from_array(q, w_dq.input[0]))
        inits[w_dq.input[1]].CopyFrom(numpy_helper.from_array(scale, w_dq.input[1]))
        inits[w_dq.input[2]].CopyFrom(numpy_helper.from_array(zp, w_dq.input[2]))
        if len(n.input) > 2 and n.input[2] in dq:  # bias: int32 at scale_in * scale_w
            b_dq = dq[n.input[2]]
            s_in = numpy_helper.to_array(inits[x_dq.input[1]]).astype(np.float32)
            b_scale = (s_in * scale).astype(np.float32)
            b = floats.get(b_dq.input[0].removesuffix("_quantized"))
            if b is None:
                b = (numpy_helper.to_array(inits[b_dq.input[0]]).astype(np.float64)
                     * numpy_helper.to_array(inits[b_dq.input[1]]))
            qb = np.clip(np.round(b / b_scale), -2**31, 2**31 - 1).astype(np.int32)
            inits[b_dq.input[0]].CopyFrom(numpy_helper.from_array(qb, b_dq.input[0]))
            inits[b_dq.input[1]].CopyFrom(numpy_helper.from_array(b_scale, b_dq.input[1]))
        done += 1
    onnx.save(m, str(qdq))
    return done


# --- cross-layer equalization -----------------------------------------------------------------------------

_HOMOGENEOUS = {"Relu", "Identity"}  # f(x / s) == f(x) / s for s > 0: scaling passes through exactly


def equalize(model, iterations: int = 2) -> int:
    """Cross-layer equalization (Nagel et al. 2019) of Conv -> [Relu] -> Conv pairs, in place.

    Output channel i of the first conv is divided by s_i and input channel i of the second
    multiplied by it, s_i = sqrt(r1_i / r2_i) (r: the channels' weight ranges), so both end with
    the range sqrt(r1_i * r2_i): the fp32 function is unchanged, the per-channel spread shrinks.
    Only pairs where that is exact qualify: the tensor between has one consumer and at most a
    positively homogeneous activation (ReLU6 / Clip is not: its clip at 6 does not scale).
    Returns the number of pairs equalized.
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pairs = []
    for n in g.node:
        if n.op_type != "Conv" or n.input[1] not in inits:
            continue
        t, nxt = n.output[0], consumers.get(n.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type in _HOMOGENEOUS:
            t, nxt = nxt[0].output[0], consumers.get(nxt[0].output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Conv" and nxt[0].input[0] == t and nxt[0].input[1] in inits \
                and _group(nxt[0]) == 1 and not any(o.name == t for o in g.output):
            pairs.append((n, nxt[0]))
    for _ in range(iterations):
        for a, b in pairs:
            w1, w2 = numpy_helper.to_array(inits[a.input[1]]), numpy_helper.to_array(inits[b.input[1]])
            g1 = _group(a)
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(1)  # per output channel of the first conv
            r2 = np.abs(w2).transpose(1, 0, 2, 3).reshape(w2.shape[1], -1).max(1)
            if g1 > 1 and w2.shape[1] != w1.shape[0]:
                continue
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-12)), 1.0).astype(np.float32)
            inits[a.input[1]].CopyFrom(numpy_helper.from_array((w1 / s.reshape(-1, 1, 1, 1)).astype(w1.dtype),
                                                               a.input[1]))
            if len(a.input) > 2 and a.input[2] in inits:
                b1 = numpy_helper.to_array(inits[a.input[2]])
                inits[a.input[2]].CopyFrom(numpy_helper.from_array((b1 / s).astype(b1.dtype), a.input[2]))
            inits[b.input[1]].CopyFrom(numpy_helper.from_array((w2 * s.reshape(1, -1, 1, 1)).astype(w2.dtype),
                                                               b.input[1]))
    return len(pairs)


def _group(n) -> int:
    return next((a.i for a in n.attribute if a.name == "group"), 1)


def channel_range_spread(model) -> float:
    """Mean over convs of max/median per-output-channel weight range: what equalization shrinks."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    spreads = []
    for n in model.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            r = np.abs(inits[n.input[1]]).reshape(inits[n.input[1]].shape[0], -1).max(1)
            if np.median(r) > 0:
                spreads.append(float(r.max() / np.median(r)))
    return float(np.mean(spreads)) if spreads else 1.0


# --- bias correction ------------------------------------------------------------------------------------------

def _with_outputs(model_path: Path, names: list[str]):
    """A session that also returns ``names``, with graph optimisation off (no fusing them away)."""
    import onnx

    m = onnx.load(str(model_path))
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                          for n in names if n not in have)
    return ort_session(m.SerializeToString(), optimize=False)


def _channel_means(sess, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    acc: dict[str, np.ndarray] = {}
    for b in batches(x, 16):
        for n, o in zip(names, sess.run(names, {"input": b})):
            m = o.mean(axis=(0, 2, 3) if o.ndim == 4 else 0) * len(b)
            acc[n] = acc.get(n, 0.0) + m
    return {n: v / len(x) for n, v in acc.items()}


def bias_correct(pre: Path, qdq: Path, x: np.ndarray, requantize, *, work: Path) -> Path:
    """Bias correction (Nagel et al. 2019, section 4.2): the mean shift that each Conv/Gemm's int8
    weights cause in its output, E[(W_int8 - W) x] = (W_int8 - W) E[x], is folded into its float bias,
    and the model is quantized again with the same ranges.

    E[x] is the per-channel mean of the layer's input on the images ``x`` (the fp32 model, one pass).
    Each layer is corrected for its own error only: measuring the whole shift at every layer of the
    int8 model and correcting all of them at once corrects the upstream layers' share again at every
    layer after them (on Lite0 that took agreement from 98% to 17%). ``requantize(float_path,
    out_path)`` makes the int8 model from a float one. Returns the corrected int8 model's path."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(pre))
    inits = {i.name: i for i in m.graph.initializer}
    layers = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits
              and n.input[0] not in inits]
    names = sorted({n.input[0] for n in layers})
    mean_in = _channel_means(_with_outputs(pre, names), names, x) if names else {}
    dequant = _dequantized_weights(qdq)
    for n in layers:
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        wq = dequant.get(n.name)
        if wq is None or wq.shape != w.shape:
            continue
        dw, ex = wq - w, mean_in[n.input[0]].astype(np.float64)
        if n.op_type == "Gemm":  # y = x @ W.T (transB) or x @ W
            shift = dw @ ex if next((a.i for a in n.attribute if a.name == "transB"), 0) else ex @ dw
        else:  # conv: every kernel tap sees the input channel's mean (borders aside)
            g = _group(n)
            per = dw.sum(axis=(2, 3))  # [Cout, Cin/g]
            cout, cin_g = per.shape
            ex_g = ex.reshape(g, cin_g)[np.arange(cout) // (cout // g)]  # the inputs of each output's group
            shift = (per * ex_g).sum(1)
        shift = shift.astype(np.float32)
        if len(n.input) > 2 and n.input[2] in inits:
            b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
            inits[n.input[2]].CopyFrom(numpy_helper.from_array(b - shift, n.input[2]))
        else:
            name = f"{n.name or n.output[0]}_bias_corrected"
            m.graph.initializer.append(numpy_helper.from_array(-shift, name))
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = name
    cur = work / "bias-corrected.onnx"
    onnx.save(m, str(cur))
    q = work / "bias-corrected.int8.onnx"
    requantize(cur, q)
    return q


def _dequantized_weights(qdq: Path) -> dict[str, np.ndarray]:
    """Conv/Gemm node name -> its weight as the int8 model holds it, dequantized."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(qdq)).graph
    arr = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    dq = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    out = {}
    for n in g.node:
        d = dq.get(n.input[1]) if n.op_type in ("Conv", "Gemm") and len(n.input) > 1 else None
        if d is None or d.input[0] not in arr:
            continue
        q, s = arr[d.input[0]].astype(np.float64), arr[d.input[1]].astype(np.float64)
        zp = arr[d.input[2]].astype(np.float64) if len(d.input) > 2 and d.input[2] in arr else np.zeros_like(s)
        axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if s.ndim:
            shape[axis] = -1
        out[n.name] = (q - zp.reshape(shape)) * s.reshape(shape)
    return out


# --- per-layer sensitivity ------------------------------------------------------------------------------------

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
    reader = BatchReader("input", batches(x[:16], 8))
    fa = collect_activations(str(aug_f), reader)
    reader.rewind()
    qa = collect_activations(str(aug_q), reader)
    errs = compute_activation_error(create_activation_matching(qa, fa))
    xm = {t: float(np.mean(e["xmodel_err"])) for t, e in errs.items() if "xmodel_err" in e}
    graph = onnx.load(str(pre)).graph
    xm["input"] = _input_sqnr(x)
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


def _input_sqnr(x: np.ndarray) -> float:
    """The graph input is the same tensor in both models: what it loses is its own 8-bit rounding
    (capped at 60 dB: an input on the 8-bit grid, e.g. (u8 - 127) / 128, is exact)."""
    lo, hi = float(min(x.min(), 0.0)), float(max(x.max(), 0.0))
    step = (hi - lo) / 255 or 1.0
    err = x - (np.round((x - lo) / step) * step + lo)
    return min(60.0, 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / max(np.sum(err.astype(np.float64) ** 2), 1e-30)))


__all__ = ["Recipe", "BatchReader", "batches", "logits", "quantize", "requantize_depthwise", "equalize",
           "channel_range_spread", "bias_correct", "sensitivity"]
