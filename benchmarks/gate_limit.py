"""Where the minority class is lost: the hard gate's threshold at test time, per class.

With the example's hard, non-residual gate :math:`f \\cdot \\mathbb{1}[a \\ge \\theta]`, an
image whose attention map stays below :math:`\\theta` everywhere has all its attended
features zero, so every such image gets the same logits and no loss or decision-rule
correction can separate them. This benchmark measures how many test images of each
class end up there, and what moving the threshold at test time (no retraining) does.

Per seed (11-15 by default, the seeds of ``bench_imbalance.py``): the quick default
(no pre-training, trained at :math:`\\theta = 0.3`) is fine-tuned on the phantom of that
seed (600 images at 60/25/10/5), then evaluated on the same fresh test set as
``bench_imbalance.py`` (2000 images at generator indices from 1,000,000; 100 COVID-19)
with the gate's threshold set to each value of ``--thresholds``. Per threshold: the
share of each class's test images whose gate is closed, each class's recall, balanced
accuracy and macro-F1, mean ± std over seeds::

    python benchmarks/gate_limit.py                      # 5 seeds, ~3 min per seed
    python benchmarks/gate_limit.py --seeds 11 --test-images 500
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_imbalance import fresh_test_set

from examples.deep_pneumonia.config import parse_assignment, preset
from examples.deep_pneumonia.data import build_datasets
from examples.deep_pneumonia.evaluate import decision_summary, predict
from examples.deep_pneumonia.finetune import finetune
from examples.deep_pneumonia.training import seed_everything, setup_runtime


def one_seed(seed: int, thresholds: list[float], test_images: int, changes: dict) -> dict:
    """Per threshold: closed share and recall per class, balanced accuracy, macro-F1."""
    cfg = preset(
        "quick", **{"pretrain": False, "progress": False, "device": "cpu", "seed": seed, **changes}
    )
    rt = setup_runtime(cfg)
    seed_everything(seed, "data")
    splits = build_datasets(cfg.data, image_size=cfg.image_size, seed=seed, **cfg.data_kwargs())
    test = fresh_test_set(seed, test_images, cfg.image_size)
    with tempfile.TemporaryDirectory() as folder:
        net, _ = finetune(None, cfg, splits, rt, Path(folder))
    assert net.attention is not None
    rows = {}
    for theta in thresholds:
        net.attention.threshold = theta
        pred = predict(net, test, rt, 256)
        assert pred.gate_closed is not None
        summary = decision_summary(pred.labels, pred.predicted, splits.class_names, minority=3)
        rows[theta] = {
            "closed": [float(pred.gate_closed[pred.labels == c].mean()) for c in range(4)],
            "recall": list(summary["recall"].values()),
            "balanced_accuracy": summary["balanced_accuracy"],
            "macro_f1": summary["macro_f1"],
        }
    return {"rows": rows, "class_names": splits.class_names}


def cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13, 14, 15])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.2, 0.15, 0.1])
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    changes = dict(parse_assignment(item) for item in args.set)
    start = time.perf_counter()
    runs = []
    for seed in args.seeds:
        runs.append(one_seed(seed, args.thresholds, args.test_images, changes))
        print(
            f"seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True
        )
    names = runs[0]["class_names"]
    print(
        f"Seeds {args.seeds}, {args.test_images} fresh test images each; trained at the"
        f" threshold 0.3; settings {changes or 'the quick default'}, no pre-training.\n"
    )
    header = (
        ["test threshold"]
        + [f"closed: {n}" for n in names]
        + [f"recall: {n}" for n in names]
        + ["balanced acc.", "macro-F1"]
    )
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for theta in args.thresholds:
        rows = [run["rows"][theta] for run in runs]
        cells = [cell([r["closed"][c] for r in rows]) for c in range(len(names))]
        cells += [cell([r["recall"][c] for r in rows]) for c in range(len(names))]
        cells += [cell([r["balanced_accuracy"] for r in rows]), cell([r["macro_f1"] for r in rows])]
        print(f"| {theta} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nTotal time {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
