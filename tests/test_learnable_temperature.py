"""A temperature given as a tensor gets its gradient; the tiled kernel refuses a second derivative.

The gradient with respect to a learnable (CLIP-style) temperature is checked
against autograd through the float64 reference loop of ``test_contrastive.py``
and by ``gradcheck``, on the dense path and on the tiled kernel.
"""

from __future__ import annotations

import pytest
import torch
from test_contrastive import reduce_reference, reference_supcon

from contrast_attn import NTXentLoss, SupConLoss
from contrast_attn.functional import contrastive_feature_regularizer, nt_xent_loss, supcon_loss

LABELS = torch.tensor([0, 1, 0, 2, 1, 0])


@pytest.mark.parametrize("chunk", [None, 4])
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("labelled", [False, True])
def test_temperature_gradient_equals_reference_loop(
    chunk: int | None, variant: str, labelled: bool
) -> None:
    features = torch.randn(6, 2, 5, dtype=torch.float64)
    labels = LABELS if labelled else None
    results = []
    for implementation in ("ours", "reference"):
        tau = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
        x = features.clone().requires_grad_()
        if implementation == "ours":
            loss = supcon_loss(x, labels, temperature=tau, variant=variant, chunk_size=chunk)
        else:
            rows, has = reference_supcon(x, labels, temperature=tau, variant=variant)  # type: ignore[arg-type]
            loss = reduce_reference(rows, has, "mean", "ignore")
        grad_x, grad_tau = torch.autograd.grad(loss, (x, tau))
        results.append((loss.detach(), grad_x, grad_tau))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    assert results[0][2].abs() > 1e-3  # the temperature gradient is not trivially 0


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("chunk", [None, 3])
def test_temperature_gradcheck(chunk: int | None, reduction: str) -> None:
    x = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)

    def loss(features: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        out = nt_xent_loss(features, temperature=temperature, reduction=reduction, chunk_size=chunk)
        return out * torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)

    assert torch.autograd.gradcheck(loss, (x, tau))


@pytest.mark.parametrize("chunk", [None, 2])
def test_regularizer_temperature_gradcheck(chunk: int | None) -> None:
    features = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(4, 1, 6, 6, dtype=torch.float64)
    mask[:3, :, 1:4, 1:5] = 1
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda f, t: contrastive_feature_regularizer(f, mask, temperature=t, chunk_size=chunk),
        (features, tau),
    )


def test_modules_take_a_learnable_temperature() -> None:
    log_tau = torch.nn.Parameter(torch.tensor(-1.0))
    x = torch.randn(8, 2, 16)
    loss = NTXentLoss(temperature=log_tau.exp())(x) + SupConLoss(log_tau.exp())(
        x, LABELS.repeat(2)[:8]
    )
    loss.backward()
    assert log_tau.grad is not None and log_tau.grad.abs() > 0


def test_bad_tensor_temperatures_raise() -> None:
    x = torch.randn(4, 2, 8)
    with pytest.raises(ValueError, match=r"temperature must be finite and > 0, got \[-0.5\]"):
        nt_xent_loss(x, temperature=torch.tensor(-0.5, requires_grad=True))
    with pytest.raises(TypeError, match=r"temperature must be a real number or a one-element"):
        nt_xent_loss(x, temperature=torch.ones(2))
    with pytest.raises(TypeError, match=r"base_temperature must be a plain number here"):
        supcon_loss(x, base_temperature=torch.tensor(0.1, requires_grad=True))  # type: ignore[arg-type]


def test_tiled_second_derivative_raises_dense_one_is_exact() -> None:
    x = torch.randn(6, 2, 4, dtype=torch.float64, requires_grad=True)
    # A gradient penalty: the tiled kernel says clearly that it has no second derivative,
    # as soon as its gradient is asked for with a graph.
    loss = nt_xent_loss(x, chunk_size=4)
    with pytest.raises(NotImplementedError, match=r"no second derivative .* dense path"):
        torch.autograd.grad(loss, x, create_graph=True)
    # The dense path (plain autograd) is exact to second order.
    for kind in ("ntxent", "supcon_in"):
        if kind == "ntxent":
            assert torch.autograd.gradgradcheck(lambda t: nt_xent_loss(t), (x,))
        else:
            assert torch.autograd.gradgradcheck(
                lambda t: supcon_loss(t, LABELS, variant="in"), (x,)
            )
