"""Stage 2: supervised fine-tuning with the paper's three training signals.

The objective of one batch is

.. math::
    L = L_{cls} + \\lambda_g \\, L_{guide} + \\lambda_r \\, L_{reg}

- :math:`L_{cls}`: the loss against the class imbalance chosen by ``imbalance``
  (:mod:`.imbalance`) with the training set's class counts: by default
  :class:`~contrast_attn.ClassBalancedLoss`;
- :math:`L_{guide}`: :class:`~contrast_attn.MaskGuidanceLoss` between the attention
  map of :class:`~contrast_attn.MaskGuidedAttention` and the lesion mask, on images
  whose mask is annotated (``attention``);
- :math:`L_{reg}`: :class:`~contrast_attn.ContrastiveFeatureRegularizer` on the
  attended stage's feature map (``regularizer``).

AdamW trains everything with cosine decay; the attention scorer's learning rate is
``attention_lr_scale`` times the others' (Adam's steps are bounded by the learning
rate whatever the loss weight, and the small scorer must learn its map within the
short run). After every epoch the network is validated; the stage returns the weights
with the best validation macro-F1 (kept in ``checkpoints/best.pt``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from contrast_attn import (
    ContrastiveFeatureRegularizer,
    MaskGuidanceLoss,
    MaskGuidedAttention,
)

from . import checkpoint, training
from .checkpoint import Checkpointer, run_record
from .config import Config
from .data import DataSplits
from .evaluate import classification_metrics, predict
from .imbalance import ImbalanceLoss
from .model import Backbone, DeepPneumoniaNet
from .pretrain import build_backbone
from .training import Runtime
from .transforms import train_transform

__all__ = [
    "BEST",
    "CHECKPOINT",
    "SECTIONS",
    "FinetuneObjective",
    "build_net",
    "checkpointer",
    "finetune",
    "load_finetuned",
]

CHECKPOINT = "checkpoints/finetune.pt"
BEST = "checkpoints/best.pt"
# The settings the fine-tuned weights depend on: all but the runtime's.
SECTIONS = ("data", "backbone", "model", "pretrain", "finetune", "training")


def build_net(cfg: Config, backbone: Backbone, num_classes: int) -> DeepPneumoniaNet:
    """The classifier of ``cfg`` around ``backbone``, with the attention ``cfg`` asks for."""
    attention = (
        MaskGuidedAttention(
            backbone.channels[cfg.feature_stage - 1],
            mode=cfg.attention_mode,
            residual=cfg.attention_residual,
            gate_gradient=cfg.attention_gate_gradient,
            threshold=cfg.attention_threshold,
            teacher_forcing=cfg.teacher_forcing,
            initial_attention=cfg.initial_attention,
        )
        if cfg.attention
        else None
    )
    return DeepPneumoniaNet(backbone, num_classes, attention, feature_stage=cfg.feature_stage)


def checkpointer(cfg: Config, splits: DataSplits, out: Path, **parts: Any) -> Checkpointer:
    """The checkpointer of this stage for the run of ``cfg`` on ``splits``."""
    return Checkpointer(
        out / CHECKPOINT, "finetune", run_record(cfg, splits, SECTIONS), "epochs", **parts
    )


class FinetuneObjective(nn.Module):
    """The network and every loss of fine-tuning, as one module (one DDP wrapper, one state).

    Args:
        cfg: the configuration (switches, weights, temperatures).
        net: the classifier.
        class_counts: training images per class (for the imbalance loss).
    """

    def __init__(self, cfg: Config, net: DeepPneumoniaNet, class_counts: list[int]) -> None:
        super().__init__()
        self.net = net
        self.classification = ImbalanceLoss(cfg, class_counts)
        self.guidance = (
            MaskGuidanceLoss(cfg.guidance_kind, from_logits=True) if cfg.attention else None
        )
        self.regularizer = (
            ContrastiveFeatureRegularizer(
                net.feature_channels,
                cfg.regularizer_dim,
                temperature=cfg.regularizer_temperature,
            )
            if cfg.regularizer
            else None
        )
        self.guidance_weight = cfg.guidance_weight
        self.regularizer_weight = cfg.regularizer_weight

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of a batch and its detached parts."""
        image, mask, valid, label = (
            batch["image"],
            batch["mask"],
            batch["mask_valid"],
            batch["label"],
        )
        out = self.net(image, mask, valid)
        parts = {"cls": self.classification(out.logits.float(), label)}
        total = parts["cls"]
        if self.guidance is not None:
            parts["guide"] = self.guidance(out.attention_logits, mask, valid)
            total = total + self.guidance_weight * parts["guide"]
        if self.regularizer is not None:
            parts["reg"] = self.regularizer(out.features, mask, label, valid)
            total = total + self.regularizer_weight * parts["reg"]
        return total, {k: v.detach() for k, v in parts.items()}


def _optimizer(cfg: Config, objective: FinetuneObjective) -> torch.optim.AdamW:
    """AdamW over every parameter; the attention scorer at ``attention_lr_scale`` times ``lr``."""
    attention = objective.net.attention
    scorer = list(attention.parameters()) if attention is not None else []
    scorer_ids = {id(p) for p in scorer}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in objective.parameters() if id(p) not in scorer_ids]}
    ]
    if scorer:
        groups.append({"params": scorer, "lr": cfg.lr * cfg.attention_lr_scale})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def finetune(
    backbone: Backbone | None, cfg: Config, splits: DataSplits, rt: Runtime, out: Path
) -> tuple[DeepPneumoniaNet, list[dict[str, float]]]:
    """Fine-tune a network on ``backbone`` (``None``: from scratch); returns the best one.

    Returns:
        The network with the best validation macro-F1, and one record per epoch.

    Raises:
        StageStopped: when ``cfg.stop_after`` ends the stage early.
        RunMismatch: when resuming a checkpoint of another run.
    """
    training.seed_everything(cfg.seed, "finetune")
    # A fresh trunk takes the given weights, so that the new layers start the same with
    # and without pre-training (the ablation changes one thing) and ``backbone`` is kept.
    trunk = build_backbone(cfg)
    if backbone is not None:
        trunk.load_state_dict(backbone.state_dict())
    net = build_net(cfg, trunk, len(splits.class_names))
    _say_if_unguided(cfg, splits, rt)
    counts = splits.train.class_counts()
    objective = FinetuneObjective(cfg, net, counts)
    model = rt.wrap(objective, find_unused=cfg.regularizer)
    dataset = splits.train.with_transform(train_transform(cfg.image_size) if cfg.augment else None)
    loader = training.make_loader(
        dataset, cfg.batch_size, rt, train=True, seed=cfg.seed, num_workers=cfg.num_workers
    )
    optimizer = _optimizer(cfg, objective)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp)
    saver = checkpointer(cfg, splits, out, model=objective, optimizer=optimizer, scaler=scaler)
    start, history = saver.resume() if cfg.resume else (0, [])
    scheduler = training.cosine_schedule(optimizer, cfg.epochs, start)
    for epoch in range(start, cfg.epochs):
        training.begin_epoch(cfg, rt, loader, "finetune", epoch, start)
        objective.classification.set_epoch(epoch)
        record = {"epoch": float(epoch + 1), "train_lr": optimizer.param_groups[0]["lr"]}
        bar = training.progress(loader, f"fine-tune {epoch + 1}/{cfg.epochs}", cfg, rt)
        record.update(_train_epoch(model, bar, optimizer, scaler, rt))
        scheduler.step()
        if rt.is_main:
            record.update(_validate(net, cfg, splits, rt, history, out / BEST, epoch))
        history.append(record)
        if rt.is_main:
            saver.save(epoch + 1, history)
        rt.barrier()
    net.load_state_dict(checkpoint.load(out / BEST)["model"])
    return net, history


def _say_if_unguided(cfg: Config, splits: DataSplits, rt: Runtime) -> None:
    if not (cfg.attention and rt.is_main):
        return
    masks = any(bool(splits.train[i]["mask_valid"]) for i in range(len(splits.train)))
    if masks and cfg.guidance_weight > 0:
        return
    why = "no training image has a lesion mask" if not masks else "guidance_weight is 0"
    if not cfg.attention_gate_gradient:
        print(
            f"{why} and attention_gate_gradient is false: nothing trains the attention "
            f"scorer, its map stays near initial_attention ({cfg.initial_attention}); "
            "consider --no-attention or --set attention_gate_gradient=true"
        )
    else:
        print(
            f"{why}: the attention is trained without guidance "
            f"(gate mode {cfg.attention_mode!r}, residual {cfg.attention_residual}); "
            "consider --no-attention or --set attention_mode=soft --set attention_residual=true"
        )


def _train_epoch(
    model: nn.Module,
    batches: DataLoader[Any] | Any,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    rt: Runtime,
) -> dict[str, float]:
    """One epoch of the objective; the mean total loss and parts over all ranks."""
    model.train()
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        batch = {k: v.to(rt.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with rt.autocast():
            loss, parts = model(batch)
        training.train_step(loss, optimizer, scaler)
        size = batch["label"].shape[0]
        for key, value in {"loss": loss.detach(), **parts}.items():
            sums[key] = sums.get(key, 0.0) + float(value) * size
        count += size
    return {f"train_{k}": v for k, v in training.global_mean(sums, count, rt).items()}


def _validate(
    net: DeepPneumoniaNet,
    cfg: Config,
    splits: DataSplits,
    rt: Runtime,
    history: list[dict[str, float]],
    best: Path,
    epoch: int,
) -> dict[str, float]:
    """Validation metrics of ``net``; saves it to ``best`` when its macro-F1 is the best yet."""
    pred = predict(net, splits.val, rt, cfg.batch_size)
    metrics = classification_metrics(pred, splits.class_names, splits.train.class_counts())
    if metrics["macro_f1"] > max((h["val_macro_f1"] for h in history), default=-1.0):
        checkpoint.atomic_save({"model": net.state_dict(), "epoch": epoch + 1}, best)
    values = {
        "val_macro_f1": metrics["macro_f1"],
        "val_balanced_accuracy": metrics["balanced_accuracy"],
        "val_minority_recall": metrics["minority_recall"],
    }
    return {k: math.nan if v is None else float(v) for k, v in values.items()}


def load_finetuned(
    cfg: Config, splits: DataSplits, out: Path
) -> tuple[DeepPneumoniaNet, list[dict[str, float]]]:
    """The best network and the history this stage saved in ``out`` for the run of ``cfg``.

    Raises:
        FileNotFoundError: when the stage has not run.
        RunMismatch: when the checkpoint is of another run (settings, data, split) or unfinished.
    """
    state = checkpointer(cfg, splits, out).read_finished(
        "run the finetune stage first (--stage finetune)"
    )
    net = build_net(cfg, build_backbone(cfg), len(splits.class_names))
    net.load_state_dict(checkpoint.load(out / BEST)["model"])
    return net, state["history"]
