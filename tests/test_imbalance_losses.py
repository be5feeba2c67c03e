"""Logit adjustment, balanced softmax, LDAM and deferred re-weighting.

Each loss is checked against a plain float64 loop written from its paper's formula
(value and, through autograd on scalar arithmetic, gradient), against a transcription
of its authors' code (the only other implementation: no installed package computes
these losses), against ``F.cross_entropy`` where they reduce to it, for numerics
under autocast, for errors, and as modules holding counts.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from contrast_attn import BalancedSoftmaxLoss, LDAMLoss, LogitAdjustedLoss, PostHocLogitAdjustment
from contrast_attn.functional import (
    balanced_softmax_loss,
    class_log_prior,
    deferred_reweighting_weights,
    ldam_loss,
    ldam_margins,
    logit_adjusted_loss,
    post_hoc_logit_adjustment,
)

COUNTS = [500, 120, 30, 7, 1]
TARGET = [0, 0, 1, 2, 3, 4, -100]

# ---------------------------------------------------------------------------
# References: scalar float64 loops from the papers' equations, Python floats for the
# class quantities, and the mean of F.cross_entropy(weight=w) (sum of w_y l / sum of w_y).
# ---------------------------------------------------------------------------


def _mean(terms: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    return sum(terms, torch.zeros((), dtype=torch.float64)) / sum(weights)


def reference_logit_adjusted(
    x: torch.Tensor, target: list[int], counts: list[int], tau: float, weight: list[float]
) -> torch.Tensor:
    """Menon et al., Eq. 10: -log(e^{f_y + tau log pi_y} / sum_c e^{f_c + tau log pi_c})."""
    total = sum(counts)
    prior = [n / total for n in counts]
    terms, used = [], []
    for i, y in enumerate(target):
        if y == -100:
            continue
        num = torch.exp(x[i, y] + tau * math.log(prior[y]))
        den = sum(torch.exp(x[i, c] + tau * math.log(prior[c])) for c in range(len(counts)))
        terms.append(-weight[y] * torch.log(num / den))
        used.append(weight[y])
    return _mean(terms, used)


def reference_balanced_softmax(
    x: torch.Tensor, target: list[int], counts: list[int], weight: list[float]
) -> torch.Tensor:
    """Ren et al., Eq. 4: -log(n_y e^{eta_y} / sum_c n_c e^{eta_c})."""
    terms, used = [], []
    for i, y in enumerate(target):
        if y == -100:
            continue
        num = counts[y] * torch.exp(x[i, y])
        den = sum(counts[c] * torch.exp(x[i, c]) for c in range(len(counts)))
        terms.append(-weight[y] * torch.log(num / den))
        used.append(weight[y])
    return _mean(terms, used)


def reference_margins(counts: list[int], max_margin: float) -> list[float]:
    """Cao et al., Eq. 12: Delta_j = C / n_j^{1/4}, C such that the largest is max_margin."""
    constant = max_margin * min(counts) ** 0.25
    return [constant / n**0.25 for n in counts]


def reference_ldam(
    z: torch.Tensor,
    target: list[int],
    counts: list[int],
    max_margin: float,
    scale: float,
    weight: list[float],
) -> torch.Tensor:
    """Cao et al., Eq. 13 with the scale s of their code on every logit."""
    margins = reference_margins(counts, max_margin)
    terms, used = [], []
    for i, y in enumerate(target):
        if y == -100:
            continue
        true = torch.exp(scale * (z[i, y] - margins[y]))
        others = sum(torch.exp(scale * z[i, c]) for c in range(len(counts)) if c != y)
        terms.append(-weight[y] * torch.log(true / (true + others)))
        used.append(weight[y])
    return _mean(terms, used)


def reference_cb_weights(counts: list[int], beta: float) -> list[float]:
    raw = [(1.0 - beta) / (1.0 - beta**n) for n in counts]
    return [r / sum(raw) * len(counts) for r in raw]


def _logits(batch: int = 7, num_classes: int = 5, scale: float = 2.0) -> torch.Tensor:
    return (scale * torch.randn(batch, num_classes, dtype=torch.float64)).requires_grad_()


def _check_value_and_gradient(ours: torch.Tensor, ref: torch.Tensor, x: torch.Tensor) -> None:
    torch.testing.assert_close(ours, ref)
    (grad_ours,) = torch.autograd.grad(ours, x)
    (grad_ref,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(grad_ours, grad_ref)


WEIGHTS = {"unweighted": [1.0] * 5, "weighted": [0.2, 0.5, 1.0, 2.0, 4.0]}


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("weighting", sorted(WEIGHTS))
def test_logit_adjusted_loss_matches_reference(tau: float, weighting: str) -> None:
    x, w = _logits(), WEIGHTS[weighting]
    weight = None if weighting == "unweighted" else w
    ours = logit_adjusted_loss(x, torch.tensor(TARGET), COUNTS, tau=tau, weight=weight)
    _check_value_and_gradient(ours, reference_logit_adjusted(x, TARGET, COUNTS, tau, w), x)


@pytest.mark.parametrize("weighting", sorted(WEIGHTS))
def test_balanced_softmax_loss_matches_reference(weighting: str) -> None:
    x, w = _logits(), WEIGHTS[weighting]
    weight = None if weighting == "unweighted" else torch.tensor(w)
    ours = balanced_softmax_loss(x, torch.tensor(TARGET), COUNTS, weight=weight)
    _check_value_and_gradient(ours, reference_balanced_softmax(x, TARGET, COUNTS, w), x)


@pytest.mark.parametrize(("max_margin", "scale"), [(0.5, 30.0), (0.3, 1.0), (0.0, 10.0)])
@pytest.mark.parametrize("weighting", sorted(WEIGHTS))
def test_ldam_loss_matches_reference(max_margin: float, scale: float, weighting: str) -> None:
    z = (torch.rand(7, 5, dtype=torch.float64) * 2 - 1).requires_grad_()  # cosine logits
    w = WEIGHTS[weighting]
    weight = None if weighting == "unweighted" else w
    ours = ldam_loss(
        z, torch.tensor(TARGET), COUNTS, max_margin=max_margin, scale=scale, weight=weight
    )
    ref = reference_ldam(z, TARGET, COUNTS, max_margin, scale, w)
    _check_value_and_gradient(ours, ref, z)


def test_ldam_margins_match_reference_and_scale_as_n_to_the_minus_quarter() -> None:
    margins = ldam_margins(COUNTS, max_margin=0.5)
    torch.testing.assert_close(
        margins, torch.tensor(reference_margins(COUNTS, 0.5), dtype=torch.float64)
    )
    assert margins.max().item() == pytest.approx(0.5)
    assert int(margins.argmax()) == COUNTS.index(min(COUNTS))
    # Delta_a / Delta_b = (n_b / n_a)^{1/4}
    assert (margins[1] / margins[0]).item() == pytest.approx((500 / 120) ** 0.25)
    assert torch.equal(ldam_margins(COUNTS, max_margin=0.0), torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.5])
def test_post_hoc_adjustment_matches_reference(tau: float) -> None:
    x = torch.randn(6, 5, dtype=torch.float64)
    total = sum(COUNTS)
    expected = torch.tensor(
        [[x[i, c].item() - tau * math.log(COUNTS[c] / total) for c in range(5)] for i in range(6)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(post_hoc_logit_adjustment(x, COUNTS, tau=tau), expected)


def test_post_hoc_adjustment_moves_the_decision_toward_rare_classes() -> None:
    logits = torch.tensor([[2.0, 1.0], [4.0, 1.0]])
    # log(.9) - log(.1) = 2.197: the first row flips to class 1, the second does not.
    assert post_hoc_logit_adjustment(logits, [90, 10]).argmax(1).tolist() == [1, 0]
    assert torch.equal(post_hoc_logit_adjustment(logits, [90, 10], tau=0.0), logits)


def test_class_log_prior_matches_reference() -> None:
    expected = torch.tensor([math.log(n / sum(COUNTS)) for n in COUNTS], dtype=torch.float64)
    torch.testing.assert_close(class_log_prior(COUNTS), expected)
    torch.testing.assert_close(class_log_prior(torch.tensor(COUNTS)).exp().sum().item(), 1.0)


# --------------------------------------------------------------------------- authors' code


def test_ldam_agrees_with_the_authors_code() -> None:
    # kaidic/LDAM-DRW losses.py, transcribed: margins m_list = n^{-1/4} * max_m / max,
    # subtracted at the target by torch.where, then F.cross_entropy(s * output, weight=w).
    counts = torch.tensor(COUNTS, dtype=torch.float32)
    m_list = 1.0 / counts.sqrt().sqrt()
    m_list = m_list * (0.5 / m_list.max())
    x = torch.rand(8, 5) * 2 - 1
    target = torch.tensor([0, 1, 2, 3, 4, 0, 0, 1])
    weight = torch.tensor(reference_cb_weights(COUNTS, 0.9999), dtype=torch.float32)
    index = F.one_hot(target, 5).bool()
    output = torch.where(index, x - m_list[target][:, None], x)
    theirs = F.cross_entropy(30.0 * output, target, weight=weight)
    ours = ldam_loss(x, target, COUNTS, max_margin=0.5, scale=30.0, weight=weight)
    torch.testing.assert_close(ours, theirs)


def test_balanced_softmax_and_logit_adjustment_agree_with_the_authors_code() -> None:
    # jiawei-ren/BalancedMetaSoftmax: F.cross_entropy(logits + log(sample_per_class));
    # google-research logit_adjustment: logits + tau * log(base_probs).
    x, target = torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 4, 0, 0, 1])
    spc = torch.tensor(COUNTS, dtype=torch.float32)
    torch.testing.assert_close(
        balanced_softmax_loss(x, target, COUNTS), F.cross_entropy(x + spc.log(), target)
    )
    adjusted = x + 0.7 * torch.log(spc / spc.sum())
    torch.testing.assert_close(
        logit_adjusted_loss(x, target, COUNTS, tau=0.7), F.cross_entropy(adjusted, target)
    )


# --------------------------------------------------------------------------- DRW


def test_deferred_reweighting_weights_follow_the_schedule() -> None:
    before = deferred_reweighting_weights(COUNTS, 159, defer_epoch=160)
    assert torch.equal(before, torch.ones(5, dtype=torch.float64))
    for epoch in (160, 199):
        after = deferred_reweighting_weights(COUNTS, epoch, defer_epoch=160)
        expected = torch.tensor(reference_cb_weights(COUNTS, 0.9999), dtype=torch.float64)
        torch.testing.assert_close(after, expected)
    torch.testing.assert_close(
        deferred_reweighting_weights(COUNTS, 0, defer_epoch=0, beta=0.99),
        torch.tensor(reference_cb_weights(COUNTS, 0.99), dtype=torch.float64),
    )


def test_deferred_weights_before_deferral_are_the_unweighted_loss_for_ce_and_ldam() -> None:
    x, target = torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 4, 0, -100, 1])
    w = deferred_reweighting_weights(COUNTS, 3, defer_epoch=160)
    torch.testing.assert_close(
        F.cross_entropy(x, target, weight=w.float()), F.cross_entropy(x, target)
    )
    torch.testing.assert_close(
        ldam_loss(x, target, COUNTS, weight=w, scale=5.0), ldam_loss(x, target, COUNTS, scale=5.0)
    )
    late = deferred_reweighting_weights(COUNTS, 170, defer_epoch=160)
    assert not torch.allclose(
        ldam_loss(x, target, COUNTS, weight=late, scale=5.0),
        ldam_loss(x, target, COUNTS, scale=5.0),
    )


# --------------------------------------------------------------------------- properties

counts_strategy = st.lists(st.integers(min_value=1, max_value=10_000), min_size=2, max_size=6)


def _batch(num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(9, num_classes, generator=generator, dtype=torch.float64)
    return x, torch.randint(0, num_classes, (9,), generator=generator)


@given(
    num_classes=st.integers(2, 6),
    count=st.integers(1, 1000),
    tau=st.floats(0.0, 3.0),
    seed=st.integers(0, 99),
)
def test_uniform_counts_give_cross_entropy(
    num_classes: int, count: int, tau: float, seed: int
) -> None:
    x, target = _batch(num_classes, seed)
    counts = [count] * num_classes
    plain = F.cross_entropy(x, target)
    torch.testing.assert_close(logit_adjusted_loss(x, target, counts, tau=tau), plain)
    torch.testing.assert_close(balanced_softmax_loss(x, target, counts), plain)
    torch.testing.assert_close(
        post_hoc_logit_adjustment(x, counts, tau=tau).softmax(1), x.softmax(1)
    )


@given(counts=counts_strategy, seed=st.integers(0, 99))
def test_tau_zero_is_cross_entropy_and_tau_one_is_balanced_softmax(
    counts: list[int], seed: int
) -> None:
    # Ren et al.'s n_c e^{x_c} / sum n_k e^{x_k} is Menon et al.'s Eq. 10 at tau = 1:
    # log n_c = log pi_c + log N, and the softmax is invariant to the constant log N.
    x, target = _batch(len(counts), seed)
    torch.testing.assert_close(
        logit_adjusted_loss(x, target, counts, tau=0.0), F.cross_entropy(x, target)
    )
    torch.testing.assert_close(
        logit_adjusted_loss(x, target, counts, tau=1.0), balanced_softmax_loss(x, target, counts)
    )


@given(counts=counts_strategy, scale=st.floats(0.1, 30.0), seed=st.integers(0, 99))
def test_ldam_without_margin_is_scaled_cross_entropy(
    counts: list[int], scale: float, seed: int
) -> None:
    x, target = _batch(len(counts), seed)
    torch.testing.assert_close(
        ldam_loss(x, target, counts, max_margin=0.0, scale=scale),
        F.cross_entropy(scale * x, target),
    )
    torch.testing.assert_close(
        ldam_loss(x, target, counts, max_margin=0.0, scale=1.0), F.cross_entropy(x, target)
    )


@given(counts=counts_strategy, factor=st.integers(2, 50), seed=st.integers(0, 99))
def test_losses_depend_only_on_class_proportions(counts: list[int], factor: int, seed: int) -> None:
    x, target = _batch(len(counts), seed)
    more = [factor * n for n in counts]
    for loss in (logit_adjusted_loss, balanced_softmax_loss, ldam_loss):
        torch.testing.assert_close(loss(x, target, more), loss(x, target, counts))


@given(counts=counts_strategy, seed=st.integers(0, 99))
def test_ldam_margins_raise_the_loss_of_every_sample(counts: list[int], seed: int) -> None:
    x, target = _batch(len(counts), seed)
    with_margin = ldam_loss(x, target, counts, max_margin=0.5, scale=2.0, reduction="none")
    without = ldam_loss(x, target, counts, max_margin=0.0, scale=2.0, reduction="none")
    assert bool((with_margin > without).all())


# --------------------------------------------------------------------------- torch agreement

LOSSES = {
    "logit_adjusted": lambda x, t, **kw: logit_adjusted_loss(x, t, [4, 4, 4], tau=1.3, **kw),
    "balanced_softmax": lambda x, t, **kw: balanced_softmax_loss(x, t, [4, 4, 4], **kw),
    "ldam": lambda x, t, **kw: ldam_loss(x, t, [4, 4, 4], max_margin=0.0, scale=1.0, **kw),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_reductions_weight_and_ignore_index_agree_with_cross_entropy(
    name: str, reduction: str, ignore_index: int
) -> None:
    x = torch.randn(8, 3)
    target = torch.tensor([0, 1, 2, ignore_index, 0, 2, 1, ignore_index])
    weight = torch.tensor([0.5, 2.0, 3.0])
    ours = LOSSES[name](x, target, weight=weight, reduction=reduction, ignore_index=ignore_index)
    theirs = F.cross_entropy(
        x, target, weight=weight, reduction=reduction, ignore_index=ignore_index
    )
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mean_over_no_sample_is_zero(name: str) -> None:
    x = torch.randn(3, 3, requires_grad=True)
    loss = LOSSES[name](x, torch.full((3,), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and not bool(x.grad.any())


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int64])
def test_integer_targets_of_any_width(dtype: torch.dtype) -> None:
    x = torch.randn(4, 3)
    target = torch.tensor([0, 2, 1, 0])
    for loss in (logit_adjusted_loss, balanced_softmax_loss, ldam_loss):
        torch.testing.assert_close(loss(x, target.to(dtype), [9, 3, 1]), loss(x, target, [9, 3, 1]))


# --------------------------------------------------------------------------- numerics


def test_gradcheck() -> None:
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1, -100, 0])
    counts, weight = [10, 5, 1], [1.0, 2.0, 0.5]
    for fn in (
        lambda v: logit_adjusted_loss(v, target, counts, tau=1.5, weight=weight),
        lambda v: balanced_softmax_loss(v, target, counts, weight=weight),
        lambda v: ldam_loss(v, target, counts, scale=3.0, weight=weight),
        lambda v: post_hoc_logit_adjustment(v, counts, tau=0.5),
    ):
        assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_and_half_logits_are_finite_and_close_to_float32(
    device: torch.device, dtype: torch.dtype
) -> None:
    base = torch.tensor([[30.0, -30.0, 0.2], [-1.0, 0.5, -30.0], [0.3, -0.7, 30.0]] * 2)
    target = torch.tensor([0, 2, 1, 1, 0, 2], device=device)
    counts = [1000, 10, 1]
    fns = {
        "logit_adjusted": lambda v: logit_adjusted_loss(v, target, counts, tau=2.0),
        "balanced_softmax": lambda v: balanced_softmax_loss(v, target, counts),
        "ldam": lambda v: ldam_loss(v, target, counts, scale=30.0),
        "post_hoc": lambda v: post_hoc_logit_adjustment(v, counts),
    }
    for name, fn in fns.items():
        reference = fn(base.to(device))
        with torch.autocast(device_type=device.type, dtype=dtype):
            logits = base.to(device) @ torch.eye(3, device=device)  # a low-precision matmul
            assert logits.dtype == dtype
            value = fn(logits)
        assert value.dtype == torch.float32, name
        assert bool(torch.isfinite(value).all()), name
        # The inputs are rounded to the half format; everything after runs in float32.
        torch.testing.assert_close(value, reference, rtol=2e-2, atol=2e-1, msg=name)
        half = base.to(device=device, dtype=dtype).requires_grad_()
        out = fn(half)
        out.sum().backward()
        assert half.grad is not None and bool(torch.isfinite(half.grad).all()), name


def test_extreme_counts_and_logits_stay_finite() -> None:
    counts = [10**9, 1]
    x = torch.tensor([[80.0, -80.0], [-80.0, 80.0]], requires_grad=True)
    target = torch.tensor([1, 0])
    for loss in (
        logit_adjusted_loss(x, target, counts, tau=3.0),
        balanced_softmax_loss(x, target, counts),
        ldam_loss(x, target, counts, scale=30.0),
    ):
        (grad,) = torch.autograd.grad(loss, x)
        assert math.isfinite(loss.item()) and bool(torch.isfinite(grad).all())


def test_losses_compile() -> None:
    logits = torch.randn(6, 3)
    target = torch.tensor([0, 1, 2, 0, -100, 1])
    counts, weight = torch.tensor([50, 5, 1]), torch.tensor([0.5, 1.0, 2.0])

    def losses(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                logit_adjusted_loss(x, y, counts, tau=1.5, weight=weight),
                balanced_softmax_loss(x, y, counts),
                ldam_loss(x, y, counts, scale=4.0, weight=weight),
                post_hoc_logit_adjustment(x, counts).sum(),
            ]
        )

    compiled = torch.compile(losses, fullgraph=False)
    torch.testing.assert_close(compiled(logits, target), losses(logits, target))


# --------------------------------------------------------------------------- errors

BAD_INPUTS = [
    ({"tau": -0.5}, ValueError, r"tau must be in \[0.0, inf\], got -0.5"),
    ({"tau": "1"}, TypeError, "tau must be a real number"),
    ({"tau": True}, TypeError, "tau must be a real number"),
    ({"counts": [5, 0, 2]}, ValueError, r"no sample of class\(es\) \[1\].*zero_count='as_one'"),
    ({"counts": [5, 3]}, ValueError, r"one entry per class, C = 3.*logits \[B, C\]"),
    ({"counts": [5, -3, 2]}, ValueError, "counts must be non-negative"),
    ({"counts": [5, 2.5, 2]}, ValueError, "whole numbers"),
    ({"counts": "abc"}, TypeError, "counts must be a tensor"),
    ({"zero_count": "zero_weight"}, ValueError, "zero_count must be one of 'error', 'as_one'"),
    ({"reduction": "avg"}, ValueError, "reduction must be one of"),
    ({"ignore_index": 1.0}, TypeError, "ignore_index must be an int"),
    ({"weight": [1.0, 2.0]}, ValueError, r"weight must have shape \[C\] = \[3\]"),
    ({"weight": [1.0, -2.0, 1.0]}, ValueError, "weight must be non-negative"),
    ({"weight": [1.0, math.nan, 1.0]}, ValueError, "weight must be finite"),
    ({"weight": "w"}, TypeError, "weight must be None or a tensor"),
    ({"target": torch.tensor([0, 3, 1])}, ValueError, r"class indices in \[0, 3\).*\[3\]"),
    ({"target": torch.tensor([0.0, 1.0, 2.0])}, TypeError, "target must be an integer tensor"),
    ({"target": torch.tensor([0, 1])}, ValueError, r"target must have shape \[B\] = \[3\]"),
    ({"logits": torch.zeros(3, 3, 2)}, ValueError, r"logits must have shape \[B, C\]"),
    ({"logits": torch.zeros(3, 3, dtype=torch.long)}, TypeError, "floating-point"),
    (
        {"logits": torch.tensor([[0.0, math.nan, 1.0]] * 3)},
        ValueError,
        "logits must be finite, got 3 NaN",
    ),
]


def _call(fn_name: str, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "logits": torch.zeros(3, 3),
        "target": torch.tensor([0, 1, 2]),
        "counts": [5, 3, 2],
    }
    args.update(kwargs)
    logits, target, counts = args.pop("logits"), args.pop("target"), args.pop("counts")
    if fn_name == "logit_adjusted":
        logit_adjusted_loss(logits, target, counts, **args)  # type: ignore[arg-type]
    elif fn_name == "balanced_softmax":
        balanced_softmax_loss(logits, target, counts, **args)  # type: ignore[arg-type]
    else:
        ldam_loss(logits, target, counts, **args)  # type: ignore[arg-type]


BAD_CALLS = [
    (fn_name, kwargs, error, match)
    for fn_name in ("logit_adjusted", "balanced_softmax", "ldam")
    for kwargs, error, match in BAD_INPUTS
    if fn_name == "logit_adjusted" or "tau" not in kwargs  # tau is the logit adjustment's
]


@pytest.mark.parametrize(("fn_name", "kwargs", "error", "match"), BAD_CALLS)
def test_bad_input_is_reported(
    fn_name: str, kwargs: dict[str, object], error: type, match: str
) -> None:
    if fn_name == "ldam" and kwargs.get("counts") == [5, 0, 2]:
        match = r"no sample of class\(es\) \[1\]: their LDAM margin is infinite"
    with pytest.raises(error, match=match):
        _call(fn_name, kwargs)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ldam_loss(torch.zeros(2, 2), torch.tensor([0, 1]), [3, 1], scale=0.0),
         ValueError, r"scale must be in \(0.0, inf\]"),
        (lambda: ldam_loss(torch.zeros(2, 2), torch.tensor([0, 1]), [3, 1], max_margin=-1.0),
         ValueError, r"max_margin must be in \[0.0, inf\]"),
        (lambda: ldam_margins([3, 0]), ValueError, r"class\(es\) \[1\]: their LDAM margin"),
        (lambda: post_hoc_logit_adjustment(torch.zeros(2, 3), [3, 1]), ValueError,
         "one entry per class, C = 3"),
        (lambda: post_hoc_logit_adjustment(torch.zeros(2, 2), [3, 0]), ValueError,
         "log prior is infinite"),
        (lambda: class_log_prior([3, 0]), ValueError, r"class\(es\) \[1\]"),
        (lambda: deferred_reweighting_weights([3, 1], -1, defer_epoch=5), ValueError,
         "epoch must be >= 0, got -1"),
        (lambda: deferred_reweighting_weights([3, 1], 1, defer_epoch=2.0), TypeError,
         "defer_epoch must be an int"),
        (lambda: deferred_reweighting_weights([3, 1], 1, defer_epoch=2, beta=1.0), ValueError,
         r"beta must be in \[0.0, 1.0\)"),
        (lambda: deferred_reweighting_weights([3, 0], 1, defer_epoch=2), ValueError,
         "no sample of class"),
    ],
)  # fmt: skip
def test_bad_arguments_of_the_other_functions(call: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]


def test_zero_count_as_one_counts_a_missing_class_once() -> None:
    x, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    for loss in (logit_adjusted_loss, balanced_softmax_loss, ldam_loss):
        torch.testing.assert_close(
            loss(x, target, [9, 0, 3], zero_count="as_one"), loss(x, target, [9, 1, 3])
        )
    torch.testing.assert_close(
        post_hoc_logit_adjustment(x, [9, 0, 3], zero_count="as_one"),
        post_hoc_logit_adjustment(x, [9, 1, 3]),
    )


# --------------------------------------------------------------------------- modules

MODULES = {
    "logit_adjusted": (LogitAdjustedLoss, {"tau": 1.5}, logit_adjusted_loss),
    "balanced_softmax": (BalancedSoftmaxLoss, {}, balanced_softmax_loss),
    "ldam": (LDAMLoss, {"max_margin": 0.4, "scale": 5.0}, ldam_loss),
}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_equals_function_and_holds_counts_as_buffer(name: str) -> None:
    cls, kwargs, fn = MODULES[name]
    criterion = cls(COUNTS, reduction="sum", **kwargs)
    assert criterion.counts.dtype == torch.long
    assert list(criterion.state_dict()) == ["counts"]
    x, target = _logits(), torch.tensor(TARGET)
    weight = torch.tensor(WEIGHTS["weighted"])
    torch.testing.assert_close(
        criterion(x, target, weight=weight),
        fn(x, target, COUNTS, weight=weight, reduction="sum", **kwargs),  # type: ignore[operator]
    )
    assert "num_classes=5" in repr(criterion)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_state_dict_round_trip_and_to(name: str) -> None:
    cls, kwargs, _ = MODULES[name]
    source = cls([7, 3, 1], **kwargs)
    target = cls(num_classes=3, **kwargs)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.counts, torch.tensor([7, 3, 1]))
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(target(x, y), source(x, y))
    assert target.to(torch.float64).counts.dtype == torch.long
    assert target.to(torch.device("meta")).counts.device.type == "meta"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_from_labels_update_and_missing_class(name: str) -> None:
    cls, kwargs, _ = MODULES[name]
    labels = torch.tensor([0, 0, 0, 2, 1, -100, 2])
    criterion = cls.from_labels(labels, num_classes=3, **kwargs)
    assert criterion.counts.tolist() == [3, 1, 2]
    criterion.update(torch.tensor([1, 1, -100]))
    assert criterion.counts.tolist() == [3, 3, 2]
    with pytest.raises(ValueError, match=r"no sample of class\(es\) \[1\]"):
        cls.from_labels(torch.tensor([0, 2]), num_classes=3, **kwargs)
    relaxed = cls.from_labels(torch.tensor([0, 2]), num_classes=3, zero_count="as_one", **kwargs)
    assert relaxed.counts.tolist() == [1, 0, 1]
    fresh = cls(num_classes=3, **kwargs)  # counts filled later by update()
    with pytest.raises(ValueError, match="no sample of class"):
        fresh(torch.randn(2, 3), torch.tensor([0, 1]))
    fresh.update(torch.tensor([0, 1, 2]))
    assert torch.isfinite(fresh(torch.randn(2, 3), torch.tensor([0, 1])))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_follows_device(device: torch.device, name: str) -> None:
    cls, kwargs, _ = MODULES[name]
    criterion = cls([7, 3, 1], **kwargs).to(device)
    assert criterion.counts.device.type == device.type
    loss = criterion(torch.randn(4, 3, device=device), torch.tensor([0, 1, 2, 0], device=device))
    assert loss.device.type == device.type


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: LogitAdjustedLoss(), ValueError, "pass counts, or num_classes"),
        (lambda: LogitAdjustedLoss([3, 0]), ValueError, r"no sample of class\(es\) \[1\]"),
        (lambda: LogitAdjustedLoss([3, 1], tau=-1.0), ValueError, "tau must be in"),
        (lambda: LogitAdjustedLoss([3, 1], num_classes=3), ValueError, "one entry per class"),
        (lambda: BalancedSoftmaxLoss([3, 1], zero_count="x"), ValueError, "zero_count must be"),
        (lambda: BalancedSoftmaxLoss([3, 1], reduction="x"), ValueError, "reduction must be"),
        (lambda: LDAMLoss([3, 1], scale=-1.0), ValueError, "scale must be in"),
        (lambda: LDAMLoss([3, 1], ignore_index=None), TypeError, "ignore_index must be an int"),
        (lambda: LDAMLoss(num_classes=0), ValueError, "num_classes must be >= 1"),
        (lambda: PostHocLogitAdjustment([3, 0]), ValueError, "log prior is infinite"),
    ],
)  # fmt: skip
def test_module_construction_errors(make: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        make()  # type: ignore[operator]


def test_ldam_module_margins_and_drw_option() -> None:
    criterion = LDAMLoss(COUNTS, max_margin=0.5, scale=30.0)
    torch.testing.assert_close(criterion.margins(), ldam_margins(COUNTS, max_margin=0.5))
    z = (torch.rand(7, 5, dtype=torch.float64) * 2 - 1).requires_grad_()
    late = deferred_reweighting_weights(criterion.counts, 160, defer_epoch=160)
    ref = reference_ldam(z, TARGET, COUNTS, 0.5, 30.0, reference_cb_weights(COUNTS, 0.9999))
    _check_value_and_gradient(criterion(z, torch.tensor(TARGET), weight=late), ref, z)


def test_post_hoc_module_appends_to_any_model_and_saves_the_counts() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    corrected = nn.Sequential(model, PostHocLogitAdjustment([90, 9, 1], tau=0.8))
    inputs = torch.randn(5, 4)
    torch.testing.assert_close(
        corrected(inputs), post_hoc_logit_adjustment(model(inputs), [90, 9, 1], tau=0.8)
    )
    assert "1.counts" in corrected.state_dict()
    blank = nn.Sequential(nn.Linear(4, 3), PostHocLogitAdjustment(num_classes=3, tau=0.8))
    blank.load_state_dict(corrected.state_dict())
    torch.testing.assert_close(blank(inputs), corrected(inputs))
    assert "tau=0.8" in repr(corrected)
