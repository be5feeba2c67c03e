"""Every Python code block of ``README.md`` and ``docs/**/*.rst`` runs as pasted.

Each block runs in a fresh interpreter (a subprocess whose working folder is a new
temporary folder, with the repository root on ``PYTHONPATH``), on CPU, with one
thread. Its lines are at most 88 characters (wider lines scroll on the site). A block
is *self-contained* unless a marker says otherwise. Markers are
comments written just above the block (blank lines between are fine), invisible on
the rendered page:

=====================================  ==================================================
reStructuredText                       Markdown (``README.md``)
=====================================  ==================================================
``:name: NAME`` (the code-block's      ``<!-- name: NAME -->``
option) or ``.. name: NAME``
``.. continues: NAME``                 ``<!-- continues: NAME -->``
``.. test-replace: OLD -> NEW``        ``<!-- test-replace: OLD -> NEW -->``
``.. test-launch: torchrun``           ``<!-- test-launch: torchrun -->``
=====================================  ==================================================

- ``name``: names the block (unique across all pages), so a later block can continue it.
- ``continues``: the block runs after the named earlier block *of the same page*, in
  the same interpreter, as a reader who pasted both in order would. The page must
  say so in its text ("continuing the block above", "the blocks on this page form
  one script"). A chain is run once, from its first block to each block that no
  other block continues, so every block runs.
- ``test-replace``: the test runs the block with the literal text ``OLD`` replaced by
  ``NEW`` (repeatable): for a block whose full size is too slow for CI. The page
  must state the full block's cost in its text; ``OLD`` must occur in the block.
- ``test-launch: torchrun``: the block is a script for ``torchrun``; the test runs
  it with ``python -m torch.distributed.run --standalone --nproc_per_node 2``.

A block that imports a package which is not installed (an extra such as
``torchvision``) is skipped with the package's name; CI installs every extra, so
there every block runs. All blocks together take well under a minute.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# Pages of the site; folders starting with "_" hold the build, extensions and statics.
SITE_PAGES = sorted(
    p
    for p in DOCS.rglob("*.rst")
    if not any(part.startswith("_") for part in p.relative_to(DOCS).parts)
)
PAGES = [REPO / "README.md", *SITE_PAGES]
MARKER_KEYS = ("name", "continues", "test-replace", "test-launch")
PYTHON = ("python", "py", "python3")

RST_DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\.\s+(?:code-block|code|sourcecode)::\s*(?P<lang>\S*)"
)
RST_MARKER = re.compile(r"^\s*\.\.\s+(?P<key>[a-z-]+):\s+(?P<value>\S.*?)\s*$")
MD_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
MD_MARKER = re.compile(r"^\s*<!--\s*(?P<key>[a-z-]+):\s*(?P<value>.*?)\s*-->\s*$")
# Seconds a single chain may take before the test calls it too slow for "seconds".
BLOCK_TIMEOUT = 120


@dataclasses.dataclass
class Block:
    """One Python code block: where it is, its code and its markers."""

    page: Path
    line: int  # 1-based line of the block's first code line
    code: str
    markers: list[tuple[str, str]]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    def values(self, key: str) -> list[str]:
        return [value for k, value in self.markers if k == key]

    @property
    def name(self) -> str | None:
        names = self.values("name")
        return names[0] if names else None


def _rst_blocks(page: Path, lines: list[str], errors: list[str]) -> list[Block]:
    blocks: list[Block] = []
    pending: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = RST_DIRECTIVE.match(line)
        marker = RST_MARKER.match(line)
        if directive:
            indent = len(directive.group("indent"))
            markers, pending = pending, []
            i += 1
            while i < len(lines) and (option := re.match(r"^\s+:([\w-]+):\s*(.*?)\s*$", lines[i])):
                if option.group(1) == "name":
                    markers.append(("name", option.group(2)))
                i += 1
            first, body = i + 1, []
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                body.append(lines[i])
                i += 1
            while body and not body[0].strip():
                body.pop(0)
                first += 1
            if directive.group("lang") in PYTHON:
                code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
                blocks.append(Block(page, first, code, markers))
            elif markers:
                errors.append(f"{page.relative_to(REPO)}:{first}: markers on a non-Python block")
            continue
        if marker and marker.group("key") in MARKER_KEYS:
            pending.append((marker.group("key"), marker.group("value")))
        elif marker and marker.group("key").startswith(("test-", "continue")):
            errors.append(f"{page.relative_to(REPO)}:{i + 1}: unknown marker {line.strip()!r}")
        elif line.strip() and pending:
            errors.append(f"{page.relative_to(REPO)}:{i + 1}: marker not followed by a block")
            pending = []
        i += 1
    if pending:
        errors.append(f"{page.relative_to(REPO)}: marker at the end of the page")
    return blocks


def _md_blocks(page: Path, lines: list[str], errors: list[str]) -> list[Block]:
    blocks: list[Block] = []
    pending: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        fence = MD_FENCE.match(lines[i])
        marker = MD_MARKER.match(lines[i])
        if fence:
            markers, pending = pending, []
            first, body = i + 2, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence.group("fence")):
                body.append(lines[i])
                i += 1
            if fence.group("lang") in PYTHON:
                code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
                blocks.append(Block(page, first, code, markers))
            elif markers:
                errors.append(f"{page.relative_to(REPO)}:{first}: markers on a non-Python block")
        elif marker and marker.group("key") in MARKER_KEYS:
            pending.append((marker.group("key"), marker.group("value")))
        elif lines[i].strip() and pending:
            errors.append(f"{page.relative_to(REPO)}:{i + 1}: marker not followed by a block")
            pending = []
        i += 1
    return blocks


def collect() -> tuple[list[Block], list[str]]:
    """Every Python block of every page, and the problems with their markers."""
    blocks: list[Block] = []
    errors: list[str] = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        reader = _md_blocks if page.suffix == ".md" else _rst_blocks
        blocks.extend(reader(page, lines, errors))
    names: dict[str, Block] = {}
    for block in blocks:
        for key, value in block.markers:
            if key == "test-replace" and " -> " not in value:
                errors.append(f"{block.where}: test-replace needs 'OLD -> NEW', got {value!r}")
            elif key == "test-replace" and value.split(" -> ")[0] not in block.code:
                errors.append(f"{block.where}: test-replace text {value!r} is not in the block")
            elif key == "test-launch" and value != "torchrun":
                errors.append(f"{block.where}: test-launch must be 'torchrun', got {value!r}")
        if block.name is not None:
            if block.name in names:
                errors.append(
                    f"{block.where}: name {block.name!r} also at {names[block.name].where}"
                )
            names[block.name] = block
        for parent in block.values("continues"):
            earlier = names.get(parent)
            if earlier is None or earlier.page != block.page:
                errors.append(f"{block.where}: continues {parent!r}, no earlier block of the page")
    return blocks, errors


def chains() -> list[list[Block]]:
    """From each block that no other continues, back to the first block of its chain."""
    blocks, _ = collect()
    by_name = {b.name: b for b in blocks if b.name is not None}
    continued = {parent for b in blocks for parent in b.values("continues")}
    result = []
    for block in blocks:
        if block.name is not None and block.name in continued:
            continue
        chain = [block]
        while parents := chain[0].values("continues"):
            if parents[0] not in by_name or by_name[parents[0]] in chain:
                break
            chain.insert(0, by_name[parents[0]])
        result.append(chain)
    return result


def _code(block: Block) -> str:
    code = block.code
    for replacement in block.values("test-replace"):
        old, _, new = replacement.partition(" -> ")
        code = code.replace(old, new)
    return code


def _missing_packages(chain: list[Block]) -> list[str]:
    imported = {
        m.group(1)
        for block in chain
        for m in re.finditer(r"^\s*(?:from|import)\s+(\w+)", block.code, re.MULTILINE)
    }
    return sorted(name for name in imported if importlib.util.find_spec(name) is None)


# Every block runs as the reader would run it: the standard driver below pads each block
# with blank lines so that a traceback names the page and the page's own line numbers.
DRIVER = """
import json, sys
namespace = {"__name__": "__main__"}
for where, line, code in json.load(open(sys.argv[1], encoding="utf-8")):
    exec(compile("\\n" * (line - 1) + code, where, "exec"), namespace)
"""


# Wider code lines scroll sideways in the site's code boxes (1280-pixel window).
MAX_LINE = 88


def test_block_markers_are_well_formed() -> None:
    blocks, errors = collect()
    errors += [
        f"{b.where}: line {b.line + k} has {len(line)} > {MAX_LINE} characters"
        for b in blocks
        for k, line in enumerate(b.code.splitlines())
        if len(line) > MAX_LINE
    ]
    assert len(blocks) >= 10, f"found only {len(blocks)} Python blocks: is the reader broken?"
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("chain", chains(), ids=lambda chain: chain[-1].where)
def test_block_runs(chain: list[Block], tmp_path: Path) -> None:
    missing = _missing_packages(chain)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (an extra; CI installs them all)")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "MPLBACKEND": "Agg",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    if chain[-1].values("test-launch"):
        script = tmp_path / "script.py"
        script.write_text("".join(_code(b) for b in chain), encoding="utf-8")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", str(script),
        ]  # fmt: skip
    else:
        listing = tmp_path / "blocks.json"
        listing.write_text(
            json.dumps([[str(b.page.relative_to(REPO)), b.line, _code(b)] for b in chain]),
            encoding="utf-8",
        )
        command = [sys.executable, "-c", DRIVER, str(listing)]
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"{chain[-1].where} ran over {BLOCK_TIMEOUT} s: a docs block must run in seconds "
            f"(scale it down with a 'test-replace' marker and state its cost on the page)"
        )
    seconds = time.perf_counter() - start
    where = " -> ".join(b.where for b in chain)
    if result.returncode != 0:
        pytest.fail(
            f"the block(s) {where} failed ({seconds:.1f} s):\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-6000:]}",
            pytrace=False,
        )
