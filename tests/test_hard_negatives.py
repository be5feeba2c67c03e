"""Hard-negative weighting (Robinson et al., ICLR 2021) and debiased contrast (Chuang et al.,
NeurIPS 2020) for NT-Xent and SupCon.

Checked against a float64 loop written from the formula, against the vectorised
form of Robinson et al.'s published code for two views, by gradcheck, tiled = dense,
2-rank DDP = one process and under fp16/bf16 autocast; ``beta = 0`` and
``tau_plus = 0`` are today's losses exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contrast_attn import NTXentLoss, SupConLoss
from contrast_attn.functional import nt_xent_loss, supcon_loss
from contrast_attn.functional.contrastive import SupConConfig
from tests import _ddp_cases


def _reference(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    tau: float,
    beta: float,
    tau_plus: float,
    variant: str = "out",
) -> float:
    """Mean over anchors with a positive of the loss with N_i in place of the negatives' sum."""
    batch, views, _ = features.shape
    rows = [F.normalize(features[b, v], dim=0) for v in range(views) for b in range(batch)]
    label = [
        int(labels[b]) if labels is not None else b for _ in range(views) for b in range(batch)
    ]
    total, count = 0.0, 0
    for i, anchor in enumerate(rows):
        sims = [
            (float(anchor @ k) / tau, label[j] == label[i]) for j, k in enumerate(rows) if j != i
        ]
        pos = [s for s, p in sims if p]
        neg = [s for s, p in sims if not p]
        if not pos:
            continue
        m = len(neg)
        hard = m * sum(math.exp((1 + beta) * s) for s in neg) / sum(math.exp(beta * s) for s in neg)
        e_bar = sum(math.exp(s) for s in pos) / len(pos)
        n_i = max((hard - tau_plus * m * e_bar) / (1 - tau_plus), m * math.exp(-1 / tau))
        denom = sum(math.exp(s) for s in pos) + n_i
        if variant == "out":
            total += -sum(s - math.log(denom) for s in pos) / len(pos)
        else:
            total += -math.log(e_bar / denom)
        count += 1
    return total / count


def _robinson_code(z1: torch.Tensor, z2: torch.Tensor, tau: float, beta: float, tau_plus: float):
    """The loss of Robinson et al.'s published code (``hcl`` criterion), two views."""
    out_1, out_2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    batch = out_1.shape[0]
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(out @ out.T / tau)
    keep = torch.ones(2 * batch, 2 * batch, dtype=torch.bool)
    keep.fill_diagonal_(False)
    for b in range(batch):
        keep[b, b + batch] = keep[b + batch, b] = False
    neg = neg.masked_select(keep).view(2 * batch, -1)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / tau)
    pos = torch.cat([pos, pos], dim=0)
    n = batch * 2 - 2
    imp = (beta * neg.log()).exp()
    reweight_neg = (imp * neg).sum(dim=-1) / imp.mean(dim=-1)
    ng = (-tau_plus * n * pos + reweight_neg) / (1 - tau_plus)
    ng = torch.clamp(ng, min=n * math.e ** (-1 / tau))
    return (-torch.log(pos / (pos + ng))).mean()


def _features(seed: int, batch: int = 6, views: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, views, 5, generator=generator, dtype=torch.float64)


LABELS = torch.tensor([0, 0, 1, 2, 2, 3])
SETTINGS = [(1.0, 0.0), (0.0, 0.1), (0.5, 0.1), (2.0, 0.3)]


@pytest.mark.parametrize(("beta", "tau_plus"), SETTINGS)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_nt_xent_matches_robinson_code_and_loop(
    beta: float, tau_plus: float, chunk_size: int | None
) -> None:
    features = _features(0)
    ours = nt_xent_loss(
        features,
        temperature=0.5,
        hard_negative_beta=beta,
        debias_tau_plus=tau_plus,
        chunk_size=chunk_size,
    )
    code = _robinson_code(features[:, 0], features[:, 1], 0.5, beta, tau_plus)
    assert ours.item() == pytest.approx(code.item(), rel=1e-12)
    assert ours.item() == pytest.approx(_reference(features, None, 0.5, beta, tau_plus), rel=1e-12)


@pytest.mark.parametrize(("beta", "tau_plus"), SETTINGS)
@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_supcon_matches_loop(
    beta: float, tau_plus: float, variant: str, chunk_size: int | None
) -> None:
    features = _features(1, views=3)
    ours = supcon_loss(
        features,
        LABELS,
        temperature=0.2,
        variant=variant,
        hard_negative_beta=beta,
        debias_tau_plus=tau_plus,
        chunk_size=chunk_size,
    )
    expected = _reference(features, LABELS, 0.2, beta, tau_plus, variant)
    assert ours.item() == pytest.approx(expected, rel=1e-12)


def test_the_floor_is_reached_and_exact() -> None:
    # A large tau+ drives the debiased estimate below M e^{-1/tau} for every anchor.
    features = _features(2)
    ours = supcon_loss(features, LABELS, temperature=0.5, debias_tau_plus=0.9)
    assert ours.item() == pytest.approx(_reference(features, LABELS, 0.5, 0.0, 0.9), rel=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_zero_beta_and_tau_plus_are_todays_losses(chunk_size: int | None) -> None:
    features = _features(3)
    for loss in (nt_xent_loss, supcon_loss):
        today = loss(features, chunk_size=chunk_size)
        same = loss(features, chunk_size=chunk_size, hard_negative_beta=0.0, debias_tau_plus=0.0)
        assert torch.equal(today, same)
    # The reweighted path itself converges to today's loss as beta and tau+ go to 0.
    close = supcon_loss(features, LABELS, hard_negative_beta=1e-12, chunk_size=chunk_size)
    assert close.item() == pytest.approx(supcon_loss(features, LABELS).item(), rel=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_tiled_equals_dense(reduction: str) -> None:
    results = []
    for chunk_size in (None, 3):
        f = _features(4).requires_grad_()
        loss = supcon_loss(
            f,
            LABELS,
            hard_negative_beta=0.7,
            debias_tau_plus=0.05,
            reduction=reduction,
            chunk_size=chunk_size,
        )
        loss.sum().backward()
        results.append((loss.detach(), f.grad))
    for dense, tiled in zip(*results):
        torch.testing.assert_close(tiled, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_gradcheck(chunk_size: int | None) -> None:
    features = _features(5, batch=4).requires_grad_()
    tau = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)

    def supcon(f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return supcon_loss(
            f,
            LABELS[:4],
            temperature=t,
            hard_negative_beta=0.8,
            debias_tau_plus=0.1,
            chunk_size=chunk_size,
        )

    def ntxent(f: torch.Tensor) -> torch.Tensor:
        return nt_xent_loss(f, hard_negative_beta=1.5, chunk_size=chunk_size)

    assert torch.autograd.gradcheck(supcon, (features, tau))
    assert torch.autograd.gradcheck(ntxent, (features,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_is_finite(dtype: torch.dtype) -> None:
    features = _features(6).float().requires_grad_()
    net = torch.nn.Linear(5, 5)
    criterion = NTXentLoss(0.1, hard_negative_beta=1.0, debias_tau_plus=0.1)
    with torch.autocast("cpu", dtype=dtype):
        loss = criterion(net(features))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert features.grad is not None and torch.isfinite(features.grad).all()
    with torch.no_grad():
        exact = criterion(net(features))
    assert loss.item() == pytest.approx(exact.item(), rel=0.05)


def test_modules_hold_the_options() -> None:
    criterion = SupConLoss(0.2, hard_negative_beta=0.5, debias_tau_plus=0.1)
    features = _features(7)
    expected = supcon_loss(
        features, LABELS, temperature=0.2, hard_negative_beta=0.5, debias_tau_plus=0.1
    )
    assert criterion(features, LABELS).item() == expected.item()
    criterion.hard_negative_beta = 0.0
    assert criterion.config.negatives.beta == 0.0
    assert "hard_negative_beta=0.0" in repr(criterion)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"hard_negative_beta must be in \[0.0, inf\]"):
        SupConConfig(hard_negative_beta=-1.0)
    with pytest.raises(ValueError, match=r"debias_tau_plus must be in \[0.0, 1.0\)"):
        nt_xent_loss(torch.randn(4, 2, 3), debias_tau_plus=1.0)
    with pytest.raises(TypeError, match="hard_negative_beta must be a real number"):
        NTXentLoss(hard_negative_beta="1")  # type: ignore[arg-type]


DDP_LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])


def ddp_cases() -> _ddp_cases.Cases:
    cases: _ddp_cases.Cases = {}
    for path, chunk in (("dense", None), ("tiled", 3)):

        def supcon(
            z: torch.Tensor, labels: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return supcon_loss(
                z, labels, hard_negative_beta=0.5, debias_tau_plus=0.1, gather=gather, chunk_size=c
            )

        def ntxent(
            z: torch.Tensor, _: torch.Tensor, gather: bool, c: int | None = chunk
        ) -> torch.Tensor:
            return nt_xent_loss(z, hard_negative_beta=1.0, gather=gather, chunk_size=c)

        cases[f"supcon-hard-debiased-{path}"] = (supcon, DDP_LABELS)
        cases[f"ntxent-hard-{path}"] = (ntxent, DDP_LABELS)
    return cases


test_ddp_gather_equals_single_process = _ddp_cases.ddp_test(__name__)
