"""Sphinx configuration of the contrast_attn documentation.

Built offline (nothing is fetched at build time) and with warnings as errors in
CI: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import contrast_attn

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "contrast_attn"
author = "contrast_attn developers"
copyright = "contrast_attn developers, Apache License 2.0"
release = contrast_attn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    # Ships MathJax 3 into _static: the formulas render with no internet access.
    "sphinx-mathjax-offline",
    # benchmarks/README.md rendered on the benchmarks page (no Markdown parser needed).
    "markdown_include",
]

exclude_patterns = ["_build"]
root_doc = "index"
default_role = "code"

# autodoc: one entry per public object, in source order, signatures kept short
# (the types go to the parameter list, next to the shapes).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"exclude-members": "forward, extra_repr"}
autosummary_generate = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = ["Shape"]

html_theme = "furo"
html_title = f"contrast_attn {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "sidebar_hide_name": False,
    "navigation_with_keys": True,
}
