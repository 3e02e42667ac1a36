"""What trains, and how fast: stage freezing for gradual unfreezing, BatchNorm modes, parameter
groups with discriminative learning rates, and the LR schedule (linear warm-up, then cosine).

    apply_freeze(model, spec, trainable_stages(cfg, spec, epoch))
    set_train_mode(model)                       # frozen BatchNorm stays in eval
    opt = torch.optim.AdamW(param_groups(model, cfg))
    sched = LambdaLR(opt, lr_lambda(cfg, steps_per_epoch))
"""
from __future__ import annotations

import math

from torch import nn

from .. import zoo
from ..config import FinetuneConfig, Schedule, Strategy


def trainable_stages(cfg: FinetuneConfig, spec: zoo.BackboneSpec, epoch: int) -> int:
    """How many backbone stages (from the top) train at ``epoch``."""
    n = len(spec.stages)
    if cfg.strategy == Strategy.linear:
        return 0
    if cfg.strategy == Strategy.full:
        return n
    every = max(1, cfg.epochs // (n + 1))  # gradual: head alone first, then one stage per step
    return min(n, epoch // every)


def apply_freeze(model: nn.Module, spec: zoo.BackboneSpec, k_top: int) -> None:
    n = len(spec.stages)
    for name, p in model.backbone.named_parameters():
        p.requires_grad_(zoo.stage_of(spec, name) >= n - k_top)


def set_train_mode(model: nn.Module) -> None:
    """train() everything, then put BatchNorm layers whose weights are frozen back in eval()."""
    model.train()
    for m in model.backbone.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
    if not any(p.requires_grad for p in model.backbone.parameters()):
        model.backbone.eval()  # dropout in a frozen backbone stays off too


def param_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict]:
    # with L2-SP the backbone is pulled toward its source weights, not toward zero
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay, "name": "head"}]
    if cfg.strategy != Strategy.linear:
        groups.append({"params": list(model.backbone.parameters()), "lr": cfg.lr * cfg.backbone_lr_mult,
                       "weight_decay": 0.0 if cfg.l2sp > 0 else cfg.weight_decay, "name": "backbone"})
    return groups


def lr_lambda(cfg: FinetuneConfig, steps_per_epoch: int):
    """LR multiplier per optimizer step: linear warm-up over ``warmup_epochs``, then cosine to 1%."""
    total = cfg.epochs * steps_per_epoch
    warm = int(cfg.warmup_epochs * steps_per_epoch) if cfg.schedule == Schedule.cosine else 0

    def f(step: int) -> float:
        if cfg.schedule == Schedule.constant:
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f
