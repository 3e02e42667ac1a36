"""Static int8 that is small, fast and faithful at once: a measured search, never an assumed one.

    from edgetl.quantize import QuantOptions, quantize_model       # edgetl.exporter calls it with --int8
    report = quantize_model(fp32, out, calib, eval_x, eval_y, opts=QuantOptions(preset="auto"))
    search = PTQSearch(fp32, calib, eval_x, eval_y, opts=opts, work=work)  # the steps, for QAT to join
    search.run(); search.add(qat_model, method="qat ..."); report = search.finish(out)

The order (issue #18): every layer int8 first, made several ways (edgetl.ptq recipes; bias
correction among them, it costs one fp32 pass), each checked for accuracy on held-out images; only
when none reaches ``min_agreement`` do the costlier ones run (percentile calibration where
activations are unbounded, every calibration image, cross-layer equalization where it is exact,
all-uint8 weights), then QAT if the caller adds it, and keeping the most sensitive layers in float
comes last (and is kept only if it halves the disagreement). Candidates that pass the checks
are timed against fp32 in interleaved rounds with the same session options (drift on a shared CPU
hits all alike); the fastest wins, of those within 3% of it (timing noise) the smallest file. If
none is faster than fp32, the fastest accurate one whose file is within 5% of the smallest is kept
and the verdict says int8 bought size, not speed. ``max_drop`` (top-1 points, at least one eval
image) is a gate: if nothing fits, export fails with the figures and writes nothing.

No torch here: calibration and evaluation inputs arrive as numpy arrays.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._progress import SILENT
from .errors import ArtifactError
from .metrics import parity_figures
from .ptq import Recipe, _group, batches, logits, quantize, sensitivity
from .targets import host_isa, host_preset
from .timing import interleaved_latency

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantPreset:
    """How to quantize for one kind of target."""

    name: str
    activation_type: str  # "QUInt8" | "QInt8"
    weight_type: str  # "QInt8"
    reduce_range: bool  # 7-bit dense weights: avoids int16 saturation of AVX2's vpmaddubsw without VNNI
    symmetric_activations: bool
    formats: tuple[str, ...]  # formats of the all-int8 candidates: "QDQ" (portable) / "QOperator" (ORT CPU)
    depthwise_8bit: bool  # a candidate with depthwise kernels in full 8 bits (widened kernels: never saturate)
    op_types_float: tuple[str, ...]  # op types int8 makes slower on this target: a candidate keeps them float
    note: str


PRESETS: dict[str, QuantPreset] = {p.name: p for p in [
    QuantPreset("x86-avx2", "QUInt8", "QInt8", True, False, ("QOperator", "QDQ"), True,
                ("Add", "Mul", "Sigmoid", "HardSigmoid", "HardSwish", "GlobalAveragePool"),
                "AVX2 without VNNI: 7-bit dense weights keep vpmaddubsw from saturating; depthwise in 8 bits"),
    QuantPreset("x86-vnni", "QUInt8", "QInt8", False, False, ("QOperator", "QDQ"), False, ("Sigmoid", "HardSigmoid"),
                "AVX512-VNNI / AVX-VNNI / AMX: full 8-bit range, dot-product instructions"),
    QuantPreset("arm64", "QUInt8", "QInt8", False, False, ("QDQ", "QOperator"), False, ("Sigmoid", "HardSigmoid"),
                "ARMv8.2 dot-product (Pi 5 / Orin CPU): U8S8 QDQ, full range"),
    QuantPreset("tensorrt", "QInt8", "QInt8", False, True, ("QDQ",), False, (),
                "TensorRT takes explicit QDQ with symmetric int8 activations and per-channel weights"),
]}

# the settings that reproduce an int8 model (bundle.json and the model's metadata record them)
QUANT_SETTINGS = ("method", "preset", "format", "activation_type", "weight_type", "per_channel", "reduce_range",
                  "calib_method", "calib_size", "nodes_excluded", "op_types_float")


@dataclasses.dataclass(frozen=True)
class QuantOptions:
    """What the int8 search may do and what it must reach (ExportConfig's int8 fields fill it)."""

    preset: str = "auto"
    per_channel: bool = True
    calib_method: str = "auto"  # auto: minmax first; percentile (unbounded activations) when the target is missed
    calib_size: int | None = None  # images of ``calib`` used first (None: 200); auto also tries them all
    max_drop: float = 0.5
    min_agreement: float = 0.99
    report_sensitivity: bool = True
    fallback: bool = True  # layers back to float as the last resort


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


class PTQSearch:
    """The candidates of one model, their accuracy figures, and (in ``finish``) the choice."""

    def __init__(self, fp32: Path, calib: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, *,
                 fp32_logits: np.ndarray | None = None, opts: QuantOptions, work: Path, progress=None):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.fp32, self.calib, self.x, self.y, self.opts, self.work = Path(fp32), calib, eval_x, eval_y, opts, work
        self.progress = progress or SILENT
        self.ref = logits(self.fp32, eval_x) if fp32_logits is None else fp32_logits
        self.preset_name = host_preset() if opts.preset == "auto" else opts.preset
        self.preset = PRESETS[self.preset_name]
        self.on_host = self.preset_name == host_preset()
        self.top1_fp32 = float(np.mean(self.ref.argmax(1) == eval_y))
        # a gate finer than one image cannot be measured: on N images it is at least one image (100/N points)
        self.gate = max(opts.max_drop, 100.0 / len(eval_y)) if len(eval_y) else opts.max_drop
        self.pre = work / "pre.onnx"
        quant_pre_process(str(self.fp32), str(self.pre), skip_symbolic_shape=True)
        import onnx

        self.model = onnx.load(str(self.pre))  # read once: the recipes depend on what is in it
        self.graph = self.model.graph
        self.cands: list[dict] = []
        self.failed: list[dict] = []
        self.sens: list[dict] = []
        self.stages: list[str] = []

    # -- candidates ---------------------------------------------------------------------------------------
    def fits(self, c: dict) -> bool:
        return c["drop_points"] <= self.gate + 1e-9

    def agrees(self, c: dict) -> bool:
        return self.fits(c) and c["top1_agreement"] >= self.opts.min_agreement - 1e-12

    @property
    def met(self) -> bool:
        return any(self.agrees(c) for c in self.cands)

    def best(self, fmt: str | None = None, pool: list[dict] | None = None) -> dict | None:
        """The most faithful candidate within the gate (any, if none fits). Agreement first, but a
        difference of one held-out image is noise on a few hundred: among those within one image of
        the best, the smallest mean |logit error| against fp32 wins (then the smaller file)."""
        pool = [c for c in (self.cands if pool is None else pool) if fmt is None or c["format"] == fmt]
        if not pool:
            return None
        if any(self.fits(c) for c in pool):
            pool = [c for c in pool if self.fits(c)]
        top = max(c["top1_agreement"] for c in pool)
        near = [c for c in pool if (top - c["top1_agreement"]) * len(self.y) <= 1 + 1e-9]
        return min(near, key=lambda c: (c["mean_abs_diff"], c["size"]))

    def qat_base(self) -> dict | None:
        """Where QAT starts: the most faithful candidate on the target's fast kernels (on AVX2 not U8U8,
        whose dense kernels ran Lite0 at 0.85-0.93x fp32: QAT wins the fidelity back on the 7-bit grid
        instead), as a QDQ model (QAT trains the QDQ graph; a QOperator winner gets its QDQ twin)."""
        fast = [c for c in self.cands if c["recipe"] is not None and not c["recipe"].all_u8 and c["kind"] == "ptq"]
        base = self.best(pool=fast or self.cands)
        if base is None or base["format"] == "QDQ" or base["recipe"] is None:
            return base
        twin = next((c for c in self.cands if c["recipe"] == dataclasses.replace(base["recipe"], fmt="QDQ")), None)
        return twin or self.build(dataclasses.replace(base["recipe"], fmt="QDQ"))

    @property
    def met_fast(self) -> bool:
        """The target is met by a candidate on the fast kernels (nothing for QAT to win)."""
        return any(self.agrees(c) for c in self.cands
                   if c["recipe"] is not None and not c["recipe"].all_u8 and c["kind"] == "ptq")

    def add(self, path: Path, *, method: str, fmt: str = "QDQ", excluded: list[str] | None = None,
            recipe: Recipe | None = None, kind: str = "ptq", why: str = "") -> dict:
        """Evaluate an int8 model on the held-out images and keep it as a candidate. ``kind``: ptq,
        ops-float, fallback or qat (what made it, for the choice and the report)."""
        q = logits(path, self.x)
        fig = parity_figures(self.ref, q)
        top1 = float(np.mean(q.argmax(1) == self.y))
        c = {"path": path, "method": method, "kind": kind, "format": fmt, "nodes_excluded": list(excluded or []),
             "why": why, "recipe": recipe, "top1_int8": top1, "drop_points": 100 * (self.top1_fp32 - top1),
             "top1_agreement": fig["top1_agreement"], "max_abs_diff": fig["max_abs_diff"],
             "mean_abs_diff": float(np.mean(np.abs(q - self.ref))), "size": path.stat().st_size, "p50_ms": None}
        self.cands.append(c)
        log.info("int8 candidate %s: agreement %.1f%%, drop %.2f points", method, 100 * c["top1_agreement"],
                 c["drop_points"])
        return c

    def build(self, recipe: Recipe) -> dict | None:
        path = self.work / f"cand{len(self.cands) + len(self.failed)}.onnx"
        try:
            quantize(self.pre, path, self.calib, recipe, self.preset, work=self.work)
            return self.add(path, method=recipe.method, fmt=recipe.fmt, excluded=list(recipe.exclude), recipe=recipe,
                            kind=recipe.kind, why=recipe.why)
        except Exception as e:  # onnxruntime's quantizer can emit a graph its runtime refuses
            # (e.g. QOperator QLinearAdd fed an int32 bias in ConvNeXt): skip that candidate, say so
            if os.environ.get("EDGETL_DEBUG"):
                raise
            self.failed.append({"method": recipe.method, "format": recipe.fmt,
                                "error": f"{type(e).__name__}: {str(e)[:300]}"})
            log.warning("int8 candidate %s (%s) failed: %s", recipe.method, recipe.fmt, self.failed[-1]["error"])
            log.debug("int8 candidate %s failed", recipe.method, exc_info=True)
            return None

    def _size(self) -> int:
        return self.opts.calib_size or min(200, len(self.calib))

    def first_recipes(self) -> list[Recipe]:
        """Every layer int8, made the ways this target's kernels run fastest and most exactly. Bias
        correction is one cheap fp32 pass, so the first round has it too."""
        p, n = self.preset, self._size()
        method = "minmax" if self.opts.calib_method == "auto" else self.opts.calib_method
        base = Recipe("int8", p.formats[0], reduce_range=p.reduce_range, calib_method=method, calib_size=n,
                      per_channel=self.opts.per_channel, why="all layers int8")
        out = [base, dataclasses.replace(base, fmt="QDQ", bias_correction=True, why="all layers int8, bias correction")]
        if p.depthwise_8bit and p.reduce_range and self.opts.per_channel and self._has_depthwise():  # AVX2
            dw = dataclasses.replace(base, name="dw8", fmt="QDQ", depthwise_8bit=True,
                                     why="all layers int8, depthwise kernels in full 8 bits")
            out = [dw, dataclasses.replace(dw, bias_correction=True, why=dw.why + ", bias correction"), base]
        if self.on_host and len(p.formats) > 1 and not any(r.fmt == p.formats[1] for r in out):
            out.append(dataclasses.replace(base, fmt=p.formats[1]))
        return out

    def second_recipes(self) -> list[Recipe]:
        """Costlier variations of the most faithful first recipe, for when the target was missed."""
        base = self.best()
        if base is None or base["recipe"] is None:
            return []
        r = dataclasses.replace(base["recipe"], exclude=(), why="")
        out = []
        if self.opts.calib_method == "auto" and not self._clipped():  # (ReLU6 caps every range at 6 anyway)
            out.append(dataclasses.replace(r, calib_method="percentile", why="percentile calibration"))
            if len(self.calib) > self._size():
                out.append(dataclasses.replace(r, calib_size=len(self.calib), why=f"{len(self.calib)} calibration images"))
        if self._equalizable():
            out.append(dataclasses.replace(r, cle=True, why="cross-layer equalization"))
        if self.preset.name.startswith("x86") and self.preset.reduce_range:
            out.append(dataclasses.replace(r, name="u8u8", all_u8=True, depthwise_8bit=False, reduce_range=False,
                                           fmt="QDQ", why="all weights 8-bit uint8 (U8U8: no saturation, slower)"))
        return out

    def run(self) -> None:
        """PTQ: the first recipes, then (target missed) the second ones."""
        first = self.first_recipes()
        floats = self._float_op_nodes()
        with self.progress.task(f"int8 candidates ({self.preset_name})", total=len(first)) as adv:
            for r in first:
                self.build(r)
                adv(1)
        if not self.cands:
            raise ArtifactError(f"every int8 candidate failed to quantize or load ({self.failed[0]['error']}): "
                                f"nothing was written; export without --int8, or try another --preset")
        self.stages.append("ptq")
        if not self.met:
            second = self.second_recipes()
            with self.progress.task("int8: calibration, equalization, weight types", total=len(second)) as adv:
                for r in second:
                    self.build(r)
                    adv(1)
            self.stages.append("ptq+")
        if floats and self.on_host:  # the preset's slow-in-int8 op types (HardSwish, SE...) in float: maybe faster
            best = self.best()
            if best["recipe"] is not None:
                self.build(dataclasses.replace(best["recipe"], exclude=tuple(floats), kind="ops-float",
                                               why=f"{'/'.join(self.preset.op_types_float)} kept float"))
                self.stages.append("ops-float")

    def _has_depthwise(self) -> bool:
        return any(n.op_type == "Conv" and _group(n) > 1 for n in self.graph.node)

    def _equalizable(self) -> bool:
        """Whether cross-layer equalization has an exact pair here (Conv -> [Relu] -> Conv; ReLU6 nets
        such as EfficientNet-Lite have only the few linear project -> expand ones)."""
        from .ptq import equalize

        return equalize(self.model, iterations=0) >= 2  # (0 iterations: count the pairs, change nothing)

    def _clipped(self) -> bool:
        """Whether most convolutions end in a Clip (ReLU6): no activation outlier can pass 6 there, so
        percentile calibration has nothing to cut (measured: Lite0 minmax and percentile equal)."""
        g = self.graph
        consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n.op_type)
        convs = [n for n in g.node if n.op_type == "Conv"]
        return bool(convs) and sum("Clip" in consumers.get(n.output[0], []) for n in convs) > len(convs) / 2

    def _float_op_nodes(self) -> list[str]:
        """The nodes of the preset's slow-in-int8 op types, when the graph has activation or gating ops
        among them (a graph whose only such ops are Add and pooling ran slower with them in float)."""
        ops = set(self.preset.op_types_float)
        nodes = [n for n in self.graph.node if n.op_type in ops]
        if not any(n.op_type not in ("Add", "GlobalAveragePool") for n in nodes):
            return []
        return [n.name for n in nodes]

    def fallback(self) -> None:
        """The last resort: the most sensitive layers back to float, more at each step, until the target is met."""
        base = self.best()
        if base is None or base["recipe"] is None:
            return
        qdq = self.work / "sens_qdq.onnx"
        quantize(self.pre, qdq, self.calib, dataclasses.replace(base["recipe"], fmt="QDQ", exclude=()), self.preset,
                 work=self.work)
        self.sens = sensitivity(self.pre, qdq, self.calib, self.work)
        steps = [k for k in (1, 2, 4, 8, 16, 32, 48) if k <= len(self.sens)]
        start = base["top1_agreement"]
        with self.progress.task("sensitivity fallback", total=len(steps)) as adv:
            for k in steps:
                excl = sorted(set(base["nodes_excluded"]) | {n for r in self.sens[:k] for n in r["nodes"]})
                c = self.build(dataclasses.replace(base["recipe"], exclude=tuple(excl), kind="fallback",
                                                   why=f"{k} most sensitive layer(s) kept float"))
                adv(1)
                if c is not None and self.agrees(c):
                    break
                helping = c is not None and c["top1_agreement"] > start
                if k >= 4 and not helping and any(self.fits(x) for x in self.cands):  # float layers do not help
                    break
        self.stages.append("fallback")

    # -- the choice --------------------------------------------------------------------------------------
    def _timed(self, pool: list[dict]) -> float | None:
        """Time ``pool`` and fp32 in interleaved rounds (one-by-one timings drifted apart by up to 15% for
        identical models on a shared CPU); returns fp32's p50."""
        if not self.on_host:
            return None
        ms = interleaved_latency([self.fp32] + [c["path"] for c in pool], self.x[:1], threads=2)
        for c, m in zip(pool, ms[1:]):
            c["p50_ms"] = m
        return ms[0]

    def finish(self, out: Path, plot: Path | None = None) -> dict:
        """Choose (layer fallback first if the target was missed), copy the choice to ``out``, report."""
        if not self.met and self.opts.fallback:
            self.fallback()
        chosen, fp32_ms, agreeing = self._choose()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chosen["path"], out)
        if not agreeing:
            self._sensitivity_report(chosen, plot)
        return self._report(chosen, fp32_ms, agreeing, out)

    def _choose(self) -> tuple[dict, float | None, bool]:
        """(the kept candidate, fp32's p50 here or None, whether it meets the agreement target)."""
        ok = [c for c in self.cands if self.fits(c)]
        if not ok:
            raise ArtifactError(self._refusal())
        agreeing = [c for c in ok if self.agrees(c)]
        pool = agreeing or self._worth_their_float_layers(ok)
        fp32_ms = self._timed(pool)
        if not agreeing:  # the most faithful variant within --max-drop that is no slower than fp32 (if any)
            fast = [c for c in pool if fp32_ms is not None and c["p50_ms"] <= fp32_ms]
            pool = [self.best(pool=fast or pool)]
        chosen = pick_variant(pool, fp32_ms) if fp32_ms is not None else max(
            pool, key=lambda c: (c["top1_agreement"], -c["size"]))
        return chosen, fp32_ms, bool(agreeing)

    def _sensitivity_report(self, chosen: dict, plot: Path | None) -> None:
        """Where a missed target is lost: per-layer SQNR of the chosen recipe (reusing the calibration)."""
        if not self.sens and self.opts.report_sensitivity and chosen["recipe"] is not None:
            qdq = self.work / "qdq.onnx"
            quantize(self.pre, qdq, self.calib, dataclasses.replace(chosen["recipe"], fmt="QDQ", bias_correction=False,
                                                                   exclude=()), self.preset, work=self.work)
            self.sens = sensitivity(self.pre, qdq, self.calib, self.work)
        _plot_sensitivity(self.sens, plot)

    def _worth_their_float_layers(self, ok: list[dict]) -> list[dict]:
        """Target missed: layers kept in float (the fallback) must pay for their size and speed by halving
        the disagreement of the best all-int8 variant; one more agreeing image for a file twice the size
        is not kept (issue #18: 14 float nodes bought 1.7 points for 0.51x instead of 0.27x)."""
        full = [c for c in ok if c["kind"] != "fallback"]
        if not full:
            return ok
        a = self.best(pool=full)["top1_agreement"]
        return full + [c for c in ok if c["kind"] == "fallback" and c["top1_agreement"] >= a + (1 - a) / 2]

    def _refusal(self) -> str:
        best = min(self.cands, key=lambda c: c["drop_points"])
        n = len(self.y)
        return (f"int8 loses {best['drop_points']:.2f} top-1 points (fp32 {100 * self.top1_fp32:.1f}%, int8 "
                f"{100 * best['top1_int8']:.1f}%, agreement {100 * best['top1_agreement']:.1f}%) even with "
                f"{len(best['nodes_excluded'])} node(s) in float, over --max-drop {self.opts.max_drop:g} (1 image = "
                f"{100 / n:.2f} points on these {n} images): nothing was written; try --qat, --eval-data with more "
                f"images, or a larger --max-drop")

    def _verdict(self, chosen: dict, fp32_ms: float | None, agreeing: bool) -> str:
        ratio = self.fp32.stat().st_size / chosen["size"]
        if fp32_ms is None:
            v = (f"preset {self.preset_name} is for another target than this host ({host_preset()}): "
                 f"accuracy checked here, latency not measured (run edgetl bench on the target)")
        elif chosen["p50_ms"] <= fp32_ms:
            v = (f"int8 runs at {chosen['p50_ms'] / fp32_ms:.2f}x the fp32 latency on this CPU "
                 f"({chosen['p50_ms']:.2f} vs {fp32_ms:.2f} ms p50, batch 1, 2 threads), {ratio:.1f}x smaller")
        else:
            why = "this CPU has no VNNI" if self.preset_name == "x86-avx2" else "int8 kernels are slower here"
            v = (f"{why}: int8 gives a {ratio:.1f}x smaller file, not speed "
                 f"(int8 {chosen['p50_ms']:.2f} ms vs fp32 {fp32_ms:.2f} ms p50 measured here)")
        v += f"; made by {chosen['method']}, agreeing with fp32 on {100 * chosen['top1_agreement']:.1f}% of " \
             f"{len(self.y)} held-out images"
        if not agreeing:
            v += (f", under the --min-agreement target {100 * self.opts.min_agreement:.1f}% (top-1 drop "
                  f"{chosen['drop_points']:+.2f} points, within --max-drop {self.gate:.2g}; every candidate is in "
                  f"export.json)")
        return v

    def _report(self, chosen: dict, fp32_ms: float | None, agreeing: bool, out: Path) -> dict:
        r = chosen["recipe"]
        qinfo = {"method": chosen["method"], "preset": self.preset_name, "format": chosen["format"],
                 "activation_type": self.preset.activation_type,
                 "weight_type": "QUInt8" if r is not None and r.all_u8 else self.preset.weight_type,
                 "weight_types": _weight_types(r, self.preset) + (", QAT-trained" if chosen["kind"] == "qat" else ""),
                 "per_channel": r.per_channel if r is not None else self.opts.per_channel,
                 "reduce_range": bool(r.reduce_range) if r is not None else self.preset.reduce_range,
                 "calib_method": r.calib_method if r is not None else "minmax",
                 "calib_size": (r.calib_size or len(self.calib)) if r is not None else len(self.calib),
                 "nodes_excluded": chosen["nodes_excluded"],
                 "op_types_float": list(self.preset.op_types_float) if chosen["kind"] == "ops-float" or (
                     chosen["kind"] == "fallback" and set(self._float_op_nodes()) <= set(chosen["nodes_excluded"])
                     and self._float_op_nodes()) else []}
        keys = ("node", "op_type", "sqnr_db", "sqnr_loss_db")
        return {
            **qinfo, "verdict": self._verdict(chosen, fp32_ms, agreeing), "stages": self.stages,
            "fp32_p50_ms": fp32_ms, "int8_p50_ms": chosen["p50_ms"],
            "fp32_size": self.fp32.stat().st_size, "int8_size": out.stat().st_size, "host": host_isa(),
            "candidates": [{k: v for k, v in c.items() if k not in ("path", "recipe")}
                           | {"nodes_excluded": len(c["nodes_excluded"]), "chosen": c is chosen} for c in self.cands],
            "failed_candidates": self.failed,
            "most_sensitive": [{k: s[k] for k in keys} for s in self.sens[:10]],
            "parity": {"n": int(len(self.y)), "top1_fp32": self.top1_fp32, "top1_int8": chosen["top1_int8"],
                       "drop_points": chosen["drop_points"], "top1_agreement": chosen["top1_agreement"],
                       "max_abs_diff": chosen["max_abs_diff"], "max_drop": self.opts.max_drop,
                       "max_drop_effective": self.gate, "min_agreement": self.opts.min_agreement,
                       "agreement_met": agreeing},
        }


def _weight_types(r: Recipe | None, preset: QuantPreset) -> str:
    if r is None:
        return "as the model was given"
    bits = "7-bit" if r.reduce_range else "8-bit"
    if r.all_u8:
        return "uint8 asymmetric per channel (all)"
    dense = f"{preset.weight_type} {bits} symmetric {'per channel' if r.per_channel else 'per tensor'}"
    return dense + (", depthwise 8-bit" if r.depthwise_8bit and r.reduce_range else "")


def _plot_sensitivity(sens: list[dict], plot: Path | None) -> None:
    if not sens or plot is None:
        return
    try:
        from .report import plot_bars
    except ImportError:
        return
    top = sens[:10]
    try:
        plot_bars([f"{r['node']} ({r['op_type']})" for r in top], [r["sqnr_loss_db"] for r in top], plot,
                  xlabel="SQNR lost at the layer, dB (higher = more sensitive to int8)",
                  title="10 most int8-sensitive layers")
    except ImportError:  # matplotlib is an extra
        pass


def quantize_model(fp32: Path, out: Path, calib: np.ndarray, eval_floats: np.ndarray, eval_labels: np.ndarray, *,
                   fp32_logits: np.ndarray | None = None, opts: QuantOptions | None = None,
                   plot: Path | None = None, progress=None) -> dict:
    """Quantize the fp32 ONNX model ``fp32`` into ``out`` (PTQ search, then fallback) and return the report.

    ``calib`` and ``eval_floats`` are preprocessed NCHW float32 inputs; ``eval_labels`` the true classes
    of ``eval_floats``. Raises ArtifactError (and writes nothing) if no variant keeps the drop within
    ``max_drop`` top-1 points (at least one image: 100/N points on N images).
    """
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        search = PTQSearch(Path(fp32), calib, eval_floats, eval_labels, fp32_logits=fp32_logits,
                           opts=opts or QuantOptions(), work=Path(tmp), progress=progress)
        search.run()
        return search.finish(out, plot)


__all__ = ["PRESETS", "QUANT_SETTINGS", "QuantOptions", "QuantPreset", "PTQSearch", "pick_variant",
           "quantize_model", "batches"]
