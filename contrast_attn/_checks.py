"""Input validation for every public function, in one place.

Each check raises :class:`TypeError` (wrong kind of object or dtype) or
:class:`ValueError` (wrong shape or value) with a message that names the
argument, says what was expected, and shows what was given. Public functions
call these first, so users never see a bare ``RuntimeError`` from deep inside
torch.

The NaN/Inf scan of floating inputs costs one reduction per tensor and a
host synchronisation; it can be switched off globally with
:func:`set_finite_checks` for speed, and it is skipped while
``torch.compile`` traces (a data-dependent branch would break the graph).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import torch

__all__ = [
    "check_bool",
    "check_bool_mask",
    "check_choice",
    "check_feature_map",
    "check_finite",
    "check_float",
    "check_floating_tensor",
    "check_int",
    "check_labels",
    "check_ndim",
    "check_reduction",
    "check_same_batch",
    "check_spatial_mask",
    "check_tensor",
    "finite_checks_enabled",
    "set_finite_checks",
]

_FINITE_CHECKS = True

REDUCTIONS = ("mean", "sum", "none")


def set_finite_checks(enabled: bool) -> None:
    """Switch the NaN/Inf scan of floating-point inputs on or off globally.

    The scan is on by default. It costs one reduction over each input and a
    device-to-host synchronisation; switch it off in a tuned training loop once
    the pipeline is known to be sound.

    Args:
        enabled: ``True`` to scan inputs (the default), ``False`` to skip.

    Examples:
        >>> import contrast_attn
        >>> contrast_attn.set_finite_checks(False)
        >>> contrast_attn.finite_checks_enabled()
        False
        >>> contrast_attn.set_finite_checks(True)
    """
    global _FINITE_CHECKS
    _FINITE_CHECKS = check_bool(enabled, "enabled")


def finite_checks_enabled() -> bool:
    """Whether public functions scan floating-point inputs for NaN/Inf.

    Returns:
        The current global setting (see :func:`set_finite_checks`).
    """
    return _FINITE_CHECKS


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


def check_tensor(value: Any, name: str) -> torch.Tensor:
    """Raise TypeError unless ``value`` is a tensor; return it."""
    if isinstance(value, torch.Tensor):
        return value
    raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def check_floating_tensor(value: Any, name: str) -> torch.Tensor:
    """Raise TypeError unless ``value`` is a floating-point tensor; return it."""
    tensor = check_tensor(value, name)
    if not tensor.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or "
            f"float64), got dtype {tensor.dtype}"
        )
    return tensor


def check_ndim(value: torch.Tensor, name: str, ndims: Collection[int], layout: str) -> None:
    """Raise ValueError unless ``value.ndim`` is one of ``ndims``.

    Args:
        value: The tensor.
        name: The argument's name, for the message.
        ndims: Allowed numbers of dimensions.
        layout: Human-readable expected layout, e.g. ``"[B, D] or [B, V, D]"``.
    """
    if value.ndim not in ndims:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(value.shape)}")


def check_finite(value: torch.Tensor, name: str) -> None:
    """Raise ValueError if a floating tensor holds NaN or Inf (when enabled)."""
    if not _FINITE_CHECKS or not value.is_floating_point() or value.numel() == 0:
        return
    if torch.compiler.is_compiling():
        return
    # One fused pass (NaN propagates to both ends, ±Inf shows at one end): about ten
    # times cheaper than isfinite().all(), which matters for small batches.
    if not bool(torch.isfinite(torch.stack(torch.aminmax(value))).all()):
        finite = torch.isfinite(value)
        n_nan = int(torch.isnan(value).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise ValueError(
            f"{name} must be finite, got {n_nan} NaN and {n_inf} Inf value(s) in "
            f"{_describe(value)} (disable this scan with "
            f"contrast_attn.set_finite_checks(False))"
        )


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check a finite real number within an interval; return it as ``float``.

    Raises:
        TypeError: not a real number (bools are rejected).
        ValueError: NaN, infinite, or outside the interval.
    """
    scalar_tensor = (
        isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()
    )
    if not scalar_tensor and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    number = float(value)
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number in {interval}, got {number}")
    too_low = low is not None and (number < low if low_inclusive else number <= low)
    too_high = high is not None and (number > high if high_inclusive else number >= high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {interval}, got {number}")
    return number


def check_int(value: Any, name: str, *, low: int | None = None) -> int:
    """Check an integer (not a bool), optionally ``>= low``; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """Raise TypeError unless ``value`` is a ``bool`` (not an int or a tensor); return it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {_describe(value)}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """Raise ValueError unless ``value`` is one of ``choices``; return it."""
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {expected}, got {value!r}")
    return str(value)


def check_reduction(reduction: Any) -> str:
    """Check ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``."""
    return check_choice(reduction, "reduction", REDUCTIONS)


def check_labels(labels: Any, name: str, batch_size: int) -> torch.Tensor:
    """Check integer class labels of shape ``[batch_size]``; return them."""
    tensor = check_tensor(labels, name)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(
            f"{name} must be an integer tensor (e.g. torch.long) of class indices, "
            f"got dtype {tensor.dtype}"
        )
    if tensor.ndim != 1 or tensor.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have shape [B] = [{batch_size}] (one label per sample), "
            f"got shape {tuple(tensor.shape)}"
        )
    return tensor


def check_bool_mask(mask: Any, name: str, shape: tuple[int, ...], layout: str) -> torch.Tensor:
    """Check a 0/1 relation mask of an exact shape; return it as ``torch.bool``.

    Accepts bool tensors and numeric tensors holding only 0 and 1.
    """
    tensor = check_tensor(mask, name)
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"{name} must have shape {layout} = {list(shape)}, got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype == torch.bool:
        return tensor
    if not torch.compiler.is_compiling():
        other = (tensor != 0) & (tensor != 1)
        if bool(other.any()):
            raise ValueError(
                f"{name} must hold only 0/1 (or be a bool tensor), got other values: "
                f"{torch.unique(tensor[other])[:5].tolist()}"
            )
    return tensor != 0


def check_same_batch(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    """Raise ValueError unless two tensors share their first dimension."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same batch size, got {a.shape[0]} "
            f"({a_name} of shape {tuple(a.shape)}) and {b.shape[0]} "
            f"({b_name} of shape {tuple(b.shape)})"
        )


def check_feature_map(value: Any, name: str, channels: int | None = None) -> torch.Tensor:
    """Check a floating-point feature map ``[B, C, H, W]`` (with ``C = channels`` if given)."""
    tensor = check_floating_tensor(value, name)
    check_ndim(tensor, name, (4,), "[B, C, H, W]")
    if channels is not None and tensor.shape[1] != channels:
        raise ValueError(
            f"{name} must have in_channels = {channels} channels ([B, C, H, W]), got shape "
            f"{tuple(tensor.shape)}"
        )
    return tensor


def check_spatial_mask(value: Any, name: str, *, unit_interval: bool = True) -> torch.Tensor:
    """Check a one-channel spatial map ``[B, 1, h, w]`` or ``[B, h, w]``; return it as 4-D.

    Bool, integer and floating tensors are accepted. With ``unit_interval`` (masks,
    probabilities) every value must lie in [0, 1]; floating values must be finite.
    """
    tensor = check_tensor(value, name)
    if tensor.is_complex():
        raise TypeError(
            f"{name} must be a real tensor (bool, integer or floating), got {tensor.dtype}"
        )
    if tensor.ndim == 3:
        tensor = tensor[:, None]
    elif tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(
            f"{name} must have shape [B, 1, h, w] or [B, h, w], got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype == torch.bool:
        return tensor
    check_finite(tensor, name)
    if unit_interval and not torch.compiler.is_compiling() and tensor.numel() > 0:
        extremes = torch.aminmax(tensor.detach())
        low, high = float(extremes.min), float(extremes.max)
        if low < 0 or high > 1:
            raise ValueError(f"{name} must hold values in [0, 1], got values in [{low}, {high}]")
    return tensor
