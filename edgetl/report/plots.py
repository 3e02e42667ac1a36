"""Plots people compare: training curves, latency, accuracy vs latency, stage shares, rigs, sweeps.

Only matplotlib (lazily imported, Agg-free object API) and numpy: usable on the device side too when
matplotlib is installed. Every plot is written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .._io import atomic_path


class _Figures:
    """matplotlib's object API without pyplot: no global figure state (safe from threads) and
    0.5 s less import than pyplot."""

    @staticmethod
    def subplots(*grid, figsize):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*grid)


def _plt():
    return _Figures


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_training_curves(history: Sequence[dict], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, train vs val."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train")
    b.plot(ep, [100 * h["val_acc"] for h in history], "o-", label="val")
    b.set_xlabel("epoch"), b.set_ylabel("top-1 %"), b.legend(), b.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_latency(samples: dict[str, Sequence[float]], path: Path, title: str = "") -> Path:
    """Latency distribution (ms) per variant, as overlaid histograms with p50/p99 marks."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, xs in samples.items():
        xs = np.asarray(xs)
        if xs.size == 0:
            continue
        line = ax.hist(xs, bins=40, alpha=0.55, label=f"{name} (p50 {np.percentile(xs, 50):.2f} ms)")
        color = line[2][0].get_facecolor()
        ax.axvline(np.percentile(xs, 99), color=color, ls="--", lw=1)
    ax.set_xlabel("latency per call (ms); dashed: p99"), ax.set_ylabel("runs"), ax.legend(), ax.grid(alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_accuracy_vs_latency(points: Sequence[dict], path: Path, title: str = "") -> Path:
    """One point per variant: p50 latency (x) vs top-1 (y), labelled."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for p in points:
        if p.get("top1") is None:
            continue
        ax.scatter(p["p50_ms"], 100 * p["top1"], s=60)
        ax.annotate(p["name"], (p["p50_ms"], 100 * p["top1"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("p50 latency (ms)"), ax.set_ylabel("top-1 %"), ax.grid(alpha=0.3)
    ax.set_title(title)
    return _save(fig, path)


def plot_bars(names: Sequence[str], values: Sequence[float] | Mapping[str, Sequence[float]], path: Path, *,
              xlabel: str, title: str = "", ref: float | None = None) -> Path:
    """Horizontal bars (e.g. per-layer sensitivity or latency ratios), with an optional reference line.

    ``values`` as a mapping {series: values} draws grouped bars, one colour per series, with a legend.
    """
    plt = _plt()
    series = dict(values) if isinstance(values, Mapping) else {"": list(values)}
    fig, ax = plt.subplots(figsize=(7, (0.22 * len(series) + 0.1) * len(names) + 1.2))
    h = 0.8 / len(series)
    pos = list(range(len(names)))[::-1]  # the first name at the top
    for k, (label, vals) in enumerate(series.items()):
        ax.barh([p + (len(series) - 1) / 2 * h - k * h for p in pos], list(vals), height=h, label=label or None)
    ax.set_yticks(pos, list(names))
    if ref is not None:
        ax.axvline(ref, color="k", ls="--", lw=1)
    if len(series) > 1:
        ax.legend(loc="best")
    ax.set_xlabel(xlabel), ax.set_title(title), ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_stage_shares(e2e: Mapping[str, dict], path: Path, title: str = "") -> Path:
    """Stacked bars: mean ms of each end-to-end stage, one bar per variant."""
    plt = _plt()
    names = list(e2e)
    stages = list(next(iter(e2e.values()))["stages_mean_ms"])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.6))
    left = [0.0] * len(names)
    for s in stages:
        vals = [e2e[v]["stages_mean_ms"][s] for v in names]
        ax.barh(names, vals, left=left, label=s)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("mean ms per image, encoded bytes -> label")
    ax.legend(fontsize=8, ncol=len(stages), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(alpha=0.3, axis="x"), fig.suptitle(title, y=1.06)
    return _save(fig, path)


def plot_rig(rigs: Mapping[str, dict], path: Path, title: str = "") -> Path:
    """Per-stream latency over time (capture -> answer), one panel per variant, the deadline drawn."""
    plt = _plt()
    fig, axes = plt.subplots(len(rigs), 1, figsize=(8, 2.8 * len(rigs)))
    axes = [axes] if len(rigs) == 1 else list(axes)
    for ax, (v, rig) in zip(axes, rigs.items()):
        for s in rig["streams"]:
            if s["samples"]:
                ts, ms = zip(*s["samples"])
                ax.plot(ts, ms, lw=0.8, label=f"stream {s['stream']} (p99 {s['p99_ms']:.1f} ms)")
        ax.axhline(rig["deadline_ms"], color="r", lw=1.2, ls="--", label=f"deadline {rig['deadline_ms']:g} ms")
        ax.set_ylabel("ms"), ax.set_title(f"{v}: {rig['mode']} session(s)", fontsize=9), ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    axes[-1].set_xlabel("capture time (s)")
    fig.suptitle(title, y=1.02)
    return _save(fig, path)


def plot_sustained(run: dict, path: Path, title: str = "") -> Path:
    """p50 per interval per variant; the CPU temperature (or clock) on a second axis where exposed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    t = [iv["t_s"] for iv in run["intervals"]]
    for v, d in run["drift_pct"].items():
        ax.plot(t, [iv["p50_ms"][v] for iv in run["intervals"]], "o-", ms=3, label=f"{v} (drift {d:+.1f}%)")
    ax.set_xlabel("time (s)"), ax.set_ylabel("p50 ms per interval"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    key, unit = ("temp_c", "C") if run["temp_source"] else ("cpu_mhz", "MHz")
    if any(iv[key] is not None for iv in run["intervals"]):
        ax2 = ax.twinx()
        ax2.plot(t, [iv[key] for iv in run["intervals"]], "k:", lw=1)
        ax2.set_ylabel(f"{'temperature' if key == 'temp_c' else 'CPU clock'} ({unit}, dotted)")
    ax.set_title(title)
    return _save(fig, path)


def plot_sweep(points: Sequence[dict], front: set, deadline_ms: float, limit_ms: float, path: Path,
               title: str = "") -> Path:
    """Top-1 against p50 on the target, one point per backbone variant; the deadline (and the deadline
    less headroom) drawn, the Pareto front joined."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for p in points:
        if p.get("top1") is None:
            continue
        on = p["name"] in front
        ax.scatter(p["p50_ms"], 100 * p["top1"], s=70 if on else 40, marker="o" if p["variant"] == "fp32" else "s",
                   edgecolors="k" if on else "none")
        ax.annotate(p["name"], (p["p50_ms"], 100 * p["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    fr = sorted((p for p in points if p["name"] in front and p.get("top1") is not None), key=lambda p: p["p50_ms"])
    if fr:
        ax.plot([p["p50_ms"] for p in fr], [100 * p["top1"] for p in fr], "k--", lw=1, label="Pareto front")
    ax.axvline(deadline_ms, color="r", lw=1.2, label=f"deadline {deadline_ms:g} ms")
    ax.axvline(limit_ms, color="r", lw=1, ls=":", label=f"with headroom {limit_ms:.1f} ms")
    ax.set_xlabel("p50 latency on the target (ms)"), ax.set_ylabel("val top-1 %"), ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    return _save(fig, path)
