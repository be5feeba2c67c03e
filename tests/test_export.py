"""Every loss and layer compiles as one graph (``fullgraph=True``) and exports with ``torch.export``.

The compiled and exported programs must give the eager values (and, compiled,
the eager gradients). ``aot_eager`` traces forward and backward through
AOTAutograd without generating code, which keeps these tests fast; the
inductor backend is exercised in ``@pytest.mark.slow`` tests. Exports use a
dynamic batch dimension and are checked at a second batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.export import Dim

from contrast_attn import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    ContrastiveFeatureRegularizer,
    LDAMLoss,
    LogitAdjustedLoss,
    MaskedAveragePool,
    MaskGuidanceLoss,
    MaskGuidedAttention,
    NTXentLoss,
    PostHocLogitAdjustment,
    ProjectionHead,
    SupConLoss,
)
from contrast_attn import functional as CF


def _inputs(batch: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(batch)
    mask = torch.zeros(batch, 1, 20, 20)
    mask[: batch - 1, :, 4:12, 3:11] = 1  # the last image has no lesion
    volume_mask = torch.zeros(batch, 1, 7, 9, 11)
    volume_mask[: batch - 1, :, 2:5, 1:6, 3:10] = 1
    return {
        "z": torch.randn(batch, 2, 8, generator=gen),
        "labels": torch.arange(batch) % 3,
        "logits": torch.randn(batch, 3, generator=gen),
        "target": torch.arange(batch) % 3,
        "features": torch.randn(batch, 8, 5, 5, generator=gen),
        "mask": mask,
        "att": torch.randn(batch, 1, 5, 5, generator=gen),
        "vectors": torch.randn(batch, 8, generator=gen),
        "volume": torch.randn(batch, 8, 3, 4, 5, generator=gen),
        "volume_mask": volume_mask,
        "volume_att": torch.randn(batch, 1, 3, 4, 5, generator=gen),
    }


torch.manual_seed(0)
REFS = torch.randn(5, 8)
REF_LABELS = torch.tensor([0, 1, 2, 2, 4])
REGULARIZER = ContrastiveFeatureRegularizer(8, projection_dim=4).eval()
HEAD = ProjectionHead(8, out_features=4).eval()
SIMCLR_HEAD = ProjectionHead(8, out_features=4, output_batch_norm=True).eval()
ATTENTION = MaskGuidedAttention(8, mode="hard").eval()
VOLUME_ATTENTION = MaskGuidedAttention(8, spatial_dims=3).eval()
FC = torch.nn.Linear(8, 3)

# name -> (function of the inputs dict, names of the tensor inputs it uses)
CASES: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "nt_xent_loss": (lambda z: CF.nt_xent_loss(z, temperature=0.3), ("z",)),
    "NTXentLoss": (lambda z: NTXentLoss(0.5, reduction="none")(z), ("z",)),
    "supcon_loss": (lambda z, labels: CF.supcon_loss(z, labels, variant="in"), ("z", "labels")),
    "SupConLoss": (lambda z, labels: SupConLoss(0.2)(z, labels), ("z", "labels")),
    "supcon_loss refs hard debiased": (
        lambda z, labels: CF.supcon_loss(
            z,
            labels,
            ref_features=REFS,
            ref_labels=REF_LABELS,
            hard_negative_beta=0.5,
            debias_tau_plus=0.1,
        ),
        ("z", "labels"),
    ),
    "supcon_loss multi-hot": (
        lambda z, labels: CF.supcon_loss(z, torch.stack([labels == 0, labels != 1], dim=1)),
        ("z", "labels"),
    ),
    "nt_xent_loss refs hard": (
        lambda z: CF.nt_xent_loss(z, ref_features=REFS, hard_negative_beta=1.0),
        ("z",),
    ),
    "class_balanced_loss": (
        lambda logits, target: CF.class_balanced_loss(
            logits, target, torch.tensor([30, 5, 1]), beta=0.99, loss_type="focal"
        ),
        ("logits", "target"),
    ),
    "ClassBalancedLoss": (
        lambda logits, target: ClassBalancedLoss([30, 5, 1], beta=0.99)(logits, target),
        ("logits", "target"),
    ),
    "logit_adjusted_loss": (
        lambda logits, target: CF.logit_adjusted_loss(
            logits, target, torch.tensor([30, 5, 1]), tau=1.5, weight=torch.tensor([0.5, 1, 2])
        ),
        ("logits", "target"),
    ),
    "LogitAdjustedLoss": (
        lambda logits, target: LogitAdjustedLoss([30, 5, 1], reduction="none")(logits, target),
        ("logits", "target"),
    ),
    "balanced_softmax_loss": (
        lambda logits, target: CF.balanced_softmax_loss(logits, target, [30, 5, 1]),
        ("logits", "target"),
    ),
    "BalancedSoftmaxLoss": (
        lambda logits, target: BalancedSoftmaxLoss([30, 5, 1])(logits, target),
        ("logits", "target"),
    ),
    "ldam_loss": (
        lambda logits, target: CF.ldam_loss(logits, target, torch.tensor([30, 5, 1]), scale=4.0),
        ("logits", "target"),
    ),
    "LDAMLoss": (
        lambda logits, target: LDAMLoss([30, 5, 1], scale=4.0)(
            logits, target, torch.tensor([0.2, 1.0, 1.8])
        ),
        ("logits", "target"),
    ),
    "post_hoc_logit_adjustment": (
        lambda logits: CF.post_hoc_logit_adjustment(logits, [30, 5, 1], tau=0.8),
        ("logits",),
    ),
    "PostHocLogitAdjustment": (
        lambda logits: PostHocLogitAdjustment([30, 5, 1])(logits),
        ("logits",),
    ),
    "mask_guidance_loss": (
        lambda att, mask: CF.mask_guidance_loss(att, mask, kind="dice", from_logits=True),
        ("att", "mask"),
    ),
    "MaskGuidanceLoss": (
        lambda att, mask: MaskGuidanceLoss(from_logits=True)(att, mask),
        ("att", "mask"),
    ),
    "resize_mask": (lambda mask: CF.resize_mask(mask, (5, 5)), ("mask",)),
    "class_activation_map": (
        lambda features, target: CF.class_activation_map(features, FC.weight, target),
        ("features", "target"),
    ),
    "masked_average_pool": (
        lambda features, mask: tuple(CF.masked_average_pool(features, mask)),
        ("features", "mask"),
    ),
    "MaskedAveragePool": (
        lambda features, mask: tuple(MaskedAveragePool()(features, mask)),
        ("features", "mask"),
    ),
    "contrastive_feature_regularizer": (
        lambda features, mask, labels: CF.contrastive_feature_regularizer(
            features, mask, labels, temperature=0.2
        ),
        ("features", "mask", "labels"),
    ),
    "ContrastiveFeatureRegularizer": (
        lambda features, mask, labels: REGULARIZER(features, mask, labels),
        ("features", "mask", "labels"),
    ),
    "MaskGuidedAttention": (lambda features: ATTENTION(features), ("features",)),
    "mask_guidance_loss 3d": (
        lambda volume_att, volume_mask: CF.mask_guidance_loss(
            volume_att, volume_mask, kind="dice", from_logits=True
        ),
        ("volume_att", "volume_mask"),
    ),
    "resize_mask 3d": (
        lambda volume_mask: CF.resize_mask(volume_mask, (3, 4, 5)),
        ("volume_mask",),
    ),
    "class_activation_map 3d": (
        lambda volume, target: CF.class_activation_map(volume, FC.weight, target, fc_bias=FC.bias),
        ("volume", "target"),
    ),
    "masked_average_pool 3d": (
        lambda volume, volume_mask: tuple(CF.masked_average_pool(volume, volume_mask)),
        ("volume", "volume_mask"),
    ),
    "contrastive_feature_regularizer 3d": (
        lambda volume, volume_mask, labels: CF.contrastive_feature_regularizer(
            volume, volume_mask, labels
        ),
        ("volume", "volume_mask", "labels"),
    ),
    "MaskGuidedAttention 3d": (lambda volume: VOLUME_ATTENTION(volume), ("volume",)),
    "ProjectionHead": (lambda vectors: HEAD(vectors), ("vectors",)),
    "ProjectionHead simclr": (lambda vectors: SIMCLR_HEAD(vectors), ("vectors",)),
}

# The tiled kernel: static shapes (its tile loop is unrolled at trace time).
TILED: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "nt_xent_loss tiled": (lambda z: CF.nt_xent_loss(z, chunk_size=5), ("z",)),
    "supcon_loss tiled": (
        lambda z, labels: CF.supcon_loss(z, labels, chunk_size=5),
        ("z", "labels"),
    ),
    "supcon_loss multi-hot hard tiled": (
        lambda z, labels: CF.supcon_loss(
            z, torch.stack([labels == 0, labels != 1], dim=1), hard_negative_beta=0.5, chunk_size=5
        ),
        ("z", "labels"),
    ),
    "regularizer tiled": (
        lambda features, mask, labels: CF.contrastive_feature_regularizer(
            features, mask, labels, chunk_size=3
        ),
        ("features", "mask", "labels"),
    ),
}


def _flat(out: Any) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _run_with_grad(fn: Callable[..., Any], args: list[torch.Tensor]) -> list[torch.Tensor]:
    leaves = [a.clone().requires_grad_() if a.is_floating_point() else a for a in args]
    outs = _flat(fn(*leaves))
    total = sum(o.float().sum() for o in outs if o.requires_grad)
    grads: list[torch.Tensor] = []
    if isinstance(total, torch.Tensor):
        wrt = [leaf for leaf in leaves if leaf.requires_grad]
        grads = list(torch.autograd.grad(total, wrt, allow_unused=True, materialize_grads=True))
    return [o.detach() for o in outs] + grads


@pytest.mark.parametrize("name", sorted({**CASES, **TILED}))
def test_compiles_as_one_graph(name: str) -> None:
    torch._dynamo.reset()
    fn, names = {**CASES, **TILED}[name]
    args = [_inputs(6)[n] for n in names]
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for got, expected in zip(_run_with_grad(compiled, args), _run_with_grad(fn, args)):
        torch.testing.assert_close(got, expected)


class _Wrap(torch.nn.Module):
    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> Any:
        return self.fn(*args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_exports_with_dynamic_batch(name: str) -> None:
    fn, names = CASES[name]
    args = tuple(_inputs(6)[n] for n in names)
    batch = Dim("batch", min=2, max=256)
    shapes = tuple({0: batch} for _ in args)
    program = torch.export.export(_Wrap(fn), args, dynamic_shapes=(shapes,))
    for size in (6, 9):
        sized = tuple(_inputs(size)[n] for n in names)
        for got, expected in zip(_flat(program.module()(*sized)), _flat(fn(*sized))):
            torch.testing.assert_close(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["nt_xent_loss", "supcon_loss tiled", "ContrastiveFeatureRegularizer", "ClassBalancedLoss"],
)
def test_inductor_equals_eager(name: str) -> None:
    torch._dynamo.reset()
    fn, names = {**CASES, **TILED}[name]
    args = [_inputs(6)[n] for n in names]
    compiled = torch.compile(fn, fullgraph=True)
    for got, expected in zip(_run_with_grad(compiled, args), _run_with_grad(fn, args)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
