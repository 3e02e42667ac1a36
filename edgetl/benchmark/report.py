"""report.md and the plots of a bench, written from its bench.json content alone (so a bench run on a
device gives the same report here)."""
from __future__ import annotations

from pathlib import Path

from .._io import atomic_write
from ..report.plots import (
    plot_accuracy_vs_latency,
    plot_latency,
    plot_rig,
    plot_stage_shares,
    plot_sustained,
)
from ..report.tables import markdown_table


def _lat_row(name: str, r: dict, lat: dict, status) -> list:
    return [name, round(r["size_mb"], 2), r.get("top1"), r.get("agreement"), round(lat["p50_ms"], 2),
            round(lat["p90_ms"], 2), round(lat["p99_ms"], 2), round(lat["throughput_ips"], 1), round(lat["cv"], 3),
            r["peak_rss_mb"] and round(r["peak_rss_mb"], 1), status]


def write_bench_report(out: Path, doc: dict) -> None:
    """report.md and the plots of a bench, from its bench.json content alone."""
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
    ratios = [f"{v} {e['vs_model']:.2f}x ({e['latency']['p50_ms']:.2f} vs {e['model_same_rounds']['p50_ms']:.2f} ms)"
              for v, e in e2e.items() if e.get("vs_model")]
    return ["## End to end: where the time goes", "",
            f"Mean ms per image (share of end-to-end) on {doc.get('images') or 'encoded images'}.", "",
            markdown_table(["variant", *stages, "total ms", "not in a stage ms"], rows)] + (
        ["", "End to end over the model alone, p50, both timed in the same interleaved rounds: " + "; ".join(ratios)
         + "."] if ratios else [])


def _rig_lines(doc: dict) -> list[str]:
    rigs = {v: r["rig"] for v, r in doc["variants"].items() if r.get("rig")}
    if not rigs:
        return []
    lines = ["## Camera rig", ""]
    for v, rig in rigs.items():
        probes = "; ".join(f"{m}: worst p99 {p['worst_p99_ms']:.1f} ms, {p['missed']} of {p['captured']} missed"
                           if p["worst_p99_ms"] is not None else f"{m}: nothing answered"
                           for m, p in rig["probes"].items())
        lines += [f"**{v}**: {rig['summary']} ({rig['trigger']} cameras; {rig['threads_per_session']} thread(s) per "
                  f"session; probes of "
                  f"{rig['probe_seconds']:g} s: {probes}). Per frame: {rig['per_frame']}.", "",
                  markdown_table(["stream", "p50 ms", "p99 ms", "max ms", "answered", "dropped", "late", "FPS", "status"],
                                 [[s["stream"], s["p50_ms"] and round(s["p50_ms"], 2), s["p99_ms"] and round(s["p99_ms"], 2),
                                   s["max_ms"] and round(s["max_ms"], 2), f"{s['answered']} of {s['captured']}",
                                   s["dropped"], s["late"], round(s["fps"], 1), "PASS" if s["pass"] else "FAIL"]
                                  for s in rig["streams"]])]
        if len(rig.get("repeats", [])) > 1:
            lines += ["Runs: " + "; ".join(f"{i + 1}: {r['missed']} missed, worst p99 "
                                           f"{'-' if r['worst_p99_ms'] is None else format(r['worst_p99_ms'], '.1f')} ms "
                                           f"{'PASS' if r['pass'] else 'FAIL'}" for i, r in enumerate(rig["repeats"]))
                      + " (the verdict is the worst run's).", ""]
        if rig.get("streams_max"):
            sm = rig["streams_max"]
            lines += [f"**Streams max ({v})**: {sm['summary']}; tried " + ", ".join(
                f"{n}: {'PASS' if t['pass'] else 'FAIL'} ({t['serving']})" for n, t in sm["tried"].items()) + ".", ""]
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
