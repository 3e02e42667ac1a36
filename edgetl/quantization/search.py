"""Static int8 that is small, fast and faithful at once: a measured search, never an assumed one.

    from edgetl.quantization.search import QuantOptions, quantize_model   # edgetl.exporter calls it with --int8
    report = quantize_model(fp32, out, calib, eval_x, eval_y, opts=QuantOptions(preset="auto"))
    search = PTQSearch(fp32, calib, eval_x, eval_y, opts=opts, work=work)  # the steps, for QAT to join
    search.run(); search.add(qat_model, method="qat ..."); report = search.finish(out)

The order (issue #18): every layer int8 first, made several ways (``candidates``: recipes from what the
graph holds; bias correction among them, it costs one fp32 pass), each scored on held-out images
(``scoring``); only when none reaches ``min_agreement`` do the costlier ones run (percentile calibration
where activations are unbounded, every calibration image, cross-layer equalization where it is exact,
all-uint8 weights), then QAT if the caller adds it, and keeping the most sensitive layers in float
comes last (and is kept only if it halves the disagreement). Candidates that pass the checks are timed
against fp32 in interleaved rounds with the same session options (drift on a shared CPU hits all
alike); the fastest wins, of those within 3% of it (timing noise) the smallest file (``choice``). If
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

from .._progress import SILENT
from ..errors import ArtifactError
from ..runtime.cpu import host_preset
from ..runtime.timing import interleaved_latency
from .candidates import GraphFacts, first_recipes, second_recipes
from .choice import choose, pick_variant, plot_sensitivity, search_report
from .presets import PRESETS, QUANT_SETTINGS, QuantOptions, QuantPreset
from .recipes import Recipe, batches, logits, quantize, sensitivity
from .scoring import Scorer

log = logging.getLogger(__name__)


class PTQSearch:
    """The candidates of one model: built (``candidates``), scored (``scoring``), chosen (``choice``)."""

    def __init__(self, fp32: Path, calib: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray, *,
                 fp32_logits: np.ndarray | None = None, opts: QuantOptions, work: Path, progress=None):
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.fp32, self.calib, self.x, self.y, self.opts, self.work = Path(fp32), calib, eval_x, eval_y, opts, work
        self.progress = progress or SILENT
        self.ref = logits(self.fp32, eval_x) if fp32_logits is None else fp32_logits
        self.scorer = Scorer(self.ref, eval_x, eval_y, opts)
        self.preset_name = host_preset() if opts.preset == "auto" else opts.preset
        self.preset = PRESETS[self.preset_name]
        self.on_host = self.preset_name == host_preset()
        self.pre = work / "pre.onnx"
        quant_pre_process(str(self.fp32), str(self.pre), skip_symbolic_shape=True)
        self.facts = GraphFacts(onnx.load(str(self.pre)), self.preset)  # read once: the recipes depend on it
        self.cands: list[dict] = []
        self.failed: list[dict] = []
        self.sens: list[dict] = []
        self.stages: list[str] = []

    @property
    def top1_fp32(self) -> float:
        return self.scorer.top1_fp32

    @property
    def met(self) -> bool:
        return any(self.scorer.agrees(c) for c in self.cands)

    @property
    def met_fast(self) -> bool:
        """The target is met by a candidate on the fast kernels (nothing for QAT to win)."""
        return any(self.scorer.agrees(c) for c in self._fast())

    def _fast(self) -> list[dict]:
        return [c for c in self.cands if c["recipe"] is not None and not c["recipe"].all_u8 and c["kind"] == "ptq"]

    def best(self, fmt: str | None = None, pool: list[dict] | None = None) -> dict | None:
        return self.scorer.best([c for c in (self.cands if pool is None else pool) if fmt is None or c["format"] == fmt])

    def qat_base(self) -> dict | None:
        """Where QAT starts: the most faithful candidate on the target's fast kernels (on AVX2 not U8U8,
        whose dense kernels ran Lite0 at 0.85-0.93x fp32: QAT wins the fidelity back on the 7-bit grid
        instead), as a QDQ model (QAT trains the QDQ graph; a QOperator winner gets its QDQ twin)."""
        base = self.best(pool=self._fast() or self.cands)
        if base is None or base["format"] == "QDQ" or base["recipe"] is None:
            return base
        twin = next((c for c in self.cands if c["recipe"] == dataclasses.replace(base["recipe"], fmt="QDQ")), None)
        return twin or self.build(dataclasses.replace(base["recipe"], fmt="QDQ"))

    def add(self, path: Path, *, method: str, fmt: str = "QDQ", excluded: list[str] | None = None,
            recipe: Recipe | None = None, kind: str = "ptq", why: str = "") -> dict:
        """Score an int8 model on the held-out images and keep it as a candidate. ``kind``: ptq,
        ops-float, fallback or qat (what made it, for the choice and the report)."""
        c = {"path": path, "method": method, "kind": kind, "format": fmt, "nodes_excluded": list(excluded or []),
             "why": why, "recipe": recipe, **self.scorer.score(path), "p50_ms": None}
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

    def _n_calib(self) -> int:
        return self.opts.calib_size or min(200, len(self.calib))

    def _build_all(self, recipes: list[Recipe], what: str) -> None:
        with self.progress.task(what, total=len(recipes)) as adv:
            for r in recipes:
                self.build(r)
                adv(1)

    def run(self) -> None:
        """PTQ: the first recipes, then (target missed) the second ones."""
        self._build_all(first_recipes(self.preset, self.opts, self.facts, n_calib=self._n_calib(),
                                      on_host=self.on_host), f"int8 candidates ({self.preset_name})")
        if not self.cands:
            raise ArtifactError(f"every int8 candidate failed to quantize or load ({self.failed[0]['error']}): "
                                f"nothing was written; export without --int8, or try another --preset")
        self.stages.append("ptq")
        if not self.met:
            base = self.best()
            second = [] if base is None or base["recipe"] is None else second_recipes(
                base["recipe"], self.preset, self.opts, self.facts, n_calib=self._n_calib(),
                n_available=len(self.calib))
            self._build_all(second, "int8: calibration, equalization, weight types")
            self.stages.append("ptq+")
        floats = self.facts.float_op_nodes()
        if floats and self.on_host:  # the preset's slow-in-int8 op types (HardSwish, SE...) in float: maybe faster
            best = self.best()
            if best["recipe"] is not None:
                self.build(dataclasses.replace(best["recipe"], exclude=tuple(floats), kind="ops-float",
                                               why=f"{'/'.join(self.preset.op_types_float)} kept float"))
                self.stages.append("ops-float")

    def fallback(self) -> None:
        """The last resort: the most sensitive layers back to float, more at each step, until the target is met."""
        base = self.best()
        if base is None or base["recipe"] is None:
            return
        self.sens = self._sensitivity(base["recipe"])
        steps = [k for k in (1, 2, 4, 8, 16, 32, 48) if k <= len(self.sens)]
        start = base["top1_agreement"]
        with self.progress.task("sensitivity fallback", total=len(steps)) as adv:
            for k in steps:
                excl = sorted(set(base["nodes_excluded"]) | {n for r in self.sens[:k] for n in r["nodes"]})
                c = self.build(dataclasses.replace(base["recipe"], exclude=tuple(excl), kind="fallback",
                                                   why=f"{k} most sensitive layer(s) kept float"))
                adv(1)
                if c is not None and self.scorer.agrees(c):
                    break
                helping = c is not None and c["top1_agreement"] > start
                if k >= 4 and not helping and any(self.scorer.fits(x) for x in self.cands):  # float layers do not help
                    break
        self.stages.append("fallback")

    def _sensitivity(self, recipe: Recipe, **changes) -> list[dict]:
        """Per-layer SQNR of ``recipe`` as an all-int8 QDQ graph (reusing the calibration)."""
        qdq = self.work / "sens_qdq.onnx"
        quantize(self.pre, qdq, self.calib, dataclasses.replace(recipe, fmt="QDQ", exclude=(), **changes), self.preset,
                 work=self.work)
        return sensitivity(self.pre, qdq, self.calib, self.work)

    def timed(self, pool: list[dict]) -> float | None:
        """Time ``pool`` and fp32 in interleaved rounds (one-by-one timings drifted apart by up to 15% for
        identical models on a shared CPU); returns fp32's p50 (None for another target's preset)."""
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
        chosen, fp32_ms, agreeing = choose(self.cands, self.scorer, self.timed)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chosen["path"], out)
        if not agreeing:  # where a missed target is lost
            if not self.sens and self.opts.report_sensitivity and chosen["recipe"] is not None:
                self.sens = self._sensitivity(chosen["recipe"], bias_correction=False)
            plot_sensitivity(self.sens, plot)
        return search_report(self, chosen, fp32_ms, agreeing, out)


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
