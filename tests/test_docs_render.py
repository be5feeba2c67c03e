"""The built site shows no raw markup.

The site is built with Sphinx into a temporary folder (offline, about 20 s), and the
visible text of every page (everything but code, literals, math and scripts) is
searched for markup that failed to convert: ``**``, double backticks, a role
written out (``:class:`X```) or a Markdown link. reStructuredText shows such text
verbatim, without a warning, when inline markup is nested (``**``x``**``) or not
delimited by spaces; the benchmarks page, converted from Markdown, is checked the
same way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RAW_MARKUP = re.compile(r"\*\*|``|:[a-z]+:`|\]\(http")
# Elements whose text is code or machinery, not prose.
SKIPPED = {"pre", "code", "script", "style", "math", "kbd", "samp", "tt", "svg"}


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class VisibleText(HTMLParser):
    """The prose a reader sees in a page's main content (``<article>``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, prose inside?)
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        # Code, math, highlighted blocks and signatures (``f(*args, **kwargs)``) are not prose.
        skipped = tag in SKIPPED or any(c.startswith(("math", "highlight", "sig")) for c in classes)
        inside = self.stack[-1][1] if self.stack else False
        self.stack.append((tag, (inside or tag == "article") and not skipped))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        if not self.stack or not self.stack[-1][1]:
            return
        # A parameter list names "**kwargs" in bold: a name, not markup.
        if self.stack[-1][0] == "strong" and re.fullmatch(r"\*{1,2}\w+", data):
            return
        self.text.append(data)


def _visible_text(html: str) -> str:
    parser = VisibleText()
    parser.feed(html)
    return "".join(parser.text)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    out = tmp_path_factory.mktemp("html")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(REPO / "docs"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"the docs did not build:\n{result.stderr[-6000:]}", pytrace=False)
    return out


def test_no_raw_markup_on_any_page(site: Path) -> None:
    pages = [
        p
        for p in sorted(site.rglob("*.html"))
        if not p.relative_to(site).parts[0].startswith("_") and p.name not in ("search.html",)
    ]
    assert len(pages) > 10, f"only {len(pages)} pages built"
    problems = []
    for page in pages:
        text = _visible_text(page.read_text(encoding="utf-8"))
        for line in text.splitlines():
            if match := RAW_MARKUP.search(line):
                problems.append(f"{page.relative_to(site)}: {match.group(0)!r} in {line.strip()!r}")
    assert not problems, "raw markup shows on the site:\n" + "\n".join(problems)


def test_the_checker_sees_raw_markup() -> None:
    """A nested span that reStructuredText leaves as text is found; code is not."""
    html = (
        "<article><p>**<code>gather=True</code> needs equal batches.**</p>"
        "<pre>x = a ** 2</pre><p>fine <code>**kwargs</code> <strong>**options</strong></p>"
        '<dl><dt class="sig sig-object">f(*args, **kw)</dt></dl></article>'
    )
    text = _visible_text(html)
    assert RAW_MARKUP.search(text).group(0) == "**"  # type: ignore[union-attr]
    assert "needs equal batches.**" in text
    assert not any(hidden in text for hidden in ("kwargs", "a ** 2", "options", "**kw"))


def test_torch_and_python_names_link_to_their_docs(site: Path) -> None:
    """intersphinx from the local inventories: type names link to pytorch.org and python.org."""
    page = (site / "api" / "functional.html").read_text(encoding="utf-8")
    assert 'href="https://docs.pytorch.org/docs/stable/tensors.html#torch.Tensor"' in page
    assert 'href="https://docs.python.org/3/library/functions.html#float"' in page
    scale = (site / "tutorials" / "scale.html").read_text(encoding="utf-8")
    assert "gather_with_grad" in scale


def test_gallery_page_shows_figures_or_the_command(site: Path) -> None:
    page = (site / "gallery" / "index.html").read_text(encoding="utf-8")
    generated = REPO / "docs" / "gallery" / "_generated"
    if (generated / "attention.png").is_file() and (generated / "metrics.json").is_file():
        assert "attention.png" in page and "macro-F1" in page
    else:
        assert "This build has no figures" in page and "make_gallery.py" in page
