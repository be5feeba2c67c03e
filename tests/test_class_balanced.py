"""Class-balanced losses: reference loops, limits, torch agreement, numerics, errors, module."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, TensorDataset

from contrast_attn import ClassBalancedLoss
from contrast_attn.functional import class_balanced_loss, class_balanced_weights, effective_number

LOSS_TYPES = ["softmax", "sigmoid", "focal"]

# ---------------------------------------------------------------------------
# The reference: plain float64 loops written from Cui et al. (CVPR 2019) and their
# code (richardaecn/class-balanced-loss, src/cifar_main.py). Weights with Python
# floats; losses with scalar tensor arithmetic so that autograd gives the reference
# gradient. The focal term is the paper's (1 - p_t)^gamma, not the code's exp form.
# ---------------------------------------------------------------------------


def reference_weights(counts: list[int], beta: float) -> list[float]:
    raw = [(1.0 - beta) / (1.0 - beta**n) for n in counts]
    total = sum(raw)
    return [r / total * len(counts) for r in raw]


def reference_loss(
    logits: torch.Tensor,
    target: list[int] | list[list[float]],
    counts: list[int],
    *,
    beta: float,
    loss_type: str,
    gamma: float = 2.0,
    ignore_index: int = -100,
) -> torch.Tensor:
    """The reference's mean: sum of weighted losses / (samples or positive labels)."""
    weights = reference_weights(counts, beta)
    batch, num_classes = logits.shape
    total = logits.new_zeros(())
    denominator = 0.0
    for i in range(batch):
        t = target[i]
        if isinstance(t, int):
            if t == ignore_index:
                continue
            y = [1.0 if c == t else 0.0 for c in range(num_classes)]
        else:
            y = t
        alpha = sum(y[c] * weights[c] for c in range(num_classes))
        if loss_type == "softmax":
            assert isinstance(t, int)
            log_norm = torch.log(sum(torch.exp(logits[i, c]) for c in range(num_classes)))
            total = total + alpha * (log_norm - logits[i, t])
            denominator += 1.0
            continue
        for c in range(num_classes):
            p = 1.0 / (1.0 + torch.exp(-logits[i, c]))
            bce = -(y[c] * torch.log(p) + (1.0 - y[c]) * torch.log(1.0 - p))
            modulator = 1.0
            if loss_type == "focal":
                p_t = p if y[c] == 1.0 else 1.0 - p
                modulator = (1.0 - p_t) ** gamma
            total = total + alpha * modulator * bce
        denominator += sum(y)
    return total / denominator


COUNTS = [500, 120, 30, 7, 1]


def _logits(batch: int = 7, num_classes: int = 5, scale: float = 2.0) -> torch.Tensor:
    return (scale * torch.randn(batch, num_classes, dtype=torch.float64)).requires_grad_()


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.999, 0.9999])
def test_weights_match_reference(beta: float) -> None:
    counts = [5000, 500, 50, 5, 1]
    expected = torch.tensor(reference_weights(counts, beta), dtype=torch.float64)
    torch.testing.assert_close(class_balanced_weights(counts, beta), expected, rtol=1e-12, atol=0)
    effective = [(1.0 - beta**n) / (1.0 - beta) for n in counts]
    torch.testing.assert_close(
        effective_number(counts, beta), torch.tensor(effective, dtype=torch.float64)
    )


def test_beta_zero_gives_unit_weights_and_beta_to_one_inverse_frequency() -> None:
    counts = torch.tensor([1000, 100, 10, 1])
    assert torch.equal(class_balanced_weights(counts, 0.0), torch.ones(4, dtype=torch.float64))
    assert torch.equal(effective_number(counts, 0.0), torch.ones(4, dtype=torch.float64))
    inverse = 1.0 / counts.double()
    inverse = inverse / inverse.sum() * 4
    near_one = class_balanced_weights(counts, 1.0 - 1e-9)
    torch.testing.assert_close(near_one, inverse, rtol=1e-5, atol=0)
    torch.testing.assert_close(
        effective_number(counts, 1.0 - 1e-9), counts.double(), rtol=1e-5, atol=0
    )


def test_weights_accept_tensors_of_any_real_dtype_and_keep_the_device() -> None:
    for counts in (torch.tensor([3, 2]), torch.tensor([3.0, 2.0]), (3, 2), [3.0, 2.0]):
        weights = class_balanced_weights(counts, 0.9)
        assert weights.dtype == torch.float64
        torch.testing.assert_close(weights, torch.tensor(reference_weights([3, 2], 0.9)).double())


@given(
    counts=st.lists(st.integers(1, 10**6), min_size=1, max_size=12),
    beta=st.one_of(st.sampled_from([0.0, 0.9999, 0.999999]), st.floats(0.0, 0.99999)),
)
def test_weight_properties(counts: list[int], beta: float) -> None:
    weights = class_balanced_weights(counts, beta)
    assert bool((weights > 0).all())
    assert math.isclose(float(weights.sum()), len(counts), rel_tol=1e-12)
    order = sorted(range(len(counts)), key=lambda c: counts[c])
    ordered = weights[order]
    # More samples never means a larger weight (ties in rounding allowed).
    assert bool((ordered[1:] <= ordered[:-1] * (1 + 1e-12)).all())


def test_zero_count_options() -> None:
    with pytest.raises(ValueError, match=r"no sample of class\(es\) \[1, 3\].*zero_count="):
        class_balanced_weights([5, 0, 2, 0], 0.9)
    as_one = class_balanced_weights([5, 0, 2], 0.9, zero_count="as_one")
    torch.testing.assert_close(as_one, class_balanced_weights([5, 1, 2], 0.9))
    zero = class_balanced_weights([5, 0, 2], 0.9, zero_count="zero_weight")
    assert zero[1] == 0
    assert math.isclose(float(zero.sum()), 3.0, rel_tol=1e-12)
    torch.testing.assert_close(zero[[0, 2]], class_balanced_weights([5, 2], 0.9) * 3 / 2)
    with pytest.raises(ValueError, match="zero for every class"):
        class_balanced_weights([0, 0], 0.9, zero_count="zero_weight")


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.99, 0.9999])
def test_loss_and_gradient_match_reference(loss_type: str, beta: float) -> None:
    logits = _logits()
    target = [0, 0, 1, 2, 3, 4, 0]
    loss = class_balanced_loss(
        logits, torch.tensor(target), COUNTS, beta=beta, loss_type=loss_type, gamma=1.5
    )
    (grad,) = torch.autograd.grad(loss, logits)
    expected = reference_loss(logits, target, COUNTS, beta=beta, loss_type=loss_type, gamma=1.5)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_type", ["sigmoid", "focal"])
def test_multi_hot_targets_match_reference(loss_type: str) -> None:
    logits = _logits(batch=4, num_classes=5)
    target = [
        [1.0, 0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
        [0.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
    loss = class_balanced_loss(
        logits, torch.tensor(target), COUNTS, beta=0.999, loss_type=loss_type
    )
    expected = reference_loss(logits, target, COUNTS, beta=0.999, loss_type=loss_type)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(loss, logits)[0], torch.autograd.grad(expected, logits)[0]
    )


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_ignore_index_matches_reference(loss_type: str) -> None:
    logits = _logits()
    target = [0, -1, 1, 2, -1, 4, 3]
    loss = class_balanced_loss(
        logits, torch.tensor(target), COUNTS, beta=0.99, loss_type=loss_type, ignore_index=-1
    )
    expected = reference_loss(
        logits, target, COUNTS, beta=0.99, loss_type=loss_type, ignore_index=-1
    )
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    none = class_balanced_loss(
        logits,
        torch.tensor(target),
        COUNTS,
        beta=0.99,
        loss_type=loss_type,
        ignore_index=-1,
        reduction="none",
    )
    assert none[1] == 0 and none[4] == 0


def test_beta_zero_is_the_plain_loss() -> None:
    logits, target = _logits(), torch.tensor([0, 0, 1, 2, 3, 4, 0])
    plain_ce = F.cross_entropy(logits, target)
    torch.testing.assert_close(class_balanced_loss(logits, target, COUNTS, beta=0.0), plain_ce)
    one_hot = F.one_hot(target, 5).double()
    plain_bce = F.binary_cross_entropy_with_logits(logits, one_hot, reduction="sum") / 7
    sigmoid = class_balanced_loss(logits, target, COUNTS, beta=0.0, loss_type="sigmoid")
    torch.testing.assert_close(sigmoid, plain_bce)


@pytest.mark.parametrize("beta", [0.0, 0.999])
def test_focal_with_gamma_zero_is_sigmoid(beta: float) -> None:
    logits, target = _logits(), torch.tensor([0, 0, 1, 2, 3, 4, 0])
    focal = class_balanced_loss(logits, target, COUNTS, beta=beta, loss_type="focal", gamma=0.0)
    sigmoid = class_balanced_loss(logits, target, COUNTS, beta=beta, loss_type="sigmoid")
    torch.testing.assert_close(focal, sigmoid, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_unit_weights_agree_with_cross_entropy(reduction: str, label_smoothing: float) -> None:
    logits = _logits(batch=9)
    target = torch.tensor([0, 1, 2, 3, 4, -100, 1, -100, 0])
    ours = class_balanced_loss(
        logits, target, COUNTS, beta=0.0, reduction=reduction, label_smoothing=label_smoothing
    )
    torch_loss = F.cross_entropy(
        logits, target, reduction=reduction, label_smoothing=label_smoothing
    )
    torch.testing.assert_close(ours, torch_loss)


@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_weight_sum_normalization_equals_weighted_cross_entropy(ignore_index: int) -> None:
    logits = _logits(batch=9)
    target = torch.tensor([0, 1, 2, 3, 4, 2, 1, 0, 0])
    weights = class_balanced_weights(COUNTS, 0.999)
    ours = class_balanced_loss(
        logits, target, COUNTS, beta=0.999, normalization="weight_sum", ignore_index=ignore_index
    )
    expected = F.cross_entropy(logits, target, weight=weights, ignore_index=ignore_index)
    torch.testing.assert_close(ours, expected)
    reference = class_balanced_loss(logits, target, COUNTS, beta=0.999, ignore_index=ignore_index)
    valid = target != ignore_index
    torch.testing.assert_close(reference, expected * weights[target[valid]].sum() / valid.sum())


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_reductions_are_consistent(loss_type: str) -> None:
    logits, target = _logits(), torch.tensor([0, 0, 1, 2, 3, 4, 0])

    def loss(reduction: str) -> torch.Tensor:
        return class_balanced_loss(
            logits, target, COUNTS, beta=0.99, loss_type=loss_type, reduction=reduction
        )

    none = loss("none")
    assert none.shape == (7,)
    torch.testing.assert_close(loss("sum"), none.sum())
    torch.testing.assert_close(loss("mean"), none.sum() / 7)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradcheck(loss_type: str) -> None:
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1, 0])
    assert torch.autograd.gradcheck(
        lambda x: class_balanced_loss(
            x, target, [10, 5, 1], beta=0.9, loss_type=loss_type, gamma=0.5
        ),
        (logits,),
    )


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_and_half_logits_stay_finite(
    device: torch.device, loss_type: str, dtype: torch.dtype
) -> None:
    base = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, -50.0], [-50.0, -50.0, 50.0]] * 2)
    target = torch.tensor([0, 2, 1, 1, 0, 2])
    with torch.autocast(device_type=device.type, dtype=dtype):
        logits = base.to(device) @ torch.eye(3, device=device)  # a low-precision matmul
        assert logits.dtype == dtype
        loss = class_balanced_loss(logits, target, [100, 10, 1], loss_type=loss_type)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    half = base.to(device=device, dtype=dtype).requires_grad_()
    loss = class_balanced_loss(half, target, [100, 10, 1], loss_type=loss_type)
    loss.backward()
    assert half.grad is not None
    assert torch.isfinite(loss) and bool(torch.isfinite(half.grad).all())


@pytest.mark.parametrize("beta", [0.0, 0.99])
def test_focal_agrees_with_torchvision(beta: float) -> None:
    # An independent implementation: torchvision's sigmoid focal loss (alpha=-1: no
    # alpha weighting), times our per-sample class weight, over the positive labels.
    ops = pytest.importorskip("torchvision.ops")
    logits, target = _logits(), torch.tensor([0, 0, 1, 2, 3, 4, 0])
    one_hot = F.one_hot(target, 5).double()
    per_sample = ops.sigmoid_focal_loss(logits, one_hot, alpha=-1, gamma=1.5).sum(dim=1)
    alpha = class_balanced_weights(COUNTS, beta)[target]
    expected = (alpha * per_sample).sum() / 7
    ours = class_balanced_loss(logits, target, COUNTS, beta=beta, loss_type="focal", gamma=1.5)
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_targets_of_any_width(loss_type: str, dtype: torch.dtype) -> None:
    # int32/uint8 class indices once crashed (one_hot wants int64; a uint8 index is a mask).
    logits, target = _logits(), torch.tensor([0, 0, 1, 2, 3, 4, 0])
    expected = class_balanced_loss(logits, target, COUNTS, beta=0.99, loss_type=loss_type)
    got = class_balanced_loss(logits, target.to(dtype), COUNTS, beta=0.99, loss_type=loss_type)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_counts_as_numpy_array() -> None:
    np = pytest.importorskip("numpy")
    counts = np.array(COUNTS)
    torch.testing.assert_close(
        class_balanced_weights(counts, 0.99), class_balanced_weights(COUNTS, 0.99)
    )
    assert ClassBalancedLoss(counts).counts.tolist() == COUNTS


def test_focal_is_stable_for_large_logits() -> None:
    logits = torch.tensor([[-120.0, 120.0, 0.0], [90.0, -90.0, 3.0]], requires_grad=True)
    target = torch.tensor([0, 0])
    loss = class_balanced_loss(logits, target, [3, 2, 1], beta=0.9, loss_type="focal")
    loss.backward()
    expected = class_balanced_loss(
        logits.detach().double(), target, [3, 2, 1], beta=0.9, loss_type="focal"
    )
    assert torch.isfinite(loss) and logits.grad is not None
    assert bool(torch.isfinite(logits.grad).all())
    torch.testing.assert_close(loss.double(), expected)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"counts": [5, -1, 2]}, ValueError, r"non-negative.*class\(es\) \[1\]: \[-1.0\]"),
        ({"counts": [5, 1.5, 2]}, ValueError, r"whole numbers.*class\(es\) \[1\]: \[1.5\]"),
        ({"counts": [5, 2]}, ValueError, r"one entry per class, C = 3, got 2"),
        ({"counts": [[5, 2, 1]]}, ValueError, r"counts must have shape \[C\]"),
        ({"counts": torch.tensor([True, True, True])}, TypeError, "integer sample counts"),
        ({"counts": "abc"}, TypeError, "counts must be a tensor, an array or a sequence"),
        ({"counts": [5, 0, 2]}, ValueError, r"no sample of class\(es\) \[1\]"),
        ({"beta": 1.0}, ValueError, r"beta must be in \[0.0, 1.0\), got 1.0"),
        ({"beta": -0.1}, ValueError, r"beta must be in \[0.0, 1.0\)"),
        ({"gamma": -1.0}, ValueError, r"gamma must be in \[0.0, inf\], got -1.0"),
        ({"loss_type": "bce"}, ValueError, r"loss_type must be one of 'softmax', 'sigmoid'"),
        ({"normalization": "x"}, ValueError, r"normalization must be one of 'reference'"),
        ({"zero_count": "skip"}, ValueError, r"zero_count must be one of 'error', 'as_one'"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"label_smoothing": 1.5}, ValueError, r"label_smoothing must be in \[0.0, 1.0\]"),
        (
            {"label_smoothing": 0.1, "loss_type": "focal"},
            ValueError,
            "label_smoothing is only defined for loss_type='softmax'",
        ),
        ({"target": torch.tensor([0, 3, 1])}, ValueError, r"class indices in \[0, 3\).*\[3\]"),
        ({"target": torch.tensor([0, -5, 1])}, ValueError, r"or ignore_index=-100.*\[-5\]"),
        ({"target": torch.tensor([0.0, 1.0, 1.0])}, TypeError, "target must be an integer"),
        ({"target": torch.tensor([0, 1])}, ValueError, r"target must have shape \[B\] = \[3\]"),
        ({"target": torch.zeros(3, 3)}, ValueError, "loss_type='softmax' needs target as class"),
        (
            {"target": torch.full((3, 3), 2.0), "loss_type": "sigmoid"},
            ValueError,
            r"values in \[0, 1\], got values in \[2.0, 2.0\]",
        ),
        (
            {"target": torch.zeros(3, 2), "loss_type": "focal"},
            ValueError,
            r"shape of logits \[B, C\] = \[3, 3\]",
        ),
        ({"logits": torch.zeros(3, 3, 2)}, ValueError, r"logits must have shape \[B, C\]"),
        ({"logits": torch.zeros(3, 3, dtype=torch.long)}, TypeError, "floating-point"),
        (
            {"logits": torch.tensor([[0.0, math.nan, 1.0]] * 3)},
            ValueError,
            "logits must be finite, got 3 NaN",
        ),
    ],
)
def test_bad_input_is_reported(kwargs: dict[str, object], error: type, match: str) -> None:
    args: dict[str, object] = {
        "logits": torch.zeros(3, 3),
        "target": torch.tensor([0, 1, 2]),
        "counts": [5, 3, 2],
    }
    args.update(kwargs)
    logits, target, counts = args.pop("logits"), args.pop("target"), args.pop("counts")
    with pytest.raises(error, match=match):
        class_balanced_loss(logits, target, counts, **args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- module


def test_module_equals_function_and_holds_counts_as_buffer() -> None:
    criterion = ClassBalancedLoss(COUNTS, beta=0.99, loss_type="focal", gamma=1.0)
    assert criterion.counts.dtype == torch.long
    assert "counts" in criterion.state_dict()
    logits, target = _logits(), torch.tensor([0, 0, 1, 2, 3, 4, 0])
    torch.testing.assert_close(
        criterion(logits, target),
        class_balanced_loss(logits, target, COUNTS, beta=0.99, loss_type="focal", gamma=1.0),
    )
    torch.testing.assert_close(criterion.weights(), class_balanced_weights(COUNTS, 0.99))
    assert "loss_type='focal'" in repr(criterion)


def test_state_dict_round_trip_and_to() -> None:
    source = ClassBalancedLoss([7, 3, 1])
    target = ClassBalancedLoss(num_classes=3, zero_count="as_one")
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.counts, torch.tensor([7, 3, 1]))
    moved = target.to(torch.float64)
    assert moved.counts.dtype == torch.long
    assert target.to(torch.device("meta")).counts.device.type == "meta"


def test_module_follows_device(device: torch.device) -> None:
    criterion = ClassBalancedLoss([7, 3, 1]).to(device)
    assert criterion.counts.device.type == device.type
    loss = criterion(torch.randn(4, 3, device=device), torch.tensor([0, 1, 2, 0], device=device))
    assert loss.device.type == device.type


def test_from_labels_counts_and_fails_on_a_missing_class() -> None:
    labels = torch.tensor([0, 0, 0, 2, 1, -100, 2])
    criterion = ClassBalancedLoss.from_labels(labels, 3, beta=0.9)
    assert criterion.counts.tolist() == [3, 1, 2] and criterion.beta == 0.9
    multi_hot = torch.tensor([[1, 0, 1], [0, 0, 1]])
    assert ClassBalancedLoss.from_labels(multi_hot, 3, zero_count="as_one").counts.tolist() == [
        1,
        0,
        2,
    ]
    with pytest.raises(ValueError, match=r"no sample of class\(es\) \[1\]"):
        ClassBalancedLoss.from_labels(torch.tensor([0, 2]), 3)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\).*\[5\]"):
        ClassBalancedLoss.from_labels(torch.tensor([0, 5]), 3)
    with pytest.raises(ValueError, match="pass counts, or num_classes"):
        ClassBalancedLoss()
    with pytest.raises(ValueError, match="one entry per class, C = 4, got 3"):
        ClassBalancedLoss([1, 2, 3], num_classes=4)


class _DictDataset(Dataset[dict[str, torch.Tensor]]):
    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": torch.zeros(2), "label": torch.tensor(self.labels[index])}


class _TargetsDataset(_DictDataset):
    @property
    def targets(self) -> list[int]:
        return self.labels

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        raise AssertionError("the targets attribute must be used, not the items")


def test_from_dataset_uses_targets_items_or_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = [0, 1, 1, 2, 2, 2, 0]
    expected = [2, 2, 3]
    assert ClassBalancedLoss.from_dataset(_TargetsDataset(labels), 3).counts.tolist() == expected
    tensors = TensorDataset(torch.zeros(7, 2), torch.tensor(labels))
    assert ClassBalancedLoss.from_dataset(tensors, 3, progress=False).counts.tolist() == expected
    loader = DataLoader(tensors, batch_size=3)
    assert ClassBalancedLoss.from_dataset(loader, 3).counts.tolist() == expected
    dicts = _DictDataset(labels)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # tqdm not installed
    assert ClassBalancedLoss.from_dataset(dicts, 3).counts.tolist() == expected
    multi_hot = TensorDataset(torch.zeros(2, 2), torch.tensor([[1, 0, 1], [1, 1, 0]]))
    assert ClassBalancedLoss.from_dataset(multi_hot, 3).counts.tolist() == [2, 1, 1]
    with pytest.raises(TypeError, match="cannot find the label"):
        ClassBalancedLoss.from_dataset([torch.zeros(2)], 3)


def test_update_accumulates_counts() -> None:
    criterion = ClassBalancedLoss(num_classes=3, beta=0.9)
    with pytest.raises(ValueError, match=r"no sample of class\(es\) \[0, 1, 2\]"):
        criterion(torch.zeros(2, 3), torch.tensor([0, 1]))
    criterion.update(torch.tensor([0, 0, 1, -100]))
    criterion.update(torch.tensor([[0, 1, 1]]))
    assert criterion.counts.tolist() == [2, 2, 1]
    torch.testing.assert_close(criterion.weights(), class_balanced_weights([2, 2, 1], 0.9))
    with pytest.raises(ValueError, match=r"multi-hot labels must have shape \[N, C\] = \[N, 3\]"):
        criterion.update(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"multi-hot labels must hold only 0/1.*got \[2\]"):
        criterion.update(torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match=r"C = 4, got 3 entries \(C is given by logits"):
        criterion(torch.zeros(2, 4), torch.tensor([0, 1]))
