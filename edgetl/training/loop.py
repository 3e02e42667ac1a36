"""Fine-tuning: linear probe on cached features, full, and gradual unfreezing, with L2-SP.

    from edgetl.training import FinetuneConfig, finetune        # also edgetl.finetune / edgetl.FinetuneConfig
    result = finetune(FinetuneConfig(data="photos/", backbone="efficientnet_lite0", strategy="linear"))
    result.out / "best.pt"      # a self-describing checkpoint (edgetl.zoo.checkpoint): rebuilds the model alone

Strategies (the source documents' methods):
  linear   frozen backbone, new head. The backbone runs once per image (or once per augmented
           view, ``cache_views``) and its features are cached on disk (edgetl.training.features), so epochs
           2..N cost milliseconds and a second run on the same data costs nothing.
  full     everything trains; the backbone at ``lr * backbone_lr_mult`` (discriminative LR).
  gradual  starts as linear, then unfreezes one stage per step from the top (zoo stage bounds).
full and gradual first train the new head on the frozen backbone's cached features (LP-FT,
``lp_epochs``, default 10), so the backbone never follows a random head's gradients.
``l2sp`` adds lambda/2 * ||theta - theta_pretrained||^2 over trainable backbone weights (and then
weight decay applies to the head only). Frozen BatchNorm layers always stay in eval mode.

Every device trains channels_last (NHWC). On CUDA also: AMP (bf16 where supported, else fp16 +
GradScaler), pinned memory, non-blocking copies, cudnn.benchmark. Under ``torchrun`` it runs DDP
(edgetl._dist: NCCL on GPUs, gloo on CPU) with a DistributedSampler; metrics are reduced across
ranks and only rank 0 writes. Paths are stored absolute in run.json, so export, calibration and
bench find the images from any working directory.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from .. import zoo
from .._config import from_dict, to_dict
from .._dist import Dist, init_dist, resolve_device, rng_state, seed_everything, set_rng_state
from .._io import RunLock, check_output_dir, read_json, write_json
from .._progress import SILENT, Progress
from .schedule import apply_freeze, lr_lambda, param_groups, set_train_mode, trainable_stages
from ..zoo.checkpoint import checkpoint_dict, load_state, save, unwrap
from ..config import Augment, FinetuneConfig, Strategy
from ..data import ImageCache, ImageDataset, Sample, load_imagefolder, validate
from ..errors import ArtifactError, ConfigError, EdgetlError
from .features import FeatureExtractor, FeatureSource
from ..runtime.preprocess import Preprocess

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunResult:
    """What a finished run returns (also in ``metrics.json``)."""

    out: Path
    best_val_acc: float
    best_epoch: int
    epochs_run: int
    wall_s: float
    labels: list[str]
    history: list[dict]
    stopped_early: bool = False
    resumed_from: int | None = None

    @property
    def checkpoint(self) -> Path:
        return self.out / "best.pt"


@dataclasses.dataclass
class _Ctx:
    """What every step of one run reads: one object instead of a dozen parameters."""

    cfg: FinetuneConfig
    spec: zoo.BackboneSpec
    out: Path
    device: torch.device
    dist: Dist
    progress: Progress
    amp_dtype: torch.dtype | None = None
    pp: Preprocess | None = None
    cache: ImageCache | None = None
    classes: list[str] = dataclasses.field(default_factory=list)
    train: list[Sample] = dataclasses.field(default_factory=list)
    val: list[Sample] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Record:
    """The run so far: what last.pt restores on --resume."""

    history: list[dict] = dataclasses.field(default_factory=list)
    best: dict = dataclasses.field(default_factory=lambda: {"acc": -1.0, "epoch": -1})
    start_epoch: int = 0
    resumed_from: int | None = None
    warm: dict | None = None
    state: dict | None = None


# --- the two kinds of epoch -------------------------------------------------------------------------

class _LinearEpochs:
    """Head-only epochs on cached backbone features (``linear``, and the LP-FT warm start)."""

    def __init__(self, ctx: _Ctx, model: nn.Module, criterion, cfg: FinetuneConfig | None = None):
        cfg = cfg or ctx.cfg
        self.model, self.criterion, self.batch_size, self.device = model, criterion, cfg.batch_size, ctx.device
        fx = FeatureExtractor(model.backbone, FeatureSource(cfg.backbone, cfg.weights, ctx.pp, cfg.seed),
                              device=ctx.device, batch_size=cfg.batch_size, workers=cfg.workers, cache=ctx.cache,
                              amp_dtype=ctx.amp_dtype)
        views = cfg.cache_views if cfg.augment != Augment.none else 1
        with ctx.progress.task("backbone features (cached)", total=len(ctx.train) * views + len(ctx.val)) as adv:
            ytr = torch.tensor([s.label for s in ctx.train])
            self.views = [(fx.features(ctx.train, view=v, augment=cfg.augment.value, advance=adv), ytr)
                          for v in range(views)]
            self.val = (fx.features(ctx.val, advance=adv), torch.tensor([s.label for s in ctx.val]))
        self.steps_per_epoch = math.ceil(len(ctx.train) / cfg.batch_size)

    def train_epoch(self, epoch: int, opt, sched, scaler=None) -> tuple[float, float, int]:
        feats, labels = self.views[epoch % len(self.views)]
        head = self.model.head.train()
        perm = torch.randperm(len(feats))
        tot_loss, correct = 0.0, 0
        for i in range(0, len(feats), self.batch_size):
            idx = perm[i:i + self.batch_size]
            x, y = feats[idx].to(self.device), labels[idx].to(self.device)
            logits = head(x)
            loss = self.criterion(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
        return tot_loss / len(feats), correct / len(feats), len(feats)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        feats, labels = self.val
        logits = self.model.head.eval()(feats.to(self.device))
        y = labels.to(self.device)
        return self.criterion(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


class _ImageEpochs:
    """Epochs over decoded images, with the backbone (or its top stages) training."""

    def __init__(self, ctx: _Ctx, model: nn.Module, criterion, theta0: dict | None):
        cfg = ctx.cfg
        self.ctx, self.model, self.criterion, self.theta0 = ctx, model, criterion, theta0
        train_ds = ImageDataset(ctx.train, ctx.pp, augment=cfg.augment.value, cache=ctx.cache)
        self.val_ds = ImageDataset(ctx.val, ctx.pp, cache=ctx.cache)
        sampler = None
        if ctx.dist.world > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(train_ds, ctx.dist.world, ctx.dist.rank,
                                                                      shuffle=True, seed=cfg.seed)
        self.loader = torch.utils.data.DataLoader(
            train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
            num_workers=cfg.workers, pin_memory=ctx.device.type == "cuda", drop_last=len(train_ds) > cfg.batch_size,
            persistent_workers=cfg.workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
        self.steps_per_epoch = len(self.loader)
        self.train_model = model
        if ctx.dist.world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True)

    def _l2sp(self) -> torch.Tensor | float:
        """lambda/2 * ||theta - theta0||^2 over the trainable backbone weights."""
        return self.ctx.cfg.l2sp / 2 * sum(((p - self.theta0[n]) ** 2).sum()
                                           for n, p in self.model.backbone.named_parameters() if p.requires_grad)

    def train_epoch(self, epoch: int, opt, sched, scaler) -> tuple[float, float, int]:
        ctx = self.ctx
        apply_freeze(self.model, ctx.spec, trainable_stages(ctx.cfg, ctx.spec, epoch))
        if hasattr(self.loader.sampler, "set_epoch"):
            self.loader.sampler.set_epoch(epoch)
        set_train_mode(self.model)
        tot_loss = correct = n = 0.0
        t0 = time.perf_counter()
        with ctx.progress.task(f"epoch {epoch + 1}/{ctx.cfg.epochs}",
                               total=len(self.loader.dataset) // ctx.dist.world) as advance:
            for x, y in self.loader:
                x = x.to(ctx.device, non_blocking=True, memory_format=torch.channels_last)
                y = y.to(ctx.device, non_blocking=True)
                with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp_dtype is not None):
                    logits = self.train_model(x)
                    loss = self.criterion(logits.float(), y)
                if self.theta0 is not None:
                    loss = loss + self._l2sp()
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                tot_loss += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                n += len(y)
                advance(len(y), loss=f"{tot_loss / n:.3f}", acc=f"{correct / n:.3f}",
                        ips=f"{n / (time.perf_counter() - t0):.1f} img/s")
        tot_loss, correct, n = ctx.dist.all_sum([tot_loss, correct, n])
        return tot_loss / max(n, 1), correct / max(n, 1), int(n)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        ctx = self.ctx
        self.model.eval()
        # each rank takes every world-th image: no padding, so the reduced numbers are exact
        sub = torch.utils.data.Subset(self.val_ds, list(range(ctx.dist.rank, len(self.val_ds), ctx.dist.world)))
        loader = torch.utils.data.DataLoader(sub, batch_size=max(ctx.cfg.batch_size, 32), num_workers=ctx.cfg.workers,
                                             pin_memory=ctx.device.type == "cuda")
        tot_loss = correct = n = 0.0
        for x, y in loader:
            x = x.to(ctx.device, non_blocking=True, memory_format=torch.channels_last)
            y = y.to(ctx.device, non_blocking=True)
            with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp_dtype is not None):
                logits = self.model(x).float()
            tot_loss += self.criterion(logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
        tot_loss, correct, n = ctx.dist.all_sum([tot_loss, correct, n])
        return tot_loss / max(n, 1), correct / max(n, 1)


# --- the run ---------------------------------------------------------------------------------------

def finetune(cfg: FinetuneConfig, *, resume: bool = False, force: bool = False,
             progress: Progress | None = None) -> RunResult:
    """Fine-tune ``cfg.backbone`` on ``cfg.data``; see the module docstring.

    Args:
        resume: continue the run in ``cfg.out`` from its ``last.pt``.
        force: overwrite an existing run folder.
    """
    if resume and force:
        raise ConfigError("--resume continues a run and --force overwrites it: pass only one")
    spec = zoo.get_spec(cfg.backbone)
    out = Path(cfg.out or cfg.default_out())
    cfg = dataclasses.replace(cfg, out=out)
    device = resolve_device(cfg.device)
    dist = init_dist(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    ctx = _Ctx(cfg, spec, out, device, dist, progress or SILENT)
    if resume:
        rec = _resume_record(cfg, out)
    else:
        rec = _Record()
        if dist.main:
            check_output_dir(out, force=force, what="run folder", resume_hint=True)
    if not dist.main:
        return _run(ctx, rec)
    with RunLock(out):
        if force and not resume:
            for name in ("best.pt", "last.pt", "metrics.json", "curves.png"):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / "bundle", ignore_errors=True)
        return _run(ctx, rec)


_RESUMABLE = ("epochs", "out", "device", "workers")  # what --resume may change


def _resume_record(cfg: FinetuneConfig, out: Path) -> _Record:
    if not (out / "last.pt").is_file():
        raise ArtifactError(f"nothing to resume in {out} (no last.pt): start it without --resume")
    prev = from_dict(FinetuneConfig, read_json(out / "run.json", "run config"), source=str(out / "run.json"))
    diff = [f.name for f in dataclasses.fields(cfg)
            if f.name not in _RESUMABLE and getattr(prev, f.name) != getattr(cfg, f.name)]
    if diff:
        raise ConfigError(f"--resume with options that differ from {out / 'run.json'} ({', '.join(diff)}): "
                          f"resume with the same options, or start a new run with --out")
    state = load_state(out / "last.pt")
    return _Record(state["history"], state["best"], state["epoch"] + 1, state["epoch"], state.get("warm_start"), state)


def _load_data(ctx: _Ctx) -> None:
    cfg = ctx.cfg
    ds = load_imagefolder(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
    ctx.pp, ctx.cache, ctx.classes = cfg.preprocess(), ImageCache(enabled=cfg.image_cache), ds.classes
    with ctx.progress.task("decode + cache images", total=len(ds.train) + len(ds.val)) as adv:
        ctx.train, _ = validate(ds.train, ctx.pp, ctx.cache, progress=adv, where=str(cfg.data / "train"),
                                frame=cfg.augment.value == "none")
        ctx.val, _ = validate(ds.val, ctx.pp, ctx.cache, progress=adv, where=str(cfg.data / "val"), frame=True)
    ctx.progress.log(f"data: {ds.summary()}")


def _build_model(ctx: _Ctx, state: dict | None) -> tuple[nn.Module, dict | None]:
    """The classifier on the device (resumed weights loaded) and, for L2-SP, the source weights."""
    cfg = ctx.cfg
    model = zoo.create_model(cfg.backbone, len(ctx.classes), weights=cfg.weights, dropout=cfg.head_dropout)
    theta0 = ({n: p.detach().clone().to(ctx.device) for n, p in model.backbone.named_parameters()}
              if cfg.l2sp > 0 else None)
    if state is not None:  # a linear run's last.pt holds only the head: its backbone is the source weights
        (model.head if state.get("model_part") == "head" else model).load_state_dict(state["model"])
    # channels_last on every device: oneDNN's NHWC convolutions train Lite0 1.5x and run ResNet-18 /
    # MobileNetV3 1.3-1.9x faster on this 2-core AVX2 CPU too (benchmarks/finetune_speed.py)
    model = model.to(ctx.device).to(memory_format=torch.channels_last)
    if ctx.device.type == "cuda":
        ctx.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return model, theta0


def _save_best(ctx: _Ctx, model: nn.Module, epoch: int, val_acc: float) -> None:
    cfg = ctx.cfg
    save(checkpoint_dict(model, config=to_dict(cfg), labels=ctx.classes, weights_source=ctx.spec.weights,
                         preprocess=ctx.pp.to_dict(), epoch=epoch, val_acc=val_acc), ctx.out / "best.pt")


def _save_last(ctx: _Ctx, rec: _Record, model: nn.Module, epoch: int, optim: tuple) -> None:
    opt, sched, scaler = optim
    linear = ctx.cfg.strategy == Strategy.linear  # linear: the head alone (13 MB per 10 ms epoch otherwise)
    save({"epoch": epoch, "history": rec.history, "best": rec.best, "model_part": "head" if linear else "all",
          "warm_start": rec.warm, "model": (unwrap(model).head if linear else unwrap(model)).state_dict(),
          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
          "rng": rng_state()}, ctx.out / "last.pt")


def _run(ctx: _Ctx, rec: _Record) -> RunResult:
    cfg, dist = ctx.cfg, ctx.dist
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    _load_data(ctx)
    model, theta0 = _build_model(ctx, rec.state)
    if dist.main:
        write_json(ctx.out / "run.json", to_dict(cfg))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if rec.state is None and cfg.head_warmup_epochs():
        rec.warm = _warm_start_head(ctx, model, criterion, t0)
        rec.best = {"acc": rec.warm["val_acc"], "epoch": -1}  # the probed model is the first candidate ("epoch 0")
        if dist.main:
            _save_best(ctx, model, 0, rec.warm["val_acc"])
    epochs = (_LinearEpochs(ctx, model, criterion) if cfg.strategy == Strategy.linear
              else _ImageEpochs(ctx, model, criterion, theta0))
    opt = torch.optim.AdamW(param_groups(model, cfg))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, epochs.steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=ctx.amp_dtype == torch.float16)
    if rec.state is not None:
        opt.load_state_dict(rec.state["optimizer"])
        sched.load_state_dict(rec.state["scheduler"])
        scaler.load_state_dict(rec.state["scaler"])
        set_rng_state(rec.state["rng"])
    try:
        stopped_early = _epochs(ctx, rec, model, epochs, (opt, sched, scaler), t0)
    except KeyboardInterrupt:
        raise EdgetlError(f"interrupted: {ctx.out / 'last.pt'} holds the last finished epoch; "
                          f"continue with --resume --out {ctx.out}") from None
    wall = time.perf_counter() - t0
    if dist.main:
        _write_metrics(ctx, rec, wall, stopped_early)
        try:
            from ..report.plots import plot_training_curves

            plot_training_curves(rec.history, ctx.out / "curves.png", title=f"{cfg.backbone} {cfg.strategy.value}")
        except ImportError:
            log.warning("matplotlib is not installed: no curves.png (pip install 'edgetl[train]')")
    dist.barrier()
    return RunResult(ctx.out, rec.best["acc"], rec.best["epoch"] + 1, len(rec.history), wall, ctx.classes,
                     rec.history, stopped_early, rec.resumed_from)


def _epochs(ctx: _Ctx, rec: _Record, model: nn.Module, epochs, optim: tuple, t0: float) -> bool:
    """The epoch loop from ``rec.start_epoch``: train, evaluate, checkpoint; True if it stopped early."""
    cfg = ctx.cfg
    opt = optim[0]
    since_best = (len(rec.history) - 1 - rec.best["epoch"]) if rec.history else 0
    for epoch in range(rec.start_epoch, cfg.epochs):
        te = time.perf_counter()
        torch.manual_seed(cfg.seed + 7919 * epoch)  # each epoch's shuffle/augment is reproducible
        tr_loss, tr_acc, n_seen = epochs.train_epoch(epoch, *optim)
        va_loss, va_acc = epochs.evaluate()
        secs = time.perf_counter() - te
        rec.history.append({"epoch": epoch + 1, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": va_loss,
                            "val_acc": va_acc, "lr": opt.param_groups[0]["lr"], "seconds": round(secs, 3),
                            "images_per_s": round(n_seen / secs, 1) if secs > 0 else None,
                            "trainable_stages": trainable_stages(cfg, ctx.spec, epoch)})
        improved = va_acc > rec.best["acc"]
        if improved:
            rec.best = {"acc": va_acc, "epoch": epoch}
        since_best = 0 if improved else since_best + 1
        if ctx.dist.main:
            if improved:
                _save_best(ctx, model, epoch + 1, va_acc)
            _save_last(ctx, rec, model, epoch, optim)
            _write_metrics(ctx, rec, time.perf_counter() - t0, False)
        ctx.progress.log(f"epoch {epoch + 1}/{cfg.epochs}  train loss {tr_loss:.4f} acc {tr_acc:.3f}  "
                         f"val loss {va_loss:.4f} acc {va_acc:.3f}  {rec.history[-1]['images_per_s']} img/s")
        if cfg.early_stop and since_best >= cfg.early_stop:
            ctx.progress.log(f"early stop: val accuracy did not improve for {cfg.early_stop} epochs")
            return True
    return False


def _write_metrics(ctx: _Ctx, rec: _Record, wall: float, stopped_early: bool) -> None:
    write_json(ctx.out / "metrics.json", {
        "epochs": rec.history, "best_val_acc": rec.best["acc"], "best_epoch": rec.best["epoch"] + 1,
        "wall_s": round(wall, 3), "stopped_early": stopped_early, "strategy": ctx.cfg.strategy.value,
        "backbone": ctx.cfg.backbone, "warm_start": rec.warm})


def _warm_start_head(ctx: _Ctx, model: nn.Module, criterion, t0: float) -> dict:
    """LP-FT (Kumar et al., ICLR 2022): train the new head on the frozen backbone's cached features
    before any backbone weight moves. A random head's large gradients otherwise distort the
    pretrained features in the first full-model steps. Costs one cached pass (shared with
    ``--strategy linear`` runs on the same data); the head with the best val accuracy is kept."""
    t = time.perf_counter()
    cfg = ctx.cfg
    n = cfg.head_warmup_epochs()
    lp = dataclasses.replace(cfg, strategy=Strategy.linear, augment=Augment.none, cache_views=1, l2sp=0.0,
                             lp_epochs=None, epochs=n)
    probe = _LinearEpochs(ctx, model, criterion, lp)
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(lp, probe.steps_per_epoch))
    best_acc, best_state = -1.0, None
    for e in range(n):
        torch.manual_seed(cfg.seed + 104729 * (e + 1))
        probe.train_epoch(0, opt, sched)
        _, acc = probe.evaluate()
        if acc > best_acc:
            best_acc, best_state = acc, {k: v.detach().clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    warm = {"epochs": n, "val_acc": best_acc, "seconds": round(time.perf_counter() - t, 3),
            "elapsed_s": round(time.perf_counter() - t0, 3)}
    ctx.progress.log(f"warm start (LP-FT): head trained {n} epochs on cached features, val acc {best_acc:.3f} "
                     f"({warm['seconds']:.1f} s)")
    return warm
