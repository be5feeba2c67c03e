"""Figures of a run (matplotlib, Agg backend): curves, confusion matrix, attention overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .evaluate import lesion_maps
from .model import DeepPneumoniaNet
from .training import Runtime

# Files only, no display: also on headless machines and in worker processes.
matplotlib.use("Agg")

__all__ = ["attention_overlays", "confusion_matrix_plot", "training_curves"]


def training_curves(history: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Losses of each stage and the validation metrics, per epoch."""
    panels = [
        (
            "pre-training (NT-Xent; kNN probe, right)",
            history.get("pretrain", []),
            ["pretrain_loss"],
        ),
        (
            "fine-tuning losses",
            history.get("finetune", []),
            ["train_loss", "train_cls", "train_guide", "train_reg"],
        ),
        (
            "validation",
            history.get("finetune", []),
            ["val_macro_f1", "val_balanced_accuracy", "val_minority_recall"],
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, records, keys) in zip(axes, panels):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if ax.has_data():
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "stage not run", ha="center", va="center", transform=ax.transAxes)
    _probe_curve(axes[0], history.get("pretrain", []))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _probe_curve(ax: Any, records: list[dict[str, float]]) -> None:
    """The pre-training monitor (kNN probe macro-F1, from its random-initialisation value
    at epoch 0) on a second axis beside the loss."""
    points = [
        (0.0, r["probe_knn_macro_f1_init"]) for r in records if "probe_knn_macro_f1_init" in r
    ]
    points += [(r["epoch"], r["probe_knn_macro_f1"]) for r in records if "probe_knn_macro_f1" in r]
    if not points:
        return
    probe = ax.twinx()
    probe.plot(*zip(*points), marker="s", color="tab:green", label="kNN probe macro-F1")
    probe.set_ylim(0.0, 1.0)
    probe.legend(fontsize=8, loc="center right")


def confusion_matrix_plot(matrix: list[list[int]], class_names: list[str], path: Path) -> None:
    """The test confusion matrix with counts in the cells."""
    values = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.3 * len(class_names) + 2, 1.1 * len(class_names) + 1.5))
    ax.imshow(values, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=30, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = values.max() / 2 if values.size else 0
    for (i, j), value in np.ndenumerate(values):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
        )
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def attention_overlays(
    net: DeepPneumoniaNet, dataset: Dataset[Any], rt: Runtime, path: Path, per_class: int = 3
) -> None:
    """For test images of each class: the image, and the predicted attention (the CAM
    without an attention module) over it with the ground-truth lesion contour."""
    class_names: list[str] = list(dataset.class_names)  # type: ignore[attr-defined]
    targets: list[int] = list(dataset.targets)  # type: ignore[attr-defined]
    chosen = [
        [i for i, t in enumerate(targets) if t == c][:per_class] for c in range(len(class_names))
    ]
    net.eval()
    fig, axes = plt.subplots(
        len(class_names),
        2 * per_class,
        figsize=(2.0 * 2 * per_class, 2.1 * len(class_names)),
        squeeze=False,
    )
    for row, indices in enumerate(chosen):
        for col in range(per_class):
            left, right = axes[row, 2 * col], axes[row, 2 * col + 1]
            left.axis("off")
            right.axis("off")
            if col >= len(indices):
                continue
            sample = dataset[indices[col]]
            image = sample["image"][None].to(rt.device)
            logits, attention, cam = lesion_maps(net, image)
            heat = attention if attention is not None else cam / cam.amax().clamp_min(1e-12)
            heat = F.interpolate(heat.float(), size=image.shape[-2:], mode="bilinear")
            predicted = class_names[int(logits.argmax())]
            pixels = sample["image"][0].numpy()
            left.imshow(pixels, cmap="gray", vmin=0, vmax=1)
            left.set_title(f"{class_names[row]}", fontsize=8)
            right.imshow(pixels, cmap="gray", vmin=0, vmax=1)
            right.imshow(heat[0, 0].cpu().numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            mask = sample["mask"][0].numpy()
            if bool(sample["mask_valid"]) and mask.max() > 0:
                right.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
            right.set_title(f"pred: {predicted}", fontsize=8)
    kind = "attention" if net.attention is not None else "class activation map"
    fig.suptitle(f"{kind} (colour) and lesion mask (white contour)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
