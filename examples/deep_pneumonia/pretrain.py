"""Stage 1: self-supervised SimCLR pre-training with NT-Xent on the training images.

No labels and no extra data: two augmented views of each training radiograph are
embedded by the backbone and a projection head, and :class:`~contrast_attn.NTXentLoss`
pulls the two views of an image together and pushes all other images away. With
several processes the embeddings are gathered across ranks (``gather=True``), so
every image of the global batch is a negative. The backbone is what fine-tuning
starts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from contrast_attn import NTXentLoss

from .checkpoint import Checkpointer, run_record
from .config import Config
from .data import DataSplits
from .model import Backbone, PretrainNet
from .training import (
    Runtime,
    begin_epoch,
    cosine_schedule,
    global_mean,
    make_loader,
    progress,
    seed_everything,
    train_step,
)
from .transforms import simclr_transform

__all__ = [
    "CHECKPOINT",
    "SECTIONS",
    "build_backbone",
    "checkpointer",
    "load_pretrained",
    "pretrain",
]

CHECKPOINT = "checkpoints/pretrain.pt"
# The settings the pre-trained weights depend on (see Config's sections).
SECTIONS = ("data", "backbone", "pretrain", "training")


def build_backbone(cfg: Config) -> Backbone:
    """A freshly initialised backbone of ``cfg`` (from ``cfg.checkpoint`` when given)."""
    return Backbone(cfg.arch, width=cfg.width, checkpoint=cfg.checkpoint)


def checkpointer(cfg: Config, splits: DataSplits, out: Path, **parts: Any) -> Checkpointer:
    """The checkpointer of this stage for the run of ``cfg`` on ``splits``."""
    return Checkpointer(
        out / CHECKPOINT, "pretrain", run_record(cfg, splits, SECTIONS), "pretrain_epochs", **parts
    )


def pretrain(
    cfg: Config, splits: DataSplits, rt: Runtime, out: Path
) -> tuple[Backbone, list[dict[str, float]]]:
    """Pre-train a backbone; returns it and one record per epoch.

    Raises:
        StageStopped: when ``cfg.stop_after`` ends the stage early.
        RunMismatch: when resuming a checkpoint of another run.
    """
    seed_everything(cfg.seed, "pretrain")
    net = PretrainNet(build_backbone(cfg), cfg.ssl_dim)
    model = rt.wrap(net)
    criterion = NTXentLoss(cfg.nt_xent_temperature, gather=rt.distributed)
    dataset = splits.train.with_transform(simclr_transform(cfg.image_size))
    loader = make_loader(
        dataset, cfg.pretrain_batch_size, rt, train=True, seed=cfg.seed, num_workers=cfg.num_workers
    )
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=cfg.pretrain_lr, weight_decay=cfg.weight_decay
    )
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp)
    saver = checkpointer(cfg, splits, out, model=net, optimizer=optimizer, scaler=scaler)
    start, history = saver.resume() if cfg.resume else (0, [])
    scheduler = cosine_schedule(optimizer, max(cfg.pretrain_epochs, 1), start)
    for epoch in range(start, cfg.pretrain_epochs):
        begin_epoch(cfg, rt, loader, "pretrain", epoch, start)
        lr = optimizer.param_groups[0]["lr"]
        bar = progress(loader, f"pre-train {epoch + 1}/{cfg.pretrain_epochs}", cfg, rt)
        loss = _train_epoch(model, criterion, bar, optimizer, scaler, rt)
        history.append({"epoch": float(epoch + 1), "pretrain_loss": loss, "pretrain_lr": lr})
        scheduler.step()
        if rt.is_main:
            saver.save(epoch + 1, history)
        rt.barrier()
    return net.backbone, history


def _train_epoch(
    model: nn.Module,
    criterion: NTXentLoss,
    batches: DataLoader[Any] | Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rt: Runtime,
) -> float:
    """One epoch of NT-Xent on two views of each image; the mean loss over all ranks."""
    model.train()
    total, count = 0.0, 0
    for batch in batches:
        views = batch["views"].to(rt.device, non_blocking=True)
        size, num_views = views.shape[:2]
        with rt.autocast():
            z = model(views.flatten(0, 1)).view(size, num_views, -1)
            loss = criterion(z)
        train_step(loss, optimizer, scaler)
        total += float(loss.detach()) * size
        count += size
    return global_mean({"loss": total}, count, rt)["loss"]


def load_pretrained(
    cfg: Config, splits: DataSplits, out: Path
) -> tuple[Backbone, list[dict[str, float]]]:
    """The backbone and history this stage saved in ``out`` for the run of ``cfg``.

    Raises:
        FileNotFoundError: when the stage has not run.
        RunMismatch: when the checkpoint is of another run or unfinished.
    """
    state = checkpointer(cfg, splits, out).read_finished(
        "run the pretrain stage first (--stage pretrain) or switch it off (--no-pretrain)"
    )
    backbone = build_backbone(cfg)
    prefix = "backbone."
    backbone.load_state_dict(
        {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    )
    return backbone, state["history"]
