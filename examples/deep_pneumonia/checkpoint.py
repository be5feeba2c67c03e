"""Atomic checkpoints, and the checkpointer a training stage resumes from.

A stage's checkpoint holds the model, optimiser and gradient-scaler states, the random
number generator states (python, numpy, torch, CUDA), the stage, the number of finished
epochs, the history of metrics, and the *run* it belongs to: the settings the stage
depends on and the data (class names and the image ids and labels of every split). It
is written to a temporary file in the same folder and moved over the old one with
:func:`os.replace`, so a run killed while saving leaves the previous checkpoint intact;
the temporary files such a kill leaves behind are removed when the next run starts.

A checkpoint is used (to resume, or by a later stage) only by a run that matches it;
otherwise :class:`RunMismatch` says what differs. The one change a resume accepts is
more epochs of the stage (``epochs_setting``): training continues on the schedule of
the new total.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .data import DataSplits

__all__ = [
    "Checkpointer",
    "RunMismatch",
    "RunRecord",
    "atomic_save",
    "load",
    "remove_stale_temporaries",
    "restore_rng_state",
    "rng_state",
    "run_record",
]


def rng_state() -> dict[str, Any]:
    """The state of every random number generator the pipeline uses."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global state user code may draw from)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back generator states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.<name>.pt.*.tmp`` files a killed :func:`atomic_save` left in ``folder``.

    Call it when no other process writes to ``folder`` (at the start of a run, on rank 0).

    Returns:
        The files removed.
    """
    stale = sorted(Path(folder).glob(".*.pt.*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_save` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


class RunMismatch(ValueError):
    """A checkpoint belongs to another run (other settings, data or split)."""


@dataclass(frozen=True)
class RunRecord:
    """What a stage's checkpoint depends on.

    Attributes:
        settings: the settings the stage depends on, by name.
        data: ``{"class_names": [...], "splits": {split: {"image_ids": [...], "labels": [...]}}}``.
    """

    settings: dict[str, Any]
    data: dict[str, Any]

    def differences(self, saved: Mapping[str, Any], *, growing: str | None = None) -> list[str]:
        """What differs between this run and the ``saved`` record (empty when they match).

        Args:
            saved: the ``{"settings", "data"}`` of a checkpoint.
            growing: a setting allowed to be larger now than in ``saved``.
        """
        found = []
        old_settings: dict[str, Any] = saved["settings"]
        for name in sorted(set(self.settings) | set(old_settings)):
            old, new = old_settings.get(name, "<absent>"), self.settings.get(name, "<absent>")
            if old != new and not (name == growing and new > old):
                found.append(f"setting {name!r}: {old!r} in the checkpoint, {new!r} now")
        if saved["data"]["class_names"] != self.data["class_names"]:
            found.append(
                f"class names: {saved['data']['class_names']} in the checkpoint, "
                f"{self.data['class_names']} now"
            )
        for split, now in self.data["splits"].items():
            found += _split_differences(split, saved["data"]["splits"][split], now)
        return found


def _split_differences(
    split: str, old: dict[str, list[Any]], new: dict[str, list[Any]]
) -> list[str]:
    if old == new:
        return []
    before, after = set(old["image_ids"]), set(new["image_ids"])
    if before != after:
        added, removed = sorted(after - before), sorted(before - after)
        return [
            f"the {split} split: {len(added)} image(s) not in the checkpoint's "
            f"{split} split (e.g. {added[:3]}), {len(removed)} of it missing (e.g. {removed[:3]})"
        ]
    old_labels = dict(zip(old["image_ids"], old["labels"]))
    changed = sorted(
        i for i, label in zip(new["image_ids"], new["labels"]) if old_labels[i] != label
    )
    if changed:
        return [
            f"the {split} split: {len(changed)} image(s) with another label (e.g. {changed[:3]})"
        ]
    return [f"the {split} split: the same images in another order"]


def run_record(cfg: Config, splits: DataSplits, sections: tuple[str, ...]) -> RunRecord:
    """The record of ``cfg``'s settings in ``sections`` and of the data of ``splits``."""
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    data = {
        "class_names": list(splits.class_names),
        "splits": {
            name: {"image_ids": list(part.image_ids), "labels": list(part.targets)}
            for name, part in parts.items()
        },
    }
    return RunRecord(cfg.section_values(*sections), data)


class Checkpointer:
    """Saves a stage's state after every epoch and resumes it, for one run.

    Args:
        path: the stage's checkpoint file.
        stage: the stage's name, stored and checked.
        run: what the checkpoint depends on.
        epochs_setting: the name of the stage's epoch count, which may grow on resume.
        parts: the objects whose ``state_dict`` is saved (model, optimiser, scaler).
    """

    def __init__(
        self, path: Path, stage: str, run: RunRecord, epochs_setting: str, **parts: Any
    ) -> None:
        self.path, self.stage, self.run = path, stage, run
        self.epochs_setting = epochs_setting
        self.parts = parts

    def read(self, *, growing: bool = False) -> dict[str, Any]:
        """The checkpoint, after checking it belongs to this stage and run.

        Raises:
            FileNotFoundError: when there is no checkpoint.
            RunMismatch: when it belongs to another stage or run, saying what differs.
        """
        state = load(self.path)
        if state.get("stage") != self.stage or "run" not in state:
            raise RunMismatch(f"{self.path} is not a {self.stage!r} checkpoint of this pipeline")
        found = self.run.differences(state["run"], growing=self.epochs_setting if growing else None)
        if found:
            raise RunMismatch(
                f"{self.path} belongs to another run; use another --out, or the run's "
                "settings and data. Differences:\n  - " + "\n  - ".join(found)
            )
        return state

    def read_finished(self, how_to_run: str) -> dict[str, Any]:
        """The checkpoint of the finished stage, for a later stage to use.

        Args:
            how_to_run: what to do when there is no checkpoint (for the message).

        Raises:
            FileNotFoundError: when there is no checkpoint.
            RunMismatch: when it belongs to another run, or holds fewer epochs than the run's.
        """
        if not self.path.is_file():
            raise FileNotFoundError(
                f"the {self.stage} stage's checkpoint {self.path} is missing: {how_to_run}"
            )
        state = self.read()
        epochs = self.run.settings[self.epochs_setting]
        if state["epoch"] != epochs:
            raise RunMismatch(
                f"{self.path} holds {state['epoch']} of {epochs} epochs: finish the stage first"
                f" (--stage {self.stage} --resume)"
            )
        return state

    def resume(self) -> tuple[int, list[dict[str, float]]]:
        """Restore the saved states; ``(epochs done, history)``, or ``(0, [])`` without a file."""
        if not self.path.is_file():
            return 0, []
        state = self.read(growing=True)
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        restore_rng_state(state["rng"])
        return int(state["epoch"]), list(state["history"])

    def save(self, epoch: int, history: list[dict[str, float]]) -> None:
        """Write the states after ``epoch`` finished epochs (call on one process only)."""
        state = {name: part.state_dict() for name, part in self.parts.items()}
        state.update(
            stage=self.stage,
            epoch=epoch,
            rng=rng_state(),
            history=history,
            run={"settings": self.run.settings, "data": self.run.data},
        )
        atomic_save(state, self.path)
