"""Quantization-aware training on the very int8 graph onnxruntime will run.

    from edgetl.quantization.qat import QDQModule, qat_finetune
    net = QDQModule(onnx.load("ptq.qdq.onnx"))        # torch forward of the QDQ graph, fake-quantized
    net(x)                                             # == onnxruntime on the same graph (to rounding)
    onnx.save(net.to_onnx(), "qat.onnx")               # the same graph, with the trained integers
    report = qat_finetune(Path("ptq.qdq.onnx"), Path("qat.onnx"), teacher=..., train=..., eval_x=..., ...)

Why start from the QDQ model and not from the torch classifier: that graph *is* what runs on the
device (BatchNorm already folded into the convolutions, Clip/Relu merged into their output
quantization, every Q/DQ pair where onnxruntime will put it), so the fake quantization trained
here cannot drift from what onnxruntime computes. Each QuantizeLinear -> DequantizeLinear pair on an
activation becomes a fake-quant step with its calibrated scale and zero point (per tensor; uint8,
or int8 for the tensorrt preset; learnable with ``learn_activation_scales``); each quantized
weight becomes a trainable float tensor, fake-quantized per output channel on the PTQ model's own
grid, whose scales stay fixed (int8 symmetric: 7-bit dense kernels and 8-bit depthwise ones on
AVX2 without VNNI, 8-bit elsewhere); biases train in float and are requantized to int32 at
``scale_in * scale_w`` on export. Rounding uses a straight-through estimator, in float32 even
under autocast. The loss is knowledge distillation from the fp32 model (its logits, computed by
onnxruntime on the same batch): what QAT must win back is agreement with fp32, and the fp32
model is the best label for that.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArtifactError

log = logging.getLogger(__name__)


def _ste_round(v: torch.Tensor) -> torch.Tensor:
    return v + (torch.round(v) - v).detach()


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Quantize-dequantize with onnxruntime's arithmetic (round half to even, saturate)."""
    return (torch.clamp(_ste_round(x / scale + zp), qmin, qmax) - zp) * scale


@dataclasses.dataclass
class _Weight:
    """A quantized initializer (weight or bias) of the graph, and how it is quantized again on export."""

    q_name: str  # the integer initializer
    scale_name: str
    zp_name: str
    axis: int
    qmin: int
    qmax: int
    dtype: np.dtype
    bias_of: tuple[str, str] | None = None  # bias: (input activation's scale name, weight's DQ output)


def _range_of(q: np.ndarray) -> tuple[int, int]:
    """The integer range a PTQ weight was quantized into (7-bit reduce_range, 8-bit int8, uint8)."""
    if q.dtype == np.uint8:
        return 0, 255
    lim = 64 if np.abs(q.astype(np.int32)).max() <= 64 else 127
    return -lim, lim


class _Consts(nn.Module):
    """The graph's other initializers (scales, zero points, shapes) as buffers: they follow .to(device)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        super().__init__()
        self.names = {}
        for i, (name, a) in enumerate(arrays.items()):
            self.names[name] = f"c{i}"
            self.register_buffer(f"c{i}", torch.from_numpy(np.array(a)), persistent=False)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, self.names[name])

    def get(self, name: str):
        return self[name] if name in self.names else None


class QDQModule(nn.Module):
    """A QDQ ONNX model (onnxruntime.quantization's output) as a trainable torch module."""

    def __init__(self, model, *, learn_activation_scales: bool = False):
        super().__init__()
        from onnx import numpy_helper

        self.proto = model
        g = model.graph
        self.nodes = list(g.node)
        self.input_name, self.output_name = g.input[0].name, g.output[0].name
        arrays = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.params = nn.ParameterDict()
        self.weights: dict[str, _Weight] = {}  # DQ output name -> how it is requantized
        quantized = set()
        for n in g.node:
            if n.op_type == "DequantizeLinear" and n.input[0] in arrays and arrays[n.input[0]].dtype in (np.int8, np.uint8, np.int32):
                self._add_weight(n, arrays)
                quantized.add(n.input[0])
        self.consts = _Consts({k: v for k, v in arrays.items() if k not in quantized})
        self._link_biases()
        self.act_scales = nn.ParameterDict()
        if learn_activation_scales:
            for n in g.node:
                if n.op_type == "QuantizeLinear" and n.input[1] in arrays:
                    self.act_scales[_key(n.input[1])] = nn.Parameter(torch.tensor(float(arrays[n.input[1]])))

    def _add_weight(self, n, arrays: dict) -> None:
        q, s = arrays[n.input[0]], arrays[n.input[1]]
        zp = arrays[n.input[2]] if len(n.input) > 2 and n.input[2] else np.zeros_like(s, dtype=q.dtype)
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if s.ndim:
            shape[axis] = -1
        real = (q.astype(np.float32) - zp.reshape(shape).astype(np.float32)) * s.reshape(shape).astype(np.float32)
        self.params[_key(n.output[0])] = nn.Parameter(torch.from_numpy(real))
        qmin, qmax = (-2**31, 2**31 - 1) if q.dtype == np.int32 else _range_of(q)
        self.weights[n.output[0]] = _Weight(n.input[0], n.input[1], n.input[2] if len(n.input) > 2 else "", axis,
                                            qmin, qmax, q.dtype)

    def _link_biases(self) -> None:
        """Each bias' requantization scale is scale_in * scale_w of its Conv/Gemm; a bias whose layer is not
        found keeps its integers (it is frozen: training it would make the export differ from the model)."""
        dq_by_out = {n.output[0]: n for n in self.nodes if n.op_type == "DequantizeLinear"}
        for n in self.nodes:
            if n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in self.weights:
                x_dq, w_dq = dq_by_out.get(n.input[0]), n.input[1]
                if x_dq is not None and w_dq in self.weights:
                    self.weights[n.input[2]].bias_of = (x_dq.input[1], w_dq)
        for name, spec in self.weights.items():
            if spec.dtype == np.int32 and spec.bias_of is None:
                self.params[_key(name)].requires_grad_(False)

    # -- the weights' quantization grid ---------------------------------------------------------------
    def weight_qparams(self, name: str) -> tuple[torch.Tensor, torch.Tensor | float]:
        """(scale, zero point) per channel of a weight: the PTQ model's, kept fixed while the weights
        train (recomputing them from dequantized weights moves them by 1e-7, enough to flip roundings)."""
        spec = self.weights[name]
        return self.consts[spec.scale_name], self.consts[spec.zp_name].float() if spec.zp_name else 0.0

    def _const_scale(self, scale_name: str) -> torch.Tensor:
        k = _key(scale_name)
        return self.act_scales[k].abs() if k in self.act_scales else self.consts[scale_name]

    def _weight(self, name: str) -> torch.Tensor:
        spec, w = self.weights[name], self.params[_key(name)]
        if spec.dtype == np.int32:
            return w  # biases train in float: their int32 step is far below anything that matters
        scale, zp = self.weight_qparams(name)
        shape = [1] * w.ndim
        if scale.ndim:
            shape[spec.axis] = -1
        zp = zp.view(shape) if torch.is_tensor(zp) else zp
        return fake_quant(w, scale.view(shape), zp, spec.qmin, spec.qmax)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {self.input_name: x}

        def get(name: str):
            if name in env:
                return env[name]
            if name in self.weights:
                env[name] = self._weight(name)
                return env[name]
            return self.consts.get(name)

        for n in self.nodes:
            if n.op_type == "DequantizeLinear" and n.output[0] in self.weights:
                continue  # materialised on first use by get()
            ins = [get(i) if i else None for i in n.input]
            fn = _OPS.get(n.op_type)
            if fn is None:
                raise ArtifactError(f"QAT cannot run the ONNX op {n.op_type} ({n.name}) yet: export without --qat")
            out = fn(self, n, *ins)
            for name, value in zip(n.output, out if isinstance(out, tuple) else (out,)):
                env[name] = value
        return env[self.output_name]

    # -- export ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def to_onnx(self):
        """The QDQ graph with the trained weights quantized at their final scales (and learned ranges)."""
        from onnx import numpy_helper

        m = copy.deepcopy(self.proto)
        inits = {i.name: i for i in m.graph.initializer}

        def put(name: str, value: np.ndarray):
            if name:
                inits[name].CopyFrom(numpy_helper.from_array(value, name))

        for name, spec in self.weights.items():
            w = self.params[_key(name)]
            if spec.dtype == np.int32:
                if spec.bias_of is None:
                    continue
                s_b = self._const_scale(spec.bias_of[0]) * self.consts[self.weights[spec.bias_of[1]].scale_name]
                put(spec.q_name, torch.clamp(torch.round(w / s_b), -2**31, 2**31 - 1).numpy().astype(np.int32))
                put(spec.scale_name, s_b.numpy().astype(np.float32))
                continue
            scale, zp = self.weight_qparams(name)
            shape = [1] * w.ndim
            if scale.ndim:
                shape[spec.axis] = -1
            zp = zp.view(shape) if torch.is_tensor(zp) else zp
            q = torch.clamp(torch.round(w / scale.view(shape) + zp), spec.qmin, spec.qmax)
            put(spec.q_name, q.numpy().astype(spec.dtype))
        for k, p in self.act_scales.items():
            name = _unkey(k)
            put(name, np.array(float(p.abs()), dtype=np.float32))
        return m


def _key(name: str) -> str:  # ParameterDict keys cannot hold '.'
    return name.replace(".", "\x1f")


def _unkey(key: str) -> str:
    return key.replace("\x1f", ".")


# --- the ONNX ops of image classifiers, in torch ------------------------------------------------------

def _attr(n, name: str, default=None):
    import onnx

    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _qparams(m: QDQModule, n, scale, zp):
    if n.input[1] and _key(n.input[1]) in m.act_scales:
        scale = m.act_scales[_key(n.input[1])].abs()
    if zp is None:
        return scale, torch.zeros((), device=scale.device), 0, 255
    lo, hi = (0, 255) if zp.dtype == torch.uint8 else (-128, 127)
    return scale, zp.to(torch.float32), lo, hi


def _quantize_linear(m, n, x, scale, zp=None):
    scale, zpf, lo, hi = _qparams(m, n, scale, zp)
    # in float32 even under bf16/fp16 autocast: bf16 cannot hold 0..255 steps exactly
    return fake_quant(x.float(), scale, zpf, lo, hi)  # the DequantizeLinear that follows is the identity


def _dequantize_linear(m, n, x, scale, zp=None):
    return x  # an activation's Q -> DQ pair is one fake-quant step (done at QuantizeLinear)


def _conv(m, n, x, w, b=None):
    pads = _attr(n, "pads", [0] * (2 * (x.ndim - 2)))
    half = len(pads) // 2
    if pads[:half] != pads[half:]:
        x = F.pad(x, [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])])
        pads = [0] * len(pads)
    conv = F.conv2d if x.ndim == 4 else F.conv1d
    return conv(x, w, b, stride=_attr(n, "strides", 1), padding=pads[:half], dilation=_attr(n, "dilations", 1),
                groups=_attr(n, "group", 1))


def _gemm(m, n, a, b, c=None):
    a = a.t() if _attr(n, "transA", 0) else a
    b = b.t() if _attr(n, "transB", 0) else b
    y = _attr(n, "alpha", 1.0) * (a @ b)
    return y + _attr(n, "beta", 1.0) * c if c is not None else y


def _clip(m, n, x, lo=None, hi=None):
    return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))


def _reshape(m, n, x, shape):
    shape = [int(s) for s in shape.tolist()]
    shape = [x.shape[i] if s == 0 and not _attr(n, "allowzero", 0) else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _pool(kind: str):
    def run(m, n, x):
        k = _attr(n, "kernel_shape")
        s = _attr(n, "strides", [1] * len(k))  # ONNX's default stride is 1 (torch's is the kernel)
        pads = _attr(n, "pads", [0] * 2 * len(k))
        half = len(pads) // 2
        if pads[:half] != pads[half:]:
            raise ArtifactError(f"QAT cannot run the asymmetric padding of {n.name} ({n.op_type}) yet: "
                                f"export without --qat")
        if kind == "max":
            return F.max_pool2d(x, k, s, pads[:half], ceil_mode=bool(_attr(n, "ceil_mode", 0)))
        return F.avg_pool2d(x, k, s, pads[:half], ceil_mode=bool(_attr(n, "ceil_mode", 0)),
                            count_include_pad=bool(_attr(n, "count_include_pad", 0)))
    return run


def _flatten(m, n, x):
    axis = _attr(n, "axis", 1) % max(x.ndim, 1) if x.ndim else 0
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    return x.reshape(lead, -1)  # ONNX Flatten is always 2-D


def _reduce_mean(m, n, x, axes=None):
    axes = _attr(n, "axes", None) if axes is None else [int(a) for a in axes.tolist()]
    return x.mean(dim=axes, keepdim=bool(_attr(n, "keepdims", 1)))


def _squeeze(unsqueeze: bool):
    def run(m, n, x, axes=None):
        axes = _attr(n, "axes", None) if axes is None else [int(a) for a in axes.tolist()]
        if unsqueeze:
            for a in sorted(a % (x.ndim + len(axes)) for a in axes):
                x = x.unsqueeze(a)
            return x
        return x.squeeze(tuple(axes)) if axes is not None else x.squeeze()
    return run


_OPS: dict[str, Callable] = {
    "QuantizeLinear": _quantize_linear, "DequantizeLinear": _dequantize_linear, "Conv": _conv, "Gemm": _gemm,
    "MatMul": lambda m, n, a, b: a @ b, "Add": lambda m, n, a, b: a + b, "Sub": lambda m, n, a, b: a - b,
    "Mul": lambda m, n, a, b: a * b, "Div": lambda m, n, a, b: a / b, "Clip": _clip,
    "Relu": lambda m, n, x: F.relu(x), "Sigmoid": lambda m, n, x: torch.sigmoid(x),
    "HardSigmoid": lambda m, n, x: torch.clamp(_attr(n, "alpha", 0.2) * x + _attr(n, "beta", 0.5), 0, 1),
    "HardSwish": lambda m, n, x: F.hardswish(x), "Tanh": lambda m, n, x: torch.tanh(x),
    "Erf": lambda m, n, x: torch.erf(x), "Sqrt": lambda m, n, x: torch.sqrt(x), "Pow": lambda m, n, a, b: a ** b,
    "GlobalAveragePool": lambda m, n, x: x.mean(dim=tuple(range(2, x.ndim)), keepdim=True),
    "AveragePool": _pool("avg"), "MaxPool": _pool("max"), "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape, "Transpose": lambda m, n, x: x.permute(*_attr(n, "perm")),
    "Concat": lambda m, n, *xs: torch.cat(xs, dim=_attr(n, "axis")), "Identity": lambda m, n, x: x,
    "Softmax": lambda m, n, x: torch.softmax(x, dim=_attr(n, "axis", -1)),
    "Squeeze": _squeeze(False), "Unsqueeze": _squeeze(True),
    "LayerNormalization": lambda m, n, x, w, b=None: F.layer_norm(
        x, x.shape[_attr(n, "axis", -1):], w, b, _attr(n, "epsilon", 1e-5)),
}


# --- the training loop ----------------------------------------------------------------------------------

def kd_views(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random views of a batch of preprocessed images [N,3,H,W]: resized crops (35-100% of the area),
    flips, brightness/contrast jitter. Distillation can use any view of a real photo (the fp32
    teacher labels it), and on a few hundred train images these views keep QAT from memorising them."""
    h, w = x.shape[-2:]
    out = []
    for img in torch.from_numpy(x):
        s, r = rng.uniform(0.35, 1.0), math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        ch, cw = int(min(h, round(h * math.sqrt(s / r)))), int(min(w, round(w * math.sqrt(s * r))))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = F.interpolate(img[None, :, y0:y0 + ch, x0:x0 + cw], size=(h, w), mode="bilinear", align_corners=False)[0]
        img = img * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.2, 0.2))
        out.append(img.flip(-1) if rng.random() < 0.5 else img)
    return np.ascontiguousarray(torch.stack(out).numpy())


@dataclasses.dataclass(frozen=True)
class QATConfig:
    epochs: int = 2
    lr: float = 1e-5
    batch_size: int = 16
    temperature: float = 2.0
    loss: str = "kl"  # kl: distillation at ``temperature``; mse: the logits themselves
    learn_activation_scales: bool = False
    seed: int = 0


@torch.enable_grad()  # (the exporter calls this under no_grad)
def qat_finetune(ptq_qdq: Path, out: Path, *, teacher: Callable[[np.ndarray], np.ndarray],
                 train: Callable[[np.random.Generator], list[np.ndarray]], evaluate: Callable[[Path], dict],
                 cfg: QATConfig = QATConfig(), device: str = "cpu", progress=None) -> dict:
    """Fine-tune the PTQ model's weights under its own fake quantization; write the best epoch to ``out``.

    Args:
        ptq_qdq: the PTQ model in QDQ format (its ranges and weight grids are the starting point).
        teacher: fp32 logits of a batch (onnxruntime on the fp32 model).
        train: one epoch's input batches (float NCHW), drawn with the given generator (shuffled); each
            batch is seen through :func:`kd_views` (teacher and student on the same views).
        evaluate: figures of an exported int8 model (``top1_agreement`` ...) on held-out images.

    Returns the per-epoch figures and which epoch was kept (epoch 0: the PTQ model itself).
    """
    import onnx

    from .._progress import SILENT

    progress = progress or SILENT
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = QDQModule(onnx.load(str(ptq_qdq)), learn_activation_scales=cfg.learn_activation_scales)
    dev = torch.device(device)
    net.to(dev)
    amp = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else None
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    best = {"epoch": 0, **evaluate(ptq_qdq)}
    history = [{"epoch": 0, "seconds": 0.0, **best}]
    best_path = out.with_name(out.name + ".best")
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = train(rng)
        tot = 0.0
        with progress.task(f"QAT epoch {epoch}/{cfg.epochs} ({dev.type})", total=len(batches)) as adv:
            for xb in batches:
                xb = kd_views(xb, rng)
                t = torch.from_numpy(teacher(xb)).to(dev)
                with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    s = net(torch.from_numpy(xb).to(dev)).float()
                T = cfg.temperature
                if cfg.loss == "mse":
                    loss = F.mse_loss(s, t)
                else:
                    loss = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True,
                                    reduction="batchmean") * T * T
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(xb)
                adv(1, loss=f"{float(loss.detach()):.4f}")
        onnx.save(net.cpu().to_onnx(), str(out))
        net.to(dev)
        fig = evaluate(out)
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 2),
               "kd_loss": tot / max(1, sum(len(b) for b in batches)), **fig}
        history.append(row)
        progress.log(f"QAT epoch {epoch}: agreement {100 * fig['top1_agreement']:.1f}% "
                     f"(PTQ {100 * history[0]['top1_agreement']:.1f}%), {row['seconds']:.0f} s")
        if (fig["top1_agreement"], -fig.get("mean_abs_diff", 0)) > (best["top1_agreement"], -best.get("mean_abs_diff", 0)):
            best = {"epoch": epoch, **fig}
            best_path.write_bytes(out.read_bytes())
    out.write_bytes(best_path.read_bytes() if best["epoch"] > 0 else Path(ptq_qdq).read_bytes())
    best_path.unlink(missing_ok=True)
    return {"history": history, "best_epoch": best["epoch"], "epochs": cfg.epochs, "lr": cfg.lr,
            "device": dev.type, "amp": str(amp).replace("torch.", "") if amp else None,
            "seconds": round(sum(h["seconds"] for h in history), 2)}


__all__ = ["QDQModule", "QATConfig", "qat_finetune", "fake_quant", "kd_views"]
