"""Stage 3: evaluation as a computer-aided diagnosis system.

On the test split: per-class precision, recall, F1 and one-vs-rest ROC AUC, macro-F1,
balanced accuracy and the confusion matrix (scikit-learn), against the majority-class
baseline (always predict the most frequent training class). Where the lesion is
annotated, the *attention mass inside the lesion*: the fraction of the map's mass
that falls on the mask (resized to the map by area), for the predicted attention map
and for the class activation map of the predicted class; the mean lesion area is
the value a map spread uniformly would get.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)
from torch.utils.data import Dataset

from contrast_attn.functional import class_activation_map, resize_mask

from .model import DeepPneumoniaNet
from .training import Runtime, make_loader

__all__ = [
    "Predictions",
    "classification_metrics",
    "evaluate",
    "lesion_maps",
    "lesion_mass",
    "predict",
]


@dataclass
class Predictions:
    """Model outputs over a dataset, in dataset order.

    Attributes:
        labels: ``[N]`` true classes.
        probs: ``[N, K]`` softmax probabilities.
        attention_mass: ``[N]`` attention mass inside the lesion (NaN where undefined).
        cam_mass: ``[N]`` the same for the class activation map.
        lesion_area: ``[N]`` fraction of the image the lesion covers (NaN where undefined).
    """

    labels: np.ndarray
    probs: np.ndarray
    attention_mass: np.ndarray
    cam_mass: np.ndarray
    lesion_area: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """``[N]`` the arg-max classes."""
        predicted: np.ndarray = self.probs.argmax(axis=1)
        return predicted


def lesion_maps(
    net: DeepPneumoniaNet, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Logits, attention map (or ``None``) and ReLU'd CAM of the predicted class, in eval mode."""
    out = net(images)
    predicted = out.logits.argmax(dim=1)
    cam = class_activation_map(out.final, net.classifier.weight, predicted).relu()
    return out.logits, out.attention, cam


def lesion_mass(maps: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fraction of each map's mass inside its lesion; NaN without annotation, lesion or mass.

    Args:
        maps: ``[B, 1, H, W]`` non-negative maps.
        mask: ``[B, 1, h, w]`` lesion masks in {0, 1}.
        valid: ``[B]`` whether each mask is annotated.
    """
    target = resize_mask(mask, maps.shape[-2:])
    mass = maps.flatten(1).sum(dim=1)
    inside = (maps * target).flatten(1).sum(dim=1) / mass.clamp_min(1e-12)
    defined = valid & (mask.flatten(1).amax(dim=1) > 0) & (mass > 0)
    return torch.where(defined, inside, torch.full_like(inside, math.nan))


@torch.no_grad()
def predict(
    net: DeepPneumoniaNet, dataset: Dataset[Any], rt: Runtime, batch_size: int
) -> Predictions:
    """Run ``net`` over ``dataset`` (no augmentation) on this process."""
    net.eval()
    labels, probs, attention, cams, areas = [], [], [], [], []
    for batch in make_loader(dataset, batch_size, rt, train=False):
        images = batch["image"].to(rt.device)
        mask = batch["mask"].to(rt.device)
        valid = batch["mask_valid"].to(rt.device)
        with rt.autocast():
            logits, attn, cam = lesion_maps(net, images)
        probs.append(logits.float().softmax(dim=1).cpu())
        labels.append(batch["label"])
        cams.append(lesion_mass(cam.float(), mask, valid).cpu())
        nan = torch.full((images.shape[0],), math.nan)
        attention.append(nan if attn is None else lesion_mass(attn.float(), mask, valid).cpu())
        has_lesion = valid & (mask.flatten(1).amax(dim=1) > 0)
        area = mask.flatten(1).mean(dim=1)
        areas.append(torch.where(has_lesion, area, torch.full_like(area, math.nan)).cpu())
    return Predictions(
        labels=torch.cat(labels).numpy(),
        probs=torch.cat(probs).double().numpy(),
        attention_mass=torch.cat(attention).double().numpy(),
        cam_mass=torch.cat(cams).double().numpy(),
        lesion_area=torch.cat(areas).double().numpy(),
    )


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _baseline(y: np.ndarray, majority: int, minority: int, present: list[int]) -> dict[str, Any]:
    """The metrics of always predicting the most frequent training class."""
    baseline = np.full_like(y, majority)
    return {
        "macro_f1": float(f1_score(y, baseline, labels=present, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y, baseline)),
        "minority_recall": float(majority == minority) if minority in present else None,
    }


def _per_class(
    pred: Predictions, class_names: list[str], present: list[int]
) -> dict[str, dict[str, Any]]:
    """Precision, recall, F1, support and one-vs-rest ROC AUC of each class (None: undefined)."""
    y = pred.labels
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred.predicted, labels=classes, zero_division=0
    )
    rows: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(class_names):
        positives = y == c
        tested = c in present
        rows[name] = {
            "precision": float(precision[c]),
            "recall": float(recall[c]) if tested else None,
            "f1": float(f1[c]) if tested else None,
            "support": int(support[c]),
            "roc_auc": float(roc_auc_score(positives, pred.probs[:, c]))
            if 0 < positives.sum() < len(y)
            else None,
        }
    return rows


def classification_metrics(
    pred: Predictions, class_names: list[str], train_counts: list[int]
) -> dict[str, Any]:
    """Every metric of the evaluation, as a JSON-serialisable dict.

    Macro-F1, balanced accuracy and macro ROC AUC average over the classes that have
    images in ``pred`` (listed in ``classes_without_test_images`` otherwise); the
    recall and F1 of a class without images are ``None``.
    """
    y, p = pred.labels, pred.predicted
    present = sorted({int(c) for c in y})
    per_class = _per_class(pred, class_names, present)
    aucs = [v["roc_auc"] for v in per_class.values() if v["roc_auc"] is not None]
    majority, minority = int(np.argmax(train_counts)), int(np.argmin(train_counts))
    classes = list(range(len(class_names)))
    return {
        "num_images": len(y),
        "class_names": class_names,
        "train_class_counts": list(train_counts),
        "per_class": per_class,
        "macro_f1": float(f1_score(y, p, labels=present, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y, p)),
        "accuracy": float((y == p).mean()),
        "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
        "confusion_matrix": confusion_matrix(y, p, labels=classes).tolist(),
        "minority_class": class_names[minority],
        "minority_recall": per_class[class_names[minority]]["recall"],
        "classes_without_test_images": [class_names[c] for c in classes if c not in present],
        "majority_baseline": {
            "class": class_names[majority],
            **_baseline(y, majority, minority, present),
        },
        "lesion_attention": {
            "attention_mass": _nanmean(pred.attention_mass),
            "cam_mass": _nanmean(pred.cam_mass),
            "lesion_area_fraction": _nanmean(pred.lesion_area),
            "num_images": int(np.isfinite(pred.lesion_area).sum()),
        },
    }


def evaluate(
    net: DeepPneumoniaNet,
    dataset: Dataset[Any],
    train_counts: list[int],
    rt: Runtime,
    batch_size: int,
) -> dict[str, Any]:
    """The metrics of ``net`` on ``dataset`` (see :func:`classification_metrics`)."""
    class_names: list[str] = list(dataset.class_names)  # type: ignore[attr-defined]
    return classification_metrics(predict(net, dataset, rt, batch_size), class_names, train_counts)
