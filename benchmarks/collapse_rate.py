"""How often the example's fine-tuning collapses to one class, over many seeds.

A run *collapses* when it predicts one class for at least 95 % of its test images
(the quick default's test split: 90 phantom images, 54 of them normal, so "always
normal" is 86 or more). Each run is the quick default without pre-training (the
three pre-training epochs barely move NT-Xent, see ``README.md``), fine-tuned from
its own seed (phantom, split, initialisation, batches). Per run it also prints the
diagnostic of the hard attention gate: the fraction of test images whose gate is
closed everywhere (no cell of the attention map reaches the threshold, so the
gated features are all zero and the prediction is the same constant for every
such image). One process at a time, one thread::

    python benchmarks/collapse_rate.py --seeds 100-119
    python benchmarks/collapse_rate.py --seeds 100-119 --set initial_attention=0.05
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.deep_pneumonia.config import Config, parse_assignment, preset
from examples.deep_pneumonia.data import build_datasets
from examples.deep_pneumonia.evaluate import predict
from examples.deep_pneumonia.finetune import finetune
from examples.deep_pneumonia.training import seed_everything, setup_runtime

COLLAPSE = 0.95


def seed_range(text: str) -> list[int]:
    """``"100-119"`` or ``"3,5,8"`` as a list of seeds."""
    if "-" in text:
        low, high = (int(x) for x in text.split("-"))
        return list(range(low, high + 1))
    return [int(x) for x in text.split(",")]


def one_run(cfg: Config, out: Path) -> dict[str, float | None]:
    """Fine-tune ``cfg`` from scratch; its dominant-class share and gate diagnostic on test."""
    rt = setup_runtime(cfg)
    seed_everything(cfg.seed, "data")
    splits = build_datasets(cfg.data, image_size=cfg.image_size, seed=cfg.seed, **cfg.data_kwargs())
    net, history = finetune(None, cfg, splits, rt, out)
    pred = predict(net, splits.test, rt, cfg.batch_size)
    shares = np.bincount(pred.predicted, minlength=len(splits.class_names)) / len(pred.labels)
    recall = [(pred.predicted[pred.labels == c] == c).mean() for c in range(len(shares))]
    return {
        "dominant_share": float(shares.max()),
        "dominant_class": float(shares.argmax()),
        "balanced_accuracy": float(np.mean(recall)),
        "closed_gate": None if pred.gate_closed is None else float(pred.gate_closed.mean()),
        "best_val_macro_f1": max(h["val_macro_f1"] for h in history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=seed_range, default=seed_range("100-119"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    changes = dict(parse_assignment(item) for item in args.set)
    base = preset("quick", **{"pretrain": False, "progress": False, "device": "cpu", **changes})
    collapsed = 0
    start = time.perf_counter()
    print("| seed | dominant class share | balanced acc. | closed gate | best val macro-F1 |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            row = one_run(base.replace(seed=seed), Path(folder))
        share = row["dominant_share"]
        assert share is not None
        collapsed += share >= COLLAPSE
        gate = row["closed_gate"]
        print(
            f"| {seed} | {share:.3f} (class {row['dominant_class']:.0f})"
            f"{' COLLAPSED' if share >= COLLAPSE else ''} | {row['balanced_accuracy']:.3f}"
            f" | {'n/a' if gate is None else f'{gate:.3f}'} | {row['best_val_macro_f1']:.3f} |",
            flush=True,
        )
    print(
        f"\n{collapsed} of {len(args.seeds)} runs collapsed (>= {COLLAPSE:.0%} of the test"
        f" images in one class); settings {changes or 'the quick default'}, no pre-training;"
        f" {time.perf_counter() - start:.0f} s."
    )


if __name__ == "__main__":
    main()
