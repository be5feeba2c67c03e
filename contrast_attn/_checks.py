"""Input validation for every public function, in one place.

Each check raises :class:`TypeError` (wrong kind of object or dtype) or
:class:`ValueError` (wrong shape or value) with a message that names the
argument, says what was expected, and shows what was given. Public functions
call these first, so users never see a bare ``RuntimeError`` from deep inside
torch.

Shape, dtype and hyper-parameter checks are free (no tensor is read). Checks
of tensor *values* (NaN/Inf, a range such as [0, 1], 0/1 masks, class indices
within ``[0, C)``) are collected by a :class:`ValueChecks` batch: one reduction
per tensor, and a single host synchronisation per call for all of them
together. They are switched off globally with :func:`set_finite_checks` (then
no call synchronises) and skipped while ``torch.compile`` traces (a
data-dependent branch would break the graph).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

__all__ = [
    "ValueChecks",
    "check_bool",
    "check_bool_mask",
    "check_choice",
    "check_class_target",
    "check_device",
    "check_feature_map",
    "check_finite",
    "check_float",
    "check_floating_tensor",
    "check_int",
    "check_labels",
    "check_ndim",
    "check_nonempty",
    "check_reduction",
    "check_same_batch",
    "check_spatial_dims",
    "check_spatial_mask",
    "check_temperature",
    "check_tensor",
    "describe",
    "finite_checks_enabled",
    "set_finite_checks",
]

_FINITE_CHECKS = True

REDUCTIONS = ("mean", "sum", "none")


def set_finite_checks(enabled: bool) -> None:
    """Switch the checks of tensor values (NaN/Inf, ranges, 0/1 masks, class indices) on or off.

    The checks are on by default. They cost one reduction over each checked
    input and one device-to-host synchronisation per call; switch them off in a
    tuned training loop once the pipeline is known to be sound (then no public
    function or layer synchronises, except ``no_positive="error"``, which asks
    for a value check explicitly).

    Args:
        enabled: ``True`` to scan inputs (the default), ``False`` to skip.

    Raises:
        TypeError: ``enabled`` is not a bool.

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
    """Whether public functions check tensor values (NaN/Inf, ranges, indices).

    Returns:
        The current global setting (see :func:`set_finite_checks`).

    Examples:
        >>> import contrast_attn
        >>> contrast_attn.finite_checks_enabled()  # on by default
        True
    """
    return _FINITE_CHECKS


def describe(value: Any) -> str:
    """A short description of a value for error messages (shape and dtype of a tensor)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} ({type(value).__name__})"


def check_tensor(value: Any, name: str) -> torch.Tensor:
    """Raise TypeError unless ``value`` is a tensor, ValueError for a meta tensor; return it."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.device.type == "meta":
        raise ValueError(
            f"{name} must hold data on a real device (cpu, cuda, ...), got a meta tensor of "
            f"shape {tuple(value.shape)}"
        )
    return value


def check_device(value: torch.Tensor, name: str, device: torch.device, owner: str) -> None:
    """Raise ValueError unless ``value`` lives on ``device`` (that of ``owner``, for the message)."""
    if value.device != device:
        raise ValueError(
            f"{name} must be on the same device as {owner} ({device}), got {describe(value)} "
            f"on {value.device}"
        )


def check_nonempty(value: torch.Tensor, name: str, dims: Sequence[int], layout: str) -> None:
    """Raise ValueError if any of the dimensions ``dims`` of ``value`` has size 0."""
    empty = [d for d in dims if value.shape[d] == 0]
    if empty:
        raise ValueError(
            f"{name} must have non-empty dimensions {layout} (no size 0 outside the batch), "
            f"got shape {tuple(value.shape)}"
        )


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
    """Raise ValueError if a floating tensor holds NaN or Inf (when enabled); one sync."""
    checks = ValueChecks()
    checks.values(value, name)
    checks.run()


class ValueChecks:
    """The value checks of one call, fused into one host synchronisation.

    Each method adds a check of one tensor (one reduction, no synchronisation);
    :meth:`run` reads all the flags at once and raises the :class:`ValueError`
    of the first failed check (computing its detailed message only then). A
    tensor is checked once per call: pass every property it must have in one
    method call. Nothing is recorded when checks are switched off
    (:func:`set_finite_checks`) or while ``torch.compile`` traces.

    Examples:
        >>> import torch
        >>> checks = ValueChecks()
        >>> checks.values(torch.tensor([0.0, 0.5]), "mask", unit_interval=True)
        >>> checks.run()                      # one synchronisation for every check
    """

    def __init__(self) -> None:
        self.enabled = _FINITE_CHECKS and not torch.compiler.is_compiling()
        self._flags: list[torch.Tensor] = []
        self._messages: list[Callable[[], str]] = []

    def flag(self, failed: torch.Tensor, message: Callable[[], str]) -> None:
        """Add a 0-d bool tensor that is true on failure, and its message."""
        if self.enabled:
            self.require(~failed, message)

    def require(self, ok: torch.Tensor, message: Callable[[], str]) -> None:
        """Add a 0-d bool tensor that is true when the check passes, and its message."""
        if self.enabled:
            self._flags.append(ok.reshape(()))
            self._messages.append(message)

    def values(self, value: torch.Tensor, name: str, *, unit_interval: bool = False) -> None:
        """Floating values finite (and in [0, 1] with ``unit_interval``), from one ``aminmax``."""
        if not self.enabled or value.numel() == 0 or value.dtype == torch.bool:
            return
        floating = value.is_floating_point()
        if not floating and not unit_interval:
            return
        low, high = torch.aminmax(value.detach())
        # high - low is finite exactly when both ends are (NaN reaches both, Inf one).
        ok = torch.isfinite(high - low) if floating else None
        if unit_interval:
            inside = (low >= 0) & (high <= 1)
            ok = inside if ok is None else ok & inside
        assert ok is not None

        def message() -> str:
            if floating and not bool(torch.isfinite(value).all()):
                n_nan = int(torch.isnan(value).sum())
                n_inf = int((~torch.isfinite(value)).sum()) - n_nan
                return (
                    f"{name} must be finite, got {n_nan} NaN and {n_inf} Inf value(s) in "
                    f"{describe(value)} (disable this scan with "
                    f"contrast_attn.set_finite_checks(False))"
                )
            return f"{name} must hold values in [0, 1], got values in [{float(low)}, {float(high)}]"

        self.require(ok, message)

    def binary(self, value: torch.Tensor, name: str) -> None:
        """Values only 0 or 1 (bool tensors pass without a scan)."""
        if not self.enabled or value.dtype == torch.bool or value.numel() == 0:
            return
        other = (value != 0) & (value != 1)
        self.flag(
            other.any(),
            lambda: (
                f"{name} must hold only 0/1 (or be a bool tensor), got other values: "
                f"{torch.unique(value[other])[:5].tolist()}"
            ),
        )

    def indices(
        self, value: torch.Tensor, name: str, num_classes: int, *, ignore_index: int | None = None
    ) -> None:
        """Integer class indices in ``[0, num_classes)``, entries equal to ``ignore_index`` aside."""
        if not self.enabled or value.numel() == 0:
            return
        kept = value if ignore_index is None else torch.where(value == ignore_index, 0, value)
        low, high = torch.aminmax(kept)
        ignore = "" if ignore_index is None else f" or ignore_index={ignore_index}"

        def message() -> str:
            bad = (kept < 0) | (kept >= num_classes)
            return (
                f"{name} must hold class indices in [0, {num_classes}){ignore}, got "
                f"out-of-range value(s) {torch.unique(value[bad])[:5].tolist()}"
            )

        self.require((low >= 0) & (high < num_classes), message)

    def positive(self, value: torch.Tensor, name: str) -> None:
        """A tensor of finite values > 0 (e.g. a learnable temperature)."""
        if not self.enabled:
            return
        detached = value.detach()
        self.require(
            ((detached > 0) & torch.isfinite(detached)).all(),
            lambda: f"{name} must be finite and > 0, got {detached.flatten()[:5].tolist()}",
        )

    def run(self) -> None:
        """Raise the first failed check's ValueError; one host synchronisation per device."""
        if not self._flags:
            return
        if len(self._flags) == 1:
            if not bool(self._flags[0]):
                raise ValueError(self._messages[0]())
            return
        by_device: dict[torch.device, list[int]] = {}
        for i, ok in enumerate(self._flags):
            by_device.setdefault(ok.device, []).append(i)
        for positions in by_device.values():
            stacked = torch.stack([self._flags[i] for i in positions])
            if not bool(stacked.all()):
                first = positions[int((~stacked).long().argmax())]
                raise ValueError(self._messages[first]())


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
    if not scalar_tensor and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    if isinstance(value, torch.Tensor) and value.requires_grad:
        raise TypeError(
            f"{name} must be a plain number here; a tensor that requires grad would be "
            f"detached, got {describe(value)}"
        )
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
    """Check an integer (not a bool; numpy integers pass), optionally ``>= low``; return it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """Raise TypeError unless ``value`` is a ``bool`` (not an int or a tensor); return it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {describe(value)}")
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


def check_class_target(
    target: Any, logits: torch.Tensor, ignore_index: int, checks: ValueChecks | None = None
) -> torch.Tensor:
    """Check class indices ``[B]`` for logits ``[B, C]``: in ``[0, C)`` or ``ignore_index``.

    The type and shape checks are free; the range check joins ``checks`` when
    given (run by the caller), else runs at once.
    """
    batch, num_classes = logits.shape
    tensor = check_labels(target, "target", batch)
    check_values = ValueChecks() if checks is None else checks
    check_values.indices(
        tensor, f"target (C = {num_classes} from logits)", num_classes, ignore_index=ignore_index
    )
    if checks is None:
        check_values.run()
    return tensor


def check_bool_mask(
    mask: Any,
    name: str,
    shape: tuple[int, ...],
    layout: str,
    checks: ValueChecks | None = None,
) -> torch.Tensor:
    """Check a 0/1 relation mask of an exact shape; return it as ``torch.bool``.

    Accepts bool tensors and numeric tensors holding only 0 and 1. The value
    check joins ``checks`` when given (run by the caller), else runs at once.
    """
    tensor = check_tensor(mask, name)
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"{name} must have shape {layout} = {list(shape)}, got shape {tuple(tensor.shape)}"
        )
    check_values = ValueChecks() if checks is None else checks
    check_values.binary(tensor, name)
    if checks is None:
        check_values.run()
    return tensor if tensor.dtype == torch.bool else tensor != 0


def check_same_batch(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    """Raise ValueError unless two tensors share their first dimension."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same batch size, got {a.shape[0]} "
            f"({a_name} of shape {tuple(a.shape)}) and {b.shape[0]} "
            f"({b_name} of shape {tuple(b.shape)})"
        )


FEATURE_LAYOUTS = {2: "[B, C, H, W]", 3: "[B, C, D, H, W]"}
MASK_LAYOUTS = {2: "[B, 1, h, w] or [B, h, w]", 3: "[B, 1, d, h, w] or [B, d, h, w]"}


def check_spatial_dims(value: Any, name: str = "spatial_dims") -> int:
    """Check a number of spatial dimensions: 2 (images) or 3 (volumes); return it."""
    dims = check_int(value, name)
    if dims not in FEATURE_LAYOUTS:
        raise ValueError(f"{name} must be 2 (images) or 3 (volumes), got {dims}")
    return dims


def check_feature_map(
    value: Any, name: str, channels: int | None = None, spatial_dims: int | None = None
) -> torch.Tensor:
    """Check a floating feature map ``[B, C, H, W]`` or ``[B, C, D, H, W]``; return it.

    Args:
        value: The tensor.
        name: The argument's name, for the message.
        channels: The required ``C``, or ``None`` for any.
        spatial_dims: 2 or 3 to require images or volumes; ``None`` accepts both
            (the caller reads the spatial dimensions as ``ndim - 2``).
    """
    tensor = check_floating_tensor(value, name)
    dims = tuple(FEATURE_LAYOUTS) if spatial_dims is None else (spatial_dims,)
    check_ndim(tensor, name, [d + 2 for d in dims], " or ".join(FEATURE_LAYOUTS[d] for d in dims))
    check_nonempty(
        tensor, name, range(1, tensor.ndim), "C, " + ("D, H, W" if tensor.ndim == 5 else "H, W")
    )
    if channels is not None and tensor.shape[1] != channels:
        raise ValueError(
            f"{name} must have in_channels = {channels} channels "
            f"({FEATURE_LAYOUTS[tensor.ndim - 2]}), got shape {tuple(tensor.shape)}"
        )
    return tensor


def check_spatial_mask(
    value: Any,
    name: str,
    *,
    spatial_dims: int | None = 2,
    unit_interval: bool = True,
    checks: ValueChecks | None = None,
) -> torch.Tensor:
    """Check a one-channel spatial map; return it with its channel, ``[B, 1, *spatial]``.

    With ``spatial_dims=2`` the map is ``[B, 1, h, w]`` or ``[B, h, w]``; with 3,
    ``[B, 1, d, h, w]`` or ``[B, d, h, w]``; with ``None`` (a map that itself sets
    the dimensions, such as an attention map) ``[B, 1, h, w]``, ``[B, h, w]`` or
    ``[B, 1, d, h, w]``. For a volume a 4-D ``[B, 1, h, w]`` is refused: it would
    read as one slice (``d = 1``) and most likely is an image's mask. Bool,
    integer and floating tensors are accepted. With ``unit_interval`` (masks,
    probabilities) every value must lie in [0, 1]; floating values must be
    finite. The value checks (one ``aminmax``) join ``checks`` when given (run
    by the caller), else run at once.
    """
    tensor = check_tensor(value, name)
    if tensor.is_complex():
        raise TypeError(
            f"{name} must be a real tensor (bool, integer or floating), got {tensor.dtype}"
        )
    if spatial_dims is None:
        spatial_dims = 3 if tensor.ndim == 5 else 2
        layout = f"{MASK_LAYOUTS[2]} (or [B, 1, d, h, w] for a volume)"
        squeezed = tensor.ndim == 3
    else:
        layout = MASK_LAYOUTS[spatial_dims]
        squeezed = tensor.ndim == spatial_dims + 1
    if squeezed and spatial_dims == 3 and tensor.shape[1] == 1:
        raise ValueError(
            f"{name} of shape {tuple(tensor.shape)} is ambiguous: an image's mask "
            f"[B, 1, h, w] or a volume's [B, d, h, w] with d = 1; pass a volume's mask as "
            f"[B, 1, d, h, w]"
        )
    if squeezed:
        tensor = tensor[:, None]
    elif tensor.ndim != spatial_dims + 2 or tensor.shape[1] != 1:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(tensor.shape)}")
    check_nonempty(tensor, name, range(2, tensor.ndim), "d, h, w" if spatial_dims == 3 else "h, w")
    check_values = ValueChecks() if checks is None else checks
    check_values.values(tensor, name, unit_interval=unit_interval)
    if checks is None:
        check_values.run()
    return tensor


def check_temperature(value: Any, name: str = "temperature") -> float | torch.Tensor:
    """A temperature > 0: a real number (returned as ``float``) or a one-element floating tensor.

    A tensor (e.g. a learnable, CLIP-style temperature) is returned as a 0-d
    tensor and keeps its gradient; its value is checked by the call's
    :class:`ValueChecks` (:meth:`ValueChecks.positive`), not here.
    """
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or value.numel() != 1:
            raise TypeError(
                f"{name} must be a real number or a one-element floating tensor, got "
                f"{describe(value)}"
            )
        return value.reshape(())
    return check_float(value, name, low=0.0, low_inclusive=False)
