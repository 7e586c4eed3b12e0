"""Sphinx configuration for skvlm's documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import skvlm  # noqa: E402

project = "skvlm"
author = "skvlm developers"
copyright = "2026, skvlm developers"
release = skvlm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

# The example gallery: examples/plot_*.py run on the shipped tiny models (offline,
# seconds each) and their figures go into the pages. The output folder starts
# with "_" so that tests/test_docs_examples.py does not collect generated pages.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "_gallery",
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "write_computation_times": False,
    "remove_config_comments": True,
    "min_reported_time": 1000,
}

autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "inherited-members": False,
    "exclude-members": "set_fit_request, set_partial_fit_request, set_score_request, set_transform_request, set_predict_request, set_output",
}
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

templates_path = ["_templates"]
exclude_patterns = ["_build", "dev", "generated/*.examples"]
html_theme = "alabaster"
html_static_path = ["_static"]
html_theme_options = {
    "description": "scikit-learn estimators for vision-language models"
}
nitpicky = False
suppress_warnings = ["autosummary.import_cycle"]

# Cross-references to these projects are resolved offline: no inventory is fetched.
intersphinx_mapping = {}
