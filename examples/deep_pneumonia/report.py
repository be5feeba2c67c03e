"""A short ``report.md`` summarising a run: setup, metrics, baseline, lesion attention, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config

__all__ = ["write_report"]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _recall(value: float | None) -> str:
    """A recall, or why there is none (the class has no test images)."""
    return "no test images" if value is None else f"{value:.3f}"


def _absent_note(metrics: dict[str, Any]) -> list[str]:
    absent = metrics.get("classes_without_test_images", [])
    if not absent:
        return []
    return [
        f"No test images of {', '.join(absent)}: macro-F1, balanced accuracy and ROC AUC"
        " average over the other classes.",
        "",
    ]


# The pre-training that moved the quick default's features off chance (benchmarks/README.md).
LONGER_PRETRAINING = (
    "python examples/deep_pneumonia/run.py --pretrain-epochs 40 --pretrain-batch-size 32"
    " --pretrain-warmup-epochs 3 --nt-xent-temperature 0.2"
)


def _pretrain_lines(metrics: dict[str, Any]) -> list[str]:
    """How far pre-training moved off chance, and, when it hardly did, what does."""
    summary = metrics.get("pretrain_probe") or {}
    if not summary:
        return []
    loss, probe = summary["nt_xent"], summary["knn_macro_f1"]
    lines = [
        "## Pre-training",
        "",
        f"NT-Xent {loss['first_epoch']:.3f} (first epoch) → {loss['last_epoch']:.3f}"
        f" (epoch {summary['epochs']}), chance log(2B − 1) = {loss['chance']:.3f}:"
        f" {loss['chance'] - loss['last_epoch']:+.3f} below chance.",
    ]
    moved = loss["last_epoch"] < loss["chance"] - 0.25
    if probe["last_epoch"] is not None and probe["random_init"] is not None:
        gain = probe["last_epoch"] - probe["random_init"]
        lines[-1] += (
            f" kNN probe (frozen features, un-augmented training images as neighbours of"
            f" up to {summary['probe_images']} validation images) macro-F1"
            f" {probe['random_init']:.3f} at random initialisation →"
            f" {probe['last_epoch']:.3f}: {gain:+.3f}."
        )
        moved = moved and gain >= 0.05
    if not moved:
        lines += [
            "",
            "This pre-training is too short to help: the loss is within 0.25 of chance or the"
            " probe within 0.05 of its random-initialisation value. A pre-training that does"
            f" move the features (about 4 min more on 2 CPU cores): `{LONGER_PRETRAINING}`.",
        ]
    return [*lines, ""]


def write_report(cfg: Config, metrics: dict[str, Any], path: Path) -> None:
    """Write the Markdown report of a finished run to ``path``."""
    switches = ", ".join(
        f"{name} {'on' if getattr(cfg, name) else 'off'}"
        for name in ("pretrain", "class_balanced", "attention", "regularizer")
    )
    baseline = metrics["majority_baseline"]
    lesion = metrics["lesion_attention"]
    lines = [
        "# Deep Pneumonia run",
        "",
        f"- data: `{cfg.data}` ({metrics['num_images']} test images, image size {cfg.image_size});"
        f" training images per class: {dict(zip(metrics['class_names'], metrics['train_class_counts']))}",
        f"- model: {cfg.arch}, attention/regulariser on stage {cfg.feature_stage}; {switches}",
        f"- epochs: {cfg.pretrain_epochs if cfg.pretrain else 0} pre-training,"
        f" {cfg.epochs} fine-tuning; seed {cfg.seed}",
        "",
        "## Test metrics",
        "",
        "| | model | majority-class baseline |",
        "|---|---|---|",
        f"| macro-F1 | {_fmt(metrics['macro_f1'])} | {_fmt(baseline['macro_f1'])} |",
        f"| balanced accuracy | {_fmt(metrics['balanced_accuracy'])}"
        f" | {_fmt(baseline['balanced_accuracy'])} |",
        f"| recall of the rarest class ({metrics['minority_class']})"
        f" | {_recall(metrics['minority_recall'])} | {_recall(baseline['minority_recall'])} |",
        f"| macro one-vs-rest ROC AUC | {_fmt(metrics['macro_roc_auc'])} | 0.500 |",
        "",
        *_absent_note(metrics),
        "| class | precision | recall | F1 | ROC AUC | support |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {_fmt(row['precision'])} | {_recall(row['recall'])} | {_fmt(row['f1'])}"
            f" | {_fmt(row['roc_auc'])} | {row['support']} |"
        )
    lines += [
        "",
        *_pretrain_lines(metrics),
        "## Where the model looks",
        "",
        f"Over {lesion['num_images']} test images with an annotated lesion, the fraction of the"
        f" map's mass inside the lesion: attention map {_fmt(lesion['attention_mass'])},"
        f" class activation map {_fmt(lesion['cam_mass'])}; a uniform map would give the mean"
        f" lesion area, {_fmt(lesion['lesion_area_fraction'])}.",
        "",
        "## Figures",
        "",
        "![training curves](plots/curves.png)",
        "",
        "![confusion matrix](plots/confusion_matrix.png)",
        "",
        "![attention overlays](plots/attention.png)",
        "",
    ]
    path.write_text("\n".join(lines))
