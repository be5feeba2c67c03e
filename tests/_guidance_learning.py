"""The learning check shared by the 2-D and 3-D attention tests: guidance alone finds the lesion."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from contrast_attn import MaskGuidedAttention
from contrast_attn.functional import mask_guidance_loss, resize_mask

Batch = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def attention_mass_inside(
    backbone: nn.Module,
    attn: MaskGuidedAttention,
    batch: Batch,
    *,
    steps: int,
    batch_size: int,
    held_out: int,
) -> tuple[float, float]:
    """The attention's share of mass inside the lesion before and after guidance training.

    Backbone and attention are trained with Adam on the guidance loss alone;
    ``batch(n)`` draws ``n`` inputs (images or volumes) and their lesion masks, and
    the share is measured on one held-out batch. Returns ``(before, after)``.
    """
    optimiser = torch.optim.Adam([*backbone.parameters(), *attn.parameters()], lr=1e-2)

    def mass(inputs: torch.Tensor, mask: torch.Tensor) -> float:
        attn.eval()
        with torch.no_grad():
            _, attention = attn(backbone(inputs))
        attn.train()
        target = resize_mask(mask, tuple(attention.shape[2:]))
        return float((attention * target).sum() / attention.sum())

    held_out_batch = batch(held_out)
    start = mass(*held_out_batch)
    threads = torch.get_num_threads()
    # Tiny tensors: one thread is ten times faster than two on a busy machine.
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            inputs, mask = batch(batch_size)
            attn(backbone(inputs))
            assert attn.last_logits is not None
            loss = mask_guidance_loss(attn.last_logits, mask, from_logits=True)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return start, mass(*held_out_batch)
