"""Stage 2: supervised fine-tuning with the paper's three training signals.

The objective of one batch is

.. math::
    L = L_{cls} + \\lambda_g \\, L_{guide} + \\lambda_r \\, L_{reg}

- :math:`L_{cls}`: :class:`~contrast_attn.ClassBalancedLoss` with the training set's
  class counts (``class_balanced``), or plain cross-entropy;
- :math:`L_{guide}`: :class:`~contrast_attn.MaskGuidanceLoss` between the attention
  map of :class:`~contrast_attn.MaskGuidedAttention` and the lesion mask, on images
  whose mask is annotated (``attention``);
- :math:`L_{reg}`: :class:`~contrast_attn.ContrastiveFeatureRegularizer` on the
  attended stage's feature map (``regularizer``).

AdamW trains everything with cosine decay; the attention scorer's learning rate is
``attention_lr_scale`` times the others' (Adam's steps are bounded by the learning
rate whatever the loss weight, and the small scorer must learn its map within the
short run). The weights with the best validation macro-F1 are kept in
``checkpoints/best.pt``; evaluation uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrast_attn import ClassBalancedLoss, ContrastiveFeatureRegularizer, MaskGuidanceLoss

from . import checkpoint
from .config import Config
from .data import DataSplits
from .evaluate import classification_metrics, predict
from .model import Backbone, DeepPneumoniaNet
from .pretrain import pretrained_backbone
from .runtime import Runtime, fit, global_mean, make_loader, progress, seed_everything
from .transforms import train_transform

__all__ = ["BEST", "CHECKPOINT", "FinetuneObjective", "build_net", "finetune", "load_best"]

CHECKPOINT = "checkpoints/finetune.pt"
BEST = "checkpoints/best.pt"


def build_net(cfg: Config, backbone: Backbone, num_classes: int) -> DeepPneumoniaNet:
    """The classifier of ``cfg`` around ``backbone``."""
    return DeepPneumoniaNet(
        backbone,
        num_classes,
        attention=cfg.attention,
        feature_stage=cfg.feature_stage,
        attention_mode=cfg.attention_mode,
        attention_residual=cfg.attention_residual,
        teacher_forcing=cfg.teacher_forcing,
        attention_prior=cfg.attention_prior,
    )


class FinetuneObjective(nn.Module):
    """The network and every loss of fine-tuning, as one module (one DDP wrapper, one state).

    Args:
        cfg: the configuration (switches, weights, temperatures).
        net: the classifier.
        class_counts: training images per class (for the class-balanced loss).
    """

    def __init__(self, cfg: Config, net: DeepPneumoniaNet, class_counts: list[int]) -> None:
        super().__init__()
        self.net = net
        self.classification: nn.Module = (
            ClassBalancedLoss(
                torch.tensor(class_counts),
                beta=cfg.cb_beta,
                loss_type=cfg.cb_loss_type,
                zero_count="as_one",
            )
            if cfg.class_balanced
            else nn.CrossEntropyLoss()
        )
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


def finetune(
    cfg: Config, splits: DataSplits, rt: Runtime, out: Path
) -> tuple[list[dict[str, float]], bool]:
    """Fine-tune the (pre-trained) network; returns the history and whether it finished."""
    seed_everything(cfg.seed, "finetune")
    counts = splits.train.class_counts()
    net = build_net(cfg, pretrained_backbone(cfg, out), len(splits.class_names))
    annotated = any(bool(splits.train[i]["mask_valid"]) for i in range(len(splits.train)))
    net.guided.fill_(annotated)
    if cfg.attention and not annotated and rt.is_main:
        print("no training image has a lesion mask: unguided attention, soft gate f * (1 + a)")
    objective = FinetuneObjective(cfg, net, counts)
    model = rt.wrap(objective, find_unused=cfg.regularizer)
    dataset = splits.train.with_transform(train_transform(cfg.image_size) if cfg.augment else None)
    loader = make_loader(
        dataset, cfg.batch_size, rt, train=True, seed=cfg.seed, num_workers=cfg.num_workers
    )
    scorer = list(net.attention.parameters()) if net.attention is not None else []
    scorer_ids = {id(p) for p in scorer}
    groups: list[dict[str, Any]] = [
        {"params": [p for p in objective.parameters() if id(p) not in scorer_ids]}
    ]
    if scorer:
        groups.append({"params": scorer, "lr": cfg.lr * cfg.attention_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp)

    def train_epoch(epoch: int) -> dict[str, float]:
        model.train()
        sums: dict[str, float] = {}
        count = 0
        for batch in progress(loader, f"fine-tune {epoch + 1}/{cfg.epochs}", cfg, rt):
            batch = {k: v.to(rt.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with rt.autocast():
                loss, parts = model(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            size = batch["label"].shape[0]
            for key, value in {"loss": loss.detach(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * size
            count += size
        return {f"train_{k}": v for k, v in global_mean(sums, count, rt).items()}

    def validate(epoch: int, history: list[dict[str, float]]) -> dict[str, float]:
        pred = predict(net, splits.val, rt, cfg.batch_size)
        metrics = classification_metrics(pred, splits.class_names, counts)
        best = max((h["val_macro_f1"] for h in history), default=-1.0)
        if metrics["macro_f1"] > best:
            checkpoint.atomic_save({"model": net.state_dict(), "epoch": epoch + 1}, out / BEST)
        return {
            "val_macro_f1": metrics["macro_f1"],
            "val_balanced_accuracy": metrics["balanced_accuracy"],
            "val_minority_recall": metrics["minority_recall"],
        }

    return fit(
        stage="finetune",
        model=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        epochs=cfg.epochs,
        loader=loader,
        train_epoch=train_epoch,
        validate=validate,
        path=out / CHECKPOINT,
        cfg=cfg,
        rt=rt,
        resume=cfg.resume,
    )


def load_best(cfg: Config, num_classes: int, out: Path) -> DeepPneumoniaNet:
    """The fine-tuned network with the best validation macro-F1 of the run in ``out``."""
    path = out / BEST
    if not path.is_file():
        raise FileNotFoundError(
            f"fine-tuned weights not found at {path}: run the finetune stage first (--stage finetune)"
        )
    net = build_net(cfg, Backbone(cfg.arch, width=cfg.width), num_classes)
    net.load_state_dict(checkpoint.load(path)["model"])
    return net
