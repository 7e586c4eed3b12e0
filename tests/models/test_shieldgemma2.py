"""ShieldGemma 2 served as Gemma 3 (skvlm.models._shieldgemma2).

Its stages are in the family matrix (``test_vlm_families.py``); here: the
prompt skvlm builds from a policy is the one HF's ``ShieldGemma2Processor``
builds for it, and the generative classifier's yes/no probabilities are HF's
own ``ShieldGemma2ForImageClassification`` output.
"""

import numpy as np
import torch
from transformers import AutoModelForImageClassification, AutoProcessor

from skvlm.classifiers import VLMGenerativeClassifier
from skvlm.models import load_adapter
from skvlm.testing._families_towers1 import POLICIES

NAME = "shieldgemma2"


def test_hf_processor_ignores_the_prompt(built):
    # why skvlm builds a Gemma3Processor: HF's own makes one row per policy
    processor = AutoProcessor.from_pretrained(built.path(NAME))
    image = built.images(NAME)[0]
    given = processor(images=[image], text=["<start_of_image> a cat"])
    assert len(given["input_ids"]) == len(POLICIES)
    assert given["input_ids"] == processor(images=[image])["input_ids"]


def test_prompt_is_hf_policy_prompt(built):
    adapter = load_adapter(built.path(NAME), device="cpu")
    examples = built.reference(NAME)
    images, prompts = built.images(NAME), built.prompts(NAME)
    batch = adapter.prepare(images, prompts)  # a padded batch of 4
    for i, example in enumerate(examples):
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        np.testing.assert_array_equal(ids.numpy(), example.facts["ids"])


def test_generative_classifier_is_hf_classifier(built):
    path = built.path(NAME)
    images = built.images(NAME)
    prompt = built.prompts(NAME)[0]
    clf = VLMGenerativeClassifier(
        path, class_names=["yes", "no"], prompt=prompt, answer_prefix="", device="cpu"
    ).fit(images[:2], [0, 1])
    # HF's own classifier on the same prompt, image by image
    classifier = AutoModelForImageClassification.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    want = []
    for image in images:
        inputs = processor(
            images=[image],
            custom_policies={"asked": prompt},
            policies=["asked"],
            return_tensors="pt",
        )
        with torch.no_grad():
            want.append(classifier(**inputs).probabilities[0].numpy())
    np.testing.assert_allclose(clf.predict_proba(images), np.stack(want), atol=1e-5)
