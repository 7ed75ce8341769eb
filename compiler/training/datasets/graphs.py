"""Seeded generators of sets and graphs (notes 5.1, 5.2).

``sets``: one sample is a set of points; ``sbm``: one sample is a whole graph (a
stochastic block model), given both as a dense 0/1 adjacency and as a padded edge
list, so a dense GCN and an edge-list message-passing net read the same graphs.
"""

from __future__ import annotations

import numpy as np

from compiler.training.datasets.dataset import Dataset
from compiler.training.datasets.registry import DATASETS, _float, _int, _register


@_register(
    "sets",
    "sets of points, classified by their spread (a permutation-invariant task)",
    {"x": "[n,size,dim] float32", "y": "[n] int64 in 0..classes-1"},
    {"n": _int(512, "number of sets", min=1), "size": _int(8, "points per set", min=1),
     "dim": _int(2, "dimension of a point", min=1),
     "classes": _int(3, "number of classes (spreads 1, 1.5, 2, ...)", min=2, max=64)},
    "generator",
)
def _sets(seed: int, *, n: int, size: int, dim: int, classes: int) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    scale = 1.0 + 0.5 * y                     # class k: points ~ N(0, (1 + k/2)² I)
    x = rng.standard_normal((n, size, dim)) * scale[:, None, None]
    return Dataset({"x": x.astype(np.float32), "y": y.astype(np.int64)},
                   description=DATASETS["sets"].description, classes=classes,
                   meta={"scales": 1.0 + 0.5 * np.arange(classes)})


@_register(
    "sbm",
    "stochastic block model graphs for node classification (dense adjacency and edge list)",
    {"x": "[n,nodes,features] float32 (class mean + N(0,1) noise)",
     "A": "[n,nodes,nodes] bool (symmetric, no self-loops)",
     "src": "[n,edges] int64", "dst": "[n,edges] int64 (both directions of every edge)",
     "edge": "[n,edges] bool (false on padding)", "y": "[n,nodes] int64 block of each node"},
    {"n": _int(128, "number of graphs", min=1), "nodes": _int(16, "nodes per graph", min=2),
     "blocks": _int(2, "number of blocks (classes)", min=2, max=64),
     "features": _int(4, "node feature dimension (blocks past it have mean 0)", min=1),
     "p_in": _float(0.4, "edge probability inside a block", min=0, max=1),
     "p_out": _float(0.02, "edge probability across blocks", min=0, max=1),
     "signal": _float(0.6, "distance of a node's feature mean from the origin", min=0)},
    "generator",
)
def _sbm(seed: int, *, n: int, nodes: int, blocks: int, features: int, p_in: float,
         p_out: float, signal: float) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, blocks, (n, nodes))
    same = y[:, :, None] == y[:, None, :]
    upper = np.triu(rng.random((n, nodes, nodes)) < np.where(same, p_in, p_out), 1)
    adj = upper | upper.transpose(0, 2, 1)
    # class means on orthogonal directions (0 for blocks past `features`): a node's own
    # features are a weak signal that averaging over its block-mates strengthens
    means = signal * np.eye(max(features, blocks))[:blocks, :features]
    x = means[y] + rng.standard_normal((n, nodes, features))
    edges = max(int(adj.sum(axis=(1, 2)).max()), 1)   # padded to the densest graph
    src = np.zeros((n, edges), np.int64)
    dst = np.zeros((n, edges), np.int64)
    mask = np.zeros((n, edges), bool)
    for g in range(n):
        s, d = np.nonzero(adj[g])
        src[g, :len(s)], dst[g, :len(s)], mask[g, :len(s)] = s, d, True
    return Dataset({"x": x.astype(np.float32), "A": adj, "src": src, "dst": dst, "edge": mask,
                    "y": y.astype(np.int64)},
                   description=DATASETS["sbm"].description, classes=blocks, label=None,
                   meta={"edges": edges})


@_register(
    "lowrank",
    "zero-mean points near a k-dimensional subspace (PCA, linear autoencoders)",
    {"x": "[n,features] float32 = z diag(scales) Uᵀ + noise·N(0, I)"},
    {"n": _int(512, "number of samples", min=1), "features": _int(6, "dimension", min=1),
     "rank": _int(2, "dimension of the subspace", min=1),
     "noise": _float(0.1, "std of the isotropic noise", min=0)},
    "generator",
)
def _lowrank(seed: int, *, n: int, features: int, rank: int, noise: float) -> Dataset:
    # (kept with the graph generators: one module of small geometric generators)
    rng = np.random.default_rng(seed)
    rank = min(rank, features)
    basis, _ = np.linalg.qr(rng.standard_normal((features, rank)))
    scales = np.linspace(3.0, 1.5, rank)          # a clear gap above the noise
    x = (rng.standard_normal((n, rank)) * scales) @ basis.T + noise * rng.standard_normal((n, features))
    return Dataset({"x": x.astype(np.float32)}, description=DATASETS["lowrank"].description,
                   classes=None, label=None, meta={"basis": basis, "scales": scales})
