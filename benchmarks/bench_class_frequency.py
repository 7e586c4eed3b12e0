"""class_frequency on 1M short sentences and 1000 class names vs a naive loop."""

import re
import time

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

from skvlm.analysis import class_frequency

rng = np.random.default_rng(0)
vocab = np.array([f"w{i}" for i in range(20000)])
one = [f"w{i}" for i in rng.choice(20000, 800, replace=False)]
multi = [" ".join(vocab[rng.choice(20000, rng.integers(2, 4))]) for _ in range(200)]
classes = one + multi
n = 1_000_000
lengths = rng.integers(6, 16, n)
# Zipf-like word frequencies, as in real text.
p = 1.0 / np.arange(1, 20001)
p /= p.sum()
words = vocab[rng.choice(20000, lengths.sum(), p=p)]
cuts = np.cumsum(lengths)[:-1]
corpus = [" ".join(s) + "." for s in np.split(words, cuts)]
t = time.perf_counter()
counts = class_frequency(corpus, classes)
t_ours = time.perf_counter() - t
print(f"class_frequency: {n} sentences x {len(classes)} classes: {t_ours:.2f} s")
sub = corpus[:20000]
t = time.perf_counter()
cv = CountVectorizer(
    vocabulary=sorted(set(classes)),
    ngram_range=(1, 3),
    binary=True,
    token_pattern=r"(?u)[^\W_]+",
    lowercase=True,
)
ref = np.asarray(cv.transform(sub).sum(axis=0)).ravel()
t_cv = time.perf_counter() - t
ours_sub = class_frequency(sub, classes)
assert (ours_sub.groupby(level=0).first()[sorted(set(classes))].to_numpy() == ref).all()
print(
    f"CountVectorizer(binary, ngram 1-3) on 20k sentences: {t_cv:.2f} s "
    f"-> {t_cv * n / len(sub):.1f} s extrapolated to 1M; same counts"
)

sub2 = corpus[:2000]
t = time.perf_counter()
naive = [
    sum(
        bool(re.search(r"(?<![^\W_])" + re.escape(c) + r"(?![^\W_])", s.lower()))
        for s in sub2
    )
    for c in classes
]
t_naive = time.perf_counter() - t
print(
    f"naive regex loop classes x sentences on 2k sentences: {t_naive:.2f} s "
    f"-> {t_naive * n / len(sub2) / 60:.0f} min extrapolated to 1M"
)
assert naive == class_frequency(sub2, classes).tolist()
print(f"ratio naive / ours (extrapolated): {t_naive * n / len(sub2) / t_ours:.0f}x")
