"""The SimCLR projection head."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    r"""SimCLR-style MLP projection head: ``Linear → [BatchNorm] → ReLU → … → Linear``.

    ``num_layers`` = :math:`L` linear layers; every one but the last is followed
    by an optional ``BatchNorm1d`` and a ReLU (the head of SimCLR's code, and of
    lightly's ``SimCLRProjectionHead``):

    .. math::
        h_0 = x, \qquad h_l = \mathrm{ReLU}(\mathrm{BN}(W_l h_{l-1})) \ (l < L), \qquad
        z = W_L h_{L-1} + b_L .

    Contrastive losses act on its output :math:`z`; the representation used
    downstream is its input :math:`x`.

    Args:
        in_features: Size of the input vectors.
        hidden_features: Width of the hidden layers; ``None`` = ``in_features``.
        out_features: Size of the projection (128 in SimCLR).
        num_layers: Number of linear layers, at least 1 (1 = a single linear map).
        batch_norm: Batch normalisation after each hidden linear layer (which
            then has no bias).

    Shape:
        ``[N, in_features]`` → ``[N, out_features]``. In training mode with
        ``batch_norm`` a batch needs N >= 2.

    Raises:
        TypeError: Non-int sizes or a non-bool ``batch_norm``; in the call, a
            non-tensor or non-floating input.
        ValueError: Sizes below 1; in the call, an input not ``[N, in_features]``.

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020.

    Examples:
        >>> import torch
        >>> from contrast_attn import ProjectionHead
        >>> head = ProjectionHead(512, out_features=128)
        >>> head(torch.randn(8, 512)).shape
        torch.Size([8, 128])
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int = 128,
        *,
        num_layers: int = 2,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _checks.check_int(in_features, "in_features", low=1)
        hidden = in_features if hidden_features is None else hidden_features
        _checks.check_int(hidden, "hidden_features", low=1)
        _checks.check_int(out_features, "out_features", low=1)
        _checks.check_int(num_layers, "num_layers", low=1)
        _checks.check_bool(batch_norm, "batch_norm")
        self.in_features = in_features
        self.out_features = out_features
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU(inplace=True))
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.check_floating_tensor(x, "x")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"x must have shape [N, in_features] = [N, {self.in_features}], "
                f"got shape {tuple(x.shape)}"
            )
        out: torch.Tensor = self.layers(x)
        return out
