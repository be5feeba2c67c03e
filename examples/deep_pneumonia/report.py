"""A short ``report.md`` summarising a run: setup, metrics, baseline, lesion attention, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Config

__all__ = ["localisation_lines", "write_cv_report", "write_report"]


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
        "## Where the model looks",
        "",
        f"Over {lesion['num_images']} test images with an annotated lesion, the fraction of the"
        f" map's mass inside the lesion: attention map {_fmt(lesion['attention_mass'])},"
        f" class activation map {_fmt(lesion['cam_mass'])}; a uniform map would give the mean"
        f" lesion area, {_fmt(lesion['lesion_area_fraction'])}.",
        "",
        *localisation_lines(metrics.get("localisation")),
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


_LOCALISATION_ROWS = (
    ("lesion_mass", "mass inside the lesion"),
    ("pointing", "pointing game (maximum in the lesion)"),
    ("iou", "IoU of the map at half its maximum"),
    ("device_mass", "mass on devices"),
    ("outside_lung_mass", "mass outside the lungs"),
)


def _cell(value: Any) -> str:
    """A number, or ``mean ± std`` of an aggregated one (see :func:`.crossval.aggregate`)."""
    if isinstance(value, dict):
        if value.get("mean") is None:
            return "n/a"
        std = value.get("std")
        return f"{value['mean']:.3f}" + ("" if std is None else f" ± {std:.3f}")
    return _fmt(value)


def localisation_lines(localisation: dict[str, Any] | None) -> list[str]:
    """The localisation table of a run's (or a cross-validation's) metrics, in Markdown."""
    if not localisation:
        return []
    maps = [name for name in ("attention", "cam") if localisation.get(name)]
    header = {"attention": "attention map", "cam": "CAM (predicted class)"}
    lines = [
        f"Localisation (images with a lesion: {_cell(localisation['num_images'])}, with a device:"
        f" {_cell(localisation['num_device_images'])}; n/a: no such mask in the data):",
        "",
        "| | " + " | ".join(header[m] for m in maps) + " | uniform map |",
        "|---" * (len(maps) + 2) + "|",
    ]
    for key, label in _LOCALISATION_ROWS:
        cells = [_cell(localisation[m][key]) for m in maps] + [_cell(localisation["uniform"][key])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_cv_report(cfg: Config, summary: dict[str, Any], path: Path) -> None:
    """Write the Markdown report of a cross-validation (mean ± std over folds) to ``path``."""
    rows = [
        ("macro-F1", "macro_f1"),
        ("balanced accuracy", "balanced_accuracy"),
        (f"recall of the rarest class ({summary['minority_class']})", "minority_recall"),
        ("macro one-vs-rest ROC AUC", "macro_roc_auc"),
    ]
    baseline = summary["majority_baseline"]
    lines = [
        f"# Deep Pneumonia, {summary['folds']}-fold cross-validation",
        "",
        f"- data: `{cfg.data}`, image size {cfg.image_size}; test images per fold:"
        f" {summary['num_images']['values']}; seed {cfg.seed}",
        f"- per fold: {', '.join(f'[{d}]({d}/report.md)' for d in summary['fold_dirs'])}",
        "",
        "Mean ± standard deviation over folds:",
        "",
        "| | model | majority-class baseline |",
        "|---|---|---|",
        *(
            f"| {label} | {_cell(summary[key])} | {_cell(baseline.get(key, 0.5))} |"
            for label, key in rows
        ),
        "",
        "| class | precision | recall | F1 | ROC AUC |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {_cell(row['precision'])} | {_cell(row['recall'])} | {_cell(row['f1'])}"
            f" | {_cell(row['roc_auc'])} |"
            for name, row in summary["per_class"].items()
        ),
        "",
        *localisation_lines(summary.get("localisation")),
    ]
    path.write_text("\n".join(lines))
