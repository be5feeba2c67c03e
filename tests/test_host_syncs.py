"""Host synchronisations per call: none with value checks off, at most one with them on.

A ``TorchDispatchMode`` counts the aten ops that make the host wait for the
device (``_local_scalar_dense`` behind ``item``/``bool``/``int``, ``nonzero``,
``unique``, ``bincount``, ``masked_select``, boolean-mask indexing), and
``Tensor.tolist`` (which on a CPU tensor dispatches no op). Every public loss,
function and layer is called forward and backward; then one full training step
built from the public API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import contrast_attn
from contrast_attn import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    ContrastiveFeatureRegularizer,
    LDAMLoss,
    LogitAdjustedLoss,
    MaskedAveragePool,
    MaskGuidanceLoss,
    MaskGuidedAttention,
    MemoryQueue,
    NTXentLoss,
    PostHocLogitAdjustment,
    ProjectionHead,
    SupConLoss,
)
from contrast_attn import functional as CF

aten = torch.ops.aten
SYNC_OPS = {
    aten._local_scalar_dense,
    aten.nonzero,
    aten.nonzero_static,
    aten._unique,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
    aten.bincount,
    aten.masked_select,
}


class SyncCounter(TorchDispatchMode):
    """Counts the ops that synchronise the host with the device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        packet = func.overloadpacket
        if packet in SYNC_OPS:
            self.ops.append(str(packet))
        elif packet in (aten.index, aten.index_put, aten.index_put_) and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ())
        ):
            self.ops.append(f"{packet} (bool mask)")
        return func(*args, **(kwargs or {}))


@contextmanager
def count_syncs() -> Iterator[SyncCounter]:
    counter = SyncCounter()
    original = torch.Tensor.tolist

    def tolist(self: torch.Tensor) -> Any:
        counter.ops.append("Tensor.tolist")
        return original(self)

    torch.Tensor.tolist = tolist  # type: ignore[method-assign,assignment]
    try:
        with counter:
            yield counter
    finally:
        torch.Tensor.tolist = original  # type: ignore[method-assign]


def _backward(out: Any) -> None:
    tensors = out if isinstance(out, (tuple, list)) else (out,)
    total = sum(t.float().sum() for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad)
    if isinstance(total, torch.Tensor):
        total.backward()


def _cases() -> dict[str, Callable[[], Any]]:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, 2, 8, generator=gen, requires_grad=True)
    z1, z2 = z[:, 0].detach().requires_grad_(), z[:, 1].detach().requires_grad_()
    labels = torch.arange(16) % 3
    rel = (labels[:, None] == labels[None, :]).float()
    logits = torch.randn(16, 3, generator=gen, requires_grad=True)
    target = torch.tensor([0, 1, 2, -100] * 4)
    multi_hot = (torch.rand(16, 3, generator=gen) > 0.5).float()
    counts = torch.tensor([50, 5, 1])
    features = torch.randn(4, 8, 5, 5, generator=gen, requires_grad=True)
    mask = torch.zeros(4, 1, 20, 20)
    mask[:3, :, 4:12, 3:11] = 1
    valid = torch.tensor([True, True, False, True])
    att_logits = torch.randn(4, 1, 5, 5, generator=gen, requires_grad=True)
    image_labels = torch.tensor([0, 0, 1, 1])
    tau = torch.tensor(0.3, requires_grad=True)
    cb = ClassBalancedLoss(counts, loss_type="focal")
    ldam = LDAMLoss(counts, scale=4.0)
    logit_adjusted = LogitAdjustedLoss(counts)
    balanced_softmax = BalancedSoftmaxLoss(counts)
    post_hoc = PostHocLogitAdjustment(counts)
    class_weight = torch.tensor([0.5, 1.0, 2.0])
    drw = CF.deferred_reweighting_weights(counts, 5, defer_epoch=3)
    refs = torch.randn(5, 8, generator=gen, requires_grad=True)
    memory_loss = SupConLoss(memory=MemoryQueue(40, 8))
    regularizer_memory = ContrastiveFeatureRegularizer(8, 4, memory=MemoryQueue(12, 4, kinds=True))
    regularizer_memory(features.detach(), mask, image_labels)
    memory_loss.memory.enqueue(torch.randn(20, 8, generator=gen), labels[:4].repeat(5))
    attention = MaskGuidedAttention(8, mode="hard", teacher_forcing=0.5).train()
    volume = torch.randn(4, 8, 3, 4, 5, generator=gen, requires_grad=True)
    volume_mask = torch.zeros(4, 1, 7, 9, 11)
    volume_mask[:3, :, 2:5, 1:6, 3:10] = 1
    volume_logits = torch.randn(4, 1, 3, 4, 5, generator=gen, requires_grad=True)
    volume_attention = MaskGuidedAttention(8, spatial_dims=3, teacher_forcing=0.5).train()
    return {
        "nt_xent dense": lambda: CF.nt_xent_loss(z1, z2),
        "nt_xent tiled": lambda: CF.nt_xent_loss(z, chunk_size=5),
        "nt_xent none tiled": lambda: CF.nt_xent_loss(z, chunk_size=5, reduction="none"),
        "nt_xent learnable tau tiled": lambda: CF.nt_xent_loss(z, temperature=tau, chunk_size=7),
        "NTXentLoss": lambda: NTXentLoss()(z1, z2),
        "supcon labels dense": lambda: CF.supcon_loss(z, labels),
        "supcon labels tiled": lambda: CF.supcon_loss(z, labels, chunk_size=5),
        "supcon labels in tiled": lambda: CF.supcon_loss(z, labels, variant="in", chunk_size=5),
        "supcon mask": lambda: CF.supcon_loss(z, mask=rel),
        "supcon mask tiled": lambda: CF.supcon_loss(z, mask=rel, chunk_size=6),
        "SupConLoss": lambda: SupConLoss()(z, labels),
        "supcon refs hard debiased dense": lambda: CF.supcon_loss(
            z,
            labels,
            ref_features=refs,
            ref_labels=labels[:5],
            hard_negative_beta=0.5,
            debias_tau_plus=0.1,
        ),
        "supcon refs hard tiled": lambda: CF.supcon_loss(
            z,
            labels,
            ref_features=refs,
            ref_labels=labels[:5],
            hard_negative_beta=0.5,
            chunk_size=5,
        ),
        "supcon multi-hot dense": lambda: CF.supcon_loss(z, multi_hot),
        "supcon multi-hot tiled": lambda: CF.supcon_loss(z, multi_hot, chunk_size=5),
        "nt_xent refs tiled": lambda: CF.nt_xent_loss(z, ref_features=refs, chunk_size=5),
        "SupConLoss memory": lambda: memory_loss(z, labels),
        "class_balanced softmax": lambda: CF.class_balanced_loss(logits, target, counts),
        "class_balanced focal multi-hot": lambda: CF.class_balanced_loss(
            logits, multi_hot, [50, 5, 1], loss_type="focal"
        ),
        "ClassBalancedLoss": lambda: cb(logits, target),
        "ClassBalancedLoss.update": lambda: cb.update(target),
        "class_balanced_weights": lambda: CF.class_balanced_weights(counts, 0.99),
        "logit_adjusted weighted": lambda: CF.logit_adjusted_loss(
            logits, target, [50, 5, 1], tau=1.5, weight=class_weight
        ),
        "balanced_softmax": lambda: CF.balanced_softmax_loss(logits, target, counts),
        "ldam weighted": lambda: CF.ldam_loss(logits, target, counts, scale=4.0, weight=drw),
        "post_hoc_logit_adjustment": lambda: CF.post_hoc_logit_adjustment(logits, counts),
        "LogitAdjustedLoss": lambda: logit_adjusted(logits, target),
        "BalancedSoftmaxLoss": lambda: balanced_softmax(logits, target, class_weight),
        "LDAMLoss": lambda: ldam(logits, target, drw),
        "LDAMLoss.update": lambda: ldam.update(target),
        "PostHocLogitAdjustment": lambda: post_hoc(logits),
        "deferred_reweighting_weights": lambda: CF.deferred_reweighting_weights(
            counts, 5, defer_epoch=3
        ),
        "effective_number": lambda: CF.effective_number(counts, 0.99),
        "mask_guidance bce": lambda: CF.mask_guidance_loss(
            att_logits, mask, from_logits=True, valid=valid
        ),
        "mask_guidance dice probs": lambda: CF.mask_guidance_loss(
            torch.sigmoid(att_logits), mask, kind="dice"
        ),
        "MaskGuidanceLoss": lambda: MaskGuidanceLoss(from_logits=True)(att_logits, mask, valid),
        "resize_mask": lambda: CF.resize_mask(mask, (5, 5)),
        "class_activation_map": lambda: CF.class_activation_map(
            features, torch.randn(3, 8), image_labels
        ),
        "masked_average_pool": lambda: CF.masked_average_pool(features, mask),
        "MaskedAveragePool": lambda: MaskedAveragePool()(features, mask),
        "regularizer dense": lambda: CF.contrastive_feature_regularizer(
            features, mask, image_labels, valid=valid
        ),
        "regularizer tiled none": lambda: CF.contrastive_feature_regularizer(
            features, mask, image_labels, chunk_size=3, reduction="none"
        ),
        "ContrastiveFeatureRegularizer": lambda: ContrastiveFeatureRegularizer(8, 4)(
            features, mask, image_labels
        ),
        "regularizer refs tiled": lambda: CF.contrastive_feature_regularizer(
            features,
            mask,
            image_labels,
            chunk_size=3,
            ref_features=torch.randn(5, 8),
            ref_labels=torch.tensor([0, 1, 1, 0, 2]),
            ref_kind=torch.tensor([1, 1, 0, -1, 1]),
        ),
        "ContrastiveFeatureRegularizer memory": lambda: regularizer_memory(
            features, mask, image_labels
        ),
        "MaskGuidedAttention": lambda: attention(features, mask, valid),
        "ProjectionHead": lambda: ProjectionHead(8, out_features=4)(torch.randn(6, 8)),
        "mask_guidance 3d": lambda: CF.mask_guidance_loss(
            volume_logits, volume_mask, from_logits=True, valid=valid
        ),
        "resize_mask 3d": lambda: CF.resize_mask(volume_mask, (3, 4, 5)),
        "class_activation_map 3d": lambda: CF.class_activation_map(
            volume, torch.randn(3, 8), image_labels
        ),
        "masked_average_pool 3d": lambda: CF.masked_average_pool(volume, volume_mask),
        "regularizer 3d": lambda: CF.contrastive_feature_regularizer(
            volume, volume_mask, image_labels, valid=valid
        ),
        "MaskGuidedAttention 3d": lambda: volume_attention(volume, volume_mask, valid),
    }


CASES = _cases()


@pytest.mark.parametrize("checks", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_syncs_per_call(name: str, checks: bool) -> None:
    call = CASES[name]
    contrast_attn.set_finite_checks(checks)
    try:
        with count_syncs() as counter:
            _backward(call())
    finally:
        contrast_attn.set_finite_checks(True)
    assert len(counter.ops) <= (1 if checks else 0), counter.ops


def _training_step() -> Callable[[], None]:
    """One fine-tuning step of the example's kind, from the public API only."""
    torch.manual_seed(0)
    backbone = torch.nn.Conv2d(3, 16, 3, padding=1)
    attention = MaskGuidedAttention(16, mode="hard", teacher_forcing=0.5)
    regularizer = ContrastiveFeatureRegularizer(16, projection_dim=8)
    head = ProjectionHead(16, out_features=8)
    classifier = torch.nn.Linear(16, 3)
    guidance = MaskGuidanceLoss(from_logits=True)
    class_balanced = ClassBalancedLoss([40, 8, 2], beta=0.999)
    ntxent = NTXentLoss(temperature=0.5)
    modules = torch.nn.ModuleList([backbone, attention, regularizer, head, classifier])
    optimizer = torch.optim.SGD(modules.parameters(), lr=0.01)
    images = torch.randn(8, 3, 12, 12)
    masks = torch.zeros(8, 1, 48, 48)
    masks[:5, :, 8:30, 10:28] = 1
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 0, 0])
    valid = torch.ones(8, dtype=torch.bool)

    def step() -> None:
        optimizer.zero_grad()
        feature_map = backbone(images)
        attended, _ = attention(feature_map, masks, valid)
        assert attention.last_logits is not None
        pooled = attended.mean(dim=(2, 3))
        views = torch.stack([head(pooled), head(pooled + 0.1 * torch.randn_like(pooled))], dim=1)
        loss = (
            class_balanced(classifier(pooled), labels)
            + guidance(attention.last_logits, masks, valid)
            + regularizer(attended, masks, labels, valid)
            + ntxent(views)
        )
        loss.backward()
        optimizer.step()

    return step


@pytest.mark.parametrize(("checks", "limit"), [(True, 7), (False, 0)])
def test_training_step_syncs(checks: bool, limit: int) -> None:
    step = _training_step()
    step()  # warm-up (lazy state)
    contrast_attn.set_finite_checks(checks)
    try:
        with count_syncs() as counter:
            step()
    finally:
        contrast_attn.set_finite_checks(True)
    # Four losses and three layer calls in training (attention, the head twice) with value
    # checks: at most one synchronisation each.
    assert len(counter.ops) <= limit, counter.ops
