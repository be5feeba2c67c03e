"""One validated record of hyper-parameters per loss, shared by the function and the module."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from contrast_attn import (
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    ContrastiveFeatureRegularizer,
    LDAMLoss,
    LogitAdjustedLoss,
    MaskGuidanceLoss,
    NTXentLoss,
    PostHocLogitAdjustment,
    SupConLoss,
    _checks,
)
from contrast_attn.functional.contrastive import SupConConfig


def test_module_calls_do_not_revalidate_hyper_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    modules = [
        (NTXentLoss(), (torch.randn(4, 2, 8),)),
        (SupConLoss(variant="in"), (torch.randn(4, 2, 8), torch.tensor([0, 0, 1, 1]))),
        (ClassBalancedLoss([5, 3]), (torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))),
        (LogitAdjustedLoss([5, 3]), (torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))),
        (BalancedSoftmaxLoss([5, 3]), (torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))),
        (LDAMLoss([5, 3]), (torch.randn(4, 2), torch.tensor([0, 1, 1, 0]), [1.0, 2.0])),
        (PostHocLogitAdjustment([5, 3]), (torch.randn(4, 2),)),
        (MaskGuidanceLoss(kind="dice"), (torch.rand(2, 1, 4, 4), torch.ones(2, 1, 8, 8))),
        (
            ContrastiveFeatureRegularizer(3, projection_dim=2),
            (torch.randn(4, 3, 4, 4), torch.ones(4, 1, 4, 4) * 0.5),
        ),
    ]
    calls: list[str] = []
    for name in ("check_choice", "check_float", "check_bool", "check_int", "check_reduction"):
        original = getattr(_checks, name)

        def counting(*args: object, _original: object = original, _name: str = name) -> object:
            calls.append(_name)
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(_checks, name, counting)
    for module, inputs in modules:
        module(*inputs)
    assert calls == []  # the records were validated once, in __init__


def test_attributes_read_and_assign_through_the_record() -> None:
    loss = SupConLoss(0.2, base_temperature=0.07)
    assert isinstance(loss.config, SupConConfig)
    assert loss.temperature == 0.2 and loss.variant == "out"
    loss.temperature = 0.5  # a new, validated record
    assert loss.config.temperature == 0.5 and loss.config.scale == pytest.approx(0.5 / 0.07)
    with pytest.raises(ValueError, match=r"temperature must be in \(0.0, inf\], got -1.0"):
        loss.temperature = -1.0
    assert loss.temperature == 0.5  # a rejected value leaves the record as it was
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss.config.temperature = 1.0  # type: ignore[misc]
    x = torch.randn(4, 2, 8)
    labels = torch.tensor([0, 0, 1, 1])
    reference = SupConLoss(0.5, base_temperature=0.07)(x, labels)
    torch.testing.assert_close(loss(x, labels), reference)
    assert list(loss.state_dict()) == []  # hyper-parameters are not state
