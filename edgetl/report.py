"""Plots and Markdown tables people compare: training curves, latency, accuracy vs latency.

Only matplotlib (lazily imported, Agg backend) and numpy: usable on the device side too when
matplotlib is installed. Every plot is written atomically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ._io import atomic_path


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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_bench_report(out: Path, doc: dict) -> None:
    """report.md and the plots of a bench, from its bench.json content alone."""
    from ._io import atomic_write

    t, m, variants = doc["target"], doc["machine"], doc["variants"]
    rows = []
    for v, r in variants.items():
        lat = r["latency"]
        rows.append([v, round(r["size_mb"], 2), r.get("top1"), r.get("agreement"), round(lat["p50_ms"], 2),
                     round(lat["p90_ms"], 2), round(lat["p99_ms"], 2), round(lat["throughput_ips"], 1),
                     round(lat["cv"], 3), r["peak_rss_mb"] and round(r["peak_rss_mb"], 1),
                     r.get("status", "-") if v != "torch" else "reference"])
    where = (f"Measured on {doc['measured_on']}" if doc.get("measured_on") else "Ran on")
    lines = [f"# edgetl bench: {t['name']} ({doc['scenario']})", "",
             f"{t['description']}. Deadline {t['deadline_ms']} ms, {t['streams']} stream(s) at {t['fps']} FPS, "
             f"memory budget {t['memory_budget_mb']} MB.", "",
             markdown_table(["variant", "size MB", "top-1", "agreement", "p50 ms", "p90 ms", "p99 ms", "FPS",
                             "CV", "peak RSS MB", "status"], rows),
             f"{where}: {m.get('hostname', '?')}, {m['cpu']}, {m['cores']} cores, {m['machine']}, ISA "
             f"avx2={m['isa']['avx2']} vnni={m['isa']['vnni'] or 'no'} dotprod={m['isa']['dotprod']}; "
             f"onnxruntime {m['onnxruntime']}; providers used: {', '.join(doc['providers_used'])}; "
             f"threads {doc['threads'] or 'default'} (target: {doc.get('threads_target', '?') or 'default'}); "
             f"{doc.get('timing', '')}.", ""]
    if doc["emulated"]:
        lines += [f"**Emulated on a different host:** {'; '.join(doc['emulated'])}. "
                  f"These numbers are this host's, not the target's.", ""]
    if doc.get("torch_reference"):
        lines += [f"PyTorch reference: {doc['torch_reference']}.", ""]
    acc = doc["accuracy"]
    if acc.get("source"):
        lines += [f"Accuracy on {acc['source']}.", ""]
    atomic_write(out / "report.md", "\n".join(lines))
    try:
        plot_latency({v: r.get("samples_ms", []) for v, r in variants.items()}, out / "latency.png",
                     title=f"{t['name']} · {doc['scenario']}")
        plot_accuracy_vs_latency([{"name": v, "p50_ms": r["latency"]["p50_ms"], "top1": r.get("top1")}
                                  for v, r in variants.items()], out / "accuracy_vs_latency.png",
                                 title=f"{t['name']}: top-1 vs p50 latency")
    except ImportError:  # matplotlib is optional on a device: JSON and Markdown are still written
        pass


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
