"""The torchvision-free stand-ins of ``skvlm._transformers_compat``.

``PixtralProcessor`` (Mistral 3, LLaVA with a Pixtral tower) needs torchvision
in transformers 5.25; skvlm's stand-in must give exactly its inputs. Checked
twice: against the placeholder layout written out here by hand (one ``[IMG]``
per merged patch, ``[IMG_BREAK]`` after each row, ``[IMG_END]`` last), and
against transformers' own class run in a subprocess with torchvision (the
world of ``tests/test_torchvision_world.py``).
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import PixtralImageProcessorPil

from skvlm._transformers_compat import load_processor_without_torchvision
from skvlm.testing import make_tiny_llava_pixtral, make_tiny_mistral3, random_images

WORLD = Path(sys.prefix) / "torchvision-world"
BUILDERS = {"mistral3": make_tiny_mistral3, "llava_pixtral": make_tiny_llava_pixtral}
MERGE = {"mistral3": 2, "llava_pixtral": 1}
# Sizes the processor keeps (whole merged patches, <= 64 px), and sizes it
# resizes (rounded up to whole patches, or scaled down to 64 px first).
KEPT = ((48, 48), (64, 32), (32, 64), (32, 32))
RESIZED = ((40, 56), (80, 40), (20, 28))
PROMPT = "[IMG]what is it ?"
ATOL_RESIZED = 0.05


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def built(request, tmp_path_factory):
    name = request.param
    return name, BUILDERS[name](tmp_path_factory.mktemp(name))


def _layout(height, width, patch):
    row = ["[IMG]"] * (width // patch) + ["[IMG_BREAK]"]
    tokens = row * (height // patch)
    tokens[-1] = "[IMG_END]"
    return tokens


def test_stand_in_expands_each_image_as_written_out(built):
    name, path = built
    processor = load_processor_without_torchvision(str(path))
    assert type(processor).__name__ == "PixtralProcessor"
    processor = pickle.loads(pickle.dumps(processor))  # as joblib workers get it
    images = random_images(len(KEPT + RESIZED), seed=2, sizes=KEPT + RESIZED)
    patch = 8 * MERGE[name]
    own = PixtralImageProcessorPil(
        size={"longest_edge": 64}, patch_size={"height": patch, "width": patch}
    )
    for image in images:
        out = processor(images=[image], text=[PROMPT], return_tensors="pt")
        alone = own(images=[image], return_tensors="pt")
        height, width = alone["image_sizes"][0].tolist()
        assert height % patch == width % patch == 0 and max(height, width) <= 64
        np.testing.assert_array_equal(out["image_sizes"], alone["image_sizes"])
        np.testing.assert_array_equal(out["pixel_values"], alone["pixel_values"])
        tokens = processor.tokenizer.convert_ids_to_tokens(out["input_ids"][0])
        assert tokens == [*_layout(height, width, patch), "what", "is", "it", "?"]


def test_other_processors_needing_torchvision_say_so(tmp_path):
    (tmp_path / "processor_config.json").write_text(
        json.dumps({"processor_class": "SomeTorchvisionProcessor"})
    )
    with pytest.raises(ImportError, match="SomeTorchvisionProcessor.*torchvision"):
        load_processor_without_torchvision(str(tmp_path))


# Runs with torchvision: transformers' own PixtralProcessor, as a user has it.
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
from transformers import AutoProcessor

from skvlm.models import load_adapter

prompt, jobs = sys.argv[1], json.loads(sys.argv[2])
kinds = []
for path, images_file, out in jobs:
    stored = np.load(images_file)
    images = [stored[name] for name in stored.files]
    processor = AutoProcessor.from_pretrained(path)
    batch = processor(images=images, text=[prompt] * len(images), padding=True,
                      return_tensors="pt")
    np.savez(out, **{k: v.numpy() for k, v in batch.items()})
    adapter = load_adapter(path, device="cpu")  # skvlm takes transformers' own
    kinds.append([type(processor).__module__, type(processor.image_processor).__name__,
                  type(adapter.processor).__module__])
print(json.dumps(kinds))
"""
SIZES = {"kept": KEPT, "resized": RESIZED}


@pytest.fixture(scope="module")
def with_torchvision(tmp_path_factory):
    """transformers' own outputs, one subprocess for every (family, sizes)."""
    if not (WORLD / "torchvision").is_dir():
        pytest.skip(f"no torchvision world at {WORLD} (make install creates it)")
    tmp = tmp_path_factory.mktemp("with_torchvision")
    jobs, cases = [], {}
    for name, build in sorted(BUILDERS.items()):
        path = build(tmp / name)
        for key, sizes in SIZES.items():
            images = [
                np.asarray(im) for im in random_images(len(sizes), seed=2, sizes=sizes)
            ]
            np.savez(tmp / f"{name}-{key}.npz", *images)
            jobs.append(
                [
                    str(path),
                    str(tmp / f"{name}-{key}.npz"),
                    str(tmp / f"{name}-{key}-out.npz"),
                ]
            )
            cases[(name, key)] = (path, images, tmp / f"{name}-{key}-out.npz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORLD), os.getcwd()])}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, PROMPT, json.dumps(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    kinds = json.loads(child.stdout.strip().splitlines()[-1])
    return cases, kinds


def test_the_torchvision_world_runs_transformers_own_classes(with_torchvision):
    _, kinds = with_torchvision
    for module, image_processor, loaded in kinds:
        assert module.startswith("transformers.models.pixtral"), module
        assert loaded == module
        assert not image_processor.endswith("Pil"), image_processor


# Where the processor keeps an image's size, both worlds give the same pixels;
# where it resizes, torchvision's and PIL's bicubic differ (measured: up to
# 0.015 in normalised pixel values, about one grey level).
@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize(("key", "atol"), [("kept", 1e-6), ("resized", ATOL_RESIZED)])
def test_stand_in_equals_transformers_own_processor(with_torchvision, name, key, atol):
    path, images, out = with_torchvision[0][(name, key)]
    theirs = np.load(out)
    ours = load_processor_without_torchvision(str(path))(
        images=images, text=[PROMPT] * len(images), padding=True, return_tensors="pt"
    )
    assert sorted(theirs.files) == sorted(ours.keys())
    for field in ("input_ids", "attention_mask", "image_sizes"):
        np.testing.assert_array_equal(ours[field].numpy(), theirs[field], err_msg=field)
    difference = np.abs(ours["pixel_values"].numpy() - theirs["pixel_values"]).max()
    assert difference <= atol


def test_fuyu_processor_fails_without_torchvision_as_the_probe_says(tmp_path):
    """transformers 5.25's FuyuProcessor hands torch tensors to the PIL image
    processor's numpy patchify: every image fails without torchvision."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    from skvlm._transformers_compat import pil_image_processor_fails
    from skvlm.testing import make_tiny_fuyu

    if is_torchvision_available():
        pytest.skip("this world has torchvision")
    assert pil_image_processor_fails("llava") is None
    assert "FuyuImageProcessorPil" in pil_image_processor_fails("fuyu")
    processor = AutoProcessor.from_pretrained(make_tiny_fuyu(tmp_path))
    with pytest.raises(TypeError):
        processor(images=random_images(1), text=["a cat"], return_tensors="pt")
