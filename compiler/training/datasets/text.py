"""A seeded synthetic topic corpus for word embeddings (notes 4.2).

Words belong to topics; every document draws its words from one topic (Zipf
frequencies inside a topic, so the unigram distribution is far from uniform) and
occasionally from the whole vocabulary. The samples are the skip-gram pairs
(center word, context word) within a window, so words of one topic share contexts
and their embeddings should end up close.
"""

from __future__ import annotations

import numpy as np

from compiler.training.datasets.dataset import Dataset
from compiler.training.datasets.registry import DATASETS, _float, _int, _register


@_register(
    "topics",
    "skip-gram (center, context) pairs from a synthetic corpus of topical documents",
    {"center": "[n] int64 word id", "context": "[n] int64 word id within the window"},
    {"n": _int(4096, "number of pairs", min=1), "topics": _int(4, "number of topics", min=1, max=256),
     "words": _int(8, "words per topic", min=1, max=4096),
     "doc_length": _int(20, "words per document", min=2), "window": _int(2, "context window", min=1),
     "noise": _float(0.05, "probability that a word is drawn from the whole vocabulary", min=0, max=1)},
    "generator",
)
def _topics(seed: int, *, n: int, topics: int, words: int, doc_length: int, window: int,
            noise: float) -> Dataset:
    rng = np.random.default_rng(seed)
    vocab = topics * words
    zipf = 1.0 / np.arange(1, words + 1)
    zipf /= zipf.sum()
    centers, contexts, have = [], [], 0
    offsets = [o for o in range(-window, window + 1) if o]
    while have < n:
        t = rng.integers(topics)
        doc = t * words + rng.choice(words, doc_length, p=zipf)
        stray = rng.random(doc_length) < noise
        doc[stray] = rng.integers(0, vocab, int(stray.sum()))
        for o in offsets:
            lo, hi = max(0, -o), min(doc_length, doc_length - o)
            centers.append(doc[lo:hi])
            contexts.append(doc[lo + o:hi + o])
            have += hi - lo
    c, v = np.concatenate(centers), np.concatenate(contexts)
    pick = rng.permutation(len(c))[:n]
    return Dataset({"center": c[pick].astype(np.int64), "context": v[pick].astype(np.int64)},
                   description=DATASETS["topics"].description, classes=None, label=None,
                   meta={"vocab": vocab, "topic": np.arange(vocab) // words,
                         "unigram": np.bincount(np.concatenate(contexts), minlength=vocab)})
