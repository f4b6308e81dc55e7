"""Sphinx configuration of the course website (built by ``python lessons/build_site.py``).

The pages are the repository's README.md (the home page), lessons/README.md (the course's
index) and the twelve lessons as notebooks that build_site.py has converted with jupytext
and executed; myst-nb renders them without running anything again. Math is typeset in the
browser by MathJax 2.7 served from the site itself (the files of the jupyter-server-mathjax
package), so the pages need no network.
"""
import shutil
from pathlib import Path

import jupyter_server_mathjax

project = "tinydense: DenseNet from scratch"
author = "the tinydense authors"
copyright = "the tinydense authors (MIT licence)"

extensions = ["myst_nb"]
root_doc = "README"                       # the repository's README is the home page
exclude_patterns = ["lessons/downloads/**", "**.ipynb_checkpoints"]
nb_execution_mode = "off"                 # build_site.py has executed the notebooks
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]       # lessons may go from # to ### (exercise headings)

html_theme = "sphinx_book_theme"
html_title = "tinydense course"
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,          # the executed notebook, as shown on the page
    "use_fullscreen_button": False,
}
html_last_updated_fmt = None

# MathJax 2.7.9 from the site's own _static/mathjax/ (copied there after the build)
MATHJAX = Path(jupyter_server_mathjax.__file__).parent / "static"
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                "processEscapes": True, "processClass": "math|output_area", "ignoreClass": "document"},
    # the package ships the STIX-Web fonts only (as Jupyter's classic notebook configured it)
    "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web", "imageFont": None},
    "menuSettings": {"zoom": "None"},
}


def _copy_mathjax(app, exception):
    if exception is None and app.builder.format == "html":
        shutil.copytree(MATHJAX, Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.md"))


def setup(app):
    app.connect("build-finished", _copy_mathjax)
