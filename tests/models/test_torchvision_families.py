"""The torchvision-only families' tests, run in the torchvision world.

transformers ships the image processors of some families (Llama 4,
Phi-4-multimodal, LFM2-VL, Kimi K2.5, the Inkling types...) only with its
torchvision backend, so their family cases (marked
``NEEDS_TORCHVISION`` in ``_families``) skip in the torchvision-free world the
suite runs in. Here a pytest subprocess runs exactly those cases with the
torchvision of ``requirements/torchvision.txt`` (``.venv/torchvision-world``,
its compiled operators declared by the ``_torchvision_world`` plugin), as on a
user's machine with torchvision: every stage exact against HF at batch sizes 1
and 4, the generative classifier and one tuner step per ``train``, the
registered stages, the refusal (naming family, stage and reason) of each
stage it cannot offer, and, for a windowed packed tower, that the test images
span several windows (``test_packed``). The families run in two chunks (``CHUNKS``), one
subprocess each (so pytest-xdist spreads them over its workers); a chunk fails
unless each of its families' cases ran and passed, so the support matrix's
"tested" cells for these families are earned here. A family enters by its
``torchvision`` flag in ``TINY_MODELS`` alone: the chunks are dealt from it.

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
from skvlm.testing import CLAIMED_RECIPES, TINY_MODELS, random_images

from ._families import BY_NAME, TORCHVISION_FAMILIES
from ._families_claimed import WINDOWED
from .test_family_classifiers import CLASSIFIED, TUNED

ROOT = Path(__file__).resolve().parents[2]
WORLD = Path(sys.prefix) / "torchvision-world"
# (timm's vision models run in tests/models/test_backbones.py)
NAMES = sorted(
    name
    for name, tiny in TINY_MODELS.items()
    if tiny.torchvision and tiny.kind == "vlm"
)
#: Every name a family case's id may hold.
ALL = sorted(set(TINY_MODELS) | set(BY_NAME))
FILES = [
    "tests/models/test_packed.py",
    "tests/models/test_vlm_families.py",
    "tests/models/test_family_classifiers.py",
    "tests/models/test_support_matrix.py",
    "tests/models/test_families_claimed.py",
]

#: One subprocess per xdist worker of ``make test`` (each pays its own start,
#: about 8 s of imports and collection): the hand-built families (Phi-4-
#: multimodal alone takes 20 s) in one, those built from a recipe (1 to 2 s
#: each) in the other.
CHUNKS = [
    chunk
    for chunk in (
        [name for name in NAMES if name not in CLAIMED_RECIPES],
        [name for name in NAMES if name in CLAIMED_RECIPES],
    )
    if chunk
]


def _expected(names):
    """The test ids that must pass in the torchvision world."""
    ids = set()
    for family in TORCHVISION_FAMILIES:
        if family.name not in names:
            continue
        for stage in family.poolings:
            ids.add(f"test_stage_equals_hf_at_batch_1_and_4[{family.name}-{stage}]")
    for name in names:
        ids.add(f"test_registered_stages_are_the_adapters[{name}]")
        if name in WINDOWED:
            ids.add(f"test_the_test_images_exceed_a_window[{name}]")
        stages = TINY_MODELS[name].stages
        for stage in {"vision", "projector", "language"} - set(stages):
            ids.add(f"test_a_stage_it_cannot_offer_says_why[{name}-{stage}]")
        if "language" not in stages:
            ids.add(f"test_a_family_without_language_stage_still_answers[{name}]")
        if name in CLASSIFIED:
            ids.add(f"test_generative_classifier[{name}]")
            if name in TUNED:
                ids.add(f"test_tuner_step_per_train[{name}]")
            else:
                ids.add(f"test_tuner_refuses_what_the_traits_refuse[{name}]")
    return ids


def _keyword(names, among=ALL):
    """A ``-k`` expression that selects these families' cases and none of the
    other ``among`` (``inkling2`` alone would also select ``inkling2_loop``)."""
    terms = []
    for name in names:
        longer = [other for other in among if other != name and name in other]
        terms.append(" and ".join([name, *(f"not {other}" for other in longer)]))
    return " or ".join(f"({term})" for term in terms)


def test_the_families_are_registered_and_in_the_matrix():
    assert sorted(f.name for f in TORCHVISION_FAMILIES) == NAMES
    recipes = {name for name, recipe in CLAIMED_RECIPES.items() if recipe.torchvision}
    assert {"llama4", "phi4_multimodal"} | recipes <= set(NAMES)
    assert sorted(name for chunk in CHUNKS for name in chunk) == NAMES


def test_keyword_selects_each_family_alone():
    among = ["inkling2", "inkling2_loop", "llama4"]
    assert _keyword(["inkling2"], among) == "(inkling2 and not inkling2_loop)"
    assert _keyword(["llama4", "inkling2_loop"], among) == (
        "(llama4) or (inkling2_loop)"
    )


@pytest.mark.skipif(
    not (WORLD / "torchvision").is_dir(),
    reason=f"no torchvision world at {WORLD} (make install creates it)",
)
@pytest.mark.parametrize("names", CHUNKS, ids="+".join)
def test_family_cases_pass_with_torchvision(names, tmp_path):
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
            _keyword(names),
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
    assert _expected(names) <= passed, sorted(_expected(names) - passed)


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
