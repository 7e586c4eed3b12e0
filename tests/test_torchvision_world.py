"""Both torchvision worlds: skvlm loads and extracts the same with and without it.

The development machines have no usable torchvision (the registry's build needs
CUDA operators beside the CPU torch), so the tests elsewhere run in the world
without it, where transformers uses its PIL image processors and skvlm stands
in for the video processors. Here a subprocess runs with the torchvision of
``requirements/torchvision.txt`` (installed by ``make install`` into
``.venv/torchvision-world``): its compiled operators are declared (never
called) so its Python transforms import, as on a user's machine with a real
torchvision, where transformers picks its torchvision image and video
processors. The processor outputs and every stage's features must match the
torchvision-free world.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skvlm import VLMEmbeddingTransformer
from skvlm.testing import make_tiny_qwen2_vl, make_tiny_smolvlm, random_images

WORLD = Path(sys.prefix) / "torchvision-world"
pytestmark = pytest.mark.skipif(
    not (WORLD / "torchvision").is_dir(),
    reason=f"no torchvision world at {WORLD} (make install creates it)",
)
BUILDERS = {"qwen2_vl": make_tiny_qwen2_vl, "smolvlm": make_tiny_smolvlm}

# Runs in the subprocess: declare torchvision's compiled operators, then load
# through skvlm exactly as a user would.
CHILD = r"""
import json, sys
import numpy as np
import torch

library = torch.library.Library("torchvision", "DEF")
for schema in [
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
    " SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
]:
    library.define(schema)
import torchvision  # noqa: F401
from transformers.utils import is_torchvision_available

from skvlm import VLMEmbeddingTransformer
from skvlm.models import load_adapter

path, images_file, out = sys.argv[1:4]
assert is_torchvision_available()
stored = np.load(images_file)
images = [stored[name] for name in stored.files]
adapter = load_adapter(path, device="cpu", dtype="float32")
processor = adapter.processor
kinds = {
    "image_processor": type(processor.image_processor).__name__,
    "video_processor": type(getattr(processor, "video_processor", None)).__name__,
}
features = {}
for stage in ("vision", "language"):
    vlm = VLMEmbeddingTransformer(path, stage=stage, layer=-1, pooling="mean",
                                  batch_size=2, device="cpu", dtype="float32")
    features[stage] = vlm.fit_transform(images)
np.savez(out, **features)
print(json.dumps(kinds))
"""


# Images whose size the processor keeps give the same pixels in both worlds, so the
# same features to float32 rounding. Where it resizes (Qwen's other sizes,
# SmolVLM's global view), torchvision's and PIL's interpolation differ slightly
# (measured on these tiny random models: up to 4e-3 in features).
CASES = [
    ("qwen2_vl", ((32, 32), (64, 64), (48, 48)), 1e-5),
    ("qwen2_vl", ((40, 50), (30, 64)), 1e-2),
    ("smolvlm", ((32, 32), (64, 64), (40, 50)), 1e-2),
]


@pytest.mark.parametrize(("family", "sizes", "atol"), CASES)
def test_with_and_without_torchvision_give_the_same_features(
    family, sizes, atol, tmp_path
):
    path = BUILDERS[family](tmp_path / family)
    images = random_images(len(sizes), seed=1, sizes=sizes)
    arrays = [np.asarray(image) for image in images]
    np.savez(tmp_path / "images.npz", *arrays)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORLD), os.getcwd()])}
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(tmp_path / "images.npz"),
            str(tmp_path / "out.npz"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    kinds = json.loads(child.stdout.strip().splitlines()[-1])
    # With torchvision, transformers uses its torchvision-backed processors.
    assert not kinds["image_processor"].endswith("Pil"), kinds
    assert kinds["video_processor"] not in ("NoneType", "MissingVideoProcessor"), kinds
    with_torchvision = np.load(tmp_path / "out.npz")
    for stage in ("vision", "language"):
        vlm = VLMEmbeddingTransformer(
            path,
            stage=stage,
            layer=-1,
            pooling="mean",
            batch_size=2,
            device="cpu",
            dtype="float32",
        )
        without = vlm.fit_transform(arrays)
        np.testing.assert_allclose(
            with_torchvision[stage],
            without,
            rtol=0,
            atol=atol,
            err_msg=f"{family}, stage {stage}",
        )
