"""Numerics of the contrastive losses in float16, bfloat16 and float32 at low temperatures.

Rows of huge norm (their squared norm overflows float32), zero rows and identical
rows, at temperatures 0.01-0.05, under autocast for the half types: the loss and
the gradients are finite and within the dtype's tolerance of a plain float64
loop written from the formula (on the same, rounded inputs). The gradient of a
zero row has no direction to follow; it is only required to be finite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from hypothesis import given
from hypothesis import strategies as st

from contrast_attn.functional import (
    contrastive_feature_regularizer,
    nt_xent_loss,
    supcon_loss,
)

B, V, D = 4, 2, 8
LABELS = torch.tensor([0, 0, 1, 1])
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
# Magnitude of a "huge" entry: float32's squared norm overflows from about 1e19.
HUGE = {torch.float16: 1e4, torch.bfloat16: 1e30, torch.float32: 1e30}
# Loss and gradient tolerances: the inputs are the same, only the compute precision differs.
GRAD_TOL = {torch.float16: 2e-2, torch.bfloat16: 5e-2, torch.float32: 1e-3}
PATTERNS = ["huge", "zero", "identical", "mixed"]


def _rows(dtype: torch.dtype, pattern: str, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    flat = z.view(-1, shape[-1])
    if pattern in ("huge", "mixed"):
        flat[: flat.shape[0] // 2] *= HUGE[dtype]
    if pattern in ("zero", "mixed"):
        flat[1] = 0
    if pattern == "identical":
        flat[:] = flat[0]
    if pattern == "mixed":
        flat[-2:] = flat[-1]
    return z.to(dtype)


@contextlib.contextmanager
def _autocast(dtype: torch.dtype) -> Iterator[None]:
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        yield


def _unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=1, keepdim=True).clamp(min=1e-300)


def _reference_rows(keys: torch.Tensor, anchors: list[int], positive, valid, tau: float):
    """Mean over anchors with a positive of -mean_p log softmax_{j != i}(k_i . k_j / tau)_p."""
    losses = []
    for i in anchors:
        others = [j for j in range(keys.shape[0]) if j != i and valid[j]]
        logits = torch.stack([keys[i] @ keys[j] / tau for j in others])
        lse = torch.logsumexp(logits, dim=0)
        pos = [k for k, j in enumerate(others) if positive(i, j)]
        if pos:
            losses.append(-(logits[pos] - lse).mean())
    return torch.stack(losses).mean()


def _reference_supcon(z: torch.Tensor, labels: torch.Tensor | None, tau: float) -> torch.Tensor:
    rows = _unit(z.transpose(0, 1).reshape(-1, z.shape[-1]))  # view-major
    sample = torch.arange(B).repeat(V)
    key = sample if labels is None else labels.repeat(V)
    n = rows.shape[0]
    return _reference_rows(rows, list(range(n)), lambda i, j: bool(key[i] == key[j]), [1] * n, tau)


def _term_scale(rows: torch.Tensor, tau: float) -> torch.Tensor:
    """The size of one term of a row's gradient, 1 / (tau |z_i| N): the unit of the tolerance."""
    return 1 / (tau * rows.norm(dim=1, keepdim=True) * rows.shape[0])


def _check(loss, ref, z, z64, dtype, tau) -> None:
    assert torch.isfinite(loss), loss
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-3)
    (grad,) = torch.autograd.grad(loss, z)
    (ref_grad,) = torch.autograd.grad(ref, z64)
    assert torch.isfinite(grad).all()
    flat, ref_flat = grad.double().reshape(-1, D), ref_grad.reshape(-1, D)
    rows = z64.detach().reshape(-1, D)
    nonzero = rows.abs().amax(dim=1) > 0
    scale = _term_scale(rows, tau)[nonzero]
    error = (flat - ref_flat)[nonzero].abs()
    tiny = torch.finfo(dtype).tiny
    assert (error <= GRAD_TOL[dtype] * scale + tiny).all(), (error / (scale + tiny)).max()


settings_args = {
    "dtype": st.sampled_from(DTYPES),
    "tau": st.floats(0.01, 0.05),
    "pattern": st.sampled_from(PATTERNS),
    "seed": st.integers(0, 2**16),
}


@given(**settings_args)
def test_nt_xent_low_precision_matches_float64(dtype, tau, pattern, seed) -> None:
    z = _rows(dtype, pattern, seed, (B, V, D)).requires_grad_()
    z64 = z.detach().double().requires_grad_()
    with _autocast(dtype):
        loss = nt_xent_loss(z, temperature=tau)
    _check(loss, _reference_supcon(z64, None, tau), z, z64, dtype, tau)


@given(**settings_args)
def test_supcon_low_precision_matches_float64(dtype, tau, pattern, seed) -> None:
    z = _rows(dtype, pattern, seed, (B, V, D)).requires_grad_()
    z64 = z.detach().double().requires_grad_()
    with _autocast(dtype):
        loss = supcon_loss(z, LABELS, temperature=tau)
    _check(loss, _reference_supcon(z64, LABELS, tau), z, z64, dtype, tau)


def _reference_regularizer(features: torch.Tensor, mask: torch.Tensor, tau: float) -> torch.Tensor:
    m = mask.double()
    lesion = (features * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3))
    background = (features * (1 - m)).sum(dim=(2, 3)) / (1 - m).sum(dim=(2, 3))
    keys = _unit(torch.cat([lesion, background]))

    def positive(i: int, j: int) -> bool:
        return j < B and bool(LABELS[i] == LABELS[j])

    return _reference_rows(keys, list(range(B)), positive, [1] * (2 * B), tau)


@given(**settings_args)
def test_regularizer_low_precision_matches_float64(dtype, tau, pattern, seed) -> None:
    # Pooled lesion and background rows of the pattern: features constant over each region.
    regions = _rows(dtype, pattern, seed, (2, B, D)).double()
    mask = torch.zeros(B, 1, 4, 4)
    mask[:, :, :2] = 1
    per_cell = torch.where(mask.bool(), regions[0][:, :, None, None], regions[1][:, :, None, None])
    features = per_cell.to(dtype).requires_grad_()
    f64 = features.detach().double().requires_grad_()
    with _autocast(dtype):
        loss = contrastive_feature_regularizer(features, mask, LABELS, temperature=tau)
    ref = _reference_regularizer(f64, mask, tau)
    assert torch.isfinite(loss), loss
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-3)
    (grad,) = torch.autograd.grad(loss, features)
    (ref_grad,) = torch.autograd.grad(ref, f64)
    assert torch.isfinite(grad).all()
    # Per image and region the gradient is spread over the cells; compare where the
    # pooled row is non-zero, relative to that row's largest gradient entry.
    for region in (mask.bool(), ~mask.bool()):
        cells = region.expand_as(grad)
        g = grad.double()[cells].view(B, D, -1)
        r = ref_grad[cells].view(B, D, -1)
        pooled = f64.detach()[cells].view(B, D, -1)[..., 0]
        nonzero = pooled.abs().amax(dim=1) > 0
        # Each of the cells of a region gets 1 / cells of the pooled row's gradient.
        scale = _term_scale(pooled, tau)[nonzero, :, None] / pooled.new_tensor(r.shape[-1])
        error = (g - r)[nonzero].abs()
        assert (error <= GRAD_TOL[dtype] * scale + torch.finfo(dtype).tiny).all()


def test_fp16_autocast_zero_row_gradient_is_finite() -> None:
    z = torch.randn(B, V, D, generator=torch.Generator().manual_seed(0))
    z[0, 0] = 0
    z = z.half().requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nt_xent_loss(z, temperature=0.05)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_huge_norm_float32_equals_float64() -> None:
    # Two identical views: the loss is far from log(2B - 1), what all-zero keys would give.
    x = torch.randn(B, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = torch.stack([x, x], dim=1) * 1e20
    expected = nt_xent_loss(z, temperature=0.1)
    assert expected < 1.0
    for dtype in (torch.float32, torch.bfloat16):
        got = nt_xent_loss(z.to(dtype), temperature=0.1)
        torch.testing.assert_close(got.double(), expected, rtol=1e-2, atol=1e-2)
