"""Every public callable against every class of bad input: a clear error naming the argument.

Each public name of ``contrast_attn``, ``contrast_attn.functional`` and
``contrast_attn.distributed`` (and each module's ``forward``) is listed in
:data:`SPECS` with one valid call and the kind of each argument. The bad-input
classes below are derived from the kinds: wrong number of dimensions, batch
mismatch, empty dimensions, wrong dtype, NaN/Inf, values out of range, another
device (the meta device stands in for it: no data to compute with), non-tensors,
unknown strings and malformed counts. Every case must raise ``TypeError`` or
``ValueError`` whose message names the argument: no silent result, no error
from inside torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import contrast_attn
from contrast_attn import distributed
from contrast_attn import functional as CF

B, C, K = 4, 6, 3


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _rows(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen())


def _mask() -> torch.Tensor:
    mask = torch.zeros(B, 1, 10, 10)
    mask[:, :, 2:6, 3:7] = 1
    return mask


def _labels() -> torch.Tensor:
    return torch.tensor([0, 1, 2, 0])


@dataclass
class Spec:
    """One valid call and the kind of each argument (see :func:`_bad_values`)."""

    call: Callable[..., Any]
    args: dict[str, Any]
    kinds: dict[str, str]
    batched: tuple[str, ...] = ()
    strings: tuple[str, ...] = ()
    extra: list[tuple[str, str, Any]] = field(default_factory=list)


def _module(cls: Callable[..., torch.nn.Module], *args: Any, **kwargs: Any) -> Callable[..., Any]:
    module = cls(*args, **kwargs)
    return lambda **inputs: module(**inputs)


def _specs() -> dict[str, Spec]:
    counts = [50, 5, 1]
    fmap = _rows(B, C, 5, 5)
    logits_specs = {}
    for name, fn in [
        ("balanced_softmax_loss", CF.balanced_softmax_loss),
        ("ldam_loss", CF.ldam_loss),
        ("logit_adjusted_loss", CF.logit_adjusted_loss),
    ]:
        logits_specs[f"functional.{name}"] = Spec(
            fn,
            {"logits": _rows(B, K), "target": _labels(), "counts": counts, "reduction": "mean"},
            {"logits": "logits", "target": "index", "counts": "counts"},
            batched=("target",),
            strings=("reduction",),
        )
    for name, cls in [
        ("BalancedSoftmaxLoss", contrast_attn.BalancedSoftmaxLoss),
        ("LDAMLoss", contrast_attn.LDAMLoss),
        ("LogitAdjustedLoss", contrast_attn.LogitAdjustedLoss),
        ("ClassBalancedLoss", contrast_attn.ClassBalancedLoss),
    ]:
        logits_specs[name] = Spec(
            _module(cls, counts),
            {"logits": _rows(B, K), "target": _labels()},
            {"logits": "logits", "target": "index"},
            batched=("target",),
        )
        logits_specs[f"{name}()"] = Spec(
            cls,
            {"counts": counts, "reduction": "mean"},
            {"counts": "counts"},
            strings=("reduction",),
        )
    count_functions = {
        f"functional.{name}": Spec(fn, {"counts": counts, **kw}, {"counts": "counts"}, strings=s)
        for name, fn, kw, s in [
            (
                "class_balanced_weights",
                CF.class_balanced_weights,
                {"zero_count": "error"},
                ("zero_count",),
            ),
            ("class_log_prior", CF.class_log_prior, {"zero_count": "error"}, ("zero_count",)),
            ("effective_number", CF.effective_number, {"beta": 0.9}, ()),
            ("ldam_margins", CF.ldam_margins, {"zero_count": "error"}, ("zero_count",)),
            (
                "deferred_reweighting_weights",
                CF.deferred_reweighting_weights,
                {"epoch": 3, "defer_epoch": 2},
                (),
            ),
        ]
    }
    count_functions["functional.deferred_reweighting_weights"].kinds.update(
        epoch="int", defer_epoch="int"
    )
    count_functions["functional.effective_number"].kinds["beta"] = "unit_float"
    return {
        **logits_specs,
        **count_functions,
        "functional.class_balanced_loss": Spec(
            CF.class_balanced_loss,
            {"logits": _rows(B, K), "target": _labels(), "counts": counts, "loss_type": "focal"},
            {"logits": "logits", "target": "index", "counts": "counts"},
            batched=("target",),
            strings=("loss_type",),
        ),
        "functional.post_hoc_logit_adjustment": Spec(
            CF.post_hoc_logit_adjustment,
            {"logits": _rows(B, K), "counts": counts},
            {"logits": "logits", "counts": "counts"},
        ),
        "PostHocLogitAdjustment": Spec(
            _module(contrast_attn.PostHocLogitAdjustment, counts),
            {"logits": _rows(B, K)},
            {"logits": "logits"},
        ),
        "functional.nt_xent_loss": Spec(
            CF.nt_xent_loss,
            {"z1": _rows(B, 8), "z2": _rows(B, 8), "reduction": "mean", "temperature": 0.5},
            {"z1": "rows", "z2": "rows", "temperature": "positive_float"},
            batched=("z2",),
            strings=("reduction",),
        ),
        "NTXentLoss": Spec(
            _module(contrast_attn.NTXentLoss),
            {"z1": _rows(B, 2, 8)},
            {"z1": "rows"},
        ),
        "functional.supcon_loss": Spec(
            CF.supcon_loss,
            {"features": _rows(B, 2, 8), "labels": _labels(), "variant": "out"},
            {"features": "rows", "labels": "labels"},
            batched=("labels",),
            strings=("variant", "no_positive", "reduction"),
        ),
        "SupConLoss": Spec(
            _module(contrast_attn.SupConLoss),
            {"features": _rows(B, 2, 8), "labels": _labels()},
            {"features": "rows", "labels": "labels"},
            batched=("labels",),
        ),
        "functional.supcon_loss mask": Spec(
            CF.supcon_loss,
            {"features": _rows(B, 2, 8), "mask": torch.eye(B)},
            {"features": "rows", "mask": "relation"},
        ),
        "functional.contrastive_feature_regularizer": Spec(
            CF.contrastive_feature_regularizer,
            {"features": fmap, "mask": _mask(), "labels": _labels(), "valid": torch.ones(B).bool()},
            {"features": "fmap", "mask": "mask", "labels": "labels", "valid": "valid"},
            batched=("mask", "labels", "valid"),
            strings=("variant", "reduction"),
        ),
        "ContrastiveFeatureRegularizer": Spec(
            _module(contrast_attn.ContrastiveFeatureRegularizer, C, 4),
            {"features": fmap, "mask": _mask(), "labels": _labels(), "valid": torch.ones(B).bool()},
            {"features": "fmap", "mask": "mask", "labels": "labels", "valid": "valid"},
            batched=("mask", "labels", "valid"),
        ),
        "functional.mask_guidance_loss": Spec(
            CF.mask_guidance_loss,
            {"attention": torch.rand(B, 1, 5, 5, generator=_gen()), "mask": _mask(), "kind": "bce"},
            {"attention": "prob", "mask": "mask"},
            batched=("mask",),
            strings=("kind", "reduction"),
        ),
        "MaskGuidanceLoss": Spec(
            _module(contrast_attn.MaskGuidanceLoss, from_logits=True),
            {"attention": _rows(B, 1, 5, 5), "mask": _mask(), "valid": torch.ones(B).bool()},
            {"attention": "fmap1", "mask": "mask", "valid": "valid"},
            batched=("mask", "valid"),
        ),
        "functional.masked_average_pool": Spec(
            CF.masked_average_pool,
            {"features": fmap, "mask": _mask()},
            {"features": "fmap", "mask": "mask"},
            batched=("mask",),
        ),
        "MaskedAveragePool": Spec(
            _module(contrast_attn.MaskedAveragePool),
            {"features": fmap, "mask": _mask()},
            {"features": "fmap", "mask": "mask"},
            batched=("mask",),
        ),
        "functional.resize_mask": Spec(
            CF.resize_mask,
            {"mask": _mask(), "size": (5, 5)},
            {"mask": "mask"},
            extra=[("size", "strings", ("5", "5")), ("size", "zero", (0, 5))],
        ),
        "functional.class_activation_map": Spec(
            CF.class_activation_map,
            {"features": fmap, "fc_weight": _rows(K, C), "target": _labels(), "fc_bias": _rows(K)},
            {"features": "fmap", "fc_weight": "weight", "target": "index", "fc_bias": "weight"},
            batched=("target",),
        ),
        "MaskGuidedAttention": Spec(
            _module(contrast_attn.MaskGuidedAttention, C),
            {"features": fmap, "mask": _mask(), "valid": torch.ones(B).bool()},
            {"features": "fmap", "mask": "mask", "valid": "valid"},
            batched=("mask", "valid"),
        ),
        "MaskGuidedAttention()": Spec(
            contrast_attn.MaskGuidedAttention,
            {"in_channels": C, "mode": "soft"},
            {"in_channels": "int"},
            strings=("mode",),
        ),
        "MemoryQueue()": Spec(
            contrast_attn.MemoryQueue, {"size": 8, "dim": C}, {"size": "int", "dim": "int"}
        ),
        "ProjectionHead": Spec(
            _module(contrast_attn.ProjectionHead, C, out_features=4),
            {"x": _rows(B, C)},
            {"x": "logits"},
        ),
        "set_finite_checks": Spec(
            contrast_attn.set_finite_checks, {"enabled": True}, {}, extra=[("enabled", "int", 1)]
        ),
        "distributed.gather_with_grad": Spec(
            distributed.gather_with_grad, {"tensor": _rows(B, 3)}, {"tensor": "any_tensor"}
        ),
        "distributed.gather_variable_with_grad": Spec(
            distributed.gather_variable_with_grad, {"tensor": _rows(B, 3)}, {"tensor": "any_tensor"}
        ),
        "distributed.all_reduce_sum": Spec(
            distributed.all_reduce_sum, {"tensor": torch.tensor(3)}, {"tensor": "count_tensor"}
        ),
    }


# Public names that take no input (nothing to get wrong) or are not callables.
NO_INPUT = {
    "__version__",
    "distributed",
    "functional",
    "finite_checks_enabled",
    "is_distributed",
    "rank_and_world_size",
    "MaskedPool",
}


def _with(value: torch.Tensor, index: tuple[Any, ...], fill: float) -> torch.Tensor:
    out = value.clone()
    out[index] = fill
    return out


def _bad_values(kind: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(bad-input class, value) pairs for an argument of the given kind."""
    if isinstance(value, torch.Tensor):
        yield "not a tensor", value.tolist()
        yield "device", value.to("meta")
        if kind not in ("any_tensor", "count_tensor"):
            # Feature maps may be images [B, C, H, W] or volumes [B, C, D, H, W]:
            # two extra dimensions are wrong for both.
            extra = (None, None) if kind in ("fmap", "fmap1") else (None,)
            yield "wrong ndim", value[extra]
    if kind in ("rows", "fmap", "fmap1", "logits", "prob", "weight"):
        yield "dtype", value.long()
        yield "dtype complex", value.to(torch.complex64)
        first = (0,) * value.ndim
        yield "NaN", _with(value, first, math.nan)
        yield "Inf", _with(value, first, math.inf)
    if kind == "rows":
        yield "empty D", value[..., :0]
    if kind in ("fmap", "fmap1", "mask", "prob"):
        yield "empty H, W", value[..., :0, :0]
        yield "empty H", value[..., :0, :]
    if kind == "fmap":
        yield "empty C", value[:, :0]
    if kind in ("mask", "prob"):
        yield "range > 1", _with(value, (0, 0, 0, 0), 2.0)
        yield "range < 0", _with(value, (0, 0, 0, 0), -0.5)
        yield "NaN", _with(value.float(), (0, 0, 0, 0), math.nan)
    if kind in ("labels", "index"):
        yield "dtype float", value.float()
        yield "dtype bool", value.bool()
    if kind == "index":
        yield "range", _with(value, (0,), K)
        yield "range negative", _with(value, (0,), -7)
    if kind == "relation":
        yield "range", _with(value, (0, 1), 2.0)
        yield "shape", value[:, :-1]
    if kind == "valid":
        yield "range", _with(value.long(), (0,), 2)
        yield "dtype float", value.float() + 0.5
    if kind == "counts":
        yield "string", "50,5,1"
        yield "None", None
        yield "None entry", [50, None, 1]
        yield "string entry", [50, "5", 1]
        yield "huge", [10**30, 5, 1]
        yield "negative", [50, -5, 1]
        yield "NaN", [50.0, math.nan, 1.0]
        yield "empty", []
        yield "2-D", [[50, 5, 1]]
        yield "device", torch.tensor(value).to("meta")
    if kind in ("any_tensor", "count_tensor"):
        yield "int", 3
        yield "string", "abc"
    if kind == "any_tensor":
        yield "0-d", torch.tensor(1.0)
    if kind == "int":
        yield "string", "3"
        yield "None", None
        yield "float", 2.5
    if kind in ("unit_float", "positive_float"):
        yield "string", "0.5"
        yield "None", None
        yield "NaN", math.nan
        yield "out of range", -1.0 if kind == "positive_float" else 1.5


def _cases() -> Iterator[Any]:
    for spec_name, spec in _specs().items():
        for arg, kind in spec.kinds.items():
            for what, bad in _bad_values(kind, spec.args[arg]):
                yield pytest.param(spec_name, arg, bad, id=f"{spec_name}-{arg}-{what}")
        for arg in spec.batched:
            value = spec.args[arg]
            yield pytest.param(spec_name, arg, value[:-1], id=f"{spec_name}-{arg}-batch mismatch")
        for arg in spec.strings:
            yield pytest.param(spec_name, arg, "bogus", id=f"{spec_name}-{arg}-unknown string")
        for arg, what, bad in spec.extra:
            yield pytest.param(spec_name, arg, bad, id=f"{spec_name}-{arg}-{what}")


SPECS = _specs()


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_valid_call_passes(spec_name: str) -> None:
    spec = SPECS[spec_name]
    spec.call(**spec.args)


@pytest.mark.parametrize(("spec_name", "arg", "bad"), list(_cases()))
def test_bad_input_names_the_argument(spec_name: str, arg: str, bad: Any) -> None:
    spec = SPECS[spec_name]
    with pytest.raises((TypeError, ValueError)) as info:
        spec.call(**{**spec.args, arg: bad})
    assert arg in str(info.value), f"{type(info.value).__name__}: {info.value}"


def test_every_public_callable_is_in_the_battery() -> None:
    covered = {name.split(" ")[0].split(".")[-1].rstrip("()") for name in SPECS} | NO_INPUT
    public = set(contrast_attn.__all__) | set(CF.__all__) | set(distributed.__all__)
    assert public - covered == set()


@pytest.mark.parametrize("layer", ["attention", "head"])
def test_nan_in_training_is_refused_before_batch_norm(layer: str) -> None:
    if layer == "attention":
        module: torch.nn.Module = contrast_attn.MaskGuidedAttention(C)
        clean = _rows(B, C, 5, 5)
    else:
        module = contrast_attn.ProjectionHead(C, out_features=4)
        clean = _rows(B, C)
    bn = next(m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    before = bn.running_mean.clone(), bn.running_var.clone()
    name = "features" if layer == "attention" else "x"
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        module.train()(_with(clean, (0,) * clean.ndim, math.nan))
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    out = module.eval()(clean)
    assert all(torch.isfinite(t).all() for t in (out if isinstance(out, tuple) else (out,)))


@pytest.mark.parametrize("layer", ["attention", "head"])
def test_input_on_another_device_than_the_layer(layer: str) -> None:
    if layer == "attention":
        module: torch.nn.Module = contrast_attn.MaskGuidedAttention(C).to("meta")
        x, name = _rows(B, C, 5, 5), "features"
    else:
        module, x, name = contrast_attn.ProjectionHead(C).to("meta"), _rows(B, C), "x"
    with pytest.raises(ValueError, match=f"{name} must be on the same device"):
        module(x)


def test_numpy_scalars_are_numbers() -> None:
    np = pytest.importorskip("numpy")
    z = _rows(B, 2, 8)
    for tau in (np.float32(0.5), np.float64(0.5), np.float16(0.5)):
        assert contrast_attn.NTXentLoss(tau)(z).item() == CF.nt_xent_loss(z, temperature=0.5).item()
    assert contrast_attn.NTXentLoss(chunk_size=np.int64(3)).chunk_size == 3
    with pytest.raises(TypeError, match="temperature"):
        contrast_attn.NTXentLoss(np.bool_(True))
