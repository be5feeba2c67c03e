"""The projection head of contrastive learning (plain or SimCLR form)."""

from __future__ import annotations

import torch
from torch import nn

from .. import _checks

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    r"""MLP projection head for contrastive learning, in two forms.

    ``num_layers`` = :math:`L` linear layers; every one but the last is followed
    by an optional ``BatchNorm1d`` (``batch_norm``; the linear layer then has no
    bias) and a ReLU:

    .. math::
        h_0 = x, \qquad h_l = \mathrm{ReLU}(\mathrm{BN}(W_l h_{l-1})) \ (l < L),

    and the output is one of

    .. math::
        z = W_L h_{L-1} + b_L \quad (\text{default}), \qquad
        z = \mathrm{BN}(W_L h_{L-1}) \quad (\texttt{output\_batch\_norm=True}).

    The default form ends in a plain biased linear layer. ``output_batch_norm=True``
    is the form of lightly's ``SimCLRProjectionHead`` (and of SimCLR v2's code):
    the last linear layer has no bias and is followed by a ``BatchNorm1d`` (with
    its affine parameters) and no ReLU. With ``batch_norm=True`` and
    ``output_batch_norm=True`` the layers and ``state_dict`` keys are exactly
    those of ``lightly.models.modules.SimCLRProjectionHead(in_features,
    hidden_features, out_features, num_layers)``, so its weights load as they are
    and the outputs are equal.

    Contrastive losses act on the output :math:`z`; the representation used
    downstream is the input :math:`x`.

    Args:
        in_features: Size of the input vectors.
        hidden_features: Width of the hidden layers; ``None`` = ``in_features``.
        out_features: Size of the projection (128 in SimCLR).
        num_layers: Number of linear layers, at least 1 (1 = a single linear map).
        batch_norm: Batch normalisation after each hidden linear layer (which
            then has no bias).
        output_batch_norm: Batch normalisation of the output, after a last linear
            layer without bias (the SimCLR / lightly form).

    Shape:
        ``[N, in_features]`` → ``[N, out_features]``. In training mode with
        batch normalisation a batch needs N >= 2.

    Raises:
        TypeError: Non-int sizes or a non-bool ``batch_norm``/``output_batch_norm``;
            in the call, a non-tensor or non-floating input.
        ValueError: Sizes below 1; in the call, an input not ``[N, in_features]``, on
            another device than the head, or (in training, before BatchNorm updates
            its running statistics) not finite.

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual
        Representations", ICML 2020; Chen et al., "Big Self-Supervised Models are
        Strong Semi-Supervised Learners", NeurIPS 2020 (SimCLR v2).

    Examples:
        >>> import torch
        >>> from contrast_attn import ProjectionHead
        >>> head = ProjectionHead(512, out_features=128)
        >>> head(torch.randn(8, 512)).shape
        torch.Size([8, 128])
        >>> simclr = ProjectionHead(512, 512, 128, output_batch_norm=True)
        >>> [type(m).__name__ for m in simclr.layers]
        ['Linear', 'BatchNorm1d', 'ReLU', 'Linear', 'BatchNorm1d']
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int = 128,
        *,
        num_layers: int = 2,
        batch_norm: bool = True,
        output_batch_norm: bool = False,
    ) -> None:
        super().__init__()
        _checks.check_int(in_features, "in_features", low=1)
        hidden = in_features if hidden_features is None else hidden_features
        _checks.check_int(hidden, "hidden_features", low=1)
        _checks.check_int(out_features, "out_features", low=1)
        _checks.check_int(num_layers, "num_layers", low=1)
        _checks.check_bool(batch_norm, "batch_norm")
        _checks.check_bool(output_batch_norm, "output_batch_norm")
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
        layers.append(nn.Linear(width, out_features, bias=not output_batch_norm))
        if output_batch_norm:
            layers.append(nn.BatchNorm1d(out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _checks.check_floating_tensor(x, "x")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"x must have shape [N, in_features] = [N, {self.in_features}], "
                f"got shape {tuple(x.shape)}"
            )
        _checks.check_device(x, "x", next(self.parameters()).device, "the head")
        if self.training:
            # Before BatchNorm sees them: a NaN would poison its running statistics for good.
            _checks.check_finite(x, "x")
        out: torch.Tensor = self.layers(x)
        return out
