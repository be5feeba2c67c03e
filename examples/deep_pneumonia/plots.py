"""Figures of a run (matplotlib, Agg backend): curves, confusion matrix, map overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import Dataset

from .evaluate import lesion_maps
from .localisation import overlay_figure
from .model import DeepPneumoniaNet
from .training import Runtime

# Files only, no display: also on headless machines and in worker processes.
matplotlib.use("Agg")

__all__ = [
    "attention_overlays",
    "confusion_matrix_plot",
    "normalised_confusion_plot",
    "training_curves",
]


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


def normalised_confusion_plot(
    rows: list[list[float] | None], class_names: list[str], path: Path
) -> None:
    """The confusion matrix normalised per true class (each row sums to 1; blank: no images)."""
    values = np.array([[np.nan] * len(class_names) if r is None else r for r in rows])
    fig, ax = plt.subplots(figsize=(1.3 * len(class_names) + 2, 1.1 * len(class_names) + 1.5))
    ax.imshow(np.nan_to_num(values), cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=30, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(values):
        text = "no images" if np.isnan(value) else f"{value:.2f}"
        if np.isnan(value) and j:
            continue
        ax.text(j, i, text, ha="center", va="center", color="white" if value > 0.5 else "black")
    ax.set_title("test confusion matrix, fraction of each true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def attention_overlays(
    net: DeepPneumoniaNet,
    dataset: Dataset[Any],
    rt: Runtime,
    path: Path,
    per_class: int = 3,
    *,
    kind: str = "auto",
) -> None:
    """For up to ``per_class`` test images of each class: a map over the image with the
    contours of its lesion (green), devices (red) and lungs (cyan, dashed) where known.

    ``kind``: ``"attention"`` (the predicted attention map), ``"cam"`` (the ReLU'd class
    activation map of the predicted class) or ``"auto"`` (the attention where the
    network has it, else the CAM).
    """
    if kind not in ("auto", "attention", "cam"):
        raise ValueError(f"kind must be 'auto', 'attention' or 'cam', got {kind!r}")
    if kind == "auto":
        kind = "attention" if net.attention is not None else "cam"
    class_names: list[str] = list(dataset.class_names)  # type: ignore[attr-defined]
    targets: list[int] = list(dataset.targets)  # type: ignore[attr-defined]
    chosen = [i for c in range(len(class_names)) for i in [j for j, t in enumerate(targets) if t == c][:per_class]]  # fmt: skip
    net.eval()
    panels: dict[str, list[Any]] = {k: [] for k in ("images", "maps", "lesions", "devices", "lungs", "titles")}  # fmt: skip
    for index in chosen:
        sample = dataset[index]
        logits, attention, cam = lesion_maps(net, sample["image"][None].to(rt.device))
        heat = attention if kind == "attention" else cam
        if heat is None:
            raise ValueError("kind 'attention' needs a network with attention")
        annotated = bool(sample["mask_valid"])
        panels["images"].append(sample["image"][0])
        panels["maps"].append(heat[0, 0].float().cpu())
        panels["lesions"].append(sample["mask"][0] if annotated else None)
        panels["devices"].append(sample.get("device_mask"))
        panels["lungs"].append(sample.get("lung_mask"))
        predicted = class_names[int(logits.argmax())]
        panels["titles"].append(f"{class_names[targets[index]]} -> {predicted}")
    figure = overlay_figure(
        panels["images"],
        panels["maps"],
        panels["lesions"],
        devices=panels["devices"],
        lungs=panels["lungs"],
        titles=panels["titles"],
        columns=per_class,
    )
    name = "attention map" if kind == "attention" else "class activation map (predicted class)"
    figure.suptitle(f"{name}; true -> predicted class", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
