"""Learning-rate schedule: linear warm-up, then cosine decay, stepped once per batch.

SimCLR trains with a large learning rate that diverges or collapses when applied to
freshly initialised weights; a linear warm-up over the first steps (Goyal et al., 2017)
and a cosine decay to a floor afterwards (Loshchilov & Hutter, 2017; SimCLR, Chen et
al., 2020) are the usual remedy.
"""

from __future__ import annotations

import math
import typing
import warnings

import torch

__all__ = ["replay", "warmup_cosine", "warmup_cosine_scheduler"]


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, final_scale: float = 0.0
) -> float:
    """The learning-rate factor at ``step`` (0-based).

    .. math::

        f(t) = \\begin{cases}
            (t + 1) / W & t < W \\\\
            s + (1 - s)\\,\\tfrac12\\left(1 + \\cos\\left(\\pi \\frac{t - W}{T - W}\\right)\\right)
            & W \\le t < T \\\\
            s & t \\ge T
        \\end{cases}

    with :math:`W` = ``warmup_steps``, :math:`T` = ``total_steps``, :math:`s` =
    ``final_scale``. The first step already trains (factor :math:`1/W`, not 0).

    Args:
        step: the optimiser step about to be taken.
        total_steps: steps of the whole run (``epochs * batches per epoch``).
        warmup_steps: steps of the linear warm-up, in ``[0, total_steps]``.
        final_scale: the factor the cosine ends at, in [0, 1].

    Returns:
        The factor multiplying the base learning rate.

    Raises:
        ValueError: when ``total_steps < 1``, ``warmup_steps`` is outside
            ``[0, total_steps]`` or ``final_scale`` outside [0, 1].

    Examples:
        >>> [round(warmup_cosine(t, 10, 2), 3) for t in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must lie in [0, {total_steps}], got {warmup_steps}")
    if not 0.0 <= final_scale <= 1.0:
        raise ValueError(f"final_scale must lie in [0, 1], got {final_scale}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return final_scale
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return final_scale + (1.0 - final_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    final_scale: float = 0.0,
    *,
    start: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine`; call ``scheduler.step()`` after each batch.

    The factor is computed from the step count alone, so a run resumed at step ``start``
    (the schedule replayed up to it, as a training stage does after loading its
    optimiser) has exactly the learning rates of the uninterrupted run. A run resumed
    with a larger ``total_steps`` continues on the schedule of the new total.

    Args:
        optimizer: its groups' ``initial_lr`` (or, on first use, ``lr``) are the base rates.
        total_steps: as :func:`warmup_cosine`.
        warmup_steps: as :func:`warmup_cosine`.
        final_scale: as :func:`warmup_cosine`.
        start: optimiser steps already taken.

    Raises:
        ValueError: as :func:`warmup_cosine`, or when ``start < 0``.

    Examples:
        >>> param = torch.nn.Parameter(torch.zeros(1))
        >>> optimizer = torch.optim.SGD([param], lr=1.0)
        >>> scheduler = warmup_cosine_scheduler(optimizer, total_steps=4, warmup_steps=2)
        >>> optimizer.param_groups[0]["lr"]
        0.5
        >>> _ = warmup_cosine_scheduler(optimizer, total_steps=4, warmup_steps=2, start=3)
        >>> round(optimizer.param_groups[0]["lr"], 3)
        0.5
    """
    warmup_cosine(0, total_steps, warmup_steps, final_scale)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps, final_scale)
    )
    return replay(scheduler, start)


Scheduler = typing.TypeVar("Scheduler", bound=torch.optim.lr_scheduler.LRScheduler)


def replay(scheduler: Scheduler, start: int) -> Scheduler:
    """``scheduler`` stepped ``start`` times without optimiser steps: a resumed run's position.

    PyTorch warns when a scheduler steps before its optimiser; here that is by design,
    so the warning is silenced for these steps only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
        )
        for _ in range(start):
            scheduler.step()
    return scheduler
