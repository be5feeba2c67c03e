"""Training-step overhead of attention + guidance + regulariser + CB loss on a ResNet-18.

Two models from the same random initialisation: a torchvision ResNet-18 with a
one-channel stem trained with cross-entropy (the plain backbone), and the same
network with :class:`~contrast_attn.MaskGuidedAttention` (hard mode, teacher
forcing 0.5) on the ``layer4`` features, trained with the class-balanced loss +
the mask-guidance loss on the attention logits + the contrastive feature
regulariser (with its projection head) on the attended features. Batch 16 of
1 × 224 × 224 images with 224 × 224 lesion masks (a quarter of them empty, as for
normal chests), SGD with momentum. The script times full training steps
(forward, losses, backward, optimiser step), alternating blocks of the two models
so that both see the same machine load, and reports the median step time of each
and their ratio. Target: ratio <= 1.10.

Run from the repository root::

    python benchmarks/bench_overhead.py                 # CPU, or --device cuda
    python benchmarks/bench_overhead.py --threads 1 --clock cpu   # on a shared CPU machine
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn

import contrast_attn
from contrast_attn import ClassBalancedLoss, ContrastiveFeatureRegularizer, MaskGuidedAttention
from contrast_attn.functional import mask_guidance_loss

BATCH = 16
SIZE = 224
NUM_CLASSES = 3
COUNTS = [3000, 600, 150]  # an imbalanced training set, for the class-balanced weights


def resnet18_one_channel() -> nn.Module:
    model = torchvision.models.resnet18(weights=None, num_classes=NUM_CLASSES)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


class AttentionResNet(nn.Module):
    """ResNet-18 trunk → mask-guided attention on layer4 → average pool → classifier."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])
        self.attention = MaskGuidedAttention(512, mode="hard", teacher_forcing=0.5)
        self.fc = resnet.fc

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, _ = self.attention(self.trunk(images), mask)
        return self.fc(attended.mean(dim=(2, 3))), attended


def make_batch(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 1, SIZE, SIZE, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (BATCH,), generator=generator)
    mask = torch.zeros(BATCH, 1, SIZE, SIZE)
    for b in range(BATCH):
        if b % 4 == 3:
            continue  # no lesion
        top, left = torch.randint(0, SIZE // 2, (2,), generator=generator).tolist()
        mask[b, :, top : top + SIZE // 3, left : left + SIZE // 4] = 1
    return images.to(device), labels.to(device), mask.to(device)


def plain_step(
    model: nn.Module, optimiser: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...]
) -> None:
    images, labels, _ = batch
    loss = nn.functional.cross_entropy(model(images), labels)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def full_step(
    model: AttentionResNet,
    criterion: ClassBalancedLoss,
    regularizer: ContrastiveFeatureRegularizer,
    optimiser: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, ...],
) -> None:
    images, labels, mask = batch
    logits, attended = model(images, mask)
    attention_logits = model.attention.last_logits
    assert attention_logits is not None
    loss = (
        criterion(logits, labels)
        + mask_guidance_loss(attention_logits, mask, from_logits=True)
        + regularizer(attended, mask, labels)
    )
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def timed(step: Callable[[], None], steps: int, device: torch.device, clock: str) -> float:
    """Mean seconds per step over ``steps`` steps, by wall clock or by this process's CPU time."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = now()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (now() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing blocks")
    parser.add_argument("--steps", type=int, default=3, help="steps per block")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall-clock time, or the process's CPU time (steadier on a shared CPU machine)",
    )
    parser.add_argument(
        "--no-finite-checks", action="store_true", help="contrast_attn.set_finite_checks(False)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.no_finite_checks:
        contrast_attn.set_finite_checks(False)
    device = torch.device(args.device)
    torch.manual_seed(0)

    resnet = resnet18_one_channel()
    plain = copy.deepcopy(resnet).to(device).train()
    full = AttentionResNet(copy.deepcopy(resnet)).to(device).train()
    criterion = ClassBalancedLoss(COUNTS).to(device)
    regularizer = ContrastiveFeatureRegularizer(512, projection_dim=128).to(device).train()
    plain_optimiser = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    full_optimiser = torch.optim.SGD(
        [*full.parameters(), *regularizer.parameters()], lr=0.01, momentum=0.9
    )
    batch = make_batch(device)

    def run_plain() -> None:
        plain_step(plain, plain_optimiser, batch)

    def run_full() -> None:
        full_step(full, criterion, regularizer, full_optimiser, batch)

    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures CPU work; use it with --device cpu")
    timed(run_plain, args.warmup, device, args.clock)
    timed(run_full, args.warmup, device, args.clock)
    plain_times, full_times = [], []
    for _ in range(args.rounds):
        plain_times.append(timed(run_plain, args.steps, device, args.clock))
        full_times.append(timed(run_full, args.steps, device, args.clock))
    plain_median = statistics.median(plain_times)
    full_median = statistics.median(full_times)
    pair_ratios = [f / p for f, p in zip(full_times, plain_times)]
    extra = sum(p.numel() for p in full.attention.parameters()) + sum(
        p.numel() for p in regularizer.parameters()
    )
    print(
        f"device: {device}, threads: {torch.get_num_threads()}, clock: {args.clock}, "
        f"torch {torch.__version__}"
    )
    print(f"finite checks: {contrast_attn.finite_checks_enabled()}, extra parameters: {extra}")
    print(f"rounds x steps: {args.rounds} x {args.steps} (after {args.warmup} warm-up steps)")
    print(f"| model | median step time ({args.clock}), ms |")
    print("|---|---|")
    print(f"| ResNet-18 + cross-entropy | {plain_median * 1e3:.1f} |")
    print(f"| + attention, guidance, regulariser, CB loss | {full_median * 1e3:.1f} |")
    print(f"ratio of medians: {full_median / plain_median:.3f}")
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in pair_ratios)}")


if __name__ == "__main__":
    main()
