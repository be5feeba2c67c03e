"""Imbalance methods of the Deep Pneumonia example on the phantom and the real radiographs.

Phantom: for every seed, the example's data (600 phantom images of the given class
fractions, split 70/15/15) gives the training and validation splits; the test set is
a fresh one of ``--test-images`` images of the same phantom seed at generator indices
from 1,000,000 on (never drawn for training), with the class fractions 60/25/10/5
whatever the training imbalance (so the same images score every training imbalance,
and 5 % of them are COVID-19). Each method fine-tunes the quick default (no
pre-training, as :mod:`benchmarks.collapse_rate`) from the same seed: CE, CB (the
default), the logit-adjusted loss (tau 1), LDAM-DRW, and CE with the post-hoc logit
adjustment at tau 1 and at the tau chosen on the validation split (no retraining).
The balanced softmax is the logit-adjusted loss at tau 1 (the same function of the
logits; ``--methods`` adds it as its own run). Per method: COVID-19 recall, balanced
accuracy, macro-F1 (mean ± std over seeds), and the paired difference to CE with its
95 % t interval over seeds.

Real data: the Hannover ICU task (``--data hannover``; ICU admission within 7 days;
patient-grouped split; no lesion masks, so without attention and regulariser), each
seed its own split.

    python benchmarks/bench_imbalance.py              # seeds 11-15, both imbalances, Hannover
    python benchmarks/bench_imbalance.py --quick      # 2 seeds, 60/25/10/5 only, 500 test images
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.deep_pneumonia.config import Config, parse_assignment, preset
from examples.deep_pneumonia.data import DataSplits, build_datasets
from examples.deep_pneumonia.evaluate import Predictions, operating_point, predict
from examples.deep_pneumonia.finetune import finetune
from examples.deep_pneumonia.phantom import PhantomDataset, phantom_labels
from examples.deep_pneumonia.training import seed_everything, setup_runtime, teardown

HANNOVER = Path(__file__).resolve().parents[2] / "shared" / "data" / "hannover-covid-cxr"
IMBALANCES = {"60/25/10/5": (0.60, 0.25, 0.10, 0.05), "80/15/4/1": (0.80, 0.15, 0.04, 0.01)}
TEST_FRACTIONS = (0.60, 0.25, 0.10, 0.05)
FRESH_INDEX = 1_000_000
METHODS = ("ce", "cb", "logit_adjusted", "ldam_drw")
COLUMNS = ("minority recall", "balanced acc.", "macro-F1")


def fresh_test_set(seed: int, num_images: int, image_size: int) -> PhantomDataset:
    """``num_images`` phantom images of ``seed`` that no training split draws."""
    labels = phantom_labels(num_images, TEST_FRACTIONS, seed=seed + FRESH_INDEX)
    indices = range(FRESH_INDEX, FRESH_INDEX + num_images)
    return PhantomDataset(indices, labels, seed=seed, image_size=image_size)


COLLAPSE = 0.95  # a run predicting one class for this share of the test images collapsed

Scores = tuple[float, float, float, float]


def scores(summary: dict[str, Any]) -> Scores:
    """``COLUMNS`` of a decision summary, and the share of its most predicted class."""
    return (
        summary["minority_recall"],
        summary["balanced_accuracy"],
        summary["macro_f1"],
        summary["dominant_share"],
    )


def run_methods(
    base: Config, splits: DataSplits, test: Any, methods: Sequence[str]
) -> dict[str, Scores]:
    """Fine-tune each method on ``splits``; its scores on ``test`` (and CE's post-hoc ones)."""
    rows: dict[str, Scores] = {}
    counts = splits.train.class_counts()
    for method in methods:
        cfg = base.replace(imbalance=method)
        rt = setup_runtime(cfg)
        try:
            with tempfile.TemporaryDirectory() as folder:
                net, _ = finetune(None, cfg, splits, rt, Path(folder))
            pred: Predictions = predict(net, test, rt, 256)
            val = predict(net, splits.val, rt, 256)
        finally:
            teardown(rt)
        point = operating_point(pred, splits.class_names, counts, val)
        rows[method] = scores(point["argmax"])
        if method == "ce":
            rows["ce + post-hoc (tau 1)"] = scores(point["tau_1"])
            rows["ce + post-hoc (tau on val.)"] = scores(point["tau_validation"])
    return rows


def summarise(runs: list[dict[str, Scores]]) -> list[str]:
    """Markdown rows: mean ± std of each column, then the paired difference to CE."""
    lines = [
        "| method | "
        + " | ".join(COLUMNS)
        + " | "
        + " | ".join(f"Δ {c} vs CE [95 % CI]" for c in COLUMNS)
        + " | collapsed |",
        "|---" * (2 * len(COLUMNS) + 2) + "|",
    ]
    for method in runs[0]:
        cells = []
        for i in range(len(COLUMNS)):
            values = [run[method][i] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        for i in range(len(COLUMNS)):
            diffs = np.array([run[method][i] - run["ce"][i] for run in runs])
            if method == "ce":
                cells.append("—")
                continue
            half = (
                stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs))
                if len(diffs) > 1
                else float("nan")
            )
            cells.append(
                f"{diffs.mean():+.3f} [{diffs.mean() - half:+.3f}, {diffs.mean() + half:+.3f}]"
            )
        collapsed = sum(run[method][3] >= COLLAPSE for run in runs)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {collapsed}/{len(runs)} |")
    return lines


def phantom_table(
    base: Config,
    name: str,
    seeds: list[int],
    tests: dict[int, PhantomDataset],
    methods: Sequence[str],
    clock: float,
) -> None:
    """Print the table of the phantom with training imbalance ``name``."""
    runs = []
    for seed in seeds:
        seed_everything(seed, "data")
        splits = build_datasets(
            "synthetic",
            image_size=base.image_size,
            seed=seed,
            num_images=base.phantom_images,
            class_fractions=IMBALANCES[name],
        )
        runs.append(run_methods(base.replace(seed=seed), splits, tests[seed], methods))
        progress(f"{name} seed {seed}, train counts {splits.train.class_counts()}", runs[-1], clock)
    counts = np.bincount(tests[seeds[0]].targets, minlength=4).tolist()
    print(
        f"\nPhantom, training imbalance {name} (train counts of seed {seeds[-1]}:"
        f" {splits.train.class_counts()}), seeds {seeds}, {len(tests[seeds[0]])} fresh"
        f" test images per seed ({counts} per class); minority = covid19:\n"
    )
    print("\n".join(summarise(runs)), flush=True)


def hannover_table(base: Config, seeds: list[int], methods: Sequence[str], clock: float) -> None:
    """Print the table of the Hannover ICU task (no masks: no attention, no regulariser)."""
    real = base.replace(
        data="hannover", data_options={"root": str(HANNOVER)}, attention=False, regularizer=False
    )
    runs = []
    for seed in seeds:
        cfg = real.replace(seed=seed)
        seed_everything(seed, "data")
        splits = build_datasets(cfg.data, image_size=cfg.image_size, seed=seed, **cfg.data_kwargs())
        runs.append(run_methods(cfg, splits, splits.test, methods))
        progress(f"hannover seed {seed}", runs[-1], clock)
    print(
        f"\nHannover ICU task, no attention/regulariser, seeds {seeds} (each its own"
        f" patient-grouped split; test images of the last: {np.bincount(splits.test.targets).tolist()}"
        f" {splits.class_names}); minority ="
        f" {splits.class_names[int(np.argmin(splits.train.class_counts()))]}:\n"
    )
    print("\n".join(summarise(runs)), flush=True)


def progress(what: str, rows: dict[str, Scores], clock: float) -> None:
    """One line per seed on stderr: minority recall / balanced accuracy of each method."""
    cells = ", ".join(f"{m} {r[0]:.2f}/{r[1]:.2f}" for m, r in rows.items())
    print(f"{what}: {cells} ({time.perf_counter() - clock:.0f} s)", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, one imbalance, small test")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--hannover-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--no-real", action="store_true", help="skip the real radiographs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.test_images, args.no_real = args.seeds[:2], 500, True
    names = list(IMBALANCES)[:1] if args.quick else list(IMBALANCES)
    changes = dict(parse_assignment(item) for item in args.set)
    base = preset("quick", **{"pretrain": False, "progress": False, "device": "cpu", **changes})
    clock = time.perf_counter()
    tests = {seed: fresh_test_set(seed, args.test_images, base.image_size) for seed in args.seeds}
    phantom_table(base, names[0], args.seeds, tests, args.methods, clock)
    if not args.no_real and (HANNOVER / "data.csv").is_file():
        hannover_table(base, args.hannover_seeds, args.methods, clock)
    for name in names[1:]:
        phantom_table(base, name, args.seeds, tests, args.methods, clock)
    print(f"\nTotal time {time.perf_counter() - clock:.0f} s.")


if __name__ == "__main__":
    main()
