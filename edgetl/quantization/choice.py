"""The choice among scored int8 candidates, and the words and figures that explain it.

    chosen, fp32_ms, agreeing = choose(search.cands, search.scorer, search.timed)
    search_report(search, chosen, fp32_ms, agreeing, out)      # export.json's "quantization"
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ArtifactError
from ..runtime.cpu import host_isa, host_preset
from .presets import QuantPreset
from .recipes import Recipe
from .scoring import Scorer


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


def choose(cands: list[dict], scorer: Scorer, timed: Callable[[list[dict]], float | None]
           ) -> tuple[dict, float | None, bool]:
    """(the kept candidate, fp32's p50 here or None, whether it meets the agreement target).

    ``timed(pool)`` times the pool against fp32 on this host (filling each ``p50_ms``) and returns fp32's
    p50, or None when the preset is for another target."""
    ok = [c for c in cands if scorer.fits(c)]
    if not ok:
        raise ArtifactError(refusal(cands, scorer))
    agreeing = [c for c in ok if scorer.agrees(c)]
    pool = agreeing or scorer.worth_their_float_layers(ok)
    fp32_ms = timed(pool)
    if not agreeing:  # the most faithful variant within --max-drop that is no slower than fp32 (if any)
        fast = [c for c in pool if fp32_ms is not None and c["p50_ms"] <= fp32_ms]
        pool = [scorer.best(fast or pool)]
    chosen = pick_variant(pool, fp32_ms) if fp32_ms is not None else max(
        pool, key=lambda c: (c["top1_agreement"], -c["size"]))
    return chosen, fp32_ms, bool(agreeing)


def refusal(cands: list[dict], scorer: Scorer) -> str:
    """Why nothing is written: the best candidate's figures against the gate, and what to try."""
    best = min(cands, key=lambda c: c["drop_points"])
    n = len(scorer.y)
    return (f"int8 loses {best['drop_points']:.2f} top-1 points (fp32 {100 * scorer.top1_fp32:.1f}%, int8 "
            f"{100 * best['top1_int8']:.1f}%, agreement {100 * best['top1_agreement']:.1f}%) even with "
            f"{len(best['nodes_excluded'])} node(s) in float, over --max-drop {scorer.opts.max_drop:g} (1 image = "
            f"{100 / n:.2f} points on these {n} images): nothing was written; try --qat, --eval-data with more "
            f"images, or a larger --max-drop")


def verdict(chosen: dict, fp32_ms: float | None, agreeing: bool, *, fp32_size: int, preset_name: str,
            scorer: Scorer) -> str:
    """One sentence: speed and size against fp32 here (or why latency was not measured), and fidelity."""
    ratio = fp32_size / chosen["size"]
    if fp32_ms is None:
        v = (f"preset {preset_name} is for another target than this host ({host_preset()}): "
             f"accuracy checked here, latency not measured (run edgetl bench on the target)")
    elif chosen["p50_ms"] <= fp32_ms:
        v = (f"int8 runs at {chosen['p50_ms'] / fp32_ms:.2f}x the fp32 latency on this CPU "
             f"({chosen['p50_ms']:.2f} vs {fp32_ms:.2f} ms p50, batch 1, 2 threads), {ratio:.1f}x smaller")
    else:
        why = "this CPU has no VNNI" if preset_name == "x86-avx2" else "int8 kernels are slower here"
        v = (f"{why}: int8 gives a {ratio:.1f}x smaller file, not speed "
             f"(int8 {chosen['p50_ms']:.2f} ms vs fp32 {fp32_ms:.2f} ms p50 measured here)")
    v += f"; made by {chosen['method']}, agreeing with fp32 on {100 * chosen['top1_agreement']:.1f}% of " \
         f"{len(scorer.y)} held-out images"
    if not agreeing:
        v += (f", under the --min-agreement target {100 * scorer.opts.min_agreement:.1f}% (top-1 drop "
              f"{chosen['drop_points']:+.2f} points, within --max-drop {scorer.gate:.2g}; every candidate is in "
              f"export.json)")
    return v


def settings(chosen: dict, preset: QuantPreset, preset_name: str, *, per_channel: bool, n_calib: int,
             float_op_nodes: list[str]) -> dict:
    """The settings that reproduce the chosen model (QUANT_SETTINGS and the weight types in words)."""
    r = chosen["recipe"]
    return {"method": chosen["method"], "preset": preset_name, "preset_reason": preset.note, "format": chosen["format"],
            "activation_type": preset.activation_type,
            "weight_type": "QUInt8" if r is not None and r.all_u8 else preset.weight_type,
            "weight_types": weight_types(r, preset) + (", QAT-trained" if chosen["kind"] == "qat" else ""),
            "per_channel": r.per_channel if r is not None else per_channel,
            "reduce_range": bool(r.reduce_range) if r is not None else preset.reduce_range,
            "calib_method": r.calib_method if r is not None else "minmax",
            "calib_size": (r.calib_size or n_calib) if r is not None else n_calib,
            "nodes_excluded": chosen["nodes_excluded"],
            "op_types_float": list(preset.op_types_float) if chosen["kind"] == "ops-float" or (
                chosen["kind"] == "fallback" and set(float_op_nodes) <= set(chosen["nodes_excluded"])
                and float_op_nodes) else []}


def search_report(search, chosen: dict, fp32_ms: float | None, agreeing: bool, out: Path) -> dict:
    """export.json's "quantization": the settings, the verdict, every candidate and the parity figures."""
    sc = search.scorer
    keys = ("node", "op_type", "sqnr_db", "sqnr_loss_db")
    return {
        **settings(chosen, search.preset, search.preset_name, per_channel=search.opts.per_channel,
                   n_calib=len(search.calib), float_op_nodes=search.facts.float_op_nodes()),
        "verdict": verdict(chosen, fp32_ms, agreeing, fp32_size=search.fp32.stat().st_size,
                           preset_name=search.preset_name, scorer=sc),
        "stages": search.stages, "fp32_p50_ms": fp32_ms, "int8_p50_ms": chosen["p50_ms"],
        "fp32_size": search.fp32.stat().st_size, "int8_size": out.stat().st_size, "host": host_isa(),
        "candidates": [{k: v for k, v in c.items() if k not in ("path", "recipe")}
                       | {"nodes_excluded": len(c["nodes_excluded"]), "chosen": c is chosen} for c in search.cands],
        "failed_candidates": search.failed,
        "most_sensitive": [{k: s[k] for k in keys} for s in search.sens[:10]],
        "parity": {"n": int(len(sc.y)), "top1_fp32": sc.top1_fp32, "top1_int8": chosen["top1_int8"],
                   "drop_points": chosen["drop_points"], "top1_agreement": chosen["top1_agreement"],
                   "max_abs_diff": chosen["max_abs_diff"], "max_drop": sc.opts.max_drop,
                   "max_drop_effective": sc.gate, "min_agreement": sc.opts.min_agreement,
                   "agreement_met": agreeing},
    }


def weight_types(r: Recipe | None, preset: QuantPreset) -> str:
    if r is None:
        return "as the model was given"
    bits = "7-bit" if r.reduce_range else "8-bit"
    if r.all_u8:
        return "uint8 asymmetric per channel (all)"
    dense = f"{preset.weight_type} {bits} symmetric {'per channel' if r.per_channel else 'per tensor'}"
    return dense + (", depthwise 8-bit" if r.depthwise_8bit and r.reduce_range else "")


def plot_sensitivity(sens: list[dict], plot: Path | None) -> None:
    if not sens or plot is None:
        return
    try:
        from ..report.plots import plot_bars
    except ImportError:
        return
    top = sens[:10]
    try:
        plot_bars([f"{r['node']} ({r['op_type']})" for r in top], [r["sqnr_loss_db"] for r in top], plot,
                  xlabel="SQNR lost at the layer, dB (higher = more sensitive to int8)",
                  title="10 most int8-sensitive layers")
    except ImportError:  # matplotlib is an extra
        pass
