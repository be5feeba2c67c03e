"""The contrastive row core: per-anchor losses, by a dense path or by row tiles.

:func:`contrastive_rows` is the one computation behind NT-Xent, SupCon and the
contrastive feature regulariser. Small problems take the dense path (plain
autograd on the ``[n, N]`` logits); large ones the memory-bounded tiled kernel
below, which never holds the full N×N matrix.

Tiled kernel.

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
  buffer (similarities, turned into probabilities in place). Classes are found
  with fixed shapes (a sort and ``searchsorted``, no ``unique``), so nothing
  waits for the device.
* The losses are almost always reduced by a sum or mean. Asked for the sum
  (``summed=True``), the kernel computes the gradient for unit upstream weights
  in the forward pass while each tile is in cache (3 matmuls in all instead of
  4 with recomputation) and the backward pass only rescales it. Per-anchor
  losses (``reduction="none"``) recompute the tiles in backward with the given
  upstream weights.
* The log-sum-exp of row :math:`i` is shifted by the bound
  :math:`|a_i| \\max_j |k_j| / \\tau \\ge \\max_j s_{ij}` instead of the row maximum,
  written by the matmul itself (``addmm``), which saves a pass over each tile; the
  row maximum is used only where the bounds span a range exp() could underflow.
* Row weights (the upstream gradient and :math:`1 / \\sum_j e^{s_{ij}}`) scale the
  :math:`t \\times D` operands and results of the gradient matmuls, never the tile,
  so a tile is written once by a matmul, exponentiated in place, summed and read
  by two matmuls.

A temperature given as a tensor gets its gradient, :math:`\\partial / \\partial \\tau =
-\\frac{1}{\\tau} \\sum_i (\\partial / \\partial q_i) \\cdot q_i` with :math:`q_i = a_i / \\tau`.
The tiled kernel's backward pass is not itself differentiable: a second
derivative (``create_graph=True``) raises ``NotImplementedError``; the dense
path supports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = [
    "DENSE_MAX_PAIRS",
    "TILE_BYTES",
    "Negatives",
    "Positives",
    "RowLosses",
    "compute_dtype",
    "contrastive_rows",
    "default_chunk_size",
    "normalize_rows",
    "reweighted_rows",
]

# Above this many anchor-key pairs the tiled kernel is used automatically
# (the dense path would hold several [n, N] float32 matrices at once).
DENSE_MAX_PAIRS = 1024 * 1024
# Bytes of one t × N tile that the automatic chunk size aims at. Large tiles mean
# few, long kernels: every kernel launch on a busy multi-core CPU is a thread
# synchronisation (see benchmarks/README.md for the measurements).
TILE_BYTES = 64 << 20
# Widest range of exponents a constant shift may span before exp() could underflow.
_EXP_RANGE = {torch.float32: 60.0, torch.float64: 600.0}

Temperature = float | torch.Tensor


@dataclass(frozen=True)
class Positives:
    """The positive relation between anchor rows and key rows.

    Exactly one of three forms is set: integer labels of the key rows ``[N]``
    (anchor ``i`` has the label of its key, ``key_labels[anchor_index[i]]``, and a
    pair is positive when the labels are equal); an explicit ``[n, N]`` bool
    matrix; or ``views = V``: the keys are V view-major copies of N / V samples
    (key ``j`` is sample ``j mod N / V``) and the positives are the other views
    of the same sample (NT-Xent). A fourth form, ``label_sets`` (``[N, C]`` multi-hot
    0/1 rows in the keys' dtype), weights each pair by the Jaccard overlap of the
    two label sets, :math:`w_{ij} = |Y_i \\cap Y_j| / |Y_i \\cup Y_j|` (positive when
    :math:`w_{ij} > 0`). The pair of a row with itself is never positive. ``key_valid``
    (``[N]`` bool, optional) marks the keys that take part: the others are
    neither positives nor in any denominator, and an anchor whose own key is
    not valid gets loss 0 (fixed shapes instead of selecting rows).
    """

    key_labels: torch.Tensor | None = None
    matrix: torch.Tensor | None = None
    key_valid: torch.Tensor | None = None
    views: int | None = None
    label_sets: torch.Tensor | None = None

    def as_labels(self, num_keys: int, device: torch.device) -> Positives:
        """The same relation with ``views`` written as sample labels (other forms unchanged)."""
        if self.views is None:
            return self
        sample = torch.arange(num_keys // self.views, device=device).repeat(self.views)
        return Positives(key_labels=sample, key_valid=self.key_valid)


@dataclass(frozen=True)
class Negatives:
    """How the negatives of an anchor enter its denominator.

    With :math:`Q(i)` the negatives of anchor :math:`i` (the other valid keys that
    are not positives), :math:`M = |Q(i)|` and :math:`s_{ij} = a_i \\cdot k_j / \\tau`,
    the negatives' part of the denominator, :math:`\\sum_{q \\in Q(i)} e^{s_{iq}}`, becomes

    .. math::
        \\hat S_i = M \\frac{\\sum_{q \\in Q(i)} e^{(1 + \\beta) s_{iq}}}{\\sum_{q \\in Q(i)} e^{\\beta s_{iq}}},
        \\qquad
        N_i = \\max\\Big(\\frac{\\hat S_i - \\tau^+ M \\bar e_i}{1 - \\tau^+},\\; M e^{-1/\\tau}\\Big),

    where :math:`\\bar e_i = \\sum_p w_{ip} e^{s_{ip}} / \\sum_p w_{ip}` is the
    (weighted) mean of the positives' :math:`e^{s}`: importance weights
    :math:`\\propto e^{\\beta s}` on the negatives (``beta``, Robinson et al., ICLR 2021)
    and the debiased estimator with class prior :math:`\\tau^+` (``tau_plus``,
    Chuang et al., NeurIPS 2020), clipped at its theoretical minimum as in both
    papers' code. The denominator of anchor :math:`i` is then
    :math:`\\sum_{p \\in P(i)} e^{s_{ip}} + N_i`; with ``beta = 0`` and
    ``tau_plus = 0`` it is the plain sum over every other key.
    """

    beta: float = 0.0
    tau_plus: float = 0.0

    @property
    def active(self) -> bool:
        """Whether the denominator differs from the plain sum."""
        return self.beta != 0.0 or self.tau_plus != 0.0


class RowLosses(NamedTuple):
    """The result of :func:`contrastive_rows`.

    Attributes:
        loss: ``[n]`` per-anchor losses (0 without a positive), or their sum (0-d)
            when asked with ``summed=True``.
        num_positives: ``[n]`` long, the number of positives of each anchor.
    """

    loss: torch.Tensor
    num_positives: torch.Tensor


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 input, else float32 (fp16/bf16 similarities overflow exp())."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def normalize_rows(rows: torch.Tensor) -> torch.Tensor:
    r"""L2-normalised rows ``[N, D]`` in the compute dtype, for rows of any magnitude.

    .. math::
        \hat z_i = \frac{z_i / m_i}{\max(\lVert z_i / m_i \rVert, 1/2)}, \qquad
        m_i = \max_d |z_{id}| \ (1 \text{ for a zero row}),

    which equals :math:`z_i / \lVert z_i \rVert` for every non-zero row: after the
    division by its largest entry a row's norm lies in :math:`[1, \sqrt{D}]`, so its
    squared norm cannot overflow (float32 overflows from :math:`|z_i| \approx 10^{19}`)
    and the clamp at 1/2 never acts. :math:`m_i` is held constant in the gradient, which
    is exact (the result does not depend on it). A zero row stays zero, and its
    Jacobian is twice the identity: a finite gradient in every dtype, where the usual
    clamp at a tiny norm multiplies it by :math:`10^{12}` (Inf in float16).
    """
    x = rows.to(compute_dtype(rows))
    scale = x.detach().abs().amax(dim=1, keepdim=True)
    return F.normalize(x / torch.where(scale > 0, scale, 1.0), dim=1, eps=0.5)


def default_chunk_size(num_keys: int, element_size: int = 4) -> int:
    """Rows per tile so that one ``[t, N]`` tile holds about 64 MiB (at least 64 rows)."""
    return max(1, min(num_keys, max(64, TILE_BYTES // max(num_keys * element_size, 1))))


def contrastive_rows(
    keys: torch.Tensor,
    anchor_index: torch.Tensor | None,
    positives: Positives,
    *,
    temperature: Temperature,
    variant: str = "out",
    chunk_size: int | None = None,
    summed: bool = False,
    negatives: Negatives | None = None,
) -> RowLosses:
    """Per-anchor supervised-contrastive loss of unit-norm rows.

    .. math::
        \\ell_i^{out} = -\\frac{1}{|P(i)|} \\sum_{p \\in P(i)}
            \\log \\frac{\\exp(a_i \\cdot k_p / \\tau)}{\\sum_{j \\ne i} \\exp(a_i \\cdot k_j / \\tau)},
        \\qquad
        \\ell_i^{in} = -\\log \\frac{1}{|P(i)|} \\sum_{p \\in P(i)}
            \\frac{\\exp(a_i \\cdot k_p / \\tau)}{\\sum_{j \\ne i} \\exp(a_i \\cdot k_j / \\tau)}

    where anchor :math:`a_i` is key ``keys[anchor_index[i]]`` and :math:`j \\ne i`
    runs over every (valid) key except the anchor itself. Anchors with no
    positive get loss 0. Every loss of this package that contrasts rows
    (NT-Xent, SupCon, the contrastive feature regulariser) is this function plus
    a reduction. Inputs are validated by the callers; nothing here waits for
    the device.

    Args:
        keys: ``[N, D]`` L2-normalised rows (float32 or float64).
        anchor_index: ``[n]`` long, the rows of ``keys`` that serve as anchors;
            ``None`` = every row, in order.
        positives: The positive relation (and the valid keys).
        temperature: :math:`\\tau > 0`, a number or a 0-d tensor (which gets a gradient).
        variant: ``"out"`` or ``"in"``.
        chunk_size: Rows per tile; ``None`` picks the dense path for small problems
            and the tiled kernel above :data:`DENSE_MAX_PAIRS` pairs.
        summed: Return the sum of the per-anchor losses (the tiled kernel then
            computes its gradient in the forward pass).
        negatives: Hard-negative / debiased denominators (:class:`Negatives`);
            ``None`` or inactive = the plain sum.

    Weighted positives (``positives.label_sets``) give
    :math:`\\ell_i^{out} = -\\sum_p w_{ip} \\log (e^{s_{ip}} / D_i) / \\sum_p w_{ip}` and
    :math:`\\ell_i^{in} = -\\log (\\sum_p w_{ip} e^{s_{ip}} / (D_i \\sum_p w_{ip}))`. They and
    active :class:`Negatives` take :func:`reweighted_rows`: dense, or in row tiles
    that are recomputed in the backward pass (:func:`torch.utils.checkpoint.checkpoint`),
    so that memory stays :math:`O(N D + t N)`.

    Returns:
        :class:`RowLosses` ``(loss [n] or 0-d, num_positives [n])``.
    """
    big_n = keys.shape[0]
    n = big_n if anchor_index is None else anchor_index.shape[0]
    if positives.label_sets is not None or (negatives is not None and negatives.active):
        return _reweighted(
            keys, anchor_index, positives, temperature, variant, chunk_size, summed, negatives
        )
    if chunk_size is None and (n * big_n <= DENSE_MAX_PAIRS or positives.matrix is not None):
        # Small problems, or an explicit mask (already n*N): the dense path is as lean.
        if positives.views is None or variant != "out" or positives.key_valid is not None:
            positives = positives.as_labels(big_n, keys.device)
        loss, num_pos = _dense_rows(keys, anchor_index, positives, temperature, variant)
        return RowLosses(loss.sum() if summed else loss, num_pos)
    positives = positives.as_labels(big_n, keys.device)
    tile = chunk_size if chunk_size is not None else default_chunk_size(big_n)
    if anchor_index is None:
        anchor_index = torch.arange(big_n, device=keys.device)
    tau_grad = isinstance(temperature, torch.Tensor) and temperature.requires_grad
    need_grad = torch.is_grad_enabled() and (keys.requires_grad or tau_grad)
    loss, num_pos = _TiledContrastive.apply(
        keys,
        temperature,
        anchor_index,
        positives.key_labels,
        positives.matrix,
        positives.key_valid,
        variant,
        tile,
        summed,
        need_grad and summed,
    )
    return RowLosses(loss, num_pos)


def _dense_rows(
    keys: torch.Tensor,
    anchor_index: torch.Tensor | None,
    positives: Positives,
    temperature: Temperature,
    variant: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    # Scale the [n, D] anchors, not the [n, N] logits. The self pair (and invalid keys)
    # are masked in place outside autograd: the matmul's backward does not need its
    # output, and the gradient at a masked logit is 0 either way (its probability is 0),
    # so no [n, N] copy of the gradient is made.
    anchors = keys if anchor_index is None else keys.index_select(0, anchor_index)
    logits = (anchors / temperature) @ keys.T
    valid = positives.key_valid
    anchor_valid = None
    with torch.no_grad():
        if valid is not None:
            # A finite filler: a row whose keys are all invalid keeps a finite gradient.
            logits.masked_fill_(~valid[None, :], torch.finfo(logits.dtype).min)
            anchor_valid = valid if anchor_index is None else valid[anchor_index]
        if anchor_index is None:
            logits.diagonal().fill_(float("-inf"))
        else:
            logits.scatter_(1, anchor_index[:, None], float("-inf"))
    own_row = torch.arange(anchors.shape[0], device=keys.device)
    row = own_row if anchor_index is None else anchor_index
    if positives.views is not None:
        # Views of one sample (variant "out", all keys valid). With t_i = the next view of
        # anchor i's sample, l_i = lse_i - mean_p s_ip = CE(logits_i, t_i) + s_it - mean_p s_ip:
        # for two views the last two terms cancel and l_i is the cross-entropy itself.
        views = positives.views
        samples = keys.shape[0] // views
        target = row.add(samples).remainder(keys.shape[0])
        loss = F.cross_entropy(logits, target, reduction="none")
        if views > 2:
            per_sample = keys.view(views, samples, keys.shape[1]).sum(dim=0)
            pos_mean = (per_sample.index_select(0, row.remainder(samples)) - anchors) / (views - 1)
            correction = anchors * (keys.index_select(0, target) - pos_mean)
            loss = loss + correction.sum(dim=1) / temperature
        return loss, torch.full_like(row, views - 1)
    if valid is not None:
        lse = logits.logsumexp(dim=1)
    else:
        # lse_i = CE(logits_i, t_i) + s_it for any other key t_i: the fused log-softmax of
        # cross_entropy, with the logit s_it taken from the [n, D] rows.
        other = row.add(1).remainder(keys.shape[0])
        lse = (
            F.cross_entropy(logits, other, reduction="none")
            + (anchors * keys.index_select(0, other)).sum(dim=1) / temperature
        )
    labels = positives.key_labels
    if variant == "out" and labels is not None:
        # Low rank: the positives' logits sum to a_i . (its class's key sum - a_i) / tau,
        # so no [n, N] positive mask is built.
        key_class = _class_ids(labels)
        anchor_class = key_class if anchor_index is None else key_class[anchor_index]
        member = keys.new_ones(keys.shape[0]) if valid is None else valid.to(keys.dtype)
        class_sum = keys.new_zeros(keys.shape).index_add(0, key_class, keys * member[:, None])
        class_count = keys.new_zeros(keys.shape[0]).index_add(0, key_class, member)
        own = member if anchor_index is None else member[anchor_index]
        num_pos = (class_count[anchor_class] - own).round().long()
        if anchor_valid is not None:
            num_pos = torch.where(anchor_valid, num_pos, 0)
        pos_key_sum = class_sum[anchor_class] - anchors * own[:, None]
        pos_count = num_pos.clamp(min=1).to(keys.dtype)
        pos_logit = (anchors * pos_key_sum).sum(dim=1) / (pos_count * temperature)
        return torch.where(num_pos > 0, lse - pos_logit, 0.0), num_pos
    if positives.matrix is not None:
        pos = positives.matrix.clone()
    else:
        assert labels is not None
        anchor_labels = labels if anchor_index is None else labels[anchor_index]
        pos = anchor_labels[:, None] == labels[None, :]
    if anchor_index is None:
        pos.diagonal().fill_(False)
    else:
        pos.scatter_(1, anchor_index[:, None], False)
    if valid is not None:
        assert anchor_valid is not None
        pos &= valid[None, :] & anchor_valid[:, None]
    num_pos = pos.sum(dim=1)
    count = num_pos.clamp(min=1).to(logits.dtype)
    if variant == "out":
        pos_logit = torch.where(pos, logits, 0.0).sum(dim=1) / count
    else:
        # Rows without a positive get a finite filler so that no NaN gradient appears.
        no_pos = torch.where(num_pos[:, None] > 0, float("-inf"), 0.0).to(logits.dtype)
        pos_logit = torch.where(pos, logits, no_pos).logsumexp(dim=1) - count.log()
    return torch.where(num_pos > 0, lse - pos_logit, 0.0), num_pos


def _reweighted(
    keys: torch.Tensor,
    anchor_index: torch.Tensor | None,
    positives: Positives,
    temperature: Temperature,
    variant: str,
    chunk_size: int | None,
    summed: bool,
    negatives: Negatives | None,
) -> RowLosses:
    """:func:`reweighted_rows` on the whole problem, or in recomputed row tiles."""
    big_n = keys.shape[0]
    if anchor_index is None:
        anchor_index = torch.arange(big_n, device=keys.device)
    n = anchor_index.shape[0]
    positives = positives.as_labels(big_n, keys.device)
    negatives = negatives if negatives is not None else Negatives()
    if chunk_size is None and n * big_n <= DENSE_MAX_PAIRS:
        loss, num_pos = reweighted_rows(
            keys, anchor_index, positives, temperature, variant, negatives
        )
        return RowLosses(loss.sum() if summed else loss, num_pos)
    tile = chunk_size if chunk_size is not None else default_chunk_size(big_n)
    losses, counts = [], []
    for start in range(0, n, tile):
        rows = slice(start, min(start + tile, n))
        part = positives
        if positives.matrix is not None:
            part = Positives(matrix=positives.matrix[rows], key_valid=positives.key_valid)
        tile_loss, tile_count = checkpoint(
            reweighted_rows,
            keys,
            anchor_index[rows],
            part,
            temperature,
            variant,
            negatives,
            use_reentrant=False,
        )
        losses.append(tile_loss.sum() if summed else tile_loss)
        counts.append(tile_count)
    loss = torch.stack(losses).sum() if summed else torch.cat(losses)
    return RowLosses(loss, torch.cat(counts))


def reweighted_rows(
    keys: torch.Tensor,
    anchor_index: torch.Tensor,
    positives: Positives,
    temperature: Temperature,
    variant: str,
    negatives: Negatives,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor losses with weighted positives and reweighted negatives, by plain autograd.

    The loss of :func:`contrastive_rows` with pair weights :math:`w_{ij}` (1 for the
    positives of labels, views or a matrix; the Jaccard overlap for ``label_sets``)
    and the denominator :math:`D_i = \\sum_{p \\in P(i)} e^{s_{ip}} + N_i` of
    :class:`Negatives`, all in the log domain.

    Args:
        keys: ``[N, D]`` unit-norm rows.
        anchor_index: ``[n]`` long, the anchors' rows of ``keys``.
        positives: Labels, label sets or an ``[n, N]`` matrix (not ``views``), and
            the valid keys.
        temperature: :math:`\\tau`.
        variant: ``"out"`` or ``"in"``.
        negatives: The negatives' weighting.

    Returns:
        ``(loss [n], num_positives [n])``; 0 for anchors without a positive.
    """
    anchors = keys.index_select(0, anchor_index)
    logits = (anchors / temperature) @ keys.T
    fill = torch.finfo(logits.dtype).min
    other = torch.ones_like(logits, dtype=torch.bool).scatter_(1, anchor_index[:, None], False)
    valid = positives.key_valid
    if valid is not None:
        other &= valid[None, :] & valid[anchor_index][:, None]
    if positives.label_sets is not None:
        sets = positives.label_sets
        overlap = sets.index_select(0, anchor_index) @ sets.T
        union = sets.sum(dim=1)[anchor_index][:, None] + sets.sum(dim=1)[None, :] - overlap
        weight = torch.where(other & (overlap > 0), overlap / union.clamp(min=1), 0.0)
    else:
        if positives.matrix is not None:
            pos = positives.matrix.clone()
        else:
            assert positives.key_labels is not None
            labels = positives.key_labels
            pos = labels[anchor_index][:, None] == labels[None, :]
        weight = (pos & other).to(logits.dtype)
    pos = weight > 0
    num_pos = pos.sum(dim=1)
    weight_sum = weight.sum(dim=1)
    log_weight = torch.where(pos, weight.clamp(min=torch.finfo(weight.dtype).tiny).log(), fill)
    # log of the weighted mean of the positives' e^s (finite filler where there is none).
    log_pos_mean = (logits + log_weight).masked_fill(~pos, fill).logsumexp(dim=1) - (
        weight_sum.clamp(min=torch.finfo(weight.dtype).tiny).log()
    )
    if negatives.active:
        neg = other & ~pos
        log_count = neg.sum(dim=1).clamp(min=1).to(logits.dtype).log()
        log_neg = (logits * (1.0 + negatives.beta)).masked_fill(~neg, fill).logsumexp(dim=1)
        if negatives.beta != 0.0:
            log_neg = (
                log_neg
                + log_count
                - ((logits * negatives.beta).masked_fill(~neg, fill).logsumexp(dim=1))
            )
        if negatives.tau_plus != 0.0:
            floor = log_count - 1.0 / temperature
            # log of tau+ M e_bar relative to the reweighted sum; the estimate is positive
            # only where it is < 0 (elsewhere only the floor is used and gets no NaN).
            excess = math.log(negatives.tau_plus) + log_count + log_pos_mean - log_neg
            below = excess < 0
            safe = torch.where(below, excess, -1.0)
            estimate = log_neg + torch.log1p(-safe.exp()) - math.log1p(-negatives.tau_plus)
            log_neg = torch.where(below, torch.maximum(estimate, floor), floor)
        log_neg = torch.where(neg.any(dim=1), log_neg, fill)
        log_pos = logits.masked_fill(~pos, fill).logsumexp(dim=1)
        log_denom = torch.logaddexp(log_pos, log_neg)
    else:
        log_denom = logits.masked_fill(~other, fill).logsumexp(dim=1)
    if variant == "out":
        pos_term = (torch.where(pos, logits, 0.0) * weight).sum(dim=1) / weight_sum.clamp(
            min=torch.finfo(weight.dtype).tiny
        )
    else:
        pos_term = log_pos_mean
    return torch.where(num_pos > 0, log_denom - pos_term, 0.0), num_pos


def _class_ids(key_labels: torch.Tensor) -> torch.Tensor:
    """A class id in ``[0, N)`` per key (the first position of its label in sorted order)."""
    ordered = key_labels.sort().values
    return torch.searchsorted(ordered, key_labels)


def _static_shift(
    scaled: torch.Tensor, keys: torch.Tensor, temperature: Temperature
) -> torch.Tensor | None:
    """Per-anchor upper bounds ``|a_i| max_j |k_j| / tau`` of the similarities, or None.

    Shifting row ``i`` by its bound instead of its maximum saves a pass over every
    tile; it is safe while the bounds span a range that exp() cannot underflow.
    Rows are unit-norm, so the bound is at most :math:`1 / \\tau`, known without
    reading the device (a tensor temperature takes the row maximum).
    """
    limit = _EXP_RANGE.get(scaled.dtype, 60.0)
    if isinstance(temperature, torch.Tensor) or 2.0 / temperature > limit:
        return None
    bound: torch.Tensor = scaled.norm(dim=1, keepdim=True) * keys.norm(dim=1).amax()
    return bound


def _sweep(
    keys: torch.Tensor,
    temperature: Temperature,
    anchor_index: torch.Tensor,
    positives: Positives,
    variant: str,
    tile: int,
    row_weight: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One pass over the row tiles.

    Returns ``(loss [n], num_pos [n], grad_keys [N, D] or None, grad_tau or None)``;
    the gradients are computed for upstream weights ``row_weight [n]`` when given.
    """
    key_labels, matrix, valid = positives.key_labels, positives.matrix, positives.key_valid
    n = anchor_index.shape[0]
    inv_t = 1.0 / temperature
    anchors = keys[anchor_index]
    scaled = anchors * inv_t
    shift = _static_shift(scaled, keys, temperature)
    low_rank = variant == "out" and key_labels is not None
    tiny = torch.finfo(keys.dtype).tiny
    loss = keys.new_empty(n)
    num_pos = torch.empty(n, dtype=torch.long, device=keys.device)
    grad_anchor = torch.empty_like(anchors) if row_weight is not None else None
    grad_keys = torch.zeros_like(keys) if row_weight is not None else None
    anchor_valid = valid[anchor_index] if valid is not None else None

    if low_rank:
        assert key_labels is not None
        key_class = _class_ids(key_labels)
        anchor_class = key_class[anchor_index]
        member = keys.new_ones(keys.shape[0]) if valid is None else valid.to(keys.dtype)
        class_count = keys.new_zeros(keys.shape[0]).index_add_(0, key_class, member)
        class_sum = keys.new_zeros(keys.shape).index_add_(0, key_class, keys * member[:, None])
        own = member[anchor_index]
        num_pos = (class_count[anchor_class] - own).round().long()
        if anchor_valid is not None:
            num_pos = torch.where(anchor_valid, num_pos, 0)
        pos_key_sum = class_sum[anchor_class] - anchors * own[:, None]
        pos_dot = (scaled * pos_key_sum).sum(dim=1)

    for start in range(0, n, tile):
        stop = min(start + tile, n)
        self_col = anchor_index[start:stop, None]
        if shift is not None:
            # exp(s - bound) in place of the tile written by the matmul itself.
            row_shift = shift[start:stop]
            sim = torch.addmm(row_shift, scaled[start:stop], keys.T, beta=-1)
            sim.scatter_(1, self_col, float("-inf"))
            if valid is not None:
                sim.masked_fill_(~valid[None, :], float("-inf"))
        else:
            sim = scaled[start:stop] @ keys.T
            sim.scatter_(1, self_col, float("-inf"))
            if valid is not None:
                sim.masked_fill_(~valid[None, :], float("-inf"))
            row_shift = sim.amax(dim=1, keepdim=True).clamp(min=-1e30)
            sim.sub_(row_shift)
        # ``sim`` now holds s - shift (-inf on the diagonal and at invalid keys).
        if low_rank:
            prob = sim.exp_()
            denom = prob.sum(dim=1, keepdim=True).clamp_(min=tiny)
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
            if valid is not None:
                assert anchor_valid is not None
                pos &= valid[None, :] & anchor_valid[start:stop, None]
            count = pos.sum(dim=1)
            num_pos[start:stop] = count
            prob = sim.exp()
            denom = prob.sum(dim=1, keepdim=True).clamp_(min=tiny)
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
                pos_denom = pos_exp.sum(dim=1, keepdim=True).clamp(min=tiny)
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
        return loss, num_pos, None, None
    assert grad_anchor is not None and grad_keys is not None
    if low_rank:
        # Positive part W, low rank: sum_j W_ij k_j and sum_i W_ij a_i per class.
        weight = torch.where(num_pos > 0, row_weight, 0.0) / num_pos.clamp(min=1)
        grad_anchor -= weight[:, None] * pos_key_sum
        anchor_class_sum = keys.new_zeros(class_sum.shape).index_add_(
            0, anchor_class, scaled * weight[:, None]
        )
        grad_keys -= anchor_class_sum[key_class] * member[:, None]
        grad_keys.index_add_(0, anchor_index, scaled * (weight * own)[:, None])
    # grad_anchor is the gradient with respect to the scaled anchors q_i = a_i / tau.
    grad_tau = -(grad_anchor * scaled).sum() * inv_t
    grad_keys.index_add_(0, anchor_index, grad_anchor * inv_t)
    return loss, num_pos, grad_keys, grad_tau


class _TiledContrastive(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        keys: torch.Tensor,
        temperature: Temperature,
        anchor_index: torch.Tensor,
        key_labels: torch.Tensor | None,
        matrix: torch.Tensor | None,
        key_valid: torch.Tensor | None,
        variant: str,
        tile: int,
        summed: bool,
        grad_in_forward: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ``grad_in_forward`` comes from the caller: inside forward() grad mode is always
        # off, and ``ctx.needs_input_grad`` is also true under ``torch.no_grad()``.
        positives = Positives(key_labels, matrix, key_valid)
        unit = keys.new_ones(anchor_index.shape[0]) if grad_in_forward else None
        loss, num_pos, grad_keys, grad_tau = _sweep(
            keys, temperature, anchor_index, positives, variant, tile, unit
        )
        tau = temperature if isinstance(temperature, torch.Tensor) else None
        ctx.save_for_backward(
            keys, tau, anchor_index, key_labels, matrix, key_valid, grad_keys, grad_tau
        )
        ctx.args = (None if tau is not None else temperature, variant, tile, summed)
        ctx.mark_non_differentiable(num_pos)
        return (loss.sum() if summed else loss), num_pos

    @staticmethod
    def backward(
        ctx: Any, grad_loss: torch.Tensor, _grad_count: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise NotImplementedError(
                "the tiled contrastive kernel has no second derivative (backward with "
                "create_graph=True, e.g. a gradient penalty); use the dense path: "
                "chunk_size=None and at most DENSE_MAX_PAIRS anchor-key pairs"
            )
        keys, tau, anchor_index, key_labels, matrix, key_valid, grad_keys, grad_tau = (
            ctx.saved_tensors
        )
        float_tau, variant, tile, summed = ctx.args
        temperature: Temperature = tau if tau is not None else float_tau
        if summed and grad_keys is not None:
            grad_keys, grad_tau = grad_keys * grad_loss, grad_tau * grad_loss
        else:
            weights = grad_loss.expand(anchor_index.shape[0]) if summed else grad_loss
            positives = Positives(key_labels, matrix, key_valid)
            _, _, grad_keys, grad_tau = _sweep(
                keys, temperature, anchor_index, positives, variant, tile, weights
            )
        grad_tau_out = None
        if tau is not None and grad_tau is not None and ctx.needs_input_grad[1]:
            grad_tau_out = grad_tau.to(tau.dtype)
        return (grad_keys, grad_tau_out) + (None,) * 8
