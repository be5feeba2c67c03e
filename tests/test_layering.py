"""The package's layering: no module reaches into another module's private names.

The rule, checked on the source of every module of ``contrast_attn``:

* ``from M import name`` (relative or absolute, M inside ``contrast_attn``) may
  import a private *module* (``from .. import _checks``, ``from .._rows import
  contrastive_rows``), but never an underscore name defined in another module
  (``from .guidance import _area_resize`` fails);
* an imported ``contrast_attn`` module's underscore attributes are not used
  either (``_checks._describe(...)`` fails).

Dunder names (``__version__``) are public by convention and allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "contrast_attn"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split("."))
    root = PACKAGE.parent
    return (root / relative).with_suffix(".py").is_file() or (
        root / relative / "__init__.py"
    ).is_file()


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _violations(path: Path, source: str | None = None) -> list[str]:
    """The rule's violations in ``path`` (or in ``source``, read as if it were that file)."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text)
    found = []
    module_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(path, node)
            if not source.startswith("contrast_attn"):
                continue
            for alias in node.names:
                if _is_module(f"{source}.{alias.name}"):
                    module_aliases.add(alias.asname or alias.name)
                elif _private(alias.name):
                    found.append(f"{path.name}:{node.lineno} imports {source}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("contrast_attn"):
                    module_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and _private(node.attr)
        ):
            found.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    violations = [v for path in files for v in _violations(path)]
    assert not violations, "private names used across modules:\n" + "\n".join(violations)


def test_the_rule_catches_what_it_forbids() -> None:
    # The checker itself, on a probe placed in functional/: a private function and a
    # private attribute of an imported module are caught, a private module is not.
    source = (
        "from .. import _checks\n"
        "from .._rows import contrastive_rows\n"
        "from .guidance import _hidden\n"
        "x = _checks._describe\n"
    )
    found = _violations(PACKAGE / "functional" / "probe.py", source)
    assert len(found) == 2, found
    assert any("contrast_attn.functional.guidance._hidden" in v for v in found), found
    assert any("_checks._describe" in v for v in found), found
