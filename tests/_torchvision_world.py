"""A pytest plugin that brings up the torchvision world (``-p _torchvision_world``).

Loaded before anything imports transformers, with ``.venv/torchvision-world`` on
``PYTHONPATH``: declares the schemas of torchvision's compiled operators (which
the registry's CUDA build cannot register beside the CPU torch; they are never
called) so that its Python transforms import, as on a user's machine with a
real torchvision. transformers then picks its torchvision-backed image
processors. ``tests/models/test_torchvision_families.py`` runs the family tests
of the torchvision-only families under it.
"""

import torch

SCHEMAS = [
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
]

_LIBRARY = torch.library.Library("torchvision", "DEF")
for _schema in SCHEMAS:
    _LIBRARY.define(_schema)

import torchvision  # noqa: E402, F401
