"""Stage 1: self-supervised SimCLR pre-training with NT-Xent on the training images.

No labels and no extra data: two augmented views of each training radiograph are
embedded by the backbone and a projection head, and :class:`~contrast_attn.NTXentLoss`
pulls the two views of an image together and pushes all other images away. With
several processes the embeddings are gathered across ranks (``gather=True``), so
every image of the global batch is a negative. The backbone is what fine-tuning
starts from.

The learning rate warms up linearly for ``pretrain_warmup_epochs`` and then follows a
cosine decay, stepped after every batch (:mod:`.schedule`). A falling loss says the two
views match, not that the features separate the classes, so before training (the
random-initialisation reference) and after every epoch a kNN probe (:mod:`.probe`)
classifies ``pretrain_probe_images`` un-augmented validation images by their nearest
un-augmented training images, with the frozen pooled features, and the history logs
its macro-F1 and accuracy. The probe's labels are used for this monitor only, never
for training. NT-Xent's chance value, ``log(2B - 1)`` for a global batch ``B``, is the
loss of features that tell no image apart; :func:`pretrain_summary` sets both numbers
against their references. With the shortcut phantom the probe's training and
validation images both carry the class-correlated marker, so the monitor can read
the marker and overstate what the features know about the lesions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
from .probe import probe_backbone
from .schedule import warmup_cosine_scheduler
from .training import (
    Runtime,
    begin_epoch,
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
    "pretrain_summary",
]

CHECKPOINT = "checkpoints/pretrain.pt"
# The settings the pre-trained weights depend on (see Config's sections).
SECTIONS = ("data", "backbone", "pretrain", "training")
# The kNN probe of the monitor (lightly's benchmark defaults).
PROBE_K, PROBE_TEMPERATURE = 20, 0.1


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
    steps = len(loader)
    total = max(cfg.pretrain_epochs, 1) * steps
    scheduler = warmup_cosine_scheduler(
        optimizer, total, min(cfg.pretrain_warmup_epochs * steps, total), start=start * steps
    )
    monitor = _monitor(cfg, splits, rt)
    initial = {} if start else {f"{k}_init": v for k, v in monitor(net.backbone).items()}
    for epoch in range(start, cfg.pretrain_epochs):
        begin_epoch(cfg, rt, loader, "pretrain", epoch, start)
        lr = optimizer.param_groups[0]["lr"]
        bar = progress(loader, f"pre-train {epoch + 1}/{cfg.pretrain_epochs}", cfg, rt)
        loss = _train_epoch(model, criterion, bar, optimizer, scheduler, scaler, rt)
        record = {"epoch": float(epoch + 1), "pretrain_loss": loss, "pretrain_lr": lr}
        record.update(initial if epoch == 0 else {})
        record.update(monitor(net.backbone))
        history.append(record)
        if rt.is_main:
            saver.save(epoch + 1, history)
        rt.barrier()
    return net.backbone, history


def _monitor(
    cfg: Config, splits: DataSplits, rt: Runtime
) -> Callable[[Backbone], dict[str, float]]:
    """The per-epoch probe: backbone -> ``{"probe_knn_macro_f1", "probe_knn_accuracy"}``.

    Empty on ranks other than 0 and when ``pretrain_probe_images`` is 0.
    """
    count = cfg.pretrain_probe_images
    if not (rt.is_main and count):
        return lambda backbone: {}

    def images(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = range(min(count, len(dataset)))
        return (
            torch.stack([dataset[i]["image"] for i in chosen]),
            torch.tensor([int(dataset.targets[i]) for i in chosen]),
        )

    (train, train_y), (val, val_y) = images(splits.train), images(splits.val)

    def monitor(backbone: Backbone) -> dict[str, float]:
        knn = probe_backbone(
            backbone,
            train,
            train_y,
            val,
            val_y,
            num_classes=len(splits.class_names),
            k=PROBE_K,
            temperature=PROBE_TEMPERATURE,
            linear=False,
        )
        return {f"probe_{k}": v for k, v in knn.items()}

    return monitor


def pretrain_summary(cfg: Config, history: list[dict[str, float]]) -> dict[str, Any]:
    """How far pre-training moved off chance: NT-Xent against ``log(2B - 1)``, and the
    kNN probe after the first and the last epoch against its value at random
    initialisation (``None`` where the run has no such record).
    """
    if not history:
        return {}
    first, last = history[0], history[-1]
    summary: dict[str, Any] = {
        "epochs": len(history),
        "nt_xent": {
            "chance": math.log(2 * cfg.pretrain_batch_size - 1),
            "first_epoch": first["pretrain_loss"],
            "last_epoch": last["pretrain_loss"],
        },
        "probe_images": cfg.pretrain_probe_images,
    }
    for name in ("knn_macro_f1", "knn_accuracy"):
        key = f"probe_{name}"
        summary[name] = {
            "random_init": first.get(f"{key}_init"),
            "first_epoch": first.get(key),
            "last_epoch": last.get(key),
        }
    return summary


def _train_epoch(
    model: nn.Module,
    criterion: NTXentLoss,
    batches: DataLoader[Any] | Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    rt: Runtime,
) -> float:
    """One epoch of NT-Xent on two views of each image (the schedule stepped per batch);
    the mean loss over all ranks."""
    model.train()
    total, count = 0.0, 0
    for batch in batches:
        views = batch["views"].to(rt.device, non_blocking=True)
        size, num_views = views.shape[:2]
        with rt.autocast():
            z = model(views.flatten(0, 1)).view(size, num_views, -1)
            loss = criterion(z)
        train_step(loss, optimizer, scaler)
        scheduler.step()
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
