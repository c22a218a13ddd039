"""Sphinx configuration of the course's website; build it with ``python -m fedad_tutorial.exercises.site``.

Why Sphinx: MyST-NB renders notebooks with their stored outputs without executing them, Markdown pages (README,
docs/*.md) with the same parser, and autodoc renders the API reference from the package's docstrings, all in one
strict build (warnings are errors) with full-text search built in; sphinx-book-theme gives the book layout.
"""

import sys
from pathlib import Path

import fedad_tutorial

sys.path.insert(0, str(Path(__file__).parent))  # fedad_sphinx, the extension next to this file

project = "fedad-tutorial"
author = ""  # no byline in the footer
release = version = fedad_tutorial.__version__
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx_design", "sphinx_togglebutton",
              "fedad_sphinx"]

# The sources are staged by fedad_tutorial.exercises.site: chapters/ (cleaned copies of the solution notebooks),
# _notebooks/ (the committed notebook files, offered for download only), docs/, benchmarks/results/, figures/.
exclude_patterns = ["_notebooks/**", "figures/*.md"]  # figures/: images for the README and the pages
nb_execution_mode = "off"  # the stored outputs are the outputs: the site never runs a notebook
nb_output_stderr = "remove"  # library warnings and log lines (Ray, Flower) are noise on a page
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3  # README/docs link to #sections by their GitHub anchors

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# undoc-members: what the chapters call and what docstrings refer to is listed even without a docstring.
autodoc_default_options = {"exclude-members": "__init__, __new__", "ignore-module-all": True, "undoc-members": True}
# Every reference must resolve (-n), except those naming other projects' objects (np.ndarray, torch.Tensor,
# sklearn.ensemble.IsolationForest): the build is offline (no intersphinx inventories are downloaded), so they
# have no target here. Unqualified names and names in fedad_tutorial are checked.
# Type hints under ``from __future__ import annotations`` that autodoc cannot evaluate stay bare names
# (``Figure``, ``Path``): those are not checked either.
nitpick_ignore_regex = [("py:.*", r"(?!fedad_tutorial\.)\w+\.[\w.\s]+"), ("py:class", r"\w+")]

html_theme = "sphinx_book_theme"
html_title = "fedad-tutorial"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_show_sourcelink = False
html_theme_options = {
    "use_download_button": False,  # it would offer the cleaned page source; each chapter links its notebooks
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
