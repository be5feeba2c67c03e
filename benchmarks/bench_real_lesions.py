"""The method on real radiologists' lesion masks: cross-validated ablation on covid-cxr-segmentations.

Data: ``../shared/data/covid-cxr-segmentations`` (100 radiographs of 73 patients, task
``covid``: non-COVID 35 vs COVID-19 65), patient-grouped stratified 5-fold
cross-validation (:func:`examples.deep_pneumonia.splits.patient_kfold`, the folds
re-drawn for every seed), the ``covid_cxr`` preset made smaller for the table
(width 8, 25 fine-tuning epochs). For every seed and fold, one SSL pre-training on the
fold's own training images (never its test images) is shared by the variants that
pre-train (a variant changes fine-tuning settings only, so this is exactly what each
would pre-train itself). Variants, each one change from the full method:

- full method: SSL pre-training, class-balanced loss, soft residual attention with the
  guidance loss, contrastive regulariser;
- attention without guidance (``guidance_weight = 0``): the same attention module,
  trained by the classification loss alone (the *unguided model* of the localisation
  comparison);
- no attention (no module, no guidance loss; the CAM is the only map);
- no regulariser; cross-entropy instead of the class-balanced loss; no pre-training;
- the hard gate of the library's defaults (start 0.05, teacher forcing 0.5);
- with ``--hannover``: pre-training on the fold's training images and the 243 Hannover
  radiographs (another hospital, no masks, never a test image of this set).

Per variant, mean ± std over folds × seeds on the test folds: macro-F1, balanced
accuracy, recall of non-COVID (the minority class); the attention map's and the CAM's
mass inside the lesion and on devices, with the uniform map's (the region's area); and
paired with the unguided model: the guided attention's lesion-mass gain. Prints a
Markdown table and writes every run's numbers to ``OUT/results.json``::

    python benchmarks/bench_real_lesions.py                 # 5 folds x 3 seeds, ~20 min
    python benchmarks/bench_real_lesions.py --quick         # CI-sized check, ~1 min
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.deep_pneumonia.config import Config, parse_assignment, preset
from examples.deep_pneumonia.covid_cxr import DEFAULT_COVID_CXR_DIR
from examples.deep_pneumonia.data import DataSplits, build_datasets
from examples.deep_pneumonia.dataset import XrayDataset
from examples.deep_pneumonia.evaluate import evaluate
from examples.deep_pneumonia.finetune import finetune
from examples.deep_pneumonia.folder import ImageFolderDataset
from examples.deep_pneumonia.hannover import DEFAULT_HANNOVER_DIR, hannover_records
from examples.deep_pneumonia.pretrain import pretrain
from examples.deep_pneumonia.training import setup_runtime, teardown

HARD_GATE = {
    "attention_mode": "hard",
    "attention_residual": False,
    "teacher_forcing": 0.5,
    "initial_attention": 0.05,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "full method": {},
    "attention without guidance": {"guidance_weight": 0.0},
    "no attention": {"attention": False},
    "no regulariser": {"regularizer": False},
    "cross-entropy": {"class_balanced": False},
    "no SSL pre-training": {"pretrain": False},
    "hard gate (library defaults)": HARD_GATE,
}
HANNOVER_VARIANT = "SSL on + Hannover images"
BENCH = {"width": 8, "epochs": 25, "pretrain_epochs": 10}
QUICK = {"image_size": 32, "width": 8, "epochs": 2, "pretrain_epochs": 1, "folds": 2}


class _Joined(XrayDataset):
    """Two data sets as one (for pre-training: the labels are not used)."""

    def __init__(self, first: XrayDataset, second: XrayDataset) -> None:
        super().__init__(
            labels=[0] * (len(first) + len(second)),
            class_names=["any"],
            patient_ids=list(first.patient_ids) + list(second.patient_ids),
            image_ids=list(first.image_ids) + list(second.image_ids),
        )
        self.parts = (first, second)

    def load(self, index: int) -> Any:
        first, second = self.parts
        return first.load(index) if index < len(first) else second.load(index - len(first))


def _run_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of one run that the table reports (NaN where undefined)."""
    loc = metrics["localisation"]
    attention = loc["attention"] or {}
    values = {
        "macro_f1": metrics["macro_f1"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "minority_recall": metrics["minority_recall"],
        "attention_lesion_mass": attention.get("lesion_mass"),
        "attention_pointing": attention.get("pointing"),
        "attention_device_mass": attention.get("device_mass"),
        "attention_outside_lung_mass": attention.get("outside_lung_mass"),
        "cam_lesion_mass": loc["cam"]["lesion_mass"],
        "cam_device_mass": loc["cam"]["device_mass"],
        "uniform_lesion_mass": loc["uniform"]["lesion_mass"],
        "uniform_device_mass": loc["uniform"]["device_mass"],
        "uniform_outside_lung_mass": loc["uniform"]["outside_lung_mass"],
        "test_images": metrics["num_images"],
    }
    return {k: math.nan if v is None else float(v) for k, v in values.items()}


def run_benchmark(
    base: Config, seeds: list[int], variants: dict[str, dict[str, Any]], out: Path, hannover: bool
) -> list[dict[str, Any]]:
    """Every variant on every fold and seed; one record per run."""
    rt = setup_runtime(base)
    extra = None
    if hannover:
        records, names = hannover_records(DEFAULT_HANNOVER_DIR)
        extra = ImageFolderDataset(records, names, image_size=base.image_size, cache=True)
    runs: list[dict[str, Any]] = []
    try:
        for seed in seeds:
            for fold in range(base.folds):
                cfg = base.replace(seed=seed, fold=fold)
                splits = build_datasets(
                    cfg.data, image_size=cfg.image_size, seed=seed, **cfg.data_kwargs()
                )
                folder = out / f"seed{seed}" / f"fold{fold}"
                shutil.rmtree(folder, ignore_errors=True)
                backbones = {"own": pretrain(cfg, splits, rt, folder / "pretrain")[0]}
                if extra is not None:
                    joined = DataSplits(
                        _Joined(splits.train, extra), splits.val, splits.test, splits.class_names
                    )
                    backbones["hannover"] = pretrain(cfg, joined, rt, folder / "hannover")[0]
                for name, changes in variants.items():
                    start = time.perf_counter()
                    source = changes.get("_pretrain_on", "own")
                    variant = cfg.replace(**{k: v for k, v in changes.items() if k[0] != "_"})
                    backbone = backbones[source] if variant.pretrain else None
                    net, _ = finetune(backbone, variant, splits, rt, folder / f"v{len(runs)}")
                    metrics = evaluate(
                        net, splits.test, splits.train.class_counts(), rt, variant.batch_size
                    )
                    runs.append(
                        {"variant": name, "seed": seed, "fold": fold, **_run_metrics(metrics)}
                    )
                    print(
                        f"seed {seed} fold {fold} | {name}: macro-F1 {metrics['macro_f1']:.3f}"
                        f" ({time.perf_counter() - start:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        teardown(rt)
    return runs


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _summary(values: list[float]) -> str:
    defined = _finite(values)
    if not defined:
        return "n/a"
    spread = statistics.stdev(defined) if len(defined) > 1 else 0.0
    suffix = "" if len(defined) == len(values) else f" (n={len(defined)})"
    return f"{statistics.mean(defined):.3f} ± {spread:.3f}{suffix}"


CLASSIFICATION = (
    ("macro-F1", "macro_f1"),
    ("balanced acc.", "balanced_accuracy"),
    ("non-COVID recall", "minority_recall"),
)
LOCALISATION = (
    ("attention lesion mass", "attention_lesion_mass"),
    ("CAM lesion mass", "cam_lesion_mass"),
    ("uniform (lesion area)", "uniform_lesion_mass"),
    ("attention pointing", "attention_pointing"),
    ("attention device mass", "attention_device_mass"),
    ("CAM device mass", "cam_device_mass"),
    ("uniform (device area)", "uniform_device_mass"),
)


def _table(runs: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> list[str]:
    names = list(dict.fromkeys(r["variant"] for r in runs))
    lines = [
        "| variant | " + " | ".join(label for label, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name in names:
        rows = [r for r in runs if r["variant"] == name]
        cells = [_summary([r[key] for r in rows]) for _, key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _paired(runs: list[dict[str, Any]], key: str, first: str, second: str) -> str:
    """``first - second`` of ``key`` over the (seed, fold) pairs both ran: mean ± std, wins."""
    by = {(r["variant"], r["seed"], r["fold"]): r[key] for r in runs}
    pairs = [
        by[(first, s, f)] - by[(second, s, f)]
        for (v, s, f) in by
        if v == first and (second, s, f) in by
    ]
    pairs = _finite(pairs)
    if not pairs:
        return f"{key}: {first} − {second}: n/a"
    wins = sum(d > 0 for d in pairs)
    return (
        f"{key}: {first} − {second} = {_summary(pairs)} over {len(pairs)} fold×seed pairs"
        f" (> 0 in {wins})"
    )


def markdown(runs: list[dict[str, Any]]) -> str:
    """The classification and localisation tables and the paired comparisons."""
    names = set(r["variant"] for r in runs)
    paired = [
        _paired(runs, key, "full method", other)
        for key, other in (
            ("attention_lesion_mass", "attention without guidance"),
            ("attention_device_mass", "attention without guidance"),
            ("cam_lesion_mass", "no attention"),
            ("macro_f1", "attention without guidance"),
            ("macro_f1", "no attention"),
            ("macro_f1", "no regulariser"),
            ("macro_f1", "cross-entropy"),
            ("macro_f1", "no SSL pre-training"),
            ("macro_f1", HANNOVER_VARIANT),
        )
        if other in names and "full method" in names
    ]
    full = [r for r in runs if r["variant"] == "full method"]
    guided_vs_uniform = _paired(
        [
            *full,
            *({**r, "variant": "uniform", "attention_lesion_mass": r["uniform_lesion_mass"]}
              for r in full),
        ],
        "attention_lesion_mass",
        "full method",
        "uniform",
    )  # fmt: skip
    return "\n".join(
        [
            *_table(runs, CLASSIFICATION),
            "",
            *_table(runs, LOCALISATION),
            "",
            *(f"- {line}" for line in [guided_vs_uniform, *paired]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_real_lesions"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 folds, 2 variants, tiny")
    parser.add_argument("--hannover", action="store_true", help="also pre-train on + Hannover")
    parser.add_argument(
        "--variants", nargs="+", default=None, help=f"names of variants (default: all of {list(VARIANTS)})"
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any setting, as run.py's"
    )
    args = parser.parse_args()
    root = DEFAULT_COVID_CXR_DIR
    if not (root / "structure.csv").is_file():
        raise SystemExit(f"covid-cxr-segmentations not found at {root}: nothing to benchmark")
    try:
        changes = {**(QUICK if args.quick else BENCH)}
        changes.update(dict(parse_assignment(item) for item in args.set))
        base = preset("covid_cxr", **changes)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    seeds = args.seeds[:1] if args.quick else args.seeds
    chosen = args.variants or (["full method", "attention without guidance"] if args.quick else list(VARIANTS))  # fmt: skip
    unknown = sorted(set(chosen) - set(VARIANTS) - {HANNOVER_VARIANT})
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; the variants are {list(VARIANTS)}")
    variants = {name: VARIANTS[name] for name in chosen if name in VARIANTS}
    if args.hannover:
        variants[HANNOVER_VARIANT] = {"_pretrain_on": "hannover"}
    start = time.perf_counter()
    runs = run_benchmark(base, seeds, variants, args.out, args.hannover)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(runs, indent=1) + "\n")
    sizes = sorted({(r["seed"], r["fold"], int(r["test_images"])) for r in runs})
    print(
        f"\ncovid-cxr-segmentations, task covid, {base.folds} folds x seeds {seeds}, image size"
        f" {base.image_size}, {base.arch} width {base.width}, {base.pretrain_epochs} pre-training +"
        f" {base.epochs} fine-tuning epochs; test images per (seed, fold): {sizes}; mean ± std over"
        " folds x seeds:\n"
    )
    print(markdown(runs))
    print(f"\nTotal time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
