r"""Stage 3: evaluation as a computer-aided diagnosis system.

On the test split: per-class precision, recall, F1 and one-vs-rest ROC AUC, macro-F1,
balanced accuracy and the confusion matrix (scikit-learn), against the majority-class
baseline (always predict the most frequent training class).

Where the model looks (:mod:`.localisation`), for the predicted attention map (when
the network has one) and for the ReLU'd class activation map of the *predicted* class
(what the model's decision rests on, as Grad-CAM explains a decision): on the images
with an annotated, non-empty lesion mask, the mass inside the lesion, the pointing
game and the IoU of the map thresholded at half its maximum; where the data set has
device and lung masks (:mod:`.covid_cxr`), the mass on devices and outside the lungs,
the shortcut audit. Each comes with the uniform map's value (the region's area),
the reference a map must beat (:func:`localisation_summary`, the ``localisation``
entry of the metrics; ``lesion_attention`` keeps the lesion masses alone).

Uncertainty and the decision rule: each class's recall and precision come with a 95 %
Wilson score interval (:func:`wilson_interval`; exact enough for the few images of a
rare class, where the normal approximation gives intervals outside [0, 1]); the
confusion matrix is also given normalised per true class. The *operating point*
(:func:`operating_point`) shows what the post-hoc logit adjustment of Menon et al.
(:func:`~contrast_attn.functional.post_hoc_logit_adjustment`: predict
:math:`\arg\max_c x_c - \tau \log \pi_c` with the training prior :math:`\pi`) would
change, at :math:`\tau = 1` and at the :math:`\tau` of :data:`TAU_GRID` with the best
balanced accuracy on the validation split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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

from contrast_attn.functional import class_activation_map, post_hoc_logit_adjustment

from .localisation import localisation_metrics, summarise
from .model import DeepPneumoniaNet
from .training import Runtime, make_loader

__all__ = [
    "TAU_GRID",
    "DecisionRule",
    "Predictions",
    "adjusted_decisions",
    "class_intervals",
    "classification_metrics",
    "decision_rules",
    "decision_summary",
    "evaluate",
    "lesion_maps",
    "localisation_summary",
    "normalised_confusion",
    "operating_point",
    "predict",
    "wilson_interval",
]

# The maps the evaluation localises, and the metrics of each (see :mod:`.localisation`).
MAPS = ("attention", "cam")
LOCALISATION_METRICS = ("lesion_mass", "pointing", "iou", "device_mass", "outside_lung_mass")
# A uniform map's value of each metric: the area of the metric's region.
UNIFORM = {
    "lesion_mass": "lesion_area",
    "pointing": "lesion_area",
    "iou": "lesion_area",
    "device_mass": "device_area",
    "outside_lung_mass": "outside_lung_area",
}
# The adjustment strengths tried on the validation split by :func:`operating_point`.
TAU_GRID = tuple(0.25 * i for i in range(13))


@dataclass
class Predictions:
    """Model outputs over a dataset, in dataset order.

    Attributes:
        labels: ``[N]`` true classes.
        probs: ``[N, K]`` softmax probabilities.
        attention_mass: ``[N]`` attention mass inside the lesion (NaN where undefined).
        cam_mass: ``[N]`` the same for the class activation map.
        lesion_area: ``[N]`` fraction of the image the lesion covers (NaN where undefined).
        localisation: per map (``"attention"``, ``"cam"``), the ``[N]`` arrays of
            :func:`.localisation.localisation_metrics` (NaN where undefined); a map the
            network does not have is absent.
        gate_closed: ``[N]`` bool, for a hard non-residual gate: no cell of the image's
            attention map reached the threshold, so all its attended features are zero
            and its logits are those of every other such image; ``None`` for another
            gate or without attention.
        gate_threshold: that gate's threshold (``None`` likewise).
    """

    labels: np.ndarray
    probs: np.ndarray
    attention_mass: np.ndarray
    cam_mass: np.ndarray
    lesion_area: np.ndarray
    localisation: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    gate_closed: np.ndarray | None = None
    gate_threshold: float | None = None

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


def _localise(maps: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The localisation metrics of a batch's maps against its lesion, device and lung masks."""
    return localisation_metrics(
        maps.float().cpu(),
        batch["mask"],
        device=batch.get("device_mask"),
        lung=batch.get("lung_mask"),
        valid=batch["mask_valid"],
    )


@torch.no_grad()
def predict(
    net: DeepPneumoniaNet, dataset: Dataset[Any], rt: Runtime, batch_size: int
) -> Predictions:
    """Run ``net`` over ``dataset`` (no augmentation) on this process."""
    net.eval()
    gate = net.attention
    threshold = (
        gate.threshold if gate is not None and gate.mode == "hard" and not gate.residual else None
    )
    labels, probs, closed = [], [], []
    found: dict[str, list[dict[str, torch.Tensor]]] = {name: [] for name in MAPS}
    for batch in make_loader(dataset, batch_size, rt, train=False):
        with rt.autocast():
            logits, attention, cam = lesion_maps(net, batch["image"].to(rt.device))
        probs.append(logits.float().softmax(dim=1).cpu())
        labels.append(batch["label"])
        if threshold is not None and attention is not None:
            closed.append((attention.flatten(1).amax(dim=1) < threshold).cpu())
        for name, maps in zip(MAPS, (attention, cam)):
            if maps is not None:
                found[name].append(_localise(maps, batch))
    localisation = {
        name: {key: torch.cat([part[key] for part in parts]).numpy() for key in parts[0]}
        for name, parts in found.items()
        if parts
    }
    nan = np.full(len(dataset), math.nan)  # type: ignore[arg-type]
    return Predictions(
        labels=torch.cat(labels).numpy(),
        probs=torch.cat(probs).double().numpy(),
        attention_mass=localisation.get("attention", {}).get("lesion_mass", nan),
        cam_mass=localisation["cam"]["lesion_mass"],
        lesion_area=localisation["cam"]["lesion_area"],
        localisation=localisation,
        gate_closed=torch.cat(closed).numpy() if closed else None,
        gate_threshold=threshold,
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
    for name, extra in class_intervals(y, p, class_names).items():
        per_class[name].update(extra)
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
        "confusion_matrix_normalised": normalised_confusion(confusion_matrix(y, p, labels=classes)),
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
        "closed_gate": _closed_gate(pred, class_names),
    }


def _closed_gate(pred: Predictions, class_names: list[str]) -> dict[str, Any] | None:
    """Per class, how many test images the hard gate closed on (``None``: no hard gate)."""
    if pred.gate_closed is None:
        return None
    return {
        "threshold": pred.gate_threshold,
        "per_class": {
            name: {
                "closed": int(pred.gate_closed[pred.labels == c].sum()),
                "images": int((pred.labels == c).sum()),
            }
            for c, name in enumerate(class_names)
        },
    }


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float] | None:
    r"""The Wilson score interval of a proportion (95 % for ``z = 1.96``); ``None`` for 0 trials.

    .. math::
        \frac{\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p (1 - \hat p)}{n}
        + \frac{z^2}{4n^2}}}{1 + \frac{z^2}{n}}, \qquad \hat p = k / n .

    Examples:
        >>> [round(v, 3) for v in wilson_interval(0, 2)]
        [0.0, 0.658]
        >>> wilson_interval(0, 0) is None
        True
    """
    if trials == 0:
        return None
    rate, z2 = successes / trials, z * z
    centre = (rate + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials**2)) / (1 + z2 / trials)
    # Exactly 0 and 1 at the ends (the formula's bounds there, up to rounding).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def class_intervals(
    labels: np.ndarray, predicted: np.ndarray, class_names: list[str]
) -> dict[str, dict[str, Any]]:
    """Per class: true positives, images predicted as it, and Wilson intervals of recall
    (``true_positives`` of ``support``) and precision (of ``predicted``); ``None`` where
    the denominator is 0 (no test images of the class, or the class never predicted)."""
    rows = {}
    for c, name in enumerate(class_names):
        hits = int(((labels == c) & (predicted == c)).sum())
        support, chosen = int((labels == c).sum()), int((predicted == c).sum())
        recall, precision = wilson_interval(hits, support), wilson_interval(hits, chosen)
        rows[name] = {
            "true_positives": hits,
            "predicted": chosen,
            "recall_ci95": None if recall is None else list(recall),
            "precision_ci95": None if precision is None else list(precision),
        }
    return rows


def normalised_confusion(matrix: np.ndarray) -> list[list[float] | None]:
    """Each row of a confusion matrix divided by its true class's images (``None``: no images)."""
    rows: list[list[float] | None] = []
    for row in np.asarray(matrix):
        total = int(row.sum())
        rows.append(None if total == 0 else [float(v) / total for v in row])
    return rows


def decision_summary(
    labels: np.ndarray, predicted: np.ndarray, class_names: list[str], minority: int
) -> dict[str, Any]:
    """Recall per class (``None``: no images), balanced accuracy, macro-F1, minority recall,
    and the share of the most predicted class (near 1: the rule calls almost every image
    the same)."""
    present = sorted({int(c) for c in labels})
    recall = {
        name: float((predicted[labels == c] == c).mean()) if c in present else None
        for c, name in enumerate(class_names)
    }
    return {
        "recall": recall,
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(
            f1_score(labels, predicted, labels=present, average="macro", zero_division=0)
        ),
        "minority_recall": recall[class_names[minority]],
        "dominant_share": float(
            np.bincount(predicted, minlength=len(class_names)).max() / max(len(predicted), 1)
        ),
    }


def adjusted_decisions(pred: Predictions, train_counts: list[int], tau: float) -> np.ndarray:
    """The post-hoc adjusted decisions of ``pred`` (log-probabilities serve as logits)."""
    logits = torch.from_numpy(np.log(np.clip(pred.probs, 1e-300, None)))
    corrected = post_hoc_logit_adjustment(logits, train_counts, tau=tau, zero_count="as_one")
    decisions: np.ndarray = corrected.argmax(dim=1).numpy()
    return decisions


class DecisionRule(NamedTuple):
    r"""One decision rule's :math:`\tau`, its decisions, and (when tuned) its validation score."""

    tau: float
    decisions: np.ndarray
    validation_balanced_accuracy: float | None = None


def decision_rules(
    pred: Predictions, train_counts: list[int], tune: Predictions | None = None
) -> dict[str, DecisionRule]:
    r"""The rules of :func:`operating_point` applied to ``pred``: ``"argmax"``
    (:math:`\tau = 0`), ``"tau_1"`` and, with validation predictions ``tune``,
    ``"tau_validation"`` (the :math:`\tau` of :data:`TAU_GRID` with the best balanced
    accuracy on ``tune``; ties: the one nearest 1)."""
    rules = {
        "argmax": DecisionRule(0.0, pred.predicted),
        "tau_1": DecisionRule(1.0, adjusted_decisions(pred, train_counts, 1.0)),
    }
    if tune is not None:
        score, _, tau = max(
            (
                float(
                    balanced_accuracy_score(tune.labels, adjusted_decisions(tune, train_counts, t))
                ),
                -abs(t - 1),
                t,
            )
            for t in TAU_GRID
        )
        rules["tau_validation"] = DecisionRule(
            tau, adjusted_decisions(pred, train_counts, tau), score
        )
    return rules


def operating_point(
    pred: Predictions,
    class_names: list[str],
    train_counts: list[int],
    tune: Predictions | None = None,
) -> dict[str, Any]:
    r"""What the post-hoc logit adjustment would change on ``pred``.

    Returns the decision summary (:func:`decision_summary`) of every rule of
    :func:`decision_rules`: the plain arg-max, the adjustment at :math:`\tau = 1`, and,
    when validation predictions ``tune`` are given, the adjustment at the :math:`\tau`
    chosen on them (with its validation balanced accuracy).
    """
    minority = int(np.argmin(train_counts))
    result: dict[str, Any] = {
        "rule": "argmax_c logit_c - tau * log(prior_c), prior = training class frequencies"
    }
    for name, rule in decision_rules(pred, train_counts, tune).items():
        summary = decision_summary(pred.labels, rule.decisions, class_names, minority)
        if name != "argmax":
            summary = {"tau": rule.tau, **summary}
        if rule.validation_balanced_accuracy is not None:
            summary["validation_balanced_accuracy"] = rule.validation_balanced_accuracy
        result[name] = summary
    return result


def evaluate(
    net: DeepPneumoniaNet,
    dataset: Dataset[Any],
    train_counts: list[int],
    rt: Runtime,
    batch_size: int,
    tune: Dataset[Any] | None = None,
) -> dict[str, Any]:
    """The metrics of ``net`` on ``dataset`` (see :func:`classification_metrics`) and its
    operating point (:func:`operating_point`, the adjustment strength tuned on ``tune``)."""
    class_names: list[str] = list(dataset.class_names)  # type: ignore[attr-defined]
    pred = predict(net, dataset, rt, batch_size)
    metrics = classification_metrics(pred, class_names, train_counts)
    metrics["localisation"] = localisation_summary(pred)
    tuned = None if tune is None else predict(net, tune, rt, batch_size)
    metrics["operating_point"] = operating_point(pred, class_names, train_counts, tuned)
    return metrics


def _count(values: np.ndarray | None) -> int:
    return 0 if values is None else int(np.isfinite(values).sum())


def localisation_summary(pred: Predictions) -> dict[str, Any]:
    """The ``localisation`` entry of the metrics: each map's mean metrics and the uniform map's.

    Every mean is over the images where the metric is defined (:mod:`.localisation`):
    lesion metrics over images with an annotated, non-empty lesion (``num_images``),
    ``device_mass`` over those with a device (``num_device_images``), ``outside_lung_mass``
    over those with a lung mask (``num_lung_images``); ``None`` where no image has
    one, or for a map the network does not have.

    Returns:
        ``{"cam_class": "predicted", "threshold": 0.5, "num_images": ...,
        "num_device_images": ..., "num_lung_images": ..., "attention": {...} or None,
        "cam": {...}, "uniform": {...}}``, each map's entry holding
        :data:`LOCALISATION_METRICS`.
    """
    cam = pred.localisation.get("cam", {})
    uniform = summarise({k: cam[v] for k, v in UNIFORM.items() if v in cam})
    maps: dict[str, Any] = {}
    for name in MAPS:
        values = pred.localisation.get(name)
        if values is None:
            maps[name] = None
            continue
        means = summarise({k: values[k] for k in LOCALISATION_METRICS if k in values})
        maps[name] = {k: means.get(k) for k in LOCALISATION_METRICS}
    return {
        "cam_class": "predicted",
        "threshold": 0.5,
        "num_images": _count(cam.get("lesion_area")),
        "num_device_images": _count(cam.get("device_area")),
        "num_lung_images": _count(cam.get("outside_lung_area")),
        **maps,
        "uniform": {k: uniform.get(k) for k in LOCALISATION_METRICS},
    }
