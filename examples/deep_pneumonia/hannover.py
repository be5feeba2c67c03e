"""A real, imbalanced task on the Hannover COVID-19 chest radiographs.

The COVID-19 Image Repository of Hannover Medical School (Winther et al., CC BY 3.0,
DOI 10.6084/m9.figshare.12275009) holds 243 frontal radiographs of 71 COVID-19
patients, without lesion masks, and a ``data.csv`` of clinical offsets in days
relative to each exam (negative: before the exam). It has no second disease class, so
the adapter derives a binary label from ``data.csv``:

* ``task="icu"`` (default): was the patient admitted to the intensive care unit on the
  exam day or within ``icu_days`` days after it (``0 <= icu_admission_offset <=
  icu_days``)? A prognostic question, and a real imbalance: 32 of 243 images (24 of 71
  patients) for 7 days. Images taken during an ICU stay that began earlier count as
  negative: the question is a new admission.
* ``task="projection"``: AP (mostly bedside films, 194 images) or PA (49 images).

Every image has ``mask_valid`` False (no annotation: mask guidance is off). The split
is grouped by patient (see :mod:`.splits`); :func:`.data.build_datasets` caches the
decoded, resized images in memory (a few seconds for all 243).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Union

from .folder import ImageRecord

__all__ = ["DEFAULT_HANNOVER_DIR", "TASKS", "hannover_records"]

DEFAULT_HANNOVER_DIR = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hannover-covid-cxr"
)
TASKS = ("icu", "projection")


def _icu_label(row: dict[str, str], icu_days: int) -> int:
    offset = row["icu_admission_offset"]
    return int(offset != "" and 0.0 <= float(offset) <= icu_days)


def hannover_records(
    root: Union[str, Path] = DEFAULT_HANNOVER_DIR, *, task: str = "icu", icu_days: int = 7
) -> tuple[list[ImageRecord], list[str]]:
    """Images, labels and patients of the Hannover radiographs for ``task``.

    Args:
        root: the folder holding ``data.csv`` and ``png/``.
        task: ``"icu"`` or ``"projection"`` (see the module docstring).
        icu_days: the horizon of the ``"icu"`` task, in days (>= 0).

    Returns:
        ``(records, class_names)``; class 1 is the minority class.

    Raises:
        FileNotFoundError: when ``data.csv`` or an image it lists is missing.
        ValueError: on an unknown task, a negative horizon or an unexpected projection.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if icu_days < 0:
        raise ValueError(f"icu_days must be >= 0, got {icu_days}")
    root = Path(root)
    table = root / "data.csv"
    if not table.is_file():
        raise FileNotFoundError(
            f"Hannover data.csv not found: {table} (expected the COVID-19 Image Repository "
            "with data.csv and png/)"
        )
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    class_names = ["no_icu", f"icu_within_{icu_days}d"] if task == "icu" else ["ap", "pa"]
    records = []
    for line, row in enumerate(rows, start=2):
        path = root / "png" / f"{row['image_id']}.png"
        if not path.is_file():
            raise FileNotFoundError(
                f"image file not found: {path} (listed in {table}, line {line})"
            )
        if task == "icu":
            label = _icu_label(row, icu_days)
        elif row["projection"] in class_names:
            label = class_names.index(row["projection"])
        else:
            raise ValueError(
                f"{table}, line {line}: projection must be 'ap' or 'pa', got {row['projection']!r}"
            )
        records.append(ImageRecord(path=path, label=label, patient_id=row["patient_id"]))
    return records, class_names
