"""Sustained runs: do the variants keep their latency over minutes (heat, clocks, other load)?

    run = sustained({"fp32": f, "int8": g}, seconds=600)   # p50 per interval, drift, CPU clock and temperature
    run["drift_pct"], run["notes"]

**Sustained.** The run is cut into intervals (``seconds / 20``, at least 1 s); in every interval each
variant runs back to back for its share, in rotating order, so all variants see the same minutes. Per
interval: p50 per variant, the CPU clock and the temperature where the OS exposes them. Drift is the
last interval's p50 against the first's; above 10% the result says "throttling suspected".

numpy only, plus whatever the callables run (onnxruntime): a device runs it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..runtime.cpu import cpu_mhz

DRIFT_LIMIT_PCT = 10.0


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def sensors(root: Path = Path("/")) -> dict:
    """This machine's CPU clock (MHz, mean over cores) and hottest temperature (deg C), where exposed.

    Clock: cpufreq's scaling_cur_freq, else /proc/cpuinfo's "cpu MHz" (on a VM the latter may be the
    nominal clock). Temperature: /sys/class/thermal zones, else hwmon sensors. None when absent.
    """
    sys_cpu = root / "sys/devices/system/cpu"
    mhz, mhz_src = None, None
    freqs = [f for f in (_read_number(p) for p in sys_cpu.glob("cpu[0-9]*/cpufreq/scaling_cur_freq")) if f]
    if freqs:
        mhz, mhz_src = sum(freqs) / len(freqs) / 1e3, "cpufreq"
    else:
        mhz = cpu_mhz(root)
        mhz_src = "/proc/cpuinfo" if mhz else None
    temps = [t for t in (_read_number(p) for p in (root / "sys/class/thermal").glob("thermal_zone*/temp")) if t]
    temp_src = "thermal" if temps else None
    if not temps:
        temps = [t for t in (_read_number(p) for p in (root / "sys/class/hwmon").glob("hwmon*/temp*_input")) if t]
        temp_src = "hwmon" if temps else None
    return {"cpu_mhz": mhz, "cpu_mhz_source": mhz_src,
            "temp_c": max(temps) / 1e3 if temps else None, "temp_source": temp_src}


def sustained(fns: dict[str, Callable[[], object]], seconds: float, *, interval_s: float | None = None,
              settle_s: float = 0.005, read_sensors: Callable[[], dict] = sensors) -> dict:
    """Run every variant for ``seconds`` in all, interleaved per interval; see the module docstring."""
    interval_s = interval_s or max(1.0, seconds / 20)
    n_int = max(1, round(seconds / interval_s))
    names = list(fns)
    share = interval_s / len(names)
    for fn in fns.values():  # untimed warm-up
        fn()
    start = read_sensors()
    t_start = time.perf_counter()
    intervals = []
    for k in range(n_int):
        p50 = {}
        runs = {}
        for j in range(len(names)):
            name = names[(k + j) % len(names)]
            fn = fns[name]
            time.sleep(settle_s)
            fn()  # untimed: the caches the other variant filled
            ts, t_stop = [], time.perf_counter() + share
            while not ts or time.perf_counter() < t_stop:
                t = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t) * 1e3)
            p50[name], runs[name] = float(np.median(ts)), len(ts)
        s = read_sensors()
        intervals.append({"t_s": round(time.perf_counter() - t_start, 3), "p50_ms": p50, "runs": runs,
                          "cpu_mhz": s["cpu_mhz"], "temp_c": s["temp_c"]})
    first, last = intervals[0]["p50_ms"], intervals[-1]["p50_ms"]
    drift = {v: 100.0 * (last[v] - first[v]) / first[v] for v in names}
    spread = {v: spread_pct([iv["p50_ms"][v] for iv in intervals]) for v in names}
    rank = lambda d: sorted(names, key=d.get)  # noqa: E731 -- fastest first
    out = {"seconds": n_int * interval_s, "interval_s": interval_s, "intervals": intervals, "drift_pct": drift, "spread_pct": spread,
           "ranking_first": rank(first), "ranking_last": rank(last), "sensors_start": start,
           "cpu_mhz_source": start["cpu_mhz_source"], "temp_source": start["temp_source"]}
    out["notes"] = sustained_notes(out)
    return out


def spread_pct(p50s: Sequence[float]) -> float:
    """How far the intervals' p50s spread: (max - min) / median, in %."""
    return 100.0 * (max(p50s) - min(p50s)) / float(np.median(p50s))


def sustained_notes(run: dict) -> list[str]:
    """The lines a reader needs: throttling suspected, a ranking that changed, noise larger than the
    drift, sensors not exposed."""
    notes = []
    ivs = run["intervals"]
    for v, d in run["drift_pct"].items():
        if d > DRIFT_LIMIT_PCT:
            clock = ""
            if ivs[0]["cpu_mhz"] and ivs[-1]["cpu_mhz"]:
                clock = f"; CPU clock {ivs[0]['cpu_mhz']:.0f} -> {ivs[-1]['cpu_mhz']:.0f} MHz"
                if ivs[-1]["cpu_mhz"] > 0.98 * ivs[0]["cpu_mhz"]:
                    clock += " (the clock did not drop: other load on this machine is as likely a cause)"
            if ivs[0]["temp_c"] is not None and ivs[-1]["temp_c"] is not None:
                clock += f", {ivs[0]['temp_c']:.0f} -> {ivs[-1]['temp_c']:.0f} C"
            notes.append(f"throttling suspected: {v} p50 rose {d:.1f}% from the first to the last interval{clock}")
    for v, d in run["drift_pct"].items():
        p50s = [iv["p50_ms"][v] for iv in ivs]
        sp = spread_pct(p50s)
        if len(ivs) >= 3 and sp > DRIFT_LIMIT_PCT and sp > 1.5 * abs(d):
            notes.append(f"{v}: the intervals' p50 spans {min(p50s):.2f}-{max(p50s):.2f} ms ({sp:.0f}% of the median), "
                         f"more than its {d:+.1f}% drift: this machine's noise, not a trend")
    if run["ranking_first"] != run["ranking_last"]:
        notes.append(f"the ranking changed: fastest first {' < '.join(run['ranking_first'])} in the first interval, "
                     f"{' < '.join(run['ranking_last'])} in the last")
    if run["temp_source"] is None:
        notes.append("this machine exposes no temperature sensor (/sys/class/thermal, hwmon)")
    if run["cpu_mhz_source"] is None:
        notes.append("this machine exposes no CPU clock (cpufreq, /proc/cpuinfo)")
    return notes
