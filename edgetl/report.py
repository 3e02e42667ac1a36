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


def _lat_row(name: str, r: dict, lat: dict, status) -> list:
    return [name, round(r["size_mb"], 2), r.get("top1"), r.get("agreement"), round(lat["p50_ms"], 2),
            round(lat["p90_ms"], 2), round(lat["p99_ms"], 2), round(lat["throughput_ips"], 1), round(lat["cv"], 3),
            r["peak_rss_mb"] and round(r["peak_rss_mb"], 1), status]


def write_bench_report(out: Path, doc: dict) -> None:
    """report.md and the plots of a bench, from its bench.json content alone."""
    from ._io import atomic_write

    t, m, variants = doc["target"], doc["machine"], doc["variants"]
    rows = []
    for v, r in variants.items():
        rows.append(_lat_row(f"{v} model", r, r["latency"], r.get("status", "-") if v != "torch" else "reference"))
        if r.get("end_to_end"):
            rows.append(_lat_row(f"{v} end-to-end", r, r["end_to_end"]["latency"], "-"))
    where = (f"Measured on {doc['measured_on']}" if doc.get("measured_on") else "Ran on")
    lines = [f"# edgetl bench: {t['name']} ({doc['scenario']})", "",
             f"{t['description']}. Deadline {t['deadline_ms']} ms, {t['streams']} stream(s) at {t['fps']} FPS, "
             f"memory budget {t['memory_budget_mb']} MB.", "",
             markdown_table(["variant", "size MB", "top-1", "agreement", "p50 ms", "p90 ms", "p99 ms", "FPS",
                             "CV", "peak RSS MB", "status"], rows),
             f"*model*: the model alone on a prepared tensor (batch {next(iter(variants.values()))['latency']['batch']}); "
             f"*end-to-end*: encoded image bytes -> label through the device runtime (decode, resize, crop, normalize, "
             f"run, softmax/top-k), batch 1.", "",
             f"{where}: {m.get('hostname', '?')}, {m['cpu']}, {m['cores']} cores, {m['machine']}, ISA "
             f"avx2={m['isa']['avx2']} vnni={m['isa']['vnni'] or 'no'} dotprod={m['isa']['dotprod']}; "
             f"onnxruntime {m['onnxruntime']}; providers used: {', '.join(doc['providers_used'])}; "
             f"threads {doc['threads'] or 'default'} (target: {doc.get('threads_target', '?') or 'default'}); "
             f"{doc.get('timing', '')}.", ""]
    if doc["emulated"]:
        lines += [f"**Emulated on a different host:** {'; '.join(doc['emulated'])}. "
                  f"These numbers are this host's, not the target's.", ""]
    for v, why in (doc.get("skipped") or {}).items():
        lines += [f"**{v} not benched:** {why}.", ""]
    if doc.get("torch_reference"):
        lines += [f"PyTorch reference: {doc['torch_reference']}.", ""]
    acc = doc["accuracy"]
    if acc.get("source"):
        lines += [f"Accuracy on {acc['source']}.", ""]
    lines += _stage_lines(doc) + _rig_lines(doc) + _sustained_lines(doc)
    atomic_write(out / "report.md", "\n".join(lines))
    try:
        plot_latency({v: r.get("samples_ms", []) for v, r in variants.items()}, out / "latency.png",
                     title=f"{t['name']} · {doc['scenario']}")
        plot_accuracy_vs_latency([{"name": v, "p50_ms": r["latency"]["p50_ms"], "top1": r.get("top1")}
                                  for v, r in variants.items()], out / "accuracy_vs_latency.png",
                                 title=f"{t['name']}: top-1 vs p50 latency")
        e2e = {v: r["end_to_end"] for v, r in variants.items() if r.get("end_to_end")}
        if e2e:
            plot_stage_shares(e2e, out / "end_to_end.png", title=f"{t['name']}: where end-to-end time goes")
        rigs = {v: r["rig"] for v, r in variants.items() if r.get("rig")}
        if rigs:
            plot_rig(rigs, out / "rig.png", title=f"{t['name']}: {t['streams']} camera streams at {t['fps']:g} FPS")
        if doc.get("sustained"):
            plot_sustained(doc["sustained"], out / "sustained.png", title=f"{t['name']}: sustained run")
    except ImportError:  # matplotlib is optional on a device: JSON and Markdown are still written
        pass


def _stage_lines(doc: dict) -> list[str]:
    e2e = {v: r["end_to_end"] for v, r in doc["variants"].items() if r.get("end_to_end")}
    if not e2e:
        return []
    stages = list(next(iter(e2e.values()))["stages_mean_ms"])
    rows = [[v, *(f"{e['stages_mean_ms'][s]:.2f} ({100 * e['shares'][s]:.0f}%)" for s in stages),
             round(e["latency"]["mean_ms"], 2), round(e["unaccounted_ms"], 3)] for v, e in e2e.items()]
    return ["## End to end: where the time goes", "",
            f"Mean ms per image (share of end-to-end) on {doc.get('images') or 'encoded images'}.", "",
            markdown_table(["variant", *stages, "total ms", "not in a stage ms"], rows)]


def _rig_lines(doc: dict) -> list[str]:
    rigs = {v: r["rig"] for v, r in doc["variants"].items() if r.get("rig")}
    if not rigs:
        return []
    lines = ["## Camera rig", ""]
    for v, rig in rigs.items():
        probes = "; ".join(f"{m}: worst p99 {p['worst_p99_ms']:.1f} ms, {p['missed']} of {p['captured']} missed"
                           if p["worst_p99_ms"] is not None else f"{m}: nothing answered"
                           for m, p in rig["probes"].items())
        lines += [f"**{v}**: {rig['summary']} ({rig['threads_per_session']} thread(s) each; probes of "
                  f"{rig['probe_seconds']:g} s: {probes}). Per frame: {rig['per_frame']}.", "",
                  markdown_table(["stream", "p50 ms", "p99 ms", "max ms", "answered", "dropped", "late", "FPS", "status"],
                                 [[s["stream"], s["p50_ms"] and round(s["p50_ms"], 2), s["p99_ms"] and round(s["p99_ms"], 2),
                                   s["max_ms"] and round(s["max_ms"], 2), f"{s['answered']} of {s['captured']}",
                                   s["dropped"], s["late"], round(s["fps"], 1), "PASS" if s["pass"] else "FAIL"]
                                  for s in rig["streams"]])]
    return lines


def _sustained_lines(doc: dict) -> list[str]:
    run = doc.get("sustained")
    if not run:
        return []
    names = list(run["drift_pct"])
    rows = [[iv["t_s"], *(round(iv["p50_ms"][v], 3) for v in names), iv["cpu_mhz"] and round(iv["cpu_mhz"]),
             iv["temp_c"] and round(iv["temp_c"], 1)] for iv in run["intervals"]]
    drift = ", ".join(f"{v} {d:+.1f}%" for v, d in run["drift_pct"].items())
    return ["## Sustained run", "",
            f"{run['seconds']:g} s in {len(run['intervals'])} intervals of {run['interval_s']:g} s (variants interleaved "
            f"in each). Drift of p50, first to last interval: {drift}. CPU clock from "
            f"{run['cpu_mhz_source'] or 'nowhere'}, temperature from {run['temp_source'] or 'nowhere'}.", "",
            *(f"- {n}" for n in run["notes"]), "",
            markdown_table(["end s", *(f"{v} p50 ms" for v in names), "CPU MHz", "temp C"], rows)]


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
