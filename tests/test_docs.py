"""The documentation stays in step with the code.

The pages are read as reStructuredText, without a Sphinx build (CI builds the
site with warnings as errors):

- every name in ``contrast_attn.__all__``, and in the ``__all__`` of each public
  sub-module it lists (``functional``, ``distributed``), has an autodoc (or
  ``module``) directive on an API page, and every documented name exists;
- (every Python block of the pages runs as pasted: ``tests/test_docs_blocks.py``);
- the "own data" tutorial documents the example's own flags and no flag ``run.py`` lacks;
- the example's defaults quoted by the paper page, the guides and the tutorials are
  those of its ``Config``, and so is every :math:`\\lambda_g` or :math:`\\lambda_r` a page quotes;
- ``benchmarks/README.md``, as the benchmarks page renders it, is clean markup.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import re
import types
from pathlib import Path

import pytest

import contrast_attn

DOCS = Path(__file__).resolve().parents[1] / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.rst"))

# ".. autofunction:: name", ".. py:class:: name(args)", ".. module:: name", ...
DIRECTIVE = re.compile(
    r"^\.\.\s+(?:py:)?(auto)?(module|currentmodule|function|class|data|exception|attribute)"
    r"::\s+([\w.]+)",
    re.MULTILINE,
)


def documented_names() -> tuple[set[str], set[str]]:
    """``(objects, modules)``: the fully qualified names the API pages document.

    A bare name is qualified by the page's current module, as Sphinx does.
    """
    objects: set[str] = set()
    modules: set[str] = set()
    for page in API_PAGES:
        current = ""
        for _, kind, name in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            if kind in ("module", "currentmodule"):
                current = name
                if kind == "module":
                    modules.add(name)
                continue
            qualified = name if name.startswith("contrast_attn") else f"{current}.{name}"
            objects.add(qualified)
    return objects, modules


def public_names() -> list[str]:
    """Every public name: ``contrast_attn.X`` and the members of public sub-modules."""
    names = []
    for name in contrast_attn.__all__:
        value = getattr(contrast_attn, name)
        names.append(f"contrast_attn.{name}")
        if isinstance(value, types.ModuleType):
            names.extend(f"{value.__name__}.{member}" for member in getattr(value, "__all__", ()))
    return names


def test_api_pages_exist() -> None:
    assert API_PAGES, f"no API reference pages found under {DOCS / 'api'}"


@pytest.mark.parametrize("name", public_names())
def test_public_symbol_in_api_reference(name: str) -> None:
    objects, modules = documented_names()
    *parent, last = name.split(".")
    is_module = isinstance(
        getattr(importlib.import_module(".".join(parent)), last), types.ModuleType
    )
    documented = modules if is_module else objects
    assert name in documented, (
        f"{name} is public (in __all__) but missing from the API reference: add a "
        f"'.. auto{'module' if is_module else 'function/class/data'}:: {name}' directive to "
        f"a page under docs/api/"
    )


def test_documented_names_exist() -> None:
    objects, modules = documented_names()
    for name in sorted(objects | modules):
        module_name, _, attribute = name.rpartition(".")
        if name in modules:
            importlib.import_module(name)
            continue
        assert hasattr(importlib.import_module(module_name), attribute), (
            f"the API reference documents {name}, which does not exist"
        )


def test_benchmark_record_converts_to_clean_rst() -> None:
    """benchmarks/README.md, as the docs show it, parses without a single warning."""
    docutils_core = pytest.importorskip("docutils.core")
    readme = DOCS.parent / "benchmarks" / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} not written yet")
    spec = importlib.util.spec_from_file_location(
        "markdown_include", DOCS / "_ext" / "markdown_include.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rst = "\n".join(module.markdown_to_rst(readme.read_text(encoding="utf-8")))
    docutils_core.publish_doctree(
        "Benchmarks\n==========\n\n" + rst,
        settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": False},
    )


def test_every_example_flag_is_documented() -> None:
    """The "own data" tutorial documents ``run.py``'s own options and only flags that exist."""
    pytest.importorskip("torchvision")
    run = importlib.import_module("examples.deep_pneumonia.run")
    tutorial = (DOCS / "tutorials" / "own_data.rst").read_text(encoding="utf-8")
    settings = {f.name for f in dataclasses.fields(run.Config)}
    flags = {
        option: action.dest
        for action in run.build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    own = [flag for flag, dest in flags.items() if dest not in settings]
    missing = [flag for flag in own if f"``{flag}" not in tutorial]
    assert not missing, f"docs/tutorials/own_data.rst does not document {missing}"
    named = set(re.findall(r"``(--[a-z][a-z-]*[a-z])(?![A-Za-z-])", tutorial))
    unknown = sorted(named - set(flags))
    assert not unknown, f"docs/tutorials/own_data.rst documents flags run.py lacks: {unknown}"


def test_example_defaults_in_the_docs_are_the_configs() -> None:
    """The defaults the paper page, the attention guide and the tutorial quote are the code's."""
    pytest.importorskip("torchvision")
    cfg = importlib.import_module("examples.deep_pneumonia.config").Config()

    def number(value: float) -> str:
        return f"{value:g}"

    quotes = {
        "paper.rst": [
            rf":math:`\lambda_g = {number(cfg.guidance_weight)}`",
            rf":math:`\lambda_r = {number(cfg.regularizer_weight)}`",
            f"teacher\nforcing {number(cfg.teacher_forcing)}".replace("\n", " "),
            f"0.{str(cfg.cb_beta)[2:]} in the example",
        ],
        "guide/attention.rst": [
            f"stage {cfg.feature_stage}, hard gate without residual, teacher forcing"
            f" {number(cfg.teacher_forcing)}",
            f"starts at {number(cfg.initial_attention)} and learns at"
            f" {number(cfg.attention_lr_scale)}×",
            f"guidance weight\n  {number(cfg.guidance_weight)})",
        ],
        "guide/regularizer.rst": [
            rf"the example uses :math:`\lambda_r = {number(cfg.regularizer_weight)}`, with"
            rf" :math:`\lambda_g = {number(cfg.guidance_weight)}` for the guidance loss",
        ],
        "tutorials/attention_backbone.rst": [
            f"+ {cfg.guidance_weight!r} * guidance(model.attention.last_logits",
            f"+ {cfg.regularizer_weight!r} * regularizer(features",
            rf"the example's defaults, :math:`\lambda_g = {number(cfg.guidance_weight)}`",
            rf":math:`\lambda_r = {number(cfg.regularizer_weight)}` for the regulariser",
        ],
        "tutorials/own_data.rst": [
            rf":math:`\lambda_g` (default {number(cfg.guidance_weight)})",
            rf":math:`\lambda_r` (default {number(cfg.regularizer_weight)})",
            f"(default {cfg.epochs}) and pre-training (default {cfg.pretrain_epochs}) epochs",
            f"default {cfg.batch_size})",
            f"(default {cfg.image_size})",
            f"``{cfg.arch}`` (default)",
            f"its number of images (default {cfg.phantom_images})",
        ],
    }
    for page, expected in quotes.items():
        text = " ".join((DOCS / page).read_text(encoding="utf-8").split())
        for quote in expected:
            assert " ".join(quote.split()) in text, f"docs/{page} does not say {quote!r}"


def test_every_quoted_loss_weight_is_the_configs() -> None:
    """Wherever a page writes :math:`\\lambda_g = x` or :math:`\\lambda_r = x`, x is the default."""
    pytest.importorskip("torchvision")
    cfg = importlib.import_module("examples.deep_pneumonia.config").Config()
    default = {"g": cfg.guidance_weight, "r": cfg.regularizer_weight}
    quoted = re.compile(r"\\lambda_([gr])`?\s*(?:=|\(default)\s*([0-9.]+[0-9])")
    wrong = []
    for page in sorted(DOCS.rglob("*.rst")):
        text = " ".join(page.read_text(encoding="utf-8").split())
        for weight, value in quoted.findall(text):
            if float(value) != default[weight]:
                wrong.append(f"{page.relative_to(DOCS)}: lambda_{weight} = {value}")
    assert not wrong, f"pages quote other defaults than the example's Config: {wrong}"


def test_tiling_constants_match_the_docs() -> None:
    """The automatic dense/tiled switch and the tile size the pages quote are the code's."""
    from contrast_attn import _tiled
    from contrast_attn.functional import contrastive

    side = math.isqrt(contrastive.DENSE_MAX_PAIRS)
    assert side * side == contrastive.DENSE_MAX_PAIRS
    for page in ("guide/contrastive.rst", "tutorials/scale.rst", "changelog.rst"):
        text = (DOCS / page).read_text(encoding="utf-8")
        assert f":math:`{side}^2`" in text, f"docs/{page} quotes another dense/tiled threshold"
    scale = (DOCS / "tutorials" / "scale.rst").read_text(encoding="utf-8")
    assert f"about {_tiled.TILE_BYTES >> 20} MiB" in scale


def test_repository_version_and_citation_agree() -> None:
    """The theme's repository link, CITATION.cff and the citation page name one repository."""
    root = DOCS.parent
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    homepage = re.search(r'^Homepage = "([^"]+)"', pyproject, re.MULTILINE)
    assert homepage, "pyproject.toml has no Homepage URL"
    url = homepage.group(1)
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    assert f'REPOSITORY = "{url}"' in conf, "docs/conf.py links another repository"
    cff = (root / "CITATION.cff").read_text(encoding="utf-8")
    assert f'repository-code: "{url}"' in cff
    assert f"version: {contrast_attn.__version__}" in cff, "CITATION.cff has another version"
    citation = (DOCS / "citation.rst").read_text(encoding="utf-8")
    assert f"url     = {{{url}}}" in citation
    assert f"version = {{{contrast_attn.__version__}}}" in citation
    rtd = (root / ".readthedocs.yaml").read_text(encoding="utf-8")
    assert "configuration: docs/conf.py" in rtd and "fail_on_warning: true" in rtd


def test_inventories_are_the_scripts_output() -> None:
    """docs/_inv/*.inv are what docs/_inv/make_inventories.py writes (no hand edits, no drift)."""
    spec = importlib.util.spec_from_file_location(
        "make_inventories", DOCS / "_inv" / "make_inventories.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for project, (_, version, entries) in module.INVENTORIES.items():
        path = DOCS / "_inv" / f"{project}.inv"
        assert path.read_bytes() == module.inventory(project, version, entries), (
            f"{path} is stale: run python docs/_inv/make_inventories.py"
        )
