"""Does SimCLR pre-training learn on the phantom? NT-Xent against chance, and probes.

For each seed: render ``--train-images`` unlabelled phantom images (generator indices
``0 .. N-1``) and ``--test-images`` fresh ones (indices from 10**6 on, never used for
training); pre-train a one-channel ResNet (the example's ``Backbone``) with a
projection head and NT-Xent on two :class:`SimCLRAugment` views of the training
images (AdamW, warm-up + cosine schedule); then probe frozen pooled features: a
weighted kNN and a logistic regression fitted on the labels of the first
``--probe-images`` training images, scored on the fresh test images. Compared:
the SSL backbone, the same architecture at random initialisation, and raw pixels
area-downsampled to 8 x 8 and 16 x 16. Every ``--monitor-every`` epochs the kNN
probe also scores ``--probe-images`` validation images (indices from 2 * 10**6), the
per-epoch monitor a pre-training stage logs.

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
from examples.deep_pneumonia.probe import pixel_features, probe_backbone, probe_features
from examples.deep_pneumonia.schedule import warmup_cosine_scheduler
from examples.deep_pneumonia.transforms import SimCLRAugment

TEST_OFFSET = 10**6  # generator indices of the test images: never used for training
MONITOR_OFFSET = 2 * 10**6  # those of the per-epoch monitor's validation images
NUM_CLASSES = 4


def render(seed: int, start: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, S, S]`` and labels ``[N]``: phantom ``seed`` at ``start .. start + N - 1``.

    The labels have the default class fractions, in an order seeded by ``(seed, start)``.
    """
    labels = phantom_labels(count, seed=seed + start)
    images = [
        render_radiograph(label, seed=seed, index=start + i, image_size=size).image
        for i, label in enumerate(labels)
    ]
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(labels)


def pretrain(
    images: torch.Tensor, args: argparse.Namespace, seed: int, monitor: Any
) -> tuple[Backbone, list[float], list[float]]:
    """SimCLR on ``images``; the backbone, the mean NT-Xent and the monitor of each epoch."""
    torch.manual_seed(seed)
    net = PretrainNet(Backbone(args.arch, width=args.width), args.ssl_dim)
    augment = SimCLRAugment(args.image_size, **json.loads(args.augment))
    criterion = NTXentLoss(args.temperature)
    batches = len(images) // args.batch_size
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total_steps = args.epochs * batches
    scheduler = warmup_cosine_scheduler(
        optimizer, total_steps, min(args.warmup_epochs * batches, total_steps)
    )
    losses, monitored = [], []
    for epoch in range(args.epochs):
        net.train()
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
        losses.append(total / batches)
        if args.monitor_every and (epoch + 1) % args.monitor_every == 0:
            monitored.append(monitor(net.backbone))
    return net.backbone, losses, monitored


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    size = args.image_size
    train, train_labels = render(seed, 0, args.train_images, size)
    test, test_labels = render(seed, TEST_OFFSET, args.test_images, size)
    monitor_val, monitor_labels = render(seed, MONITOR_OFFSET, args.probe_images, size)
    rendered = time.perf_counter()
    probe_train, probe_labels = train[: args.probe_images], train_labels[: args.probe_images]
    result: dict[str, Any] = {"seed": seed, "render_s": rendered - start}
    options = {"num_classes": NUM_CLASSES, "k": args.knn_k, "temperature": args.knn_temperature}
    for resolution in (8, 16):
        result[f"pixels{resolution}"] = probe_features(
            pixel_features(probe_train, resolution),
            probe_labels,
            pixel_features(test, resolution),
            test_labels,
            **options,
        )
    torch.manual_seed(seed)
    random_net = Backbone(args.arch, width=args.width)
    result["random"] = probe_backbone(
        random_net, probe_train, probe_labels, test, test_labels, **options
    )

    def monitor(backbone: Backbone) -> float:
        knn = probe_backbone(
            backbone,
            probe_train,
            probe_labels,
            monitor_val,
            monitor_labels,
            linear=False,
            **options,
        )
        return knn["knn_macro_f1"]

    backbone, losses, monitored = pretrain(train, args, seed, monitor)
    result["ssl"] = probe_backbone(
        backbone, probe_train, probe_labels, test, test_labels, **options
    )
    result["loss"] = losses
    result["monitor_knn_macro_f1"] = monitored
    result["chance"] = math.log(2 * args.batch_size - 1)
    result["train_s"] = time.perf_counter() - rendered
    return result


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


METRICS = ("knn_macro_f1", "knn_accuracy", "linear_macro_f1", "linear_accuracy")
FEATURES = {
    "ssl": "SSL backbone",
    "random": "random init",
    "pixels8": "pixels 8×8",
    "pixels16": "pixels 16×16",
}


def report(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per seed and feature set, then mean ± std over seeds."""
    header = "| kNN macro-F1 | kNN acc | linear macro-F1 | linear acc |"
    rows = [f"| seed | NT-Xent first → last epoch (chance) | features {header}", "|---" * 7 + "|"]
    for r in results:
        loss = f"{r['loss'][0]:.3f} → {r['loss'][-1]:.3f} ({r['chance']:.3f})"
        for key, name in FEATURES.items():
            cells = " | ".join(f"{r[key][m]:.3f}" for m in METRICS)
            rows.append(f"| {r['seed']} | {loss if key == 'ssl' else ''} | {name} | {cells} |")
    rows += ["", f"| features {header}", "|---" * 5 + "|"]
    for key, name in FEATURES.items():
        cells = " | ".join(mean_std([r[key][m] for r in results]) for m in METRICS)
        rows.append(f"| {name} | {cells} |")
    last = mean_std([r["loss"][-1] for r in results])
    rows += ["", f"NT-Xent last epoch {last}, chance log(2B - 1) = {results[0]['chance']:.3f}"]
    return "\n".join(rows)


QUICK = {
    "train_images": 256,
    "probe_images": 128,
    "test_images": 256,
    "epochs": 3,
    "warmup_epochs": 1,
    "batch_size": 64,
    "monitor_every": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quick", action="store_true", help="a CI-sized check: " + str(QUICK))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--train-images", type=int, default=2000, help="unlabelled, for SSL")
    parser.add_argument("--probe-images", type=int, default=500, help="labelled, for the probes")
    parser.add_argument("--test-images", type=int, default=2000, help="fresh, for the probes")
    parser.add_argument("--arch", default="resnet10")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--ssl-dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    parser.add_argument("--augment", default="{}", help="JSON keyword arguments of SimCLRAugment")
    parser.add_argument("--knn-k", type=int, default=20)
    parser.add_argument("--knn-temperature", type=float, default=0.1)
    parser.add_argument("--monitor-every", type=int, default=5, help="epochs between kNN monitors")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.seeds = args.seeds[:1]
        vars(args).update(QUICK)
    torch.set_num_threads(1)
    results = []
    for seed in args.seeds:
        r = run_seed(seed, args)
        results.append(r)
        monitor = " ".join(f"{x:.3f}" for x in r["monitor_knn_macro_f1"])
        print(
            f"seed {seed}: render {r['render_s']:.0f} s, pre-train + probes {r['train_s']:.0f} s; "
            f"NT-Xent per epoch {' '.join(f'{x:.3f}' for x in r['loss'])}; "
            f"monitor kNN macro-F1 every {args.monitor_every} epochs {monitor}",
            flush=True,
        )
    print(report(results))
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "results": results}, indent=1))


if __name__ == "__main__":
    main()
