"""Sphinx configuration of the polystore documentation (built by ``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Document the working tree, also when it is not installed into the environment.
sys.path.insert(0, str(ROOT))

import polystore  # noqa: E402  (found through the path set just above)

project = "polystore"
author = "the polystore developers"
copyright = "the polystore developers"
release = version = polystore.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    # Only to include sections of README.md (Markdown) into the pages, so the
    # two never drift apart; the pages themselves are reStructuredText.
    "myst_parser",
]

exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext"}
# `name` renders as inline code, in the pages as in the included Markdown.
default_role = "literal"

html_theme = "furo"
html_title = "polystore"
html_static_path: list[str] = []

# The docstrings are numpydoc.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Public names are documented where users import them (polystore.DiskBackend),
# not under the private modules they are defined in.
add_module_names = True

myst_heading_anchors = 2
