"""Per-label class-balanced weighting on multi-hot targets (``label_weighting="per_label"``).

Checked against a float64 loop written from the formula and against torchvision's
``sigmoid_focal_loss``; the reference form stays the default; an all-negative row
("no finding") is zeroed by the reference form and not by the per-label form.
"""

from __future__ import annotations

import math

import pytest
import torch

from contrast_attn import ClassBalancedLoss
from contrast_attn.functional import class_balanced_loss, class_balanced_weights

COUNTS = [400, 60, 9]
TARGET = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 0]])


def _logits(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(5, 3, generator=generator, dtype=torch.float64)


def _reference(logits, target, gamma, normalization, focal) -> float:
    w = class_balanced_weights(COUNTS, 0.999).tolist()
    total = 0.0
    for i in range(logits.shape[0]):
        for c in range(logits.shape[1]):
            x, y = float(logits[i, c]), float(target[i, c])
            p = 1 / (1 + math.exp(-x))
            bce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
            modulator = ((1 - p) if y == 1 else p) ** gamma if focal else 1.0
            total += w[c] * modulator * bce
    if normalization == "reference":
        return total / float(target.sum())
    return total / (logits.shape[0] * sum(w))


@pytest.mark.parametrize("loss_type", ["sigmoid", "focal"])
@pytest.mark.parametrize("normalization", ["reference", "weight_sum"])
def test_matches_loop(loss_type: str, normalization: str) -> None:
    logits = _logits(0)
    ours = class_balanced_loss(
        logits,
        TARGET,
        COUNTS,
        beta=0.999,
        loss_type=loss_type,
        gamma=1.5,
        normalization=normalization,
        label_weighting="per_label",
    )
    expected = _reference(logits, TARGET, 1.5, normalization, loss_type == "focal")
    assert ours.item() == pytest.approx(expected, rel=1e-12)


def test_no_finding_rows_are_kept_only_by_the_per_label_form() -> None:
    logits = _logits(1)
    kwargs = {"beta": 0.999, "loss_type": "focal", "reduction": "none"}
    reference = class_balanced_loss(logits, TARGET, COUNTS, **kwargs)
    per_label = class_balanced_loss(logits, TARGET, COUNTS, label_weighting="per_label", **kwargs)
    assert reference[1].item() == 0.0 and reference[4].item() == 0.0
    assert per_label[1].item() > 0 and per_label[4].item() > 0
    # The reference form stays the default.
    assert torch.equal(
        class_balanced_loss(logits, TARGET, COUNTS, **kwargs),
        class_balanced_loss(logits, TARGET, COUNTS, label_weighting="reference", **kwargs),
    )


def test_unit_weights_equal_torchvision_focal() -> None:
    torchvision = pytest.importorskip("torchvision")
    logits = _logits(2)
    ours = class_balanced_loss(
        logits,
        TARGET,
        COUNTS,
        beta=0.0,
        loss_type="focal",
        gamma=2.0,
        reduction="none",
        label_weighting="per_label",
    )
    theirs = torchvision.ops.sigmoid_focal_loss(logits, TARGET.double(), alpha=-1, gamma=2.0)
    torch.testing.assert_close(ours, theirs.sum(dim=1), rtol=1e-12, atol=1e-14)


def test_class_index_targets_and_ignore_index() -> None:
    logits = _logits(3)
    target = torch.tensor([0, 2, -100, 1, 0])
    ours = class_balanced_loss(
        logits,
        target,
        COUNTS,
        beta=0.999,
        loss_type="sigmoid",
        label_weighting="per_label",
        reduction="none",
    )
    one_hot = torch.nn.functional.one_hot(target.clamp(min=0), 3)
    expected = class_balanced_loss(
        logits,
        one_hot,
        COUNTS,
        beta=0.999,
        loss_type="sigmoid",
        label_weighting="per_label",
        reduction="none",
    )
    expected[2] = 0.0
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=0.0)


def test_gradcheck_and_module() -> None:
    logits = _logits(4).requires_grad_()

    def loss(x: torch.Tensor) -> torch.Tensor:
        return class_balanced_loss(
            x, TARGET, COUNTS, beta=0.999, loss_type="focal", label_weighting="per_label"
        )

    assert torch.autograd.gradcheck(loss, (logits,))
    module = ClassBalancedLoss(COUNTS, beta=0.999, loss_type="focal", label_weighting="per_label")
    assert module(logits, TARGET).item() == loss(logits).item()
    assert "label_weighting='per_label'" in repr(module)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_is_finite(dtype: torch.dtype) -> None:
    logits = (_logits(5) * 30).float().requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        loss = class_balanced_loss(
            logits.to(dtype), TARGET, COUNTS, loss_type="focal", label_weighting="per_label"
        )
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_softmax_is_refused() -> None:
    with pytest.raises(ValueError, match="label_weighting='per_label' is for loss_type"):
        class_balanced_loss(_logits(6), TARGET[:, 0], COUNTS, label_weighting="per_label")
    with pytest.raises(ValueError, match="label_weighting must be one of"):
        ClassBalancedLoss(COUNTS, loss_type="sigmoid", label_weighting="rows")
