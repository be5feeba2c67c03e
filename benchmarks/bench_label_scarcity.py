"""Label scarcity: does SimCLR pre-training help when few training images are labelled?

For each seed (phantom) or cross-validation fold (real radiographs): pre-train one
SimCLR backbone on *every* training image without labels (``bench_ssl.pretrain``:
NT-Xent on two ``SimCLRAugment`` views, AdamW, warm-up + cosine), then fine-tune a
classifier (the backbone plus a linear layer, the class-balanced loss of Cui et al. on
the labelled subset's counts, AdamW at a constant learning rate for a fixed number of
steps, no augmentation, the last step kept) on 5 %, 10 %, 25 % and 100 % of the
training labels (stratified, at least one image per class, nested: the 5 % subset is
inside the 10 % one), once from the SSL backbone and once from the same architecture
at random initialisation (the same initial weights for every fraction of a seed).
Everything but the starting weights is the same for the two. Scored on test images
no step ever saw: macro-F1 and balanced accuracy.

- ``--data synthetic``: ``--train-images`` phantom images (generator indices
  ``0 .. N-1``) and ``--test-images`` fresh ones (indices from 10**6 on).
- ``--data hannover``: the Hannover radiographs (task ``icu``), patient-grouped
  stratified ``--folds``-fold cross-validation (``splits.patient_kfold``): every
  image is tested once; pre-training uses the fold's training images only.
- ``--data covid-cxr-segmentations``: the same on the lesion-masked radiographs
  (task ``covid``; ``covid_cxr.covid_cxr_folds``).

Prints a Markdown table, mean ± std over seeds or folds::

    python benchmarks/bench_label_scarcity.py --data synthetic --seeds 1 2 3
    python benchmarks/bench_label_scarcity.py --data hannover --folds 3
    python benchmarks/bench_label_scarcity.py --quick        # CI-sized check
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ssl import TEST_OFFSET, render
from bench_ssl import pretrain as simclr_pretrain

from contrast_attn import ClassBalancedLoss
from examples.deep_pneumonia.model import Backbone
from examples.deep_pneumonia.probe import scores

FRACTIONS = (0.05, 0.10, 0.25, 1.0)
Split = tuple[torch.Tensor, torch.Tensor]


def nested_subsets(
    labels: torch.Tensor, fractions: tuple[float, ...], seed: int
) -> list[torch.Tensor]:
    """Indices of each fraction of ``labels``: stratified, >= 1 per class, nested."""
    generator = torch.Generator().manual_seed(seed)
    per_class = [
        (labels == c)
        .nonzero()
        .flatten()[torch.randperm(int((labels == c).sum()), generator=generator)]
        for c in range(int(labels.max()) + 1)
    ]
    return [
        torch.cat([idx[: max(1, math.ceil(f * len(idx)))] for idx in per_class if len(idx)])
        .sort()
        .values
        for f in fractions
    ]


def finetune(
    start: dict[str, torch.Tensor],
    train: Split,
    num_classes: int,
    args: argparse.Namespace,
    seed: int,
) -> nn.Module:
    """Backbone (from ``start``) + linear head trained for ``args.steps`` steps on ``train``."""
    images, labels = train
    torch.manual_seed(seed)
    backbone = Backbone(args.arch, width=args.width)
    backbone.load_state_dict(start)
    net = nn.Sequential(backbone, nn.Linear(backbone.channels[-1], num_classes))
    criterion = ClassBalancedLoss.from_labels(
        labels, num_classes, beta=args.cb_beta, zero_count="as_one"
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.ft_lr, weight_decay=args.weight_decay)
    batch = min(args.ft_batch_size, len(images))
    net.train()
    for _ in range(args.steps):
        chosen = torch.randint(len(images), (batch,))
        loss = criterion(net(images[chosen]), labels[chosen])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net


@torch.no_grad()
def test_scores(net: nn.Module, test: Split, num_classes: int) -> dict[str, float]:
    net.eval()
    predicted = torch.cat([net(x).argmax(1) for x in torch.split(test[0], 256)])
    result = scores(predicted, test[1], num_classes)
    result["balanced_accuracy"] = float(balanced_accuracy_score(test[1].numpy(), predicted.numpy()))
    return result


def run_one(
    name: str, train: Split, test: Split, num_classes: int, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Pre-train once, then fine-tune every fraction from SSL and from random weights."""
    began = time.perf_counter()
    torch.manual_seed(seed)
    random_start = {
        k: v.clone() for k, v in Backbone(args.arch, width=args.width).state_dict().items()
    }
    backbone, losses, _ = simclr_pretrain(train[0], args, seed, None)
    ssl_start = backbone.state_dict()
    pretrained = time.perf_counter()
    result: dict[str, Any] = {
        "run": name,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "chance": math.log(2 * args.batch_size - 1),
        "pretrain_s": pretrained - began,
        "labelled": [],
        "ssl": [],
        "random": [],
    }
    for subset in nested_subsets(train[1], FRACTIONS, seed):
        part = (train[0][subset], train[1][subset])
        result["labelled"].append(len(subset))
        for key, start in (("ssl", ssl_start), ("random", random_start)):
            result[key].append(
                test_scores(finetune(start, part, num_classes, args, seed), test, num_classes)
            )
    result["finetune_s"] = time.perf_counter() - pretrained
    return result


def stack(dataset: Any, indices: list[int]) -> Split:
    images = torch.stack([dataset[i]["image"] for i in indices]).float()
    labels = torch.tensor([int(dataset.targets[i]) for i in indices])
    return images, labels


def runs(args: argparse.Namespace) -> tuple[list[tuple[str, Split, Split, int]], int]:
    """``(name, train, test, seed)`` of every run, and the number of classes."""
    if args.data == "synthetic":
        out = []
        for seed in args.seeds:
            train = render(seed, 0, args.train_images, args.image_size)
            test = render(seed, TEST_OFFSET, args.test_images, args.image_size)
            out.append((f"seed {seed}", train, test, seed))
        return out, 4
    from examples.deep_pneumonia.splits import patient_kfold

    if args.data == "hannover":
        from examples.deep_pneumonia.folder import ImageFolderDataset
        from examples.deep_pneumonia.hannover import DEFAULT_HANNOVER_DIR, hannover_records

        records, names = hannover_records(DEFAULT_HANNOVER_DIR, task="icu")
        dataset: Any = ImageFolderDataset(records, names, image_size=args.image_size, cache=True)
        groups = [r.patient_id for r in records]
    else:
        from examples.deep_pneumonia.covid_cxr import DEFAULT_COVID_CXR_DIR, covid_cxr_dataset

        dataset = covid_cxr_dataset(DEFAULT_COVID_CXR_DIR, image_size=args.image_size, task="covid")
        names, groups = dataset.class_names, dataset.patient_ids
    folds = patient_kfold(
        list(dataset.targets), groups, args.folds, seed=args.seeds[0], val_fraction=0.0
    )
    everything = stack(dataset, list(range(len(dataset))))
    out = []
    for i, fold in enumerate(folds):
        train = (everything[0][fold.train], everything[1][fold.train])
        test = (everything[0][fold.test], everything[1][fold.test])
        out.append((f"fold {i}", train, test, args.seeds[0] * 100 + i))
    return out, len(names)


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(results: list[dict[str, Any]]) -> str:
    rows = [
        "| labels | labelled images | macro-F1 SSL | macro-F1 random init | Δ macro-F1 | "
        "bal. acc. SSL | bal. acc. random init | Δ bal. acc. |",
        "|---" * 8 + "|",
    ]
    for j, fraction in enumerate(FRACTIONS):
        cells = [
            f"{fraction:.0%}",
            "–".join(sorted({str(r["labelled"][j]) for r in results}, key=int)),
        ]
        for metric in ("macro_f1", "balanced_accuracy"):
            ssl = [r["ssl"][j][metric] for r in results]
            rnd = [r["random"][j][metric] for r in results]
            cells += [mean_std(ssl), mean_std(rnd), mean_std([a - b for a, b in zip(ssl, rnd)])]
        rows.append("| " + " | ".join(cells) + " |")
    loss = "; ".join(f"{r['run']} {r['loss_first']:.3f} → {r['loss_last']:.3f}" for r in results)
    rows += ["", f"NT-Xent first → last epoch (chance {results[0]['chance']:.3f}): {loss}"]
    return "\n".join(rows)


QUICK = {
    "train_images": 128,
    "test_images": 128,
    "epochs": 2,
    "warmup_epochs": 1,
    "batch_size": 32,
    "steps": 5,
    "folds": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", default="synthetic", choices=["synthetic", "hannover", "covid-cxr-segmentations"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--folds", type=int, default=3, help="real data: cross-validation folds")
    parser.add_argument("--quick", action="store_true", help="a CI-sized check: " + str(QUICK))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-images", type=int, default=500, help="phantom: training images")
    parser.add_argument("--test-images", type=int, default=2000, help="phantom: fresh test images")
    parser.add_argument("--arch", default="resnet10")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--ssl-dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20, help="pre-training epochs")
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50, help="pre-training batch")
    parser.add_argument("--lr", type=float, default=3e-3, help="pre-training learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    parser.add_argument("--augment", default="{}", help="JSON keyword arguments of SimCLRAugment")
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps")
    parser.add_argument("--ft-batch-size", type=int, default=32)
    parser.add_argument("--ft-lr", type=float, default=1e-3)
    parser.add_argument("--cb-beta", type=float, default=0.999)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.monitor_every = 0
    if args.quick:
        args.seeds = args.seeds[:1]
        vars(args).update(QUICK)
    torch.set_num_threads(1)
    began = time.perf_counter()
    every, num_classes = runs(args)
    results = []
    for name, train, test, seed in every:
        r = run_one(name, train, test, num_classes, args, seed)
        results.append(r)
        f1 = " ".join(
            f"{s['macro_f1']:.3f}/{n['macro_f1']:.3f}" for s, n in zip(r["ssl"], r["random"])
        )
        print(
            f"{name}: {len(train[1])} train / {len(test[1])} test images; NT-Xent "
            f"{r['loss_first']:.3f} → {r['loss_last']:.3f} (chance {r['chance']:.3f}); macro-F1 "
            f"SSL/random at {', '.join(f'{f:.0%}' for f in FRACTIONS)}: {f1}; "
            f"pre-train {r['pretrain_s']:.0f} s, fine-tune {r['finetune_s']:.0f} s",
            flush=True,
        )
    print(report(results))
    print(f"\nTotal time {time.perf_counter() - began:.0f} s.")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "results": results}, indent=1))


if __name__ == "__main__":
    main()
