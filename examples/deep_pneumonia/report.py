"""A short ``report.md`` summarising a run: setup, metrics, baseline, lesion attention, figures.

Recalls and precisions are shown with their counts and 95 % Wilson intervals; a recall
of 0 says where the class's images went, and a class without test images or never
predicted says so instead of showing a number.
"""

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


def _interval(value: list[float] | None) -> str:
    return "" if value is None else f" [{value[0]:.2f}, {value[1]:.2f}]"


def _class_cells(row: dict[str, Any]) -> tuple[str, str]:
    """The precision and recall cells of a class: value, counts, interval, or why none."""
    hits = row["true_positives"]
    recall = (
        "no test images"
        if row["recall"] is None
        else f"{row['recall']:.3f} ({hits}/{row['support']}){_interval(row['recall_ci95'])}"
    )
    precision = (
        "never predicted"
        if row["predicted"] == 0
        else f"{row['precision']:.3f} ({hits}/{row['predicted']}){_interval(row['precision_ci95'])}"
    )
    return precision, recall


def _missed_notes(metrics: dict[str, Any]) -> list[str]:
    """For every class of recall 0: how many images it had and what they were called."""
    names, lines = metrics["class_names"], []
    for c, name in enumerate(names):
        row = metrics["per_class"][name]
        if row["recall"] != 0.0:
            continue
        called = metrics["confusion_matrix"][c]
        where = ", ".join(f"{names[j]} for {n}" for j, n in enumerate(called) if n > 0)
        lines.append(
            f"- recall 0 for {name}: 0 of {row['support']} {name} test images found;"
            f" the model predicts {where} of them."
        )
    return [*lines, ""] if lines else []


# The gate that keeps every feature (the covid_cxr preset's; benchmarks/README.md).
SOFT_GATE = (
    "--attention-mode soft --attention-residual --set attention_gate_gradient=true"
    " --set initial_attention=0.5 --set teacher_forcing=0"
)


def _gate_notes(metrics: dict[str, Any]) -> list[str]:
    """How many test images of each class the hard gate closed on, and what that means."""
    gate = metrics.get("closed_gate")
    if gate is None:
        return []
    counts = gate["per_class"]
    cells = ", ".join(
        f"{name} {row['closed']} of {row['images']}"
        for name, row in counts.items()
        if row["images"]
    )
    lines = [
        f"Hard gate closed (no cell of the attention map reached {gate['threshold']:g}) on:"
        f" {cells} test images. Such an image has all its attended features zero, so the"
        " network gives every one of them the same output, whatever the loss or the decision"
        " rule.",
    ]
    minority = metrics["minority_class"]
    row = counts[minority]
    if row["images"] and row["closed"] >= 0.5 * row["images"]:
        lines.append(
            f"Most {minority} test images are among them: the gate, not the classifier, misses"
            f" them. The soft residual gate keeps every feature (`{SOFT_GATE}`); on the phantom"
            " it raised COVID-19 recall with the class-balanced or logit-adjusted loss"
            " (benchmarks/README.md, 'The minority class')."
        )
    return [*lines, ""]


def _operating_point(metrics: dict[str, Any], imbalance: str) -> list[str]:
    """The table of what the post-hoc logit adjustment would change."""
    point = metrics.get("operating_point")
    if point is None:
        return []
    columns = [("arg-max (as trained)", point["argmax"]), ("adjusted, tau = 1", point["tau_1"])]
    tuned = point.get("tau_validation")
    if tuned is not None:
        columns.append((f"adjusted, tau = {tuned['tau']:g} (best on validation)", tuned))
    rows = [
        *(
            (f"recall {name}", [_recall(col["recall"][name]) for _, col in columns])
            for name in metrics["class_names"]
        ),
        ("balanced accuracy", [_fmt(col["balanced_accuracy"]) for _, col in columns]),
        ("macro-F1", [_fmt(col["macro_f1"]) for _, col in columns]),
    ]
    return [
        "## Operating point",
        "",
        "What the post-hoc logit adjustment (Menon et al.; predict"
        " arg max_c logit_c - tau log prior_c with the training class frequencies, no"
        " retraining) would change on the test images:",
        "",
        *(
            []
            if imbalance == "ce"
            else [
                f"The correction is made for a model trained with plain cross-entropy; this"
                f" run's loss ({imbalance!r}) already corrects for the imbalance, so tau = 1"
                " counts the prior twice.",
                "",
            ]
        ),
        "| | " + " | ".join(name for name, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows),
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
        for name in ("pretrain", "attention", "regularizer")
    )
    switches += f"; imbalance loss {cfg.imbalance!r}"
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
        f" | {_class_cells(metrics['per_class'][metrics['minority_class']])[1]}"
        f" | {_recall(baseline['minority_recall'])} |",
        f"| macro one-vs-rest ROC AUC | {_fmt(metrics['macro_roc_auc'])} | 0.500 |",
        "",
        *_absent_note(metrics),
        "Per class, with counts and 95 % Wilson intervals:",
        "",
        "| class | precision | recall | F1 | ROC AUC | support |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_class"].items():
        precision, recall = _class_cells(row)
        lines.append(
            f"| {name} | {precision} | {recall} | {_fmt(row['f1'])}"
            f" | {_fmt(row['roc_auc'])} | {row['support']} |"
        )
    lines += [
        "",
        *_missed_notes(metrics),
        *_gate_notes(metrics),
        *_operating_point(metrics, cfg.imbalance),
        *_pretrain_lines(metrics),
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
        "![confusion matrix, normalised per true class](plots/confusion_matrix_normalised.png)",
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
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a count of images
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
