"""Does SimCLR pre-training learn on the phantom? NT-Xent against chance, and probes.

For each seed: render ``--train-images`` unlabelled phantom images (generator indices
``0 .. N-1``) and ``--test-images`` fresh ones (indices from 10**6 on, never used for
training); pre-train a one-channel ResNet (the example's ``Backbone``) with a
projection head and NT-Xent on two :class:`SimCLRAugment` views of the training
images (AdamW, warm-up + cosine schedule); then probe frozen pooled features: a
weighted kNN and a logistic regression fitted on the labels of the first
``--probe-images`` training images, scored on the fresh test images. Compared:
the SSL backbone, the same architecture at random initialisation, and raw pixels
area-downsampled to 8 x 8 and 16 x 16.

NT-Xent's chance value is ``log(2B - 1)``: the loss when every other row of the batch
is as similar to an anchor as its positive.

Prints Markdown tables (one row per seed, then mean ± std)::

    python benchmarks/bench_ssl.py --seeds 1 2 3           # full form
    python benchmarks/bench_ssl.py --quick                 # CI-sized check
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contrast_attn import NTXentLoss
from examples.deep_pneumonia.model import Backbone, PretrainNet
from examples.deep_pneumonia.phantom import phantom_labels, render_radiograph
from examples.deep_pneumonia.probe import embed, knn_probe, linear_probe, pixel_features
from examples.deep_pneumonia.schedule import warmup_cosine_scheduler
from examples.deep_pneumonia.transforms import SimCLRAugment

TEST_OFFSET = 10**6


def render(seed: int, indices: range, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, S, S]`` and labels ``[N]`` of phantom ``seed`` at ``indices``."""
    labels = phantom_labels(len(indices), seed=seed + (TEST_OFFSET if indices.start else 0))
    images = [
        render_radiograph(label, seed=seed, index=index, image_size=size).image
        for index, label in zip(indices, labels)
    ]
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels)


def pretrain(
    images: torch.Tensor, args: argparse.Namespace, seed: int
) -> tuple[Backbone, list[float]]:
    """SimCLR on ``images``; returns the backbone and the mean NT-Xent of each epoch."""
    torch.manual_seed(seed)
    net = PretrainNet(Backbone(args.arch, width=args.width), args.ssl_dim)
    augment = SimCLRAugment(args.image_size, **json.loads(args.augment))
    criterion = NTXentLoss(args.temperature)
    batches = len(images) // args.batch_size
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = warmup_cosine_scheduler(
        optimizer, args.epochs * batches, min(args.warmup_epochs * batches, args.epochs * batches)
    )
    history = []
    net.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(images))
        total = 0.0
        for b in range(batches):
            batch = images[order[b * args.batch_size : (b + 1) * args.batch_size]]
            views = torch.stack([torch.stack([augment(x) for x in batch]) for _ in range(2)], 1)
            z = net(views.flatten(0, 1)).view(len(batch), 2, -1)
            loss = criterion(z)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        history.append(total / batches)
    return net.backbone, history


def probes(
    train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor
) -> dict[str, float]:
    knn = knn_probe(train, train_labels, test, test_labels, k=20, temperature=0.1, num_classes=4)
    linear = linear_probe(train, train_labels, test, test_labels, num_classes=4)
    return {
        "knn_f1": knn["macro_f1"],
        "knn_acc": knn["accuracy"],
        "lin_f1": linear["macro_f1"],
        "lin_acc": linear["accuracy"],
    }


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    train, _ = render(seed, range(args.train_images), args.image_size)
    probe_labels = torch.tensor(phantom_labels(args.train_images, seed=seed))
    test, test_labels = render(
        seed, range(TEST_OFFSET, TEST_OFFSET + args.test_images), args.image_size
    )
    rendered = time.perf_counter()
    probe_train, probe_y = train[: args.probe_images], probe_labels[: args.probe_images]
    result: dict[str, Any] = {"seed": seed, "render_s": rendered - start}
    for resolution in (8, 16):
        result[f"pixels{resolution}"] = probes(
            pixel_features(probe_train, resolution),
            probe_y,
            pixel_features(test, resolution),
            test_labels,
        )
    torch.manual_seed(seed)
    random_net = Backbone(args.arch, width=args.width)
    result["random"] = probes(
        embed(random_net, probe_train), probe_y, embed(random_net, test), test_labels
    )
    backbone, history = pretrain(train, args, seed)
    result["ssl"] = probes(
        embed(backbone, probe_train), probe_y, embed(backbone, test), test_labels
    )
    result["loss"] = history
    result["chance"] = math.log(2 * args.batch_size - 1)
    result["train_s"] = time.perf_counter() - rendered
    return result


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(results: list[dict[str, Any]]) -> str:
    rows = [
        "| seed | NT-Xent first → last epoch (chance) | features | kNN macro-F1 | kNN acc | linear macro-F1 | linear acc |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {
        "ssl": "SSL backbone",
        "random": "random init",
        "pixels8": "pixels 8×8",
        "pixels16": "pixels 16×16",
    }
    for r in results:
        loss = f"{r['loss'][0]:.3f} → {r['loss'][-1]:.3f} ({r['chance']:.3f})"
        for key, name in names.items():
            p = r[key]
            rows.append(
                f"| {r['seed']} | {loss if key == 'ssl' else ''} | {name} | {p['knn_f1']:.3f} | {p['knn_acc']:.3f} | {p['lin_f1']:.3f} | {p['lin_acc']:.3f} |"
            )
    rows += [
        "",
        "| features | kNN macro-F1 | kNN acc | linear macro-F1 | linear acc |",
        "|---|---|---|---|---|",
    ]
    for key, name in names.items():
        cells = [
            mean_std([r[key][m] for r in results])
            for m in ("knn_f1", "knn_acc", "lin_f1", "lin_acc")
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    last = [r["loss"][-1] for r in results]
    rows.append("")
    rows.append(f"NT-Xent last epoch {mean_std(last)} against chance {results[0]['chance']:.3f}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quick", action="store_true", help="a CI-sized check (about a minute)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--probe-images", type=int, default=500)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--arch", default="resnet10")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--ssl-dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--augment", default="{}", help="JSON keyword arguments of SimCLRAugment")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.train_images, args.probe_images = args.seeds[:1], 256, 128
        args.test_images, args.epochs, args.warmup_epochs, args.batch_size = 256, 3, 1, 64
    torch.set_num_threads(1)
    results = []
    for seed in args.seeds:
        results.append(run_seed(seed, args))
        r = results[-1]
        print(
            f"seed {seed}: render {r['render_s']:.0f} s, train+probe {r['train_s']:.0f} s, "
            f"loss {' '.join(f'{x:.3f}' for x in r['loss'])}",
            flush=True,
        )
    print(report(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1
            )
        )


if __name__ == "__main__":
    main()
