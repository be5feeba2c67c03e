"""NT-Xent and SupCon: reference loops, peers, gradients, properties, numerics, errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import contrast_attn
from contrast_attn import NTXentLoss, SupConLoss
from contrast_attn.functional import nt_xent_loss, supcon_loss

# ---------------------------------------------------------------------------
# The reference: a plain float64 loop over anchors, written from the formulas of
# Chen et al. (SimCLR) and Khosla et al. (SupCon, L_out and L_in). Rows are
# view-major (row v * B + b is view v of sample b). Scalar tensor arithmetic so
# that autograd gives the reference gradient too.
# ---------------------------------------------------------------------------


def reference_supcon(
    features: torch.Tensor,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    temperature: float,
    base_temperature: float | None = None,
    variant: str = "out",
) -> tuple[list[torch.Tensor], list[bool]]:
    """Per-anchor losses and whether each anchor had a positive."""
    batch, views, _ = features.shape
    rows = [features[b, v] / features[b, v].norm() for v in range(views) for b in range(batch)]
    sample = [b for v in range(views) for b in range(batch)]
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    losses, has_positive = [], []
    for i, z_i in enumerate(rows):
        denominator = sum(
            torch.exp(z_i @ z_k / temperature) for k, z_k in enumerate(rows) if k != i
        )
        positives = []
        for p in range(len(rows)):
            if p == i:
                continue
            if mask is not None:
                positive = bool(mask[sample[i], sample[p]])
            elif labels is not None:
                positive = int(labels[sample[i]]) == int(labels[sample[p]])
            else:
                positive = sample[i] == sample[p]
            if positive:
                positives.append(p)
        if not positives:
            losses.append(features.new_zeros(()))
            has_positive.append(False)
            continue
        ratios = [torch.exp(z_i @ rows[p] / temperature) / denominator for p in positives]
        if variant == "out":
            loss = -sum(torch.log(r) for r in ratios) / len(positives)
        else:
            loss = -torch.log(sum(ratios) / len(positives))
        losses.append(scale * loss)
        has_positive.append(True)
    return losses, has_positive


def reduce_reference(
    losses: list[torch.Tensor],
    has_positive: list[bool],
    reduction: str,
    no_positive: str = "ignore",
) -> torch.Tensor:
    stacked = torch.stack(losses)
    if reduction == "none":
        return stacked
    if reduction == "sum":
        return stacked.sum()
    count = sum(has_positive) if no_positive == "ignore" else len(losses)
    return stacked.sum() / max(count, 1)


def assert_close_with_grad(
    ours: torch.Tensor, ref: torch.Tensor, inputs: torch.Tensor, rtol: float = 1e-10
) -> None:
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=1e-12)
    weight = torch.linspace(0.5, 1.5, ours.numel(), dtype=ours.dtype).reshape(ours.shape)
    (g_ours,) = torch.autograd.grad((ours * weight).sum(), inputs)
    (g_ref,) = torch.autograd.grad((ref * weight).sum(), inputs)
    torch.testing.assert_close(g_ours, g_ref, rtol=rtol, atol=1e-12)


# --------------------------------------------------------------------- values


@pytest.mark.parametrize("batch,views", [(2, 2), (5, 2), (4, 3), (3, 4)])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nt_xent_equals_reference_loop(
    batch: int, views: int, temperature: float, reduction: str
) -> None:
    features = torch.randn(batch, views, 6, dtype=torch.float64, requires_grad=True)
    ours = nt_xent_loss(features, temperature=temperature, reduction=reduction)
    ref = reduce_reference(*reference_supcon(features, temperature=temperature), reduction)
    assert_close_with_grad(ours, ref, features)


def test_nt_xent_two_tensors_equals_stacked_views() -> None:
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    stacked = nt_xent_loss(torch.stack([z1, z2], dim=1), reduction="none")
    torch.testing.assert_close(nt_xent_loss(z1, z2, reduction="none"), stacked)
    torch.testing.assert_close(NTXentLoss(0.5)(z1, z2), stacked.mean())


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("no_positive", ["ignore", "zero"])
def test_supcon_labels_equals_reference_loop(
    views: int, variant: str, reduction: str, no_positive: str
) -> None:
    # Label 3 appears once: with one view that anchor has no positive.
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 2])
    features = torch.randn(7, views, 5, dtype=torch.float64, requires_grad=True)
    kwargs = {"temperature": 0.2, "base_temperature": 0.07, "variant": variant}
    ours = supcon_loss(features, labels, reduction=reduction, no_positive=no_positive, **kwargs)
    ref = reduce_reference(*reference_supcon(features, labels, **kwargs), reduction, no_positive)
    assert_close_with_grad(ours, ref, features)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_explicit_mask_equals_reference_loop(variant: str) -> None:
    generator = torch.Generator().manual_seed(3)
    mask = torch.rand(6, 6, generator=generator) > 0.6  # asymmetric on purpose
    features = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
    ours = supcon_loss(features, mask=mask, variant=variant, temperature=0.3)
    ref = reduce_reference(
        *reference_supcon(features, mask=mask, temperature=0.3, variant=variant), "mean"
    )
    assert_close_with_grad(ours, ref, features)


def test_supcon_mask_equal_to_labels_gives_same_loss() -> None:
    labels = torch.tensor([0, 1, 1, 0, 2])
    features = torch.randn(5, 2, 8)
    mask = labels[:, None] == labels[None, :]
    torch.testing.assert_close(
        supcon_loss(features, mask=mask.float()), supcon_loss(features, labels)
    )


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_supcon_without_labels_equals_nt_xent(views: int, temperature: float) -> None:
    features = torch.randn(6, views, 16)
    torch.testing.assert_close(
        supcon_loss(features, temperature=temperature, reduction="none"),
        nt_xent_loss(features, temperature=temperature, reduction="none"),
    )


def test_base_temperature_scales_the_loss() -> None:
    features, labels = torch.randn(6, 2, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    plain = supcon_loss(features, labels, temperature=0.1)
    scaled = supcon_loss(features, labels, temperature=0.1, base_temperature=0.07)
    torch.testing.assert_close(scaled, plain * 0.1 / 0.07)


# ---------------------------------------------------------------------- peers


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_equals_lightly(temperature: float) -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    z1 = torch.randn(16, 32, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(16, 32, dtype=torch.float64, requires_grad=True)
    ours = nt_xent_loss(z1, z2, temperature=temperature)
    theirs = lightly_loss.NTXentLoss(temperature=temperature)(z1, z2)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    g_ours = torch.autograd.grad(ours, (z1, z2))
    g_theirs = torch.autograd.grad(theirs, (z1, z2))
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_equals_pytorch_metric_learning(temperature: float) -> None:
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z1, z2 = torch.randn(12, 16, dtype=torch.float64), torch.randn(12, 16, dtype=torch.float64)
    # PML's convention: embeddings of the same "label" are positives.
    embeddings = torch.cat([z1, z2])
    ids = torch.arange(12).repeat(2)
    theirs = pml.NTXentLoss(temperature=temperature)(embeddings, ids)
    torch.testing.assert_close(
        nt_xent_loss(z1, z2, temperature=temperature), theirs, rtol=1e-6, atol=0
    )


def test_supcon_equals_pytorch_metric_learning() -> None:
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3, 1])  # every anchor has a positive
    features = torch.randn(10, 2, 16, dtype=torch.float64, requires_grad=True)
    ours = supcon_loss(features, labels, temperature=0.1)
    rows = torch.cat(features.unbind(dim=1))
    theirs = pml.SupConLoss(temperature=0.1)(rows, labels.repeat(2))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    (g_ours,) = torch.autograd.grad(ours, features)
    (g_theirs,) = torch.autograd.grad(theirs, features)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-6, atol=1e-12)


# ------------------------------------------------------------------ gradients


def test_gradcheck_nt_xent() -> None:
    features = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda f: nt_xent_loss(f, temperature=0.3, reduction="none"), (features,)
    )


@pytest.mark.parametrize("variant", ["out", "in"])
def test_gradcheck_supcon(variant: str) -> None:
    features = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1])
    assert torch.autograd.gradcheck(
        lambda f: supcon_loss(f, labels, temperature=0.2, variant=variant, reduction="none"),
        (features,),
    )


# ----------------------------------------------------------------- properties

embedding_batches = st.tuples(
    st.integers(min_value=2, max_value=6),  # batch
    st.integers(min_value=2, max_value=3),  # views
    st.integers(min_value=2, max_value=8),  # dim
    st.integers(min_value=0, max_value=2**16),  # seed
)


def _draw(shape: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, views, dim = shape
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, views, dim, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (batch,), generator=generator)
    return features, labels


@given(embedding_batches, st.sampled_from([0.05, 0.1, 0.5]))
def test_invariant_to_batch_permutation(
    case: tuple[int, int, int, int], temperature: float
) -> None:
    features, labels = _draw(case[:3], case[3])
    perm = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(case[3]))
    for fn in (
        lambda f, y: nt_xent_loss(f, temperature=temperature),
        lambda f, y: supcon_loss(f, y, temperature=temperature),
        lambda f, y: supcon_loss(f, y, temperature=temperature, variant="in"),
    ):
        torch.testing.assert_close(fn(features[perm], labels[perm]), fn(features, labels))


@given(embedding_batches, st.floats(min_value=1e-3, max_value=1e3))
def test_invariant_to_positive_rescaling(case: tuple[int, int, int, int], factor: float) -> None:
    features, labels = _draw(case[:3], case[3])
    scales = (
        torch.linspace(1.0, 2.0, features.shape[0], dtype=torch.float64)[:, None, None] * factor
    )
    torch.testing.assert_close(nt_xent_loss(features * scales), nt_xent_loss(features))
    torch.testing.assert_close(
        supcon_loss(features * scales, labels), supcon_loss(features, labels)
    )


@given(embedding_batches, st.sampled_from([0.01, 0.1, 1.0]), st.booleans())
def test_finite_loss_and_gradients(
    case: tuple[int, int, int, int], temperature: float, identical: bool
) -> None:
    features, labels = _draw(case[:3], case[3])
    if identical:
        features = features[:1, :1].expand_as(features).clone()
    features = features.float().requires_grad_(True)
    for variant in ("out", "in"):
        loss = supcon_loss(features, labels, temperature=temperature, variant=variant)
        (grad,) = torch.autograd.grad(loss, features)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    loss = nt_xent_loss(features, temperature=temperature)
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_identical_embeddings_give_log_of_negatives() -> None:
    # All similarities equal: each anchor's softmax is uniform over N - 1 rows.
    features = torch.ones(4, 2, 3, requires_grad=True)
    loss = nt_xent_loss(features)
    torch.testing.assert_close(loss, torch.tensor(math.log(7.0)))
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(grad).all()


# ------------------------------------------------------- anchors w/o positive


@pytest.mark.parametrize("variant", ["out", "in"])
def test_no_positive_is_counted_and_finite(variant: str) -> None:
    features = torch.randn(4, 8, requires_grad=True)  # one view
    labels = torch.tensor([0, 0, 1, 2])  # classes 1 and 2 have no positive
    criterion = SupConLoss(variant=variant)
    loss = criterion(features, labels)
    assert int(criterion.last_num_anchors_without_positives) == 2
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert grad[2:].abs().sum() > 0  # still negatives for the other anchors
    ignore = supcon_loss(features, labels, variant=variant, no_positive="ignore")
    zero = supcon_loss(features, labels, variant=variant, no_positive="zero")
    torch.testing.assert_close(zero, ignore * 2 / 4)


def test_no_anchor_with_positive_gives_zero_not_nan() -> None:
    features = torch.randn(3, 8, requires_grad=True)
    loss = supcon_loss(features, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_no_positive_error_names_the_count() -> None:
    with pytest.raises(ValueError, match="2 of 4 anchors have no positive"):
        supcon_loss(torch.randn(4, 8), torch.tensor([0, 0, 1, 2]), no_positive="error")


# -------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_low_precision_is_finite_and_close(dtype: torch.dtype) -> None:
    features = torch.randn(32, 2, 64)
    labels = torch.randint(0, 4, (32,))
    reference = supcon_loss(features, labels, temperature=0.05)
    reference_nt = nt_xent_loss(features, temperature=0.05)
    low = features.to(dtype).requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=dtype):
        loss = supcon_loss(low, labels, temperature=0.05)
        loss_nt = nt_xent_loss(low, temperature=0.05)
    assert loss.dtype == torch.float32  # logits and log-sum-exp in float32
    (grad,) = torch.autograd.grad(loss + loss_nt, low)
    assert torch.isfinite(loss) and torch.isfinite(loss_nt) and torch.isfinite(grad).all()
    # The only error left is rounding the inputs to `dtype` (1e-3 relative for fp16).
    torch.testing.assert_close(loss, reference, rtol=2e-2, atol=0)
    torch.testing.assert_close(loss_nt, reference_nt, rtol=2e-2, atol=0)


def test_half_inputs_at_low_temperature_do_not_overflow() -> None:
    # exp(1 / 0.05) = 4.9e8 overflows float16; the loss must not.
    z = torch.randn(8, 2, 16).half()
    assert torch.isfinite(nt_xent_loss(z, temperature=0.05))


def test_torch_compile_matches_eager() -> None:
    features = torch.randn(8, 2, 16)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])

    def both(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(f, temperature=0.2) + supcon_loss(f, y, temperature=0.2, variant="in")

    compiled = torch.compile(both, fullgraph=False)
    torch.testing.assert_close(compiled(features, labels), both(features, labels))


def test_cuda_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    features, labels = torch.randn(16, 2, 32), torch.randint(0, 3, (16,))
    torch.testing.assert_close(
        supcon_loss(features.cuda(), labels.cuda()).cpu(), supcon_loss(features, labels)
    )


# -------------------------------------------------------------------- modules


def test_modules_match_functions_and_repr() -> None:
    features, labels = torch.randn(6, 2, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    criterion = SupConLoss(temperature=0.2, variant="in", reduction="sum")
    torch.testing.assert_close(
        criterion(features, labels),
        supcon_loss(features, labels, temperature=0.2, variant="in", reduction="sum"),
    )
    assert "variant='in'" in repr(criterion)
    assert "temperature=0.7" in repr(NTXentLoss(0.7))
    assert contrast_attn.NTXentLoss is NTXentLoss


# ----------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call,error,message",
    [
        (
            lambda: nt_xent_loss(torch.randn(4, 8), torch.randn(4, 7)),
            ValueError,
            r"z1 and z2 must have the same shape \[B, D\], got \(4, 8\) and \(4, 7\)",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 8), torch.randn(5, 8)),
            ValueError,
            r"z1 and z2 must have the same shape",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 1, 8)),
            ValueError,
            r"z1 must hold V >= 2 views .* got V = 1",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 8)),
            ValueError,
            r"z1 must have shape \[B, V, D\] \(all views\) when z2 is None, got shape \(4, 8\)",
        ),
        (
            lambda: nt_xent_loss(torch.randn(1, 8), torch.randn(1, 8)),
            ValueError,
            r"at least 2 samples .* got batch size 1",
        ),
        (
            lambda: supcon_loss(torch.randn(1, 2, 8)),
            ValueError,
            r"at least 2 samples .* got batch size 1",
        ),
        (
            lambda: nt_xent_loss(torch.randint(0, 3, (4, 8)), torch.randn(4, 8)),
            TypeError,
            r"z1 must be a floating-point tensor .* got dtype torch.int64",
        ),
        (lambda: nt_xent_loss([[1.0]], None), TypeError, r"z1 must be a torch.Tensor, got list"),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), torch.tensor([0, 1, 2])),
            ValueError,
            r"labels must have shape \[B\] = \[4\] .* got shape \(3,\)",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), torch.tensor([0.0, 1.0, 2.0, 3.0])),
            TypeError,
            r"labels must be an integer tensor .* got dtype torch.float32",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), torch.zeros(4, 1, 1, dtype=torch.long)),
            ValueError,
            r"labels must have shape \[B\] = \[4\]",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), mask=torch.ones(4, 3)),
            ValueError,
            r"mask must have shape \[B, B\] = \[4, 4\], got shape \(4, 3\)",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), mask=torch.full((4, 4), 0.5)),
            ValueError,
            r"mask must hold only 0/1",
        ),
        (
            lambda: supcon_loss(
                torch.randn(4, 2, 8), torch.zeros(4, dtype=torch.long), mask=torch.ones(4, 4)
            ),
            ValueError,
            r"either labels or mask .* not both",
        ),
        (lambda: supcon_loss(torch.randn(4, 8)), ValueError, r"needs V >= 2 views"),
        (
            lambda: supcon_loss(torch.randn(4, 2, 2, 8)),
            ValueError,
            r"features must have shape \[B, D\] or \[B, V, D\], got shape \(4, 2, 2, 8\)",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 2, 8), temperature=0.0),
            ValueError,
            r"temperature must be in \(0.0, inf\], got 0.0",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 2, 8), temperature=-1.0),
            ValueError,
            r"temperature must be in \(0.0, inf\], got -1.0",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 2, 8), temperature=float("inf")),
            ValueError,
            r"temperature must be a finite number .* got inf",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), temperature=float("nan")),
            ValueError,
            r"temperature must be a finite number .* got nan",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), temperature="0.1"),
            TypeError,
            r"temperature must be a real number, got '0.1' \(str\)",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), base_temperature=0.0),
            ValueError,
            r"base_temperature must be in \(0.0, inf\], got 0.0",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 2, 8), reduction="avg"),
            ValueError,
            r"reduction must be one of 'mean', 'sum', 'none', got 'avg'",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), variant="both"),
            ValueError,
            r"variant must be one of 'out', 'in', got 'both'",
        ),
        (
            lambda: supcon_loss(torch.randn(4, 2, 8), no_positive="skip"),
            ValueError,
            r"no_positive must be one of 'ignore', 'zero', 'error', got 'skip'",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 2, 8), chunk_size=0),
            ValueError,
            r"chunk_size must be >= 1, got 0",
        ),
        (
            lambda: nt_xent_loss(torch.randn(4, 2, 8), gather="yes"),
            TypeError,
            r"gather must be a bool, got 'yes' \(str\)",
        ),
        (
            lambda: SupConLoss(temperature=-0.1),
            ValueError,
            r"temperature must be in \(0.0, inf\], got -0.1",
        ),
        (lambda: NTXentLoss(reduction="max"), ValueError, r"reduction must be one of"),
    ],
)
def test_bad_input_raises_clear_error(call, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_embeddings_are_rejected(bad: float) -> None:
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    z2[1, 3] = bad
    kind = "NaN" if math.isnan(bad) else "Inf"
    with pytest.raises(ValueError, match=rf"z1/z2 must be finite, got .*{kind}"):
        nt_xent_loss(z1, z2)
    features = torch.stack([z1, z2], dim=1)
    with pytest.raises(ValueError, match=r"features must be finite"):
        supcon_loss(features, torch.arange(4))


def test_finite_check_can_be_switched_off() -> None:
    features = torch.randn(4, 2, 8)
    features[0, 0, 0] = float("nan")
    contrast_attn.set_finite_checks(False)
    try:
        assert torch.isnan(nt_xent_loss(features))
    finally:
        contrast_attn.set_finite_checks(True)
    with pytest.raises(TypeError, match=r"enabled must be a bool, got 'no' \(str\)"):
        contrast_attn.set_finite_checks("no")  # type: ignore[arg-type]
