"""torch.compile gives the eager values: class-balanced, guidance, attention, regulariser.

One compiled function per family (each compilation costs seconds on CPU). The
validation code skips its data-dependent checks while dynamo traces, so these
also catch a Python branch on a tensor value that would break or mis-trace.
"""

from __future__ import annotations

import torch

from contrast_attn import MaskGuidedAttention
from contrast_attn.functional import (
    class_balanced_loss,
    contrastive_feature_regularizer,
    mask_guidance_loss,
)


def test_class_balanced_loss_compiles() -> None:
    logits = torch.randn(6, 3)
    target = torch.tensor([0, 1, 2, 0, -100, 1])
    counts = torch.tensor([50, 5, 1])

    def losses(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                class_balanced_loss(x, y, counts, beta=0.99, loss_type=kind, gamma=1.5)
                for kind in ("softmax", "sigmoid", "focal")
            ]
        )

    compiled = torch.compile(losses, fullgraph=False)
    torch.testing.assert_close(compiled(logits, target), losses(logits, target))


def test_mask_guidance_loss_compiles() -> None:
    logits = torch.randn(3, 1, 5, 5) * 2
    mask = (torch.rand(3, 1, 13, 13) > 0.5).float()  # 13 → 5: fractional coverage
    valid = torch.tensor([True, False, True])

    def losses(a: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                mask_guidance_loss(a, m, kind=kind, from_logits=True, valid=v)
                for kind in ("bce", "mse", "dice")
            ]
        )

    compiled = torch.compile(losses, fullgraph=False)
    torch.testing.assert_close(compiled(logits, mask, valid), losses(logits, mask, valid))


def test_mask_guided_attention_compiles_in_eval_mode() -> None:
    soft = MaskGuidedAttention(8, mode="soft").eval()
    hard = MaskGuidedAttention(8, mode="hard", residual=False).eval()
    with torch.no_grad():  # a running mean that puts some cells on each side of 0.5
        hard.scorer[1].running_mean.normal_()
    features = torch.randn(2, 8, 5, 5)

    def forward(f: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (*soft(f), *hard(f))

    compiled = torch.compile(forward, fullgraph=False)
    got, expected = compiled(features), forward(features)
    gate = (expected[3] >= 0.5).float()
    assert 0 < float(gate.mean()) < 1  # the hard gate is not trivially all 0 or all 1
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_contrastive_feature_regularizer_compiles() -> None:
    features = torch.randn(4, 8, 4, 4)
    mask = torch.zeros(4, 1, 8, 8)
    mask[:3, :, 2:6, 1:5] = 1  # image 3: no lesion, a negative only
    labels = torch.tensor([0, 0, 1, 1])

    def loss(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return contrastive_feature_regularizer(f, m, labels, temperature=0.2)

    compiled = torch.compile(loss, fullgraph=False)
    torch.testing.assert_close(compiled(features, mask), loss(features, mask))
