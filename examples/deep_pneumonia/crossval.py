"""K-fold cross-validation: every fold through the same stages, then mean ± std over folds.

With ``folds = K`` the images are split by :func:`.splits.patient_kfold` (patient-grouped,
stratified; every image is tested in exactly one fold, no patient of a fold's test split
is in its training or validation split). Fold ``k`` is an ordinary run of
:func:`.run.run_pipeline` with the setting ``fold = k``, in ``out/fold_<k>/``: its own
``config.json``, checkpoints (``--resume`` continues each fold where it stopped, and a
checkpoint of another fold is refused like any other run's), ``metrics.json``, figures
and report. Then ``out/metrics.json`` holds the aggregate (:func:`aggregate`) and
``out/report.md`` its summary.

Examples:
    >>> summary = aggregate([{"macro_f1": 0.5, "name": "a"}, {"macro_f1": 0.7, "name": "a"}])
    >>> entry = summary["macro_f1"]
    >>> round(entry["mean"], 6), round(entry["std"], 6), entry["n"], entry["values"]
    (0.6, 0.141421, 2, [0.5, 0.7])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .report import write_cv_report

__all__ = ["aggregate", "fold_dir", "run_crossval"]


def fold_dir(out: Path, k: int) -> Path:
    """The run folder of fold ``k``."""
    return out / f"fold_{k}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _spread(values: list[Any]) -> dict[str, Any]:
    """Mean, sample standard deviation (``ddof = 1``) and count of the defined values."""
    defined = [float(v) for v in values if v is not None and np.isfinite(v)]
    return {
        "mean": float(np.mean(defined)) if defined else None,
        "std": float(np.std(defined, ddof=1)) if len(defined) > 1 else None,
        "n": len(defined),
        "values": [None if v is None else float(v) for v in values],
    }


def aggregate(per_fold: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over folds of every scalar of the folds' metrics, in the same tree.

    A number (or ``None``, where a fold has it undefined) becomes ``{"mean", "std", "n",
    "values"}`` over the folds that define it: ``std`` is the sample standard deviation,
    ``None`` with fewer than two values. A dict is aggregated key by key; anything else
    (names, lists) is kept when all folds agree and listed per fold otherwise. The
    ``confusion_matrix`` is summed: each image is tested in exactly one fold, so the sum
    is the confusion matrix of the whole set.

    Args:
        per_fold: one metrics dict per fold (see :func:`.evaluate.evaluate`).

    Returns:
        The aggregate.

    Raises:
        ValueError: on an empty list.
    """
    if not per_fold:
        raise ValueError("aggregate needs the metrics of at least one fold")
    result: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for metrics in per_fold for k in metrics))
    for key in keys:
        values = [metrics.get(key) for metrics in per_fold]
        present = [v for v in values if v is not None]
        if key == "confusion_matrix":
            result[key] = np.sum(np.asarray(values), axis=0).tolist()
        elif present and all(isinstance(v, dict) for v in present):
            result[key] = aggregate([v if v is not None else {} for v in values])
        elif all(v is None or _is_number(v) for v in values):
            result[key] = _spread(values)
        elif all(v == values[0] for v in values):
            result[key] = values[0]
        else:
            result[key] = {"values": values}
    return result


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that change what a fold computes (not the runtime's, nor ``fold``)."""
    ignored = {"device", "threads", "num_workers", "resume", "stop_after", "progress", "fold"}
    return {k: v for k, v in settings.items() if k not in ignored}


def _finished(cfg: Config, folder: Path) -> dict[str, Any] | None:
    """The metrics a finished fold of this run left in ``folder`` (``None``: none or another run's)."""
    metrics, settings = folder / "metrics.json", folder / "config.json"
    if not (metrics.is_file() and settings.is_file()):
        return None
    if _comparable(json.loads(settings.read_text())) != _comparable(cfg.to_dict()):
        return None
    loaded: dict[str, Any] = json.loads(metrics.read_text())
    return loaded


def run_crossval(cfg: Config, out: Path, stage: str = "all") -> dict[str, Any] | None:
    """Run ``stage`` of every fold of ``cfg.folds`` (or of ``cfg.fold`` alone), then aggregate.

    Returns:
        The aggregate metrics (also in ``out/metrics.json``) when every fold has finished
        metrics of this run, else ``None`` (an earlier stage only, a stopped stage,
        other ranks, or ``cfg.fold`` with other folds still to run).

    Raises:
        ValueError: when ``cfg.folds`` is 0.
        RunMismatch: when a fold's checkpoint belongs to another run.
    """
    from .run import run_pipeline  # run.py imports this module

    if cfg.folds < 2:
        raise ValueError(f"run_crossval needs setting 'folds' >= 2, got {cfg.folds}")
    chosen = range(cfg.folds) if cfg.fold is None else [cfg.fold]
    results: dict[int, dict[str, Any] | None] = {}
    for k in chosen:
        results[k] = run_pipeline(cfg.replace(fold=k), fold_dir(out, k), stage)
    if stage not in ("all", "evaluate") or int(os.environ.get("RANK", "0")) != 0:
        return None
    per_fold = []
    for k in range(cfg.folds):
        metrics = results.get(k) or _finished(cfg, fold_dir(out, k))
        if metrics is None:
            print(f"fold {k} has no finished metrics in {fold_dir(out, k)}: no aggregate yet")
            return None
        per_fold.append(metrics)
    summary = {
        "folds": cfg.folds,
        "fold_dirs": [fold_dir(out, k).name for k in range(cfg.folds)],
        **aggregate(per_fold),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.replace(fold=None).to_dict(), indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_cv_report(cfg, summary, out / "report.md")
    return summary
