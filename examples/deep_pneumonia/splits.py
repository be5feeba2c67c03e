"""Patient-grouped, stratified train/validation/test split, deterministic by seed.

Images of one patient are strongly correlated (same anatomy, same hospital, often the
same disease): a patient whose images sit in both the training and the test split
inflates every test metric. The split therefore assigns whole patients, greedily, so that every class's images
are shared out close to the requested fractions:

1. patients are queued by their rarest class (the class with fewest images among
   their images), rarest first, so the few patients of a minority class are spread
   over the splits before the common ones fill them; within that, largest patient
   first; remaining ties in a seeded random order;
2. each patient goes to the split furthest below its target share of the patient's
   rarest class, the shortfall of split k for class c being ``(fraction_k * images of
   c - images of c already in k) / images of c``; ties go to the largest shortfall
   summed over the patient's images, then to the split furthest below its overall
   target. The commonest classes come last and even out what the others left.

With one image per patient this is exact up to rounding; with several, each class's
share is within about one patient's images of the target.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["DEFAULT_SPLIT_FRACTIONS", "grouped_stratified_split"]

DEFAULT_SPLIT_FRACTIONS = (0.7, 0.15, 0.15)


def grouped_stratified_split(
    labels: Sequence[int],
    groups: Sequence[Hashable],
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    *,
    seed: int = 0,
) -> list[list[int]]:
    """Split image indices into parts that never share a group (patient).

    Args:
        labels: class of each image.
        groups: patient of each image.
        fractions: target share of images of each part (train, val, test), summing to 1.
        seed: orders patients of equal size; the same seed gives the same split.

    Returns:
        One sorted list of image indices per fraction; together they hold every index once.

    Raises:
        ValueError: when ``labels`` and ``groups`` differ in length or ``fractions`` is
            not a distribution.

    Examples:
        >>> parts = grouped_stratified_split([0, 0, 1, 1, 0, 1], ["a", "a", "b", "c", "d", "e"],
        ...                                  (0.5, 0.5), seed=0)
        >>> sorted(len(part) for part in parts)
        [3, 3]
    """
    if len(labels) != len(groups):
        raise ValueError(
            f"labels and groups must have one entry per image, got {len(labels)} and {len(groups)}"
        )
    if (
        not fractions
        or any(f < 0 for f in fractions)
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    frequency = Counter(labels)
    names = list(members)
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]

    def priority(group: Hashable) -> tuple[int, int, int]:
        count, label = min((frequency[labels[i]], labels[i]) for i in members[group])
        return count, label, -len(members[group])

    parts: list[list[int]] = [[] for _ in fractions]
    filled: dict[int, list[int]] = {c: [0] * len(fractions) for c in frequency}
    for group in sorted(shuffled, key=priority):
        counts = Counter(labels[i] for i in members[group])
        rarest = priority(group)[1]
        preference = []
        for k, fraction in enumerate(fractions):
            shortfall = {c: (fraction * frequency[c] - filled[c][k]) / frequency[c] for c in counts}
            combined = sum(n * shortfall[c] for c, n in counts.items())
            overall = fraction * len(labels) - len(parts[k])
            preference.append((round(shortfall[rarest], 9), round(combined, 9), overall, -k))
        part = max(range(len(fractions)), key=preference.__getitem__)
        parts[part].extend(members[group])
        for c, n in counts.items():
            filled[c][part] += n
    return [sorted(part) for part in parts]
