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
seed its own split; and covid-cxr-segmentations' aetiology task (radiologists' lesion
masks; covid19 65, viral 10, bacterial 9, fungal 11 images), patient-grouped 5-fold
cross-validation per seed with the ``covid_cxr`` preset (soft residual attention,
guidance, regulariser; smaller: width 8, 25 epochs; no pre-training), every method on
every fold, the test predictions of the 5 folds pooled per seed (each image tested
once), so a seed is one paired observation. Each table is skipped with a message when
its data folder is absent.

    python benchmarks/bench_imbalance.py              # seeds 11-15, every table
    python benchmarks/bench_imbalance.py --tables phantom-60 phantom-80   # one process each
    python benchmarks/bench_imbalance.py --quick      # 2 seeds, 60/25/10/5 only, 500 test images

``--json PATH`` also writes every run's scores; ``--compare A.json:cb B.json`` (no
training) pairs every row of B with A's row ``cb`` seed by seed, e.g. two gates:

    python benchmarks/bench_imbalance.py --tables phantom-60 --json hard.json
    python benchmarks/bench_imbalance.py --tables phantom-60 --json soft.json --set attention_mode=soft ...
    python benchmarks/bench_imbalance.py --compare hard.json:cb soft.json
"""

from __future__ import annotations

import argparse
import json
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
from examples.deep_pneumonia.evaluate import Predictions, decision_rules, decision_summary, predict
from examples.deep_pneumonia.finetune import finetune
from examples.deep_pneumonia.phantom import PhantomDataset, phantom_labels
from examples.deep_pneumonia.training import seed_everything, setup_runtime, teardown

HANNOVER = Path(__file__).resolve().parents[2] / "shared" / "data" / "hannover-covid-cxr"
COVID_CXR = Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-cxr-segmentations"
# The covid_cxr preset made smaller for 3 seeds x 5 folds x every method on 2 CPU cores.
COVID_CXR_BENCH = {"width": 8, "epochs": 25}
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
# Per row of a table (a method, or CE with a decision rule): test labels and decisions.
Decisions = dict[str, tuple[np.ndarray, np.ndarray]]
RULES = {"tau_1": "ce + post-hoc (tau 1)", "tau_validation": "ce + post-hoc (tau on val.)"}


def scores(
    labels: np.ndarray, decisions: np.ndarray, class_names: list[str], minority: int
) -> Scores:
    """``COLUMNS`` of ``decisions`` on ``labels``, and the share of the most predicted class."""
    summary = decision_summary(labels, decisions, class_names, minority)
    return (
        summary["minority_recall"],
        summary["balanced_accuracy"],
        summary["macro_f1"],
        summary["dominant_share"],
    )


def run_methods(base: Config, splits: DataSplits, test: Any, methods: Sequence[str]) -> Decisions:
    """Fine-tune each method on ``splits``; its decisions on ``test`` (and CE's post-hoc ones)."""
    rows: Decisions = {}
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
        rules = decision_rules(pred, counts, val)
        rows[method] = (pred.labels, rules["argmax"].decisions)
        if method == "ce":
            rows.update({row: (pred.labels, rules[rule].decisions) for rule, row in RULES.items()})
    return rows


def score_rows(rows: Decisions, class_names: list[str], minority: int) -> dict[str, Scores]:
    """The scores of every row of ``rows``."""
    return {name: scores(*pair, class_names, minority) for name, pair in rows.items()}


def paired_cell(diffs: np.ndarray) -> str:
    """Mean of paired differences and its 95 % t interval over the seeds."""
    half = (
        stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs))
        if len(diffs) > 1
        else float("nan")
    )
    return f"{diffs.mean():+.3f} [{diffs.mean() - half:+.3f}, {diffs.mean() + half:+.3f}]"


def summarise(
    runs: list[dict[str, Scores]],
    reference: list[dict[str, Scores]] | None = None,
    row: str = "ce",
    label: str = "CE",
) -> list[str]:
    """Markdown rows: mean ± std of each column, then the paired difference to row ``row``
    of ``reference`` (by default, of ``runs`` themselves), seed by seed."""
    reference = runs if reference is None else reference
    if len(reference) != len(runs):
        raise ValueError(f"{len(runs)} runs against {len(reference)} reference runs")
    lines = [
        "| method | "
        + " | ".join(COLUMNS)
        + " | "
        + " | ".join(f"Δ {c} vs {label} [95 % CI]" for c in COLUMNS)
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
            if reference is runs and method == row:
                cells.append("—")
                continue
            diffs = np.array([run[method][i] - ref[row][i] for run, ref in zip(runs, reference)])
            cells.append(paired_cell(diffs))
        collapsed = sum(run[method][3] >= COLLAPSE for run in runs)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {collapsed}/{len(runs)} |")
    return lines


def compare(files: list[str]) -> None:
    """Print the runs of ``OTHER.json`` paired with one row of ``REFERENCE.json:ROW``.

    Both files come from ``--json`` runs of the same table and seeds (for example, two
    gates); the table is the first one both files hold.
    """
    reference_file, row = files[0].rsplit(":", 1) if ":" in files[0] else (files[0], "ce")
    other_file = files[1]
    first, second = (
        json.loads(Path(reference_file).read_text()),
        json.loads(Path(other_file).read_text()),
    )
    table = next(t for t in first if t != "columns" and t in second)
    if first[table]["seeds"] != second[table]["seeds"]:
        raise ValueError(f"seeds differ: {first[table]['seeds']} vs {second[table]['seeds']}")
    print(
        f"{table}, seeds {first[table]['seeds']}: {other_file} against {reference_file}, row {row!r}\n"
    )
    lines = summarise(second[table]["runs"], first[table]["runs"], row, f"reference {row}")
    print("\n".join(lines))


def phantom_table(
    base: Config,
    name: str,
    seeds: list[int],
    tests: dict[int, PhantomDataset],
    methods: Sequence[str],
    clock: float,
) -> list[dict[str, Scores]]:
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
        rows = run_methods(base.replace(seed=seed), splits, tests[seed], methods)
        runs.append(score_rows(rows, splits.class_names, minority=3))
        progress(f"{name} seed {seed}, train counts {splits.train.class_counts()}", runs[-1], clock)
    counts = np.bincount(tests[seeds[0]].targets, minlength=4).tolist()
    print(
        f"\nPhantom, training imbalance {name} (train counts of seed {seeds[-1]}:"
        f" {splits.train.class_counts()}), seeds {seeds}, {len(tests[seeds[0]])} fresh"
        f" test images per seed ({counts} per class); minority = covid19:\n"
    )
    print("\n".join(summarise(runs)), flush=True)
    return runs


def hannover_table(
    base: Config, seeds: list[int], methods: Sequence[str], clock: float
) -> list[dict[str, Scores]]:
    """Print the table of the Hannover ICU task (no masks: no attention, no regulariser)."""
    real = base.replace(
        data="hannover", data_options={"root": str(HANNOVER)}, attention=False, regularizer=False
    )
    runs = []
    for seed in seeds:
        cfg = real.replace(seed=seed)
        seed_everything(seed, "data")
        splits = build_datasets(cfg.data, image_size=cfg.image_size, seed=seed, **cfg.data_kwargs())
        minority = int(np.argmin(splits.train.class_counts()))
        rows = run_methods(cfg, splits, splits.test, methods)
        runs.append(score_rows(rows, splits.class_names, minority))
        progress(f"hannover seed {seed}", runs[-1], clock)
    print(
        f"\nHannover ICU task, no attention/regulariser, seeds {seeds} (each its own"
        f" patient-grouped split; test images of the last: {np.bincount(splits.test.targets).tolist()}"
        f" {splits.class_names}); minority = {splits.class_names[minority]}:\n"
    )
    print("\n".join(summarise(runs)), flush=True)
    return runs


def covid_cxr_table(
    base: Config, seeds: list[int], methods: Sequence[str], clock: float
) -> list[dict[str, Scores]]:
    """Print the cross-validated table of covid-cxr-segmentations' aetiology task.

    Per seed, every image is tested once over the patient-grouped folds; the scores are
    those of the pooled test predictions of all folds (a fold's test split holds one or
    two images of a rare class), so a seed is one paired observation.
    """
    real = preset(
        "covid_cxr",
        **{
            "pretrain": False,
            "progress": False,
            "device": "cpu",
            "data_options": {"root": str(COVID_CXR), "task": "aetiology"},
            **COVID_CXR_BENCH,
        },
    )
    runs = []
    for seed in seeds:
        pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for fold in range(real.folds):
            cfg = real.replace(seed=seed, fold=fold)
            splits = build_datasets(
                cfg.data, image_size=cfg.image_size, seed=seed, **cfg.data_kwargs()
            )
            for name, pair in run_methods(cfg, splits, splits.test, methods).items():
                pooled.setdefault(name, []).append(pair)
        rows = {
            name: (np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))
            for name, pairs in pooled.items()
        }
        # The folds' test splits together hold every image once.
        labels = next(iter(rows.values()))[0]
        totals = np.bincount(labels, minlength=len(splits.class_names)).tolist()
        minority = int(np.argmin(totals))
        runs.append(score_rows(rows, splits.class_names, minority))
        progress(f"covid-cxr seed {seed}", runs[-1], clock)
    print(
        f"\ncovid-cxr-segmentations, task aetiology ({dict(zip(splits.class_names, totals))}"
        f" images), {real.folds}-fold patient-grouped cross-validation, seeds {seeds}, test"
        f" predictions of all folds pooled per seed; minority = {splits.class_names[minority]};"
        f" settings: the covid_cxr preset without pre-training, {COVID_CXR_BENCH}:\n"
    )
    print("\n".join(summarise(runs)), flush=True)
    return runs


def progress(what: str, rows: dict[str, Scores], clock: float) -> None:
    """One line per seed on stderr: minority recall / balanced accuracy of each method."""
    cells = ", ".join(f"{m} {r[0]:.2f}/{r[1]:.2f}" for m, r in rows.items())
    print(f"{what}: {cells} ({time.perf_counter() - clock:.0f} s)", file=sys.stderr, flush=True)


TABLES = ("phantom-60", "hannover", "phantom-80", "covid-cxr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, one imbalance, small test")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--hannover-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--covid-cxr-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write every run's scores here")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("REFERENCE.json[:ROW]", "OTHER.json"),
        help="no training: pair OTHER's rows with REFERENCE's row ROW (default ce), seed by seed",
    )
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return
    if args.quick:
        args.seeds, args.test_images, args.tables = args.seeds[:2], 500, ["phantom-60"]
    changes = dict(parse_assignment(item) for item in args.set)
    base = preset("quick", **{"pretrain": False, "progress": False, "device": "cpu", **changes})
    clock = time.perf_counter()
    tests: dict[int, PhantomDataset] = {}
    results: dict[str, Any] = {}
    for table in args.tables:
        if table.startswith("phantom"):
            if not tests:
                tests = {
                    s: fresh_test_set(s, args.test_images, base.image_size) for s in args.seeds
                }
            name = "60/25/10/5" if table == "phantom-60" else "80/15/4/1"
            runs = phantom_table(base, name, args.seeds, tests, args.methods, clock)
            results[table] = {"seeds": args.seeds, "runs": runs}
        elif table == "hannover":
            if (HANNOVER / "data.csv").is_file():
                runs = hannover_table(base, args.hannover_seeds, args.methods, clock)
                results[table] = {"seeds": args.hannover_seeds, "runs": runs}
            else:
                print(f"\nHannover table skipped: {HANNOVER} is absent.")
        elif (COVID_CXR / "README.md").is_file():
            runs = covid_cxr_table(base, args.covid_cxr_seeds, args.methods, clock)
            results[table] = {"seeds": args.covid_cxr_seeds, "runs": runs}
        else:
            print(f"\ncovid-cxr-segmentations table skipped: {COVID_CXR} is absent.")
    if args.json is not None:
        args.json.write_text(json.dumps({"columns": [*COLUMNS, "dominant share"], **results}))
    print(f"\nTotal time {time.perf_counter() - clock:.0f} s.")


if __name__ == "__main__":
    main()
