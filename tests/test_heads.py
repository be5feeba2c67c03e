"""The projection head: the plain form and the SimCLR (lightly) form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrast_attn import ProjectionHead


def test_default_is_linear_batchnorm_relu_linear() -> None:
    head = ProjectionHead(32, out_features=8)
    kinds = [type(layer) for layer in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.layers[0].bias is None  # batch norm follows
    assert head(torch.randn(5, 32)).shape == (5, 8)


def test_depth_width_and_no_batch_norm() -> None:
    head = ProjectionHead(16, 64, 4, num_layers=3, batch_norm=False)
    linears = [layer for layer in head.layers if isinstance(layer, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 64), (64, 64), (64, 4)]
    assert not any(isinstance(layer, nn.BatchNorm1d) for layer in head.layers)
    single = ProjectionHead(16, out_features=4, num_layers=1)
    x = torch.randn(3, 16)
    torch.testing.assert_close(single(x), single.layers[0](x))


def test_equals_the_explicit_mlp_and_trains() -> None:
    head = ProjectionHead(6, 5, 3, batch_norm=False).double()
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    first, last = head.layers[0], head.layers[2]
    expected = torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(head(x), expected)
    assert torch.autograd.gradcheck(head, (x,))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ProjectionHead(0), ValueError, "in_features must be >= 1"),
        (lambda: ProjectionHead(8, 0), ValueError, "hidden_features must be >= 1"),
        (lambda: ProjectionHead(8, out_features=2.0), TypeError, "out_features must be an int"),
        (lambda: ProjectionHead(8, num_layers=0), ValueError, "num_layers must be >= 1"),
        (lambda: ProjectionHead(8, batch_norm=1), TypeError, "batch_norm must be a bool"),
        (lambda: ProjectionHead(8)(torch.randn(2, 7)), ValueError, r"x must have shape \[N, in_features\] = \[N, 8\]"),
        (lambda: ProjectionHead(8)(torch.randn(2, 3, 8)), ValueError, "x must have shape"),
        (lambda: ProjectionHead(8)(torch.ones(2, 8, dtype=torch.long)), TypeError, "x must be a floating"),
    ],
)  # fmt: skip
def test_bad_input_raises_clear_error(call, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("train", [True, False])
def test_simclr_form_equals_lightly(num_layers: int, train: bool) -> None:
    heads = pytest.importorskip("lightly.models.modules.heads")
    torch.manual_seed(0)
    theirs = heads.SimCLRProjectionHead(12, 20, 6, num_layers=num_layers)
    ours = ProjectionHead(12, 20, 6, num_layers=num_layers, output_batch_norm=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for module in theirs.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(theirs.state_dict())  # lightly's weights load as they are
    back = heads.SimCLRProjectionHead(12, 20, 6, num_layers=num_layers)
    back.load_state_dict(ours.state_dict())  # and ours into lightly's
    assert ours.layers[-2].bias is None and isinstance(ours.layers[-1], nn.BatchNorm1d)
    x = torch.randn(9, 12)
    ours.train(train)
    theirs.train(train)
    torch.testing.assert_close(ours(x), theirs(x))


def test_default_form_keeps_the_last_bias_and_no_output_norm() -> None:
    head = ProjectionHead(8, out_features=4)
    assert head.layers[-1].bias is not None
    assert not isinstance(head.layers[-1], nn.BatchNorm1d)
    with pytest.raises(TypeError, match=r"output_batch_norm must be a bool, got 1 \(int\)"):
        ProjectionHead(8, output_batch_norm=1)  # type: ignore[arg-type]
