"""PASS/FAIL against a target: latency (deadline, throughput or the camera rig), memory, and the threads
that may run on this host."""
from __future__ import annotations

import logging

from ..config import Scenario
from ..targets import Target

log = logging.getLogger(__name__)


def judge(row: dict, scenario: Scenario, target: Target, batch: int, *, emulated: bool = False) -> None:
    """PASS/FAIL against the target's deadline (or throughput) and memory budget; N/A on an emulated CPU
    (its timings are the emulator's)."""
    lat = row["latency"]
    if scenario == Scenario.offline:
        value, need = row["offline"]["best_ips"], target.fps * target.streams
        ok_lat = value >= need
        row["criterion"] = f"throughput {value:.1f} img/s >= {need:.0f} (fps x streams)"
    elif scenario == Scenario.camera_rig:
        ok_lat = row["rig"]["pass"]
        row["criterion"] = (f"every stream answers >= 99% of its frames within {target.deadline_ms:g} ms "
                            f"(p99, dropped frames as misses)")
    else:
        value = lat["p90_ms"]
        ok_lat = value <= target.deadline_ms
        row["criterion"] = (f"p90 {value:.2f} ms per {'frame' if batch == 1 else f'tick of {batch} frames'} "
                            f"<= {target.deadline_ms:.1f} ms deadline")
    ok_mem = row["peak_rss_mb"] is None or row["peak_rss_mb"] <= target.memory_budget_mb
    row["pass_latency"], row["pass_memory"] = bool(ok_lat), bool(ok_mem)
    row["status"] = "N/A" if emulated else ("PASS" if ok_lat and ok_mem else "FAIL")
    if emulated:
        row["criterion"] += " -- not applicable: emulated CPU"


def plan_threads(target: Target, asked: int | None, cores: int) -> tuple[int, str | None]:
    """Intra-op threads to run (never more than this host's cores) and a line saying so when capped."""
    want = target.threads if asked is None else asked
    if want and want > cores:
        return cores, (f"target uses {want} threads; this host has {cores} cores, so {cores} threads ran "
                       f"(more threads than cores only adds contention)")
    return want, None
