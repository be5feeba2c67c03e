"""``.. gallery-figures::``: the figures of a run of the example, or how to make them.

The figures are build artefacts, never files in git. They are taken from
``docs/gallery/_generated/`` (written by ``docs/gallery/make_gallery.py``) or, when the
environment variable ``CONTRAST_ATTN_GALLERY`` names a finished run folder of the
example, copied from it there when the build starts. Without them the page shows the
command that makes them, so the build stays clean (warnings are errors) either way.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

if TYPE_CHECKING:
    from sphinx.application import Sphinx

GALLERY = Path(__file__).resolve().parents[1] / "gallery"
GENERATED = GALLERY / "_generated"
# (file, caption) of each figure the example draws, in the page's order.
FIGURES = (
    (
        "attention.png",
        "Test images of each class: the radiograph, then the predicted attention map in "
        "colour with the lesion mask's contour in white, and the predicted class.",
    ),
    ("confusion_matrix.png", "Confusion matrix on the test split (rows: true class)."),
    ("curves.png", "Training curves: pre-training loss, fine-tuning losses, validation."),
)


def _copy_from_environment(app: Sphinx) -> None:
    run = os.environ.get("CONTRAST_ATTN_GALLERY")
    if not run:
        return
    sys.path.insert(0, str(GALLERY))
    from make_gallery import collect  # the same copy as the documented command

    collect(Path(run), GENERATED, f"the run in ``{run}``")


def _summary(metrics: dict[str, Any], config: dict[str, Any], command: str) -> list[str]:
    baseline = metrics.get("majority_baseline", {})
    lesion = metrics.get("lesion_attention") or {}
    made = f"Made by ``{command}``" if command.startswith("python") else f"From {command}"
    lines = [
        f"{made}: data ``{config.get('data')}`` at {config.get('image_size')} px,"
        f" ``{config.get('arch')}``, {config.get('pretrain_epochs')} pre-training and"
        f" {config.get('epochs')} fine-tuning epochs, seed {config.get('seed')}. On its"
        f" {metrics.get('num_images')} test images: macro-F1 {metrics['macro_f1']:.3f}"
        f" (majority-class baseline {baseline.get('macro_f1', float('nan')):.3f}), balanced"
        f" accuracy {metrics['balanced_accuracy']:.3f}.",
    ]
    if isinstance(lesion, dict) and "attention_mass" in lesion:
        lines.append(
            f"Over {lesion.get('num_images')} test images with a lesion, the fraction of the"
            f" attention map's mass inside it is {lesion['attention_mass']:.3f} (a uniform map:"
            f" {lesion.get('lesion_area_fraction', float('nan')):.3f})."
        )
    return [" ".join(lines), ""]


class GalleryFigures(Directive):
    """The example's figures with captions and the run's numbers, or the command."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        present = [(name, caption) for name, caption in FIGURES if (GENERATED / name).is_file()]
        if len(present) < len(FIGURES) or not (GENERATED / "metrics.json").is_file():
            text = [
                ".. note::",
                "",
                "   This build has no figures: they are made by a run of the example, not",
                "   kept in git. Make them, then build the docs again:",
                "",
                "   .. code-block:: bash",
                "",
                "      python docs/gallery/make_gallery.py            # minutes on a CPU",
                "      sphinx-build -b html docs docs/_build/html",
                "",
            ]
            self.state_machine.insert_input(StringList(text), "gallery-figures")
            return []
        metrics = json.loads((GENERATED / "metrics.json").read_text(encoding="utf-8"))
        config = json.loads((GENERATED / "config.json").read_text(encoding="utf-8"))
        command = (GENERATED / "command.txt").read_text(encoding="utf-8").strip()
        text = _summary(metrics, config, command)
        for name, caption in present:
            env.note_dependency(str(GENERATED / name))
            width = "60%" if name == "confusion_matrix.png" else "100%"
            text += [
                f".. figure:: _generated/{name}",
                f"   :width: {width}",
                "",
                f"   {caption}",
                "",
            ]
        self.state_machine.insert_input(StringList(text), "gallery-figures")
        return []


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("builder-inited", _copy_from_environment)
    app.add_directive("gallery-figures", GalleryFigures)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
