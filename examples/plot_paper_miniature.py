"""
The paper in miniature: generating is worse than probing
========================================================

Zhang et al. (NeurIPS 2024) found that a generative VLM names classes far less
accurately than a linear probe on its own hidden states, and than CLIP
zero-shot. The same three measures on the shipped tiny models, with the
paper's scoring (an answer is right when it contains the true name).
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from skvlm import VLMEmbeddingTransformer
from skvlm.classifiers import (
    CLIPZeroShotClassifier,
    LinearProbeClassifier,
    VLMGenerativeClassifier,
    answer_is_correct,
)
from skvlm.datasets import load_digit_images

digits = load_digit_images(n_per_class=6, random_state=0)
names = list(digits.target_names)
X_train, X_test, y_train, y_test = train_test_split(
    digits.images,
    digits.target,
    test_size=0.5,
    stratify=digits.target,
    random_state=0,
)

# %%
# Open-ended answers of the tiny LLaVA, scored as the paper scores them.
llava = VLMGenerativeClassifier(
    "skvlm/tiny-llava",
    class_names=names,
    strategy="open_ended",
    max_new_tokens=8,
    device="cpu",
).fit(X_train, y_train)
answers = llava.generate(X_test)
open_ended = answer_is_correct(answers, [names[k] for k in y_test]).mean()
print(answers[:3])

# %%
# A linear probe on the same model's last hidden state (last token).
features = VLMEmbeddingTransformer(
    "skvlm/tiny-llava", stage="language", layer=-1, pooling="last", device="cpu"
).fit()
probe = LinearProbeClassifier(max_iter=200, random_state=0, device="cpu")
probe.fit(features.transform(X_train), y_train)
probe_accuracy = probe.score(features.transform(X_test), y_test)

# %%
# CLIP zero-shot with the paper's prompt.
clip = CLIPZeroShotClassifier(
    "skvlm/tiny-clip",
    class_names=names,
    templates=["A photo of a {}"],
    device="cpu",
).fit(X_train, y_train)
zero_shot = clip.score(X_test, y_test)

# %%
scores = {
    "LLaVA open-ended": open_ended,
    "LLaVA probe": probe_accuracy,
    "CLIP zero-shot": zero_shot,
}
fig, ax = plt.subplots(figsize=(5, 3))
ax.barh(list(scores), np.array(list(scores.values())) * 100)
ax.set_xlabel("accuracy on held-out digits (%)")
ax.set_xlim(0, 100)
fig.tight_layout()
