"""Memory-bounded contrastive kernel: row tiles, never the full N×N matrix.

For anchors :math:`a_i = k_{\\pi(i)}` (a subset of the unit-norm keys) and
:math:`s_{ij} = a_i \\cdot k_j / \\tau` with the self pair masked out, the
per-anchor loss is

.. math::
    \\ell_i = \\operatorname{lse}_j s_{ij} - \\frac{1}{|P(i)|}\\sum_{p \\in P(i)} s_{ip}
    \\quad (\\text{out}), \\qquad
    \\ell_i = \\operatorname{lse}_j s_{ij} - \\operatorname{lse}_{p \\in P(i)} s_{ip} + \\log |P(i)|
    \\quad (\\text{in}),

and, with upstream gradients :math:`g_i`, :math:`G_{ij} = g_i (\\mathrm{softmax}_j(s_i) - W_{ij})`
where :math:`W_{ij} = 1/|P(i)|` (out) or the softmax of :math:`s_{ip}` over the
positives (in). The gradients are :math:`\\partial / \\partial a_i = \\sum_j G_{ij} k_j / \\tau`
and :math:`\\partial / \\partial k_j = \\sum_i G_{ij} a_i / \\tau`: two matmuls per tile.

Memory is :math:`O(N D + t N)` for a tile of :math:`t` rows. Four savings:

* With class labels and the ``"out"`` variant, the positive part is low rank:
  :math:`\\sum_{p \\in P(i)} k_p` is a per-class sum of keys minus the anchor itself,
  so no positive mask is ever built and a tile holds a single :math:`t \\times N`
  buffer (similarities, turned into probabilities in place).
* The losses are almost always reduced by a sum or mean, whose upstream gradient
  is the same for every anchor. The forward pass therefore computes the gradient
  for unit upstream weights while each tile is in cache (3 matmuls in all instead
  of 4 with recomputation) and the backward pass only rescales it. A non-uniform
  upstream gradient (``reduction="none"`` followed by a weighting) falls back to
  recomputing the tiles in backward.
* The log-sum-exp of row :math:`i` is shifted by the bound
  :math:`|a_i| \\max_j |k_j| / \\tau \\ge \\max_j s_{ij}` instead of the row maximum,
  written by the matmul itself (``addmm``), which saves a pass over each tile; the
  row maximum is used only where the bounds span a range exp() could underflow.
* Row weights (the upstream gradient and :math:`1 / \\sum_j e^{s_{ij}}`) scale the
  :math:`t \\times D` operands and results of the gradient matmuls, never the tile,
  so a tile is written once by a matmul, exponentiated in place, summed and read
  by two matmuls.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

# Bytes of one t × N tile that the automatic chunk size aims at. Large tiles mean
# few, long kernels: on a busy multi-core CPU every kernel launch is a thread
# synchronisation, and 64-row tiles measured 3 times slower than 1024-row ones at
# 16384 rows on 2 shared cores, for no gain in memory that matters.
TILE_BYTES = 64 << 20
# Widest range of exponents a constant shift may span before exp() could underflow.
_EXP_RANGE = {torch.float32: 60.0, torch.float64: 600.0}


def default_chunk_size(num_keys: int, element_size: int = 4) -> int:
    """Rows per tile so that one ``[t, N]`` tile holds about 64 MiB (at least 64 rows)."""
    return max(1, min(num_keys, max(64, TILE_BYTES // max(num_keys * element_size, 1))))


def _class_structure(
    key_labels: torch.Tensor, anchor_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Dense class ids of keys, class ids of anchors, number of classes."""
    _, key_class = torch.unique(key_labels, return_inverse=True)
    num_classes = int(key_class.max()) + 1 if key_class.numel() else 0
    return key_class, key_class[anchor_index], num_classes


def _static_shift(scaled: torch.Tensor, keys: torch.Tensor) -> torch.Tensor | None:
    """Per-anchor upper bounds ``|a_i| max_j |k_j| / tau`` of the similarities, or None.

    Shifting row ``i`` by its bound instead of its maximum saves a pass over every
    tile; it is safe while the bounds span a range that exp() cannot underflow
    (always, for unit-norm rows and temperatures above 1/30 in float32).
    """
    bound = scaled.norm(dim=1, keepdim=True) * keys.norm(dim=1).amax()
    limit = _EXP_RANGE.get(scaled.dtype, 60.0)
    return bound if float(bound.amax()) * 2.0 <= limit else None


def _sweep(
    keys: torch.Tensor,
    anchor_index: torch.Tensor,
    key_labels: torch.Tensor | None,
    matrix: torch.Tensor | None,
    temperature: float,
    variant: str,
    tile: int,
    row_weight: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One pass over the row tiles.

    Returns ``(loss [n], num_pos [n], grad_keys [N, D] or None)``; the gradient is
    computed for upstream weights ``row_weight [n]`` when it is given.
    """
    n = anchor_index.shape[0]
    inv_t = 1.0 / temperature
    anchors = keys[anchor_index]
    scaled = anchors * inv_t
    shift = _static_shift(scaled, keys)
    low_rank = variant == "out" and key_labels is not None
    loss = keys.new_empty(n)
    num_pos = torch.empty(n, dtype=torch.long, device=keys.device)
    grad_anchor = torch.empty_like(anchors) if row_weight is not None else None
    grad_keys = torch.zeros_like(keys) if row_weight is not None else None

    if key_labels is not None:
        key_class, anchor_class, num_classes = _class_structure(key_labels, anchor_index)
        class_count = torch.bincount(key_class, minlength=num_classes)
        num_pos = class_count[anchor_class] - 1
        if low_rank:
            class_sum = keys.new_zeros(num_classes, keys.shape[1]).index_add_(0, key_class, keys)
            pos_key_sum = class_sum[anchor_class] - anchors
            pos_dot = (scaled * pos_key_sum).sum(dim=1)

    for start in range(0, n, tile):
        stop = min(start + tile, n)
        self_col = anchor_index[start:stop, None]
        if shift is not None:
            # exp(s - bound) in place of the tile written by the matmul itself.
            row_shift = shift[start:stop]
            sim = torch.addmm(row_shift, scaled[start:stop], keys.T, beta=-1)
            sim.scatter_(1, self_col, float("-inf"))
        else:
            sim = scaled[start:stop] @ keys.T
            sim.scatter_(1, self_col, float("-inf"))
            row_shift = sim.amax(dim=1, keepdim=True)
            sim.sub_(row_shift)
        # ``sim`` now holds s - shift (-inf on the diagonal).
        if low_rank:
            prob = sim.exp_()
            denom = prob.sum(dim=1, keepdim=True)
            lse = (row_shift + denom.log()).squeeze(1)
            count = num_pos[start:stop]
            loss[start:stop] = torch.where(
                count > 0, lse - pos_dot[start:stop] / count.clamp(min=1), 0.0
            )
            # Unnormalised probabilities: 1 / denom is folded into the row weights below.
            coeff, row_scale = prob, denom.reciprocal().squeeze(1)
        else:
            if matrix is not None:
                pos = matrix[start:stop].clone()
            else:
                assert key_labels is not None
                pos = key_labels[anchor_index[start:stop], None] == key_labels[None, :]
            pos.scatter_(1, self_col, False)
            count = pos.sum(dim=1)
            num_pos[start:stop] = count
            prob = sim.exp()
            denom = prob.sum(dim=1, keepdim=True)
            lse_shifted = denom.log()
            has = count > 0
            safe = count.clamp(min=1).to(sim.dtype)
            if variant == "out":
                pos_mean = torch.where(pos, sim, 0.0).sum(dim=1) / safe
                loss[start:stop] = torch.where(has, (lse_shifted.squeeze(1) - pos_mean), 0.0)
                target = pos.to(sim.dtype) / safe[:, None]
            else:
                pos_sim = torch.where(pos, sim, float("-inf"))
                pos_max = torch.where(has, pos_sim.amax(dim=1), 0.0)[:, None]
                pos_exp = (pos_sim - pos_max).exp_()
                pos_denom = pos_exp.sum(dim=1, keepdim=True).clamp(min=torch.finfo(sim.dtype).tiny)
                loss[start:stop] = torch.where(
                    has, (lse_shifted - pos_max - pos_denom.log()).squeeze(1) + safe.log(), 0.0
                )
                target = pos_exp.div_(pos_denom)
            coeff, row_scale = prob.div_(denom).sub_(target), None
        if row_weight is not None:
            assert grad_anchor is not None and grad_keys is not None
            weight = torch.where(num_pos[start:stop] > 0, row_weight[start:stop], 0.0)
            if row_scale is not None:
                weight = weight * row_scale
            # Row weights scale the [t, D] operands and results, never the [t, N] tile.
            grad_anchor[start:stop] = (coeff @ keys).mul_(weight[:, None])
            grad_keys.addmm_(coeff.T, scaled[start:stop] * weight[:, None])

    if row_weight is None:
        return loss, num_pos, None
    assert grad_anchor is not None and grad_keys is not None
    if low_rank:
        # Positive part W, low rank: sum_j W_ij k_j and sum_i W_ij a_i per class.
        weight = torch.where(num_pos > 0, row_weight, 0.0) / num_pos.clamp(min=1)
        grad_anchor -= weight[:, None] * pos_key_sum
        anchor_class_sum = keys.new_zeros(class_sum.shape).index_add_(
            0, anchor_class, scaled * weight[:, None]
        )
        grad_keys -= anchor_class_sum[key_class]
        grad_keys.index_add_(0, anchor_index, scaled * weight[:, None])
    grad_keys.index_add_(0, anchor_index, grad_anchor * inv_t)
    return loss, num_pos, grad_keys


class _TiledContrastive(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        keys: torch.Tensor,
        anchor_index: torch.Tensor,
        key_labels: torch.Tensor | None,
        matrix: torch.Tensor | None,
        temperature: float,
        variant: str,
        tile: int,
        need_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ``need_grad`` comes from the caller: inside forward() grad mode is always off,
        # and ``ctx.needs_input_grad`` is also true under ``torch.no_grad()``.
        unit = keys.new_ones(anchor_index.shape[0]) if need_grad else None
        loss, num_pos, grad_keys = _sweep(
            keys, anchor_index, key_labels, matrix, temperature, variant, tile, unit
        )
        ctx.save_for_backward(keys, anchor_index, key_labels, matrix, grad_keys, num_pos)
        ctx.args = (temperature, variant, tile)
        ctx.mark_non_differentiable(num_pos)
        return loss, num_pos

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_loss: torch.Tensor, _grad_count: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        keys, anchor_index, key_labels, matrix, grad_keys, num_pos = ctx.saved_tensors
        weights = grad_loss[num_pos > 0]
        if weights.numel() == 0:
            return (torch.zeros_like(keys),) + (None,) * 7
        if bool((weights == weights[0]).all()):
            return (grad_keys * weights[0],) + (None,) * 7
        temperature, variant, tile = ctx.args
        _, _, grad = _sweep(
            keys, anchor_index, key_labels, matrix, temperature, variant, tile, grad_loss
        )
        return (grad,) + (None,) * 7


def contrastive_rows_tiled(
    keys: torch.Tensor,
    anchor_index: torch.Tensor,
    key_labels: torch.Tensor | None,
    matrix: torch.Tensor | None,
    temperature: float,
    variant: str,
    tile: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiled twin of the dense core: ``(loss [n], num_positives [n])``.

    See :func:`contrast_attn.functional.contrastive.contrastive_rows` for the
    arguments; ``tile`` is the number of anchor rows per tile.
    """
    need_grad = torch.is_grad_enabled() and keys.requires_grad
    out: tuple[torch.Tensor, torch.Tensor] = _TiledContrastive.apply(
        keys, anchor_index, key_labels, matrix, temperature, variant, tile, need_grad
    )
    return out
