"""The torchvision-only families' tests, run in the torchvision world.

transformers ships the image processors of Llama 4 and Phi-4-multimodal only
with its torchvision backend, so their family cases (marked
``NEEDS_TORCHVISION`` in ``_families``) skip in the torchvision-free world the
suite runs in. Here a pytest subprocess runs exactly those cases with the
torchvision of ``requirements/torchvision.txt`` (``.venv/torchvision-world``,
its compiled operators declared by the ``_torchvision_world`` plugin), as on a
user's machine with torchvision: every stage exact against HF at batch sizes 1
and 4, the generative classifier and one tuner step per ``train``, the
registered stages, and, for a windowed packed tower, that the test images
span several windows (``test_packed``). This test fails unless each of them ran and passed, so the
support matrix's "tested" cells for these families are earned here.

Without torchvision, loading them fails with an error that names the family,
torchvision and the fix (tested below, in this world).
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from skvlm import VLMEmbeddingTransformer
from skvlm.testing import TINY_MODELS, random_images

from ._families import TORCHVISION_FAMILIES
from ._families_claimed import WINDOWED

ROOT = Path(__file__).resolve().parents[2]
WORLD = Path(sys.prefix) / "torchvision-world"
NAMES = sorted(name for name, tiny in TINY_MODELS.items() if tiny.torchvision)
FILES = [
    "tests/models/test_packed.py",
    "tests/models/test_vlm_families.py",
    "tests/models/test_family_classifiers.py",
    "tests/models/test_support_matrix.py",
]


def _expected():
    """The test ids that must pass in the torchvision world."""
    ids = set()
    for family in TORCHVISION_FAMILIES:
        for stage in family.poolings:
            ids.add(f"test_stage_equals_hf_at_batch_1_and_4[{family.name}-{stage}]")
    for name in NAMES:
        ids.add(f"test_registered_stages_are_the_adapters[{name}]")
        if name in WINDOWED:
            ids.add(f"test_the_test_images_exceed_a_window[{name}]")
        if TINY_MODELS[name].classifiers:
            ids |= {
                f"test_generative_classifier[{name}]",
                f"test_tuner_step_per_train[{name}]",
            }
    return ids


def test_the_families_are_registered_and_in_the_matrix():
    assert sorted(f.name for f in TORCHVISION_FAMILIES) == NAMES
    assert NAMES == [
        "fast_vlm",
        "gemma3n",
        "lfm2_vl",
        "llama4",
        "minimax_m3_vl",
        "molmo2",
        "muse_glimmer",
        "muse_spark",
        "perception_lm",
        "phi4_multimodal",
        "step3p7",
        "unlimited_ocr",
    ]


@pytest.mark.skipif(
    not (WORLD / "torchvision").is_dir(),
    reason=f"no torchvision world at {WORLD} (make install creates it)",
)
def test_family_cases_pass_with_torchvision(tmp_path):
    report = tmp_path / "junit.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(WORLD), str(ROOT / "tests"), str(ROOT)]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        ),
    }
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "_torchvision_world",
            "-p",
            "no:xdist",
            "-q",
            *FILES,
            "-k",
            " or ".join(NAMES),
            f"--junitxml={report}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    cases = ET.parse(report).getroot().iter("testcase")
    passed = {
        case.get("name")
        for case in cases
        if not any(c.tag in ("failure", "error", "skipped") for c in case)
    }
    assert _expected() <= passed, sorted(_expected() - passed)


@pytest.mark.parametrize("name", NAMES)
def test_without_torchvision_the_error_names_family_and_fix(name, tmp_path):
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        pytest.skip("this world has torchvision")
    try:
        path = TINY_MODELS[name].build(tmp_path / name)
    except ImportError as error:  # a timm tower: timm needs torchvision
        assert str(error).startswith(f"{name}: its vision tower is a timm model")
        return
    vlm = VLMEmbeddingTransformer(path, stage="language", device="cpu")
    with pytest.raises(
        ImportError, match=rf"^{name}: its image processor .*pip install torchvision"
    ):
        vlm.fit_transform(random_images(1))
