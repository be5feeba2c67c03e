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
    "sphinx.ext.intersphinx",
    # Ships MathJax 3 into _static: the formulas render with no internet access.
    "sphinx-mathjax-offline",
    # benchmarks/README.md rendered on the benchmarks page (no Markdown parser needed).
    "markdown_include",
    # The gallery's figures, from a run of the example (docs/gallery/make_gallery.py).
    "gallery",
]

exclude_patterns = ["_build", "_inv", "gallery/_generated"]
root_doc = "index"
default_role = "code"

# autodoc: one entry per public object, in source order, signatures kept short
# (the types go to the parameter list, next to the shapes).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options = {"exclude-members": "forward, extra_repr"}
autosummary_generate = False

# Links to torch, Python and NumPy without internet: small local inventories written by
# docs/_inv/make_inventories.py (the projects' own objects.inv cannot be fetched offline).
INVENTORIES = "_inv"
intersphinx_mapping = {
    "torch": ("https://docs.pytorch.org/docs/stable/", f"{INVENTORIES}/torch.inv"),
    "python": ("https://docs.python.org/3/", f"{INVENTORIES}/python.inv"),
    "numpy": ("https://numpy.org/doc/stable/", f"{INVENTORIES}/numpy.inv"),
}
intersphinx_disabled_reftypes = ["std:doc"]

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = ["Shape"]

html_theme = "furo"
html_title = f"contrast_attn {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
# The repository (pyproject.toml's Homepage): an icon in the footer and a "view this
# page's source" link on every page.
REPOSITORY = "https://github.com/contrast-attn/contrast_attn"
GITHUB_ICON = (
    '<svg stroke="currentColor" fill="currentColor" stroke-width="0" viewBox="0 0 16 16">'
    '<path fill-rule="evenodd" d="M8 0C3.58 0 0 3.58 0 8c0 3.54 2.29 6.53 5.47 7.59.4.07.55-.17'
    ".55-.38 0-.19-.01-.82-.01-1.49-2.01.37-2.53-.49-2.69-.94-.09-.23-.48-.94-.82-1.13-.28-.15"
    "-.68-.52-.01-.53.63-.01 1.08.58 1.23.82.72 1.21 1.87.87 2.33.66.07-.52.28-.87.51-1.07-1.78"
    "-.2-3.64-.89-3.64-3.95 0-.87.31-1.59.82-2.15-.08-.2-.36-1.02.08-2.12 0 0 .67-.21 2.2.82.64"
    "-.18 1.32-.27 2-.27.68 0 1.36.09 2 .27 1.53-1.04 2.2-.82 2.2-.82.44 1.1.16 1.92.08 2.12.51"
    ".56.82 1.27.82 2.15 0 3.07-1.87 3.75-3.65 3.95.29.25.54.73.54 1.48 0 1.07-.01 1.93-.01 2.2"
    ' 0 .21.15.46.55.38A8.013 8.013 0 0016 8c0-4.42-3.58-8-8-8z"></path></svg>'
)
html_theme_options = {
    "sidebar_hide_name": False,
    "navigation_with_keys": True,
    "source_repository": f"{REPOSITORY}/",
    "source_branch": "main",
    "source_directory": "docs/",
    "footer_icons": [
        {"name": "GitHub", "url": REPOSITORY, "html": GITHUB_ICON, "class": ""},
    ],
}
