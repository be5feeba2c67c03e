"""The sample every data source yields, and the dataset base class they share.

A sample is a dict (:class:`Sample`)::

    image       float32 [1, S, S] in [0, 1]   the radiograph, one channel
    mask        float32 [1, S, S] in {0, 1}   the lesion mask (zeros when not annotated)
    mask_valid  bool    []                    True when the mask is annotated
    label       int64   []                    the class index
    patient_id  str                           the split is grouped by patient
    image_id    str

An annotated empty mask (a normal image with ``mask_valid`` True) means "no lesion";
an image without annotation has ``mask_valid`` False and its mask must not guide
anything. Transforms (``transform`` argument, :meth:`XrayDataset.with_transform`)
take and return a sample and may add keys (``views`` for contrastive pre-training).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Optional

import torch
from torch.utils.data import Dataset
from typing_extensions import NotRequired, Self, TypedDict

__all__ = ["Sample", "SampleTransform", "XrayDataset"]


class Sample(TypedDict):
    """One radiograph with its lesion mask, label and identifiers."""

    image: torch.Tensor
    mask: torch.Tensor
    mask_valid: torch.Tensor
    label: torch.Tensor
    patient_id: str
    image_id: str
    views: NotRequired[torch.Tensor]


SampleTransform = Callable[[Sample], Sample]


class XrayDataset(Dataset[Sample], ABC):
    """Labels, identifiers and an optional transform; subclasses supply the pixels.

    Args:
        labels: class index of each image.
        class_names: the name of each class index.
        patient_ids: the patient of each image (splits never separate a patient's images).
        image_ids: a unique identifier of each image.
        transform: applied to every sample in ``__getitem__``.

    Raises:
        ValueError: when the per-image sequences differ in length or a label is out of range.
    """

    def __init__(
        self,
        *,
        labels: Sequence[int],
        class_names: Sequence[str],
        patient_ids: Sequence[str],
        image_ids: Sequence[str],
        transform: Optional[SampleTransform] = None,
    ) -> None:
        if not len(labels) == len(patient_ids) == len(image_ids):
            raise ValueError(
                "labels, patient_ids and image_ids must have one entry per image, got "
                f"{len(labels)}, {len(patient_ids)} and {len(image_ids)}"
            )
        bad = [label for label in labels if not 0 <= label < len(class_names)]
        if bad:
            raise ValueError(
                f"labels must lie in [0, {len(class_names)}) for class_names {list(class_names)}, "
                f"got {bad[0]}"
            )
        self.targets: list[int] = [int(label) for label in labels]
        self.class_names: list[str] = list(class_names)
        self.patient_ids: list[str] = list(patient_ids)
        self.image_ids: list[str] = list(image_ids)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    @abstractmethod
    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The pixels of one image.

        Args:
            index: position in the dataset.

        Returns:
            ``(image, mask, mask_valid)``: image float32 ``[1, S, S]`` in [0, 1], mask
            float32 ``[1, S, S]`` in {0, 1}, and whether the mask is annotated.
        """

    def __getitem__(self, index: int) -> Sample:
        image, mask, mask_valid = self.load(index)
        sample = Sample(
            image=image,
            mask=mask,
            mask_valid=torch.tensor(mask_valid),
            label=torch.tensor(self.targets[index], dtype=torch.long),
            patient_id=self.patient_ids[index],
            image_id=self.image_ids[index],
        )
        return sample if self.transform is None else self.transform(sample)

    def with_transform(self, transform: Optional[SampleTransform]) -> Self:
        """A shallow copy (sharing the pixels) that applies ``transform`` to every sample."""
        view = copy.copy(self)
        view.transform = transform
        return view

    def class_counts(self) -> list[int]:
        """Number of images of each class, in class-index order."""
        return [self.targets.count(c) for c in range(len(self.class_names))]
