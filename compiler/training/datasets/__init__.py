"""Datasets for training without a network: real data, seeded generators, user files.

The three real datasets are scikit-learn's bundled copies (``sklearn.datasets.load_*``,
installed with it, read offline); moons, circles, gaussians, swiss_roll and regression are
scikit-learn's ``make_*`` generators with ``random_state=seed``, so the arrays are the ones
users know from scikit-learn.  The rest (spirals, margin blobs, linreg, patterns, toy
sequences), which no library provides, are generated from ``np.random.default_rng(seed)``.
sklearn is imported inside the loaders only (cold start of ``dlc check`` stays lean).

Entry points
------------
``load(name_or_path, *, seed=0, **options) -> Dataset``
    A registered name (see ``DATASETS``; case-insensitive, ``-`` may replace ``_``)
    or a path to a ``.npz`` / ``.csv`` file.  Raises ``DatasetError`` for unknown
    names (with a did-you-mean suggestion), bad options (naming the option and
    listing the valid ones) and unreadable files.
``Dataset``
    ``fields`` (dict of arrays sharing their leading length ``n``), ``description``,
    ``classes`` (number of classes of the label field, or ``None``), ``label`` (name
    of the label field, usually ``"y"``, or ``None``), ``meta`` (extra facts that are
    not per-sample, e.g. class names or the true separating direction of ``blobs``).
    ``split(fractions, seed=, stratify=)`` and ``batches(batch_size, seed=, epoch=)``
    are deterministic, so training can be resumed at any (epoch, batch).
``DATASETS``
    Registry ``name -> DatasetInfo`` with a one-line ``description``, the ``fields``
    produced and the accepted ``options`` (with defaults).  ``describe()`` renders it.

Conventions: real-valued arrays are float32, class labels (and token ids) int64, masks and
0/1 adjacency matrices bool.

Real data (scikit-learn's bundled copies)
-----------------------------------------
digits         x [1797,64] float32 in [0,1] (pixels 0..16 divided by 16), y [1797] int64 0..9.
               Options: image=False (True: x is [1797,1,8,8]).  classes=10.
iris           x [150,4] float32 (cm), y [150] int64 0..2.  classes=3.
               Options: standardize="none" ("train" | "all" | "none"), split_seed=0.
breast_cancer  x [569,30] float32, y [569] int64 (0 malignant, 1 benign).  classes=2.
               Options: standardize="train" ("train" | "all" | "none"), split_seed=0.

``standardize="train"`` rescales every feature to zero mean / unit variance using the
statistics of the *training part only* of the canonical split
``Dataset.split((0.8, 0.1, 0.1), seed=split_seed)`` (non-stratified); the statistics
are recorded in ``meta["standardize"]``.  Splitting the loaded dataset again with the
default fractions and ``seed=split_seed`` therefore gives a train part whose
statistics are exactly those used, and validation/test parts that never leaked into
them.  If you split differently, load with ``standardize="none"`` and call
``val.standardize(using=train)`` etc. yourself.  ``"all"`` uses the whole dataset.

Generators (2-D point clouds; ``n`` = number of points)
-------------------------------------------------------
moons      x [n,2], y [n] in {0,1}.  n=500, noise=0.1.  (sklearn make_moons)
circles    x [n,2], y [n] (0 outer circle radius 1, 1 inner).  n=500, noise=0.05, factor=0.5
           (factor < 1).  (sklearn make_circles)
spirals    x [n,2], y [n] arm index.  n=600, arms=2, turns=1.5, noise=0.02.  classes=arms.
gaussians  x [n,2], y [n] component.  Mixture of ``n_components`` Gaussians with centres
           evenly spaced on a circle (the WGAN-GP "8 Gaussians").  n=1000,
           n_components=8, radius=2.0, std=0.02.  Components are balanced (sklearn
           make_blobs with these centres).
swiss_roll x [n,2], t [n] in [0,1] (position along the roll).  The (x, z) plane of
           sklearn's make_swiss_roll, x = scale*(u cos u, u sin u) + noise*N(0,1), u = 1.5*pi*(1+2t).
           n=1000, scale=0.1, noise=0.05 (final units).  classes=None.
blobs      x [n,dim], y [n] in {-1,+1} (int64; note: *not* 0/1).  Linearly separable
           through the origin: y * (w . x) >= margin for a unit vector w.
           n=200, dim=2, margin=0.5, spread=1.0.  meta: w (float64 unit vector),
           margin (the actual minimum, >= requested), radius R = max ||x||,
           mistake_bound = (R/margin)^2 (Novikoff).
patterns   x [n,dim] float32 of +-1 (random Hopfield memories, P(+1)=p).  n=10, dim=100, p=0.5.
linreg     x [n,features] float32 ~ N(0,1), y [n] float32 = x.w + b + noise*N(0,1) with w, b ~ N(0,1)
           (meta: w, b).  n=500, features=4, noise=0.1.  classes=None.
regression sklearn make_regression: x [n,features] ~ N(0,1), y = x.coef + bias + noise with coef
           100*U(0,1) on ``informative`` features (meta: w = coef, b).  n=500, features=4,
           informative=4, noise=0.1, bias=0.

Toy sequences (``n`` sequences of ``length`` steps, batch-first)
-----------------------------------------------------------------
sine     x [n,length,1], y [n,length,1] = x shifted one step ahead (next-step prediction)
         of sin(w*dt*t + phi) + noise with w ~ U(0.5, 2.0), phi ~ U(0, 2pi).
         n=512, length=50, dt=0.2, noise=0.0.  classes=None.
parity   x [n,length,1] float32 random bits, y [n] int64 parity (XOR) of the bits, or with
         running=True y [n,length] the parity of each prefix.  n=512, length=8.  classes=2.
adding   Hochreiter & Schmidhuber adding problem: x [n,length,2] (channel 0 values U(0,1),
         channel 1 exactly two markers, one in each half), y [n,1] float32 = sum of the two
         marked values.  n=512, length=50.  classes=None.
copy     Copy-memory task: x, y int64 tokens [n, 2*length+delay].  Input: ``length`` random
         symbols 1..symbols, delay-1 blanks (0), the delimiter (symbols+1), ``length``
         blanks.  Target: length+delay blanks, then the symbols.  n=512, length=10,
         delay=20, symbols=8.  classes=symbols+2.
ctc_frames  CTC reading task: x [n,4*max_labels,symbols+1] float32 frames (one-hot of the symbol
         sounding, 0 silence, + noise; zeros past x_len), labels [n,max_labels] int64 1..symbols
         0-padded past y_len, x_len [n], y_len [n] int64.  Repeats are separated by silence, so
         every sample has an alignment.  n=512, symbols=4, max_labels=4, noise=0.3.
         classes=symbols+1 (0 is the blank).
reverse  x [n,length] int64 symbols 1..symbols, y = x reversed.  n=512, length=6, symbols=6.
         classes=symbols+1 (0 free for a start symbol).
markov   x [n,length] int64 tokens 0..vocab-1 of a random sparse Markov chain (each token has
         ``branch`` successors, one of them token+1 mod vocab; Dirichlet(4) probabilities;
         the chain is fixed by the seed), y [n,length] = x one step ahead (next-token
         prediction; a masked LM reads x only).  n=512, length=16, vocab=8, branch=2.
         classes=vocab.  meta: transition, stationary, entropy_rate (the best mean
         next-token cross-entropy, nats).

Sets, graphs, text (``graphs.py``, ``text.py``)
-----------------------------------------------
sets     x [n,size,dim] sets of points, y [n] the class k of the spread 1 + k/2.  n=512,
         size=8, dim=2, classes=3.
sbm      one stochastic-block-model graph per sample: x [n,nodes,features], A [n,nodes,nodes]
         bool, the same edges as src/dst [n,edges] int64 (padded; edge [n,edges] bool marks
         real ones), y [n,nodes] block ids.  n=128, nodes=16, blocks=2, features=4,
         p_in=0.4, p_out=0.02, signal=0.6.
lowrank  x [n,features] near a rank-k subspace (meta: basis, scales).  n=512, features=6,
         rank=2, noise=0.1.
topics   skip-gram pairs center/context [n] int64 of a topical corpus (meta: vocab, topic of
         each word, unigram counts).  n=4096, topics=4, words=8, doc_length=20, window=2.

User files
----------
``*.npz``  every array becomes a field (all must share their leading length).  Floating and
           boolean arrays become float32, integer arrays int64.  Option ``label``: name of
           the label field ("auto": "y" if present); ``classes`` = max+1 of an integer label.
``*.csv``  header row, then numeric rows (comma-separated; option ``delimiter``).  Option
           ``label``: column name or 0-based index ("auto": a column named y / label /
           target / class if there is one; "none": no label).  Fields: x [N, columns-1]
           float32 and y [N] (int64 if all label values are integers >= 0, else float32).
           ``meta["columns"]`` lists the feature column names.
"""

from compiler.training.datasets import real, sequences, synthetic  # noqa: F401  (each registers its data sets)
from compiler.training.datasets import graphs, text  # noqa: F401,E402  (sets, graphs, a topic corpus)
from compiler.training.datasets.dataset import DEFAULT_FRACTIONS, Dataset, DatasetError
from compiler.training.datasets.loading import describe, load
from compiler.training.datasets.registry import DATASETS, DatasetInfo, Option

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "Option",
    "describe",
    "load",
    "DEFAULT_FRACTIONS",
]
