"""``.. markdown-include:: path``: the Markdown of a file, rendered as reStructuredText.

``benchmarks/README.md`` is the one record of the measured numbers; the docs show
it without a Markdown parser dependency. The subset that such a record uses is
converted: headings, paragraphs, lists, pipe tables, fenced code, and the inline
forms ``code``, **bold**, *emphasis* and [links](url), also where they run over
several lines of a paragraph or list item. Everything else in running text is
escaped, so no Markdown can produce reStructuredText markup by accident; a
``**`` or a backtick left unpaired is an error (the docs build treats warnings as
errors), never shown as raw markup.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

if TYPE_CHECKING:
    from sphinx.application import Sphinx

HEADING_MARKS = '-~^"'
# Languages whose lexer accepts any text (a failed highlight is a warning, so an error).
SAFE_LANGUAGES = {"bash", "sh", "shell", "console", "text"}
INLINE = re.compile(
    r"(?P<code>`+)(?P<code_text>.+?)(?P=code)"
    r"|\*\*(?P<bold>[^*]+)\*\*"
    r"|(?<![\w*])\*(?P<em>[^*\s][^*]*)\*(?![\w*])"
    r"|\[(?P<link_text>[^\]]+)\]\((?P<url>[^)\s]+)\)"
)
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
LIST_ITEM = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+")


class MarkdownError(ValueError):
    """Markdown that the converter would otherwise show as raw markup."""


def _escape(text: str) -> str:
    if "**" in text or "`" in text:
        raise MarkdownError(f"unpaired '**' or backtick in Markdown text: {text.strip()!r}")
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", text)


def inline(text: str) -> str:
    """Markdown inline markup of one line → reStructuredText, the rest escaped."""
    out, position = [], 0
    for match in INLINE.finditer(text):
        before = text[position : match.start()]
        out.append(_escape(before))
        # Inline markup must be delimited by non-word characters: "\ " joins it to a word.
        if before[-1:].isalnum():
            out.append("\\ ")
        if match.group("code"):
            out.append(f"``{match.group('code_text').strip()}``")
        elif match.group("bold"):
            out.append(f"**{_escape(match.group('bold'))}**")
        elif match.group("em"):
            out.append(f"*{_escape(match.group('em'))}*")
        else:
            label = match.group("link_text").replace("`", "").replace("<", "")
            out.append(f"`{label} <{match.group('url')}>`__")
        position = match.end()
        if text[position : position + 1].isalnum():
            out.append("\\ ")
    out.append(_escape(text[position:]))
    return "".join(out)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)]


def _cell(text: str) -> str:
    """One table cell: an empty cell is an escaped space, a leading "+ " is no bullet."""
    if not text:
        return "\\"
    return ("\\" if LIST_ITEM.match(text) else "") + inline(text)


def _table(rows: list[str]) -> list[str]:
    header, body = _cells(rows[0]), [_cells(r) for r in rows[2:]]
    width = len(header)
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for cells in [header, *body]:
        cells = (cells + [""] * width)[:width]
        first, *rest = [_cell(c) for c in cells]
        lines.append(f"   * - {first}")
        lines.extend(f"     - {cell}" for cell in rest)
    return [*lines, ""]


def _outside_fences(lines: list[str]) -> list[str]:
    """The lines that are not inside fenced code blocks (a "# comment" is no heading)."""
    outside, fence = [], ""
    for line in lines:
        marker = re.match(r"^\s*(```+|~~~+)", line)
        if fence:
            fence = "" if marker and marker.group(1).startswith(fence) else fence
        elif marker:
            fence = marker.group(1)
        else:
            outside.append(line)
    return outside


def markdown_to_rst(text: str) -> list[str]:
    """Convert Markdown text to reStructuredText lines (headings below the page title).

    A leading level-1 heading is dropped: the including page has the title.
    """
    lines = text.strip().splitlines()
    if lines and re.match(r"^#\s", lines[0]):
        lines = lines[1:]
    depths = sorted(
        {len(m.group(1)) for line in _outside_fences(lines) if (m := re.match(r"^(#+)\s", line))}
    )
    level = {depth: HEADING_MARKS[min(i, len(HEADING_MARKS) - 1)] for i, depth in enumerate(depths)}
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^\s*(```+|~~~+)\s*(\w*)", line)
        heading = re.match(r"^(#+)\s+(.*?)\s*#*\s*$", line)
        if fence:
            language = fence.group(2) if fence.group(2) in SAFE_LANGUAGES else "text"
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
                body.append(lines[i])
                i += 1
            out += ["", f".. code-block:: {language}", ""]
            out += [f"   {b}" if b.strip() else "" for b in body] + [""]
        elif heading:
            title = inline(heading.group(2))
            out += ["", title, level[len(heading.group(1))] * max(len(title), 3), ""]
        elif (
            line.lstrip().startswith("|") and i + 1 < len(lines) and TABLE_RULE.match(lines[i + 1])
        ):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out += ["", *_table(rows)]
            continue
        elif not line.strip():
            out.append("")
        else:
            # A paragraph or list item with its continuation lines, as one line, so that
            # inline markup may run over a line break.
            text, i = _logical_line(lines, i)
            if LIST_ITEM.match(text) and out and out[-1].strip() and not LIST_ITEM.match(out[-1]):
                out.append("")  # reStructuredText needs a blank line before a list.
            out.append(inline(text))
            continue
        i += 1
    return out


def _starts_block(line: str) -> bool:
    """Whether a line ends the paragraph before it (blank, heading, fence, table, item)."""
    return not line.strip() or bool(
        re.match(r"^\s*(```|~~~|#+\s|\|)", line) or LIST_ITEM.match(line)
    )


def _logical_line(lines: list[str], i: int) -> tuple[str, int]:
    """Line ``i`` joined with the lines that continue it, and the index after them."""
    text, i = lines[i].rstrip(), i + 1
    while i < len(lines) and not _starts_block(lines[i]):
        text, i = f"{text} {lines[i].strip()}", i + 1
    return text, i


class MarkdownInclude(Directive):
    """Insert the converted Markdown of a file (path relative to the document)."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[object]:
        env = self.state.document.settings.env
        relative, absolute = env.relfn2path(self.arguments[0])
        env.note_dependency(relative)
        path = Path(absolute)
        if not path.is_file():
            # The record is written by the benchmark scripts; a checkout may predate it.
            note = f"No results recorded yet: ``{self.arguments[0]}`` is not in this checkout."
            self.state_machine.insert_input(StringList([note, ""]), absolute)
            return []
        try:
            rst = markdown_to_rst(path.read_text(encoding="utf-8"))
        except MarkdownError as error:
            raise self.error(f"{relative}: {error}") from error
        self.state_machine.insert_input(StringList(rst), absolute)
        return []


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("markdown-include", MarkdownInclude)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
