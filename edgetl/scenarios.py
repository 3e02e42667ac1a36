"""Scenarios timed the way a robot runs: concurrent camera streams, and sustained runs.

    from edgetl.scenarios import camera_rig, sustained, sensors
    rig = camera_rig([p.predict] * 3, frames, fps=30, deadline_ms=33.3, seconds=10)   # one shared Predictor
    rig["streams"][0]["p99_ms"], rig["missed"], rig["pass"]
    run = sustained({"fp32": f, "int8": g}, seconds=600)   # p50 per interval, drift, CPU clock and temperature

**Camera rig.** N cameras capture a frame every 1/FPS s, all at the same instants (hardware-synchronised
cameras: the worst case for contention). Each stream has one worker thread that runs its callable on the
newest frame captured when it is free (closed loop, as a camera driver keeps the latest frame): a frame
captured while the worker was busy and replaced by a newer one is *dropped*; a frame answered more than
the deadline after its capture is *late*. Latency is capture -> answer, queueing included. A stream
passes when at least 99% of its captured frames were answered within the deadline (dropped frames count
as misses: its p99 over every captured frame meets the deadline); the rig passes when every stream does.

**Sustained.** The run is cut into intervals (``seconds / 20``, at least 1 s); in every interval each
variant runs back to back for its share, in rotating order, so all variants see the same minutes. Per
interval: p50 per variant, the CPU clock and the temperature where the OS exposes them. Drift is the
last interval's p50 against the first's; above 10% the result says "throttling suspected".

numpy only, plus whatever the callables run (onnxruntime): the device side uses this module.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

MAX_MISSED = 0.01  # a stream passes with at most 1% of its frames dropped or late (p99 meets the deadline)
DRIFT_LIMIT_PCT = 10.0


def _stream(fn: Callable, frames: Sequence, offset: int, out: dict, *, t0: float, captured: int,
            period: float) -> None:
    """One camera's worker: the newest captured frame whenever it is free, until the run's ``captured``
    frames are each answered or replaced (the last one is answered even when that ends after the run)."""
    rec, k = [], 0
    try:
        while k < captured:
            now = time.perf_counter()
            newest = min(math.floor((now - t0) / period), captured - 1)  # -1 before the first capture
            if newest < k:  # the next frame is not captured yet
                time.sleep(max(0.0, t0 + k * period - now))
                continue
            k = newest  # frames k..newest-1 were replaced before the worker was free: dropped
            capture = t0 + k * period
            fn(frames[(offset + k) % len(frames)])
            rec.append((capture - t0, (time.perf_counter() - capture) * 1e3))
            k += 1
    except BaseException as e:  # re-raised by camera_rig in the caller's thread
        out["error"] = e
    out["records"] = rec


def camera_rig(stream_fns: Sequence[Callable], frames: Sequence, *, fps: float, deadline_ms: float,
               seconds: float, warmup: int = 3) -> dict:
    """Run ``len(stream_fns)`` concurrent camera streams (stream i calls ``stream_fns[i](frame)``)."""
    n, period = len(stream_fns), 1.0 / fps
    for fn in dict.fromkeys(stream_fns):  # untimed: the first calls allocate (once per distinct callable)
        for i in range(warmup):
            fn(frames[i % len(frames)])
    t0 = time.perf_counter() + 0.02  # every thread started before the first capture
    captured = math.ceil(seconds * fps - 1e-9)  # frames k with t0 + k*period < t0 + seconds
    outs = [{} for _ in range(n)]
    threads = [threading.Thread(target=_stream, args=(fn, frames, i, outs[i]), daemon=True,
                                kwargs={"t0": t0, "captured": captured, "period": period})
               for i, fn in enumerate(stream_fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in outs:
        if "error" in o:
            raise o["error"]
    streams = []
    for i, o in enumerate(outs):
        lat = np.array([r[1] for r in o["records"]], dtype=np.float64)
        late = int(np.sum(lat > deadline_ms))
        dropped = max(0, captured - len(lat))
        missed = dropped + late
        streams.append({
            "stream": i, "captured": captured, "answered": int(len(lat)), "dropped": dropped, "late": late,
            "missed": missed, "missed_share": missed / captured if captured else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "max_ms": float(lat.max()) if lat.size else None,
            "fps": len(lat) / seconds, "pass": bool(lat.size and missed <= MAX_MISSED * captured),
            "samples": [[round(t, 4), round(ms, 3)] for t, ms in o["records"]],
        })
    worst = max((s["p99_ms"] for s in streams if s["p99_ms"] is not None), default=None)
    return {"streams_n": n, "fps": fps, "deadline_ms": deadline_ms, "seconds": seconds, "streams": streams,
            "worst_p99_ms": worst, "missed": sum(s["missed"] for s in streams),
            "captured": captured * n, "pass": all(s["pass"] for s in streams)}


def rig_summary(rig: dict) -> str:
    """'3 streams at 30 FPS: worst p99 21.3 ms, 0 of 900 frames missed (0 dropped, 0 late): PASS'."""
    dropped = sum(s["dropped"] for s in rig["streams"])
    late = sum(s["late"] for s in rig["streams"])
    worst = "no frame answered" if rig["worst_p99_ms"] is None else f"worst-stream p99 {rig['worst_p99_ms']:.1f} ms"
    return (f"{rig['streams_n']} stream(s) at {rig['fps']:g} FPS for {rig['seconds']:g} s: {worst} (deadline "
            f"{rig['deadline_ms']:g} ms), {rig['missed']} of {rig['captured']} frames missed ({dropped} dropped, "
            f"{late} late): {'PASS' if rig['pass'] else 'FAIL'}")


# --- sustained runs -----------------------------------------------------------------------------

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
        try:
            vals = [float(line.partition(":")[2]) for line in (root / "proc/cpuinfo").read_text().splitlines()
                    if line.startswith("cpu MHz")]
            if vals:
                mhz, mhz_src = sum(vals) / len(vals), "/proc/cpuinfo"
        except (OSError, ValueError):
            pass
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
