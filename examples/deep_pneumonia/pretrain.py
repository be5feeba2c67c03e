"""Stage 1: self-supervised SimCLR pre-training with NT-Xent on the training images.

No labels and no extra data: two augmented views of each training radiograph are
embedded by the backbone and a projection head, and :class:`~contrast_attn.NTXentLoss`
pulls the two views of an image together and pushes all other images away. With
several processes the embeddings are gathered across ranks (``gather=True``), so
every image of the global batch is a negative. The backbone's weights are what
fine-tuning starts from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from contrast_attn import NTXentLoss

from . import checkpoint
from .config import Config
from .data import DataSplits
from .model import Backbone, PretrainNet
from .runtime import Runtime, fit, global_mean, make_loader, progress, seed_everything
from .transforms import simclr_transform

__all__ = ["CHECKPOINT", "pretrain", "pretrained_backbone"]

CHECKPOINT = "checkpoints/pretrain.pt"


def pretrain(
    cfg: Config, splits: DataSplits, rt: Runtime, out: Path
) -> tuple[list[dict[str, float]], bool]:
    """Pre-train the backbone; returns the history and whether the stage finished."""
    seed_everything(cfg.seed, "pretrain")
    net = PretrainNet(Backbone(cfg.arch, width=cfg.width, checkpoint=cfg.checkpoint), cfg.ssl_dim)
    model = rt.wrap(net)
    criterion = NTXentLoss(cfg.nt_xent_temperature, gather=rt.distributed)
    dataset = splits.train.with_transform(simclr_transform(cfg.image_size))
    loader = make_loader(
        dataset, cfg.pretrain_batch_size, rt, train=True, seed=cfg.seed, num_workers=cfg.num_workers
    )
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=cfg.pretrain_lr, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(cfg.pretrain_epochs, 1))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp)

    def train_epoch(epoch: int) -> dict[str, float]:
        model.train()
        total, count = 0.0, 0
        for batch in progress(loader, f"pre-train {epoch + 1}/{cfg.pretrain_epochs}", cfg, rt):
            views = batch["views"].to(rt.device, non_blocking=True)
            size, num_views = views.shape[:2]
            with rt.autocast():
                z = model(views.flatten(0, 1)).view(size, num_views, -1)
                loss = criterion(z)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * size
            count += size
        return {f"pretrain_{k}": v for k, v in global_mean({"loss": total}, count, rt).items()}

    return fit(
        stage="pretrain",
        model=net,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        epochs=cfg.pretrain_epochs,
        loader=loader,
        train_epoch=train_epoch,
        validate=None,
        path=out / CHECKPOINT,
        cfg=cfg,
        rt=rt,
        resume=cfg.resume,
    )


def pretrained_backbone(cfg: Config, out: Path) -> Backbone:
    """A backbone with the pre-trained weights of ``out`` (when ``cfg.pretrain``), else fresh."""
    backbone = Backbone(cfg.arch, width=cfg.width, checkpoint=cfg.checkpoint)
    if cfg.pretrain and cfg.pretrain_epochs > 0:
        path = out / CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(
                f"pre-trained weights not found at {path}: run the pretrain stage first "
                "(--stage pretrain) or switch pre-training off (--no-pretrain)"
            )
        state = checkpoint.load(path)["model"]
        prefix = "backbone."
        backbone.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    return backbone
