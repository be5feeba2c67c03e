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

:func:`patient_kfold` uses the same assignment with ``k`` equal fractions for the test
folds of a cross-validation, then splits each fold's training patients again into
training and validation.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["DEFAULT_SPLIT_FRACTIONS", "Fold", "grouped_stratified_split", "patient_kfold"]

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


class Fold(NamedTuple):
    """The image indices of one cross-validation fold (sorted, disjoint, no shared patient)."""

    train: list[int]
    val: list[int]
    test: list[int]


def _move_one_patient(
    train: list[int], labels: Sequence[int], groups: Sequence[Hashable]
) -> tuple[list[int], list[int]]:
    """Give an empty validation split the smallest training patient of the commonest class."""
    patients = list(dict.fromkeys(groups[j] for j in train))
    if len(patients) < 2:
        return train, []
    common = Counter(labels[j] for j in train).most_common(1)[0][0]
    size = Counter(groups[j] for j in train)
    candidates = [p for p in patients if any(labels[j] == common and groups[j] == p for j in train)]
    moved = min(candidates, key=size.__getitem__)
    return [j for j in train if groups[j] != moved], [j for j in train if groups[j] == moved]


def patient_kfold(
    labels: Sequence[int],
    groups: Sequence[Hashable],
    k: int = 5,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
) -> list[Fold]:
    """Patient-grouped, stratified k-fold cross-validation with a validation split per fold.

    The test folds are :func:`grouped_stratified_split` with ``k`` fractions ``1 / k``:
    every image is tested exactly once, no patient is in two test folds, and each class's
    images are shared out evenly as far as whole patients allow. The other ``k - 1``
    folds' images are split again, by patient and stratified, into training
    (``1 - val_fraction``) and validation (``val_fraction``), with seed ``seed + 1 + i``
    for fold ``i``. When that leaves the validation split empty (few, large patients),
    it receives the smallest training patient of the commonest class.

    Args:
        labels: class of each image.
        groups: patient of each image.
        k: number of folds, ``2 <= k <=`` number of patients.
        seed: seeds the assignment; the same seed gives the same folds.
        val_fraction: share of each fold's training images for validation, in [0, 1);
            0 gives an empty validation split.

    Returns:
        ``k`` :class:`Fold` s.

    Raises:
        ValueError: when ``labels`` and ``groups`` differ in length, ``k`` is out of
            range, ``val_fraction`` is outside [0, 1), or a test fold, or a fold's
            training or (non-empty) validation split, would be empty.

    Examples:
        >>> labels, patients = [0, 0, 1, 1, 0, 1, 1, 0], ["a", "a", "b", "c", "d", "e", "f", "g"]
        >>> folds = patient_kfold(labels, patients, 2, val_fraction=0.25)
        >>> sorted(i for fold in folds for i in fold.test)
        [0, 1, 2, 3, 4, 5, 6, 7]
        >>> all(not set(f.test) & set(f.train + f.val) for f in folds)
        True
    """
    if len(labels) != len(groups):
        raise ValueError(
            f"labels and groups must have one entry per image, got {len(labels)} and {len(groups)}"
        )
    patients = len(set(groups))
    if not isinstance(k, int) or not 2 <= k <= patients:
        raise ValueError(f"k must be an integer in [2, {patients}] (the patients), got {k!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    tests = grouped_stratified_split(labels, groups, [1.0 / k] * k, seed=seed)
    empty = [i for i, test in enumerate(tests) if not test]
    if empty:
        raise ValueError(f"test fold(s) {empty} are empty: {patients} patients for k = {k}")
    folds = []
    for i, test in enumerate(tests):
        held = set(test)
        rest = [j for j in range(len(labels)) if j not in held]
        if val_fraction == 0.0:
            folds.append(Fold(rest, [], test))
            continue
        train, val = grouped_stratified_split(
            [labels[j] for j in rest],
            [groups[j] for j in rest],
            (1.0 - val_fraction, val_fraction),
            seed=seed + 1 + i,
        )
        if not val:
            train, val = _move_one_patient(
                train, [labels[j] for j in rest], [groups[j] for j in rest]
            )
        if not val or not train:
            raise ValueError(
                f"fold {i}: the {'validation' if not val else 'training'} split is empty "
                f"for val_fraction {val_fraction} ({len(set(groups[j] for j in rest))} "
                "training patients)"
            )
        folds.append(Fold([rest[j] for j in train], [rest[j] for j in val], test))
    return folds
