"""The tiled kernel (``contrast_attn._rows``) against the dense path.

The dense path is checked against float64 loops in ``test_contrastive.py``; here
the tiled kernel must give the same losses and gradients (1e-5 relative in
float32, 1e-10 in float64), pass gradcheck, and never materialise an N×N tensor.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from contrast_attn import _rows
from contrast_attn.functional import nt_xent_loss, supcon_loss

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def _labels(batch: int) -> torch.Tensor:
    # Classes of several sizes, and a singleton class (99): with one view its
    # anchor has no positive.
    labels = torch.arange(batch) % 3
    labels[0] = 99
    return labels


def _mask(batch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(batch, batch, generator=gen) > 0.6
    mask[1] = False  # a sample whose only positives are its other views
    return mask | mask.T


def _call(
    kind: str, x: torch.Tensor, chunk: int | None, reduction: str, variant: str
) -> torch.Tensor:
    batch = x.shape[0]
    if kind == "ntxent":
        return nt_xent_loss(x, temperature=0.3, reduction=reduction, chunk_size=chunk)
    if kind == "supcon_labels":
        labels = _labels(batch)
        return supcon_loss(x, labels, variant=variant, reduction=reduction, chunk_size=chunk)
    if kind == "supcon_mask":
        mask = _mask(batch)
        return supcon_loss(x, mask=mask, variant=variant, reduction=reduction, chunk_size=chunk)
    return supcon_loss(x, variant=variant, temperature=0.2, reduction=reduction, chunk_size=chunk)


KINDS = [
    ("ntxent", "out"),
    ("supcon_labels", "out"),
    ("supcon_labels", "in"),
    ("supcon_mask", "out"),
    ("supcon_mask", "in"),
    ("supcon_views", "out"),
    ("supcon_views", "in"),
]


def _loss_and_grad(
    kind: str, x: torch.Tensor, chunk: int | None, reduction: str, variant: str
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.detach().requires_grad_()
    loss = _call(kind, leaf, chunk, reduction, variant)
    if reduction == "none":
        # A non-uniform weighting: the tiled kernel must recompute its tiles in backward.
        weights = torch.linspace(0.5, 2.0, loss.shape[0], dtype=loss.dtype)
        total = (loss * weights).sum()
    else:
        total = loss
    (grad,) = torch.autograd.grad(total, leaf)
    return loss.detach(), grad


def _assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    scale = expected.abs().max().clamp(min=1e-30)
    error = (actual - expected).abs().max() / scale
    assert error <= rtol, f"relative error {error.item():.3e} > {rtol:.0e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [4, 7])
@pytest.mark.parametrize(("kind", "variant"), KINDS)
def test_tiled_matches_dense(
    kind: str, variant: str, chunk: int, reduction: str, dtype: torch.dtype
) -> None:
    # 10 samples x 2 views = 20 rows: a chunk of 4 divides them, 7 does not.
    x = torch.randn(10, 2, 16, dtype=dtype)
    dense_loss, dense_grad = _loss_and_grad(kind, x, None, reduction, variant)
    tiled_loss, tiled_grad = _loss_and_grad(kind, x, chunk, reduction, variant)
    _assert_rel_close(tiled_loss, dense_loss, TOLERANCE[dtype])
    _assert_rel_close(tiled_grad, dense_grad, TOLERANCE[dtype])


@pytest.mark.parametrize("chunk", [1, 64])
@pytest.mark.parametrize(("kind", "variant"), KINDS)
def test_tiled_extreme_chunks(kind: str, variant: str, chunk: int) -> None:
    # One row per tile, and one tile larger than all 12 rows.
    dtype, reduction = torch.float64, "none"
    x = torch.randn(6, 2, 16, dtype=dtype)
    dense_loss, dense_grad = _loss_and_grad(kind, x, None, reduction, variant)
    tiled_loss, tiled_grad = _loss_and_grad(kind, x, chunk, reduction, variant)
    _assert_rel_close(tiled_loss, dense_loss, TOLERANCE[dtype])
    _assert_rel_close(tiled_grad, dense_grad, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("no_positive", ["ignore", "zero"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("variant", ["out", "in"])
def test_tiled_anchors_without_positives(
    variant: str, reduction: str, no_positive: str, dtype: torch.dtype
) -> None:
    # One view: the singleton classes 7 and 9 have no positive; chunk 3 does not divide 11.
    features = torch.randn(11, 8, dtype=dtype)
    labels = torch.tensor([0, 1, 0, 7, 1, 2, 2, 9, 0, 1, 2])
    results = []
    for chunk in (None, 3):
        leaf = features.clone().requires_grad_()
        loss = supcon_loss(
            leaf,
            labels,
            variant=variant,
            no_positive=no_positive,
            reduction=reduction,
            chunk_size=chunk,
        )
        weights = torch.arange(1.0, loss.numel() + 1, dtype=dtype).reshape(loss.shape)
        (grad,) = torch.autograd.grad((loss * weights).sum(), leaf)
        results.append((loss.detach(), grad))
    (dense_loss, dense_grad), (tiled_loss, tiled_grad) = results
    _assert_rel_close(tiled_loss, dense_loss, TOLERANCE[dtype])
    _assert_rel_close(tiled_grad, dense_grad, TOLERANCE[dtype])
    if reduction == "none":
        assert tiled_loss[3] == 0 and tiled_loss[7] == 0
    assert torch.isfinite(tiled_grad).all()


def test_tiled_low_temperature_uses_row_maximum() -> None:
    # At tau = 0.01 the static shift could underflow exp(); the kernel falls back
    # to the row maximum and stays equal to the dense path.
    x = torch.randn(12, 2, 8)
    labels = torch.arange(12) % 4
    dense = supcon_loss(x, labels, temperature=0.01)
    tiled = supcon_loss(x, labels, temperature=0.01, chunk_size=5)
    _assert_rel_close(tiled, dense, 1e-5)
    assert torch.isfinite(tiled)


def test_tiled_half_precision_inputs_match_dense() -> None:
    x = torch.randn(16, 2, 32).to(torch.bfloat16)
    dense_loss, dense_grad = _loss_and_grad("supcon_labels", x, None, "mean", "out")
    tiled_loss, tiled_grad = _loss_and_grad("supcon_labels", x, 7, "mean", "out")
    assert tiled_loss.dtype == torch.float32
    _assert_rel_close(tiled_loss, dense_loss, 1e-5)
    _assert_rel_close(tiled_grad.float(), dense_grad.float(), 1e-2)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize(("kind", "variant"), KINDS)
def test_tiled_gradcheck(kind: str, variant: str, reduction: str) -> None:
    x = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _call(kind, t, 3, reduction, variant), (x,))


class _LargestTensor(TorchDispatchMode):
    """Records the number of elements of the largest tensor any aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.matmuls = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            self.matmuls += 1
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize(
    ("kind", "variant"), [("ntxent", "out"), ("supcon_labels", "out"), ("supcon_labels", "in")]
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_tiled_never_allocates_n_by_n(kind: str, variant: str, reduction: str) -> None:
    rows, chunk = 256, 16
    x = torch.randn(rows // 2, 2, 8)
    with _LargestTensor() as tracker:
        _loss_and_grad(kind, x, chunk, reduction, variant)
    # Every tensor, forward and backward, is at most one [chunk, N] tile.
    assert tracker.largest <= chunk * rows
    with _LargestTensor() as dense:
        _loss_and_grad(kind, x, None, reduction, variant)
    assert dense.largest >= rows * rows  # the tracker does see an N×N matrix


def test_automatic_dispatch_switches_to_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 256
    monkeypatch.setattr(_rows, "DENSE_MAX_PAIRS", 64 * 64)
    # The automatic tile of 64 rows (the minimum) holds 64 * 256 * 4 bytes.
    monkeypatch.setattr(_rows, "TILE_BYTES", 64 * rows * 4)
    x = torch.randn(rows // 2, 2, 8)
    with _LargestTensor() as tracker:
        _loss_and_grad("ntxent", x, None, "mean", "out")
    assert tracker.largest <= 64 * rows


def test_tiled_forward_without_grad_skips_gradient_work() -> None:
    x = torch.randn(32, 2, 8, requires_grad=True)
    with torch.no_grad(), _LargestTensor() as tracker:
        nt_xent_loss(x, chunk_size=16)
    assert tracker.matmuls == 4  # one similarity matmul per tile of 16 of the 64 rows
    with _LargestTensor() as training:
        nt_xent_loss(x, chunk_size=16)
    assert training.matmuls == 12  # the forward pass also computes the gradient
