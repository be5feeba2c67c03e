"""Make the gallery's figures: run the example and copy its plots beside the gallery page.

    python docs/gallery/make_gallery.py                  # the quick preset: minutes on a CPU
    python docs/gallery/make_gallery.py --preset smoke   # tens of seconds, untrained figures
    python docs/gallery/make_gallery.py --run runs/mine  # the figures of a finished run

The figures, the run's ``metrics.json`` and ``config.json`` and the command that made
them go to ``docs/gallery/_generated/`` (not in git); the next docs build shows them on
the gallery page. A docs build can also take them straight from a run folder:
``CONTRAST_ATTN_GALLERY=runs/mine sphinx-build ...`` (CI does that with its smoke run).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = Path(__file__).resolve().parent / "_generated"
FIGURES = ("curves.png", "confusion_matrix.png", "attention.png")
RECORDS = ("metrics.json", "config.json")


def collect(run: Path, into: Path, command: str) -> list[Path]:
    """Copy a finished run's figures and records into ``into``; the copied files.

    Raises:
        FileNotFoundError: when the run folder lacks a figure or a record.
    """
    sources = [run / "plots" / name for name in FIGURES] + [run / name for name in RECORDS]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{run} is not a finished run of the example: missing {missing}")
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    copied = [Path(shutil.copy2(path, into / path.name)) for path in sources]
    (into / "command.txt").write_text(command + "\n", encoding="utf-8")
    return copied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", help="the example's preset to run")
    parser.add_argument("--run", type=Path, help="use this finished run instead of running")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gallery", help="run folder")
    args = parser.parse_args(argv)
    if args.run is not None:
        run, command = args.run, f"the run in ``{args.run}``"
    else:
        run = args.out
        example = REPO / "examples" / "deep_pneumonia" / "run.py"
        cmd = [sys.executable, str(example), "--preset", args.preset, "--out", str(run)]
        subprocess.run(cmd, check=True, cwd=REPO)
        command = shlex.join(["python", "examples/deep_pneumonia/run.py", "--preset", args.preset])
    for path in collect(run, GENERATED, command):
        print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
