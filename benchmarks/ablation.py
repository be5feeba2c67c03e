"""Ablation of the Deep Pneumonia pipeline on the phantom with shortcut markers.

Five cumulative variants, each over several seeds: the cross-entropy baseline, then
+ class-balanced loss, + SSL pre-training, + mask-guided attention (with guidance
loss), + contrastive feature regulariser (the full method). The phantom's training
images carry a class-correlated corner marker, the test images an uncorrelated one,
so a model that reads the marker instead of the lesion is punished on the test split.
The validation split, on which fine-tuning picks its epoch, is built like the test
split (marker uncorrelated: ``val_marker_correlation=0``). By default (:data:`EVIDENCE`)
each seed's phantom holds 420 training, 420 validation and 2000 test images (all from
disjoint generator indices), at 32 px with a ResNet-10 trunk so that five seeds fit in
about 20 minutes on two CPU cores. Reported on the test split, mean ± std over seeds:
macro-F1, recall of the rarest class, balanced accuracy, and the fraction of the
map's mass inside the lesion (the attention map where there is one, else the class
activation map; the CAM column is comparable across all variants). The variants that
pre-train share one pre-training run per seed. Then the full pipeline once on the
real radiographs (``../shared/data/hannover-covid-cxr``, skipped when absent).

Prints a Markdown table::

    python benchmarks/ablation.py --seeds 10 11 12 13 14 --out /tmp/ablation
    python benchmarks/ablation.py --quick --out /tmp/ablation_quick   # CI-sized check
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.deep_pneumonia import run
from examples.deep_pneumonia.config import Config, parse_assignment, preset
from examples.deep_pneumonia.data import DataSplits
from examples.deep_pneumonia.pretrain import CHECKPOINT
from examples.deep_pneumonia.run import run_pipeline


def _built_once(build: Callable[..., DataSplits]) -> Callable[..., DataSplits]:
    """``build`` remembering its last result: the variants of a seed read the same data,
    so each seed's phantom is rendered once, not once per variant."""
    last: dict[str, DataSplits] = {}

    def cached(source: str, **options: Any) -> DataSplits:
        key = json.dumps([source, options], sort_keys=True, default=str)
        if key not in last:
            last.clear()
            last[key] = build(source, **options)
        return last[key]

    return cached


run.build_datasets = _built_once(run.build_datasets)

HANNOVER = Path(__file__).resolve().parents[2] / "shared" / "data" / "hannover-covid-cxr"

VARIANTS: dict[str, dict[str, bool]] = {
    "cross-entropy baseline": {
        "pretrain": False,
        "class_balanced": False,
        "attention": False,
        "regularizer": False,
    },
    "+ class-balanced loss": {
        "pretrain": False,
        "class_balanced": True,
        "attention": False,
        "regularizer": False,
    },
    "+ SSL pre-training": {
        "pretrain": True,
        "class_balanced": True,
        "attention": False,
        "regularizer": False,
    },
    "+ mask-guided attention": {
        "pretrain": True,
        "class_balanced": True,
        "attention": True,
        "regularizer": False,
    },
    "+ contrastive regulariser (full)": {
        "pretrain": True,
        "class_balanced": True,
        "attention": True,
        "regularizer": True,
    },
}

# The evidence setting: >= 2000 fresh test images, validation built like the test split.
EVIDENCE: dict[str, Any] = {
    "shortcut_markers": True,
    "phantom_images": 2840,
    "data_options": {"split_fractions": [0.148, 0.148, 0.704], "val_marker_correlation": 0.0},
    "image_size": 32,
    "arch": "resnet10",
    "progress": False,
}
QUICK: dict[str, Any] = {
    "phantom_images": 200,
    "data_options": {"split_fractions": [0.5, 0.2, 0.3], "val_marker_correlation": 0.0},
    "pretrain_epochs": 1,
    "pretrain_batch_size": 16,
    "epochs": 1,
    "batch_size": 16,
}

COLUMNS = ("macro-F1", "minority recall", "balanced acc.", "lesion mass (attn/CAM)", "CAM mass")


def _row(metrics: dict[str, Any]) -> tuple[float, ...]:
    lesion = metrics["lesion_attention"]
    attention = lesion["attention_mass"]
    return (
        metrics["macro_f1"],
        metrics["minority_recall"],
        metrics["balanced_accuracy"],
        lesion["cam_mass"] if attention is None else attention,
        lesion["cam_mass"],
    )


def _summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def run_ablation(
    base: Config, seeds: list[int], out: Path, variants: list[int]
) -> dict[str, list[tuple[float, ...]]]:
    """The chosen variants (indices into :data:`VARIANTS`) for every seed; metric rows."""
    chosen = [(i, name, s) for i, (name, s) in enumerate(VARIANTS.items()) if i in variants]
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for _, name, _ in chosen}
    for seed in seeds:
        shared = out / f"seed{seed}" / "pretrained"
        run_pipeline(base.replace(seed=seed), shared, stage="pretrain")
        for index, name, switches in chosen:
            folder = out / f"seed{seed}" / f"variant{index}"
            shutil.rmtree(folder, ignore_errors=True)
            if switches["pretrain"]:
                (folder / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(shared / CHECKPOINT, folder / CHECKPOINT)
            start = time.perf_counter()
            cfg = base.replace(seed=seed, resume=switches["pretrain"], **switches)
            metrics = run_pipeline(cfg, folder)
            assert metrics is not None
            rows[name].append(_row(metrics))
            print(
                f"seed {seed} | {name}: macro-F1 {metrics['macro_f1']:.3f} "
                f"({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    return rows


def markdown(rows: dict[str, list[tuple[float, ...]]]) -> str:
    """The ablation table, mean ± std over seeds."""
    lines = [
        "| variant | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name, runs in rows.items():
        cells = [_summary([run[i] for run in runs]) for i in range(len(COLUMNS))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14])
    parser.add_argument("--quick", action="store_true", help="a CI-sized check: " + str(QUICK))
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--no-real", action="store_true", help="skip the real radiographs")
    parser.add_argument(
        "--variants",
        type=int,
        nargs="+",
        default=list(range(len(VARIANTS))),
        help="indices of the variants to run (default: all five)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting of the example, as run.py's --set (e.g. epochs=6, attention_residual=true)",
    )
    args = parser.parse_args()
    try:
        changes = dict(parse_assignment(item) for item in args.set)
        quick = QUICK if args.quick else {}
        base = preset("quick", **{**EVIDENCE, **quick, **changes})
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    if args.quick:
        args.seeds, args.no_real = args.seeds[:1], True
    start = time.perf_counter()
    rows = run_ablation(base, args.seeds, args.out, args.variants)
    print(f"\nPhantom with shortcut markers, seeds {args.seeds}, test split, mean ± std:\n")
    print(markdown(rows))
    if args.no_real or not (HANNOVER / "data.csv").is_file():
        print(f"\nReal radiographs skipped (not found at {HANNOVER} or --no-real).")
    else:
        real = base.replace(
            data="hannover", shortcut_markers=False, data_options={"root": str(HANNOVER)}
        )
        metrics = run_pipeline(real, args.out / "hannover")
        assert metrics is not None
        baseline = metrics["majority_baseline"]
        print(
            f"\nReal radiographs (Hannover, task 'icu', full pipeline, seed {real.seed}): "
            f"macro-F1 {metrics['macro_f1']:.3f} (majority baseline {baseline['macro_f1']:.3f}), "
            f"balanced accuracy {metrics['balanced_accuracy']:.3f}, recall of "
            f"{metrics['minority_class']} {metrics['minority_recall']:.3f}, "
            f"macro ROC AUC {metrics['macro_roc_auc']}, {metrics['num_images']} test images."
        )
    print(f"\nTotal time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
