"""What the data audit finds in the embeddings: near duplicates, likely label errors, outliers.

- **Duplicates** (`duplicate_pairs`): ``exact`` is the same bytes
  (`tltool.data.duplicates`); ``near`` is a pair whose perceptual hashes are
  at most `Thresholds.near_bits` apart, or whose embeddings have a cosine
  similarity of at least `Thresholds.near_similarity` while their hashes are
  at most `Thresholds.loose_bits` apart (two photos of one scene from a
  different place embed alike, but hash apart). Candidates come from the
  groups of identical bytes and each image's `K_NEAR` nearest neighbours by
  hash (within `near_bits`) and in embedding space, so they stay linear in
  the images however alike those are. Pairs are grouped into clusters
  (connected components).
- **Label issues** (`label_issues`): out-of-fold probabilities of a k-fold
  logistic-regression probe on the L2-normalised embeddings, and confident
  learning (Northcutt et al., JAIR 2021) as cleanlab implements it
  (`cleanlab.filter.find_label_issues`: the confident joint, from per-class
  thresholds at the average self-confidence, says how many images of each
  class are mislabelled; that many of its least self-confident images are
  flagged, the paper's "prune by class": on `benchmarks/audit.py` recall
  0.861 at precision 0.912, against 0.806 at 0.892 pruning by noise rate and
  0.750 at 0.964 for both). The probe: C = 10 on normalised embeddings (C = 1
  gave 0.792 at 0.713, C = 100 0.764 at 0.846). cleanlab is the reference
  implementation of that paper, kept by its authors; writing it again would
  only add a copy to keep right. ``score`` is the self-confidence, the
  probability the probe gives the given label (lower is more likely wrong);
  ``suggested`` its most probable class. Multi-label data is refused here.
- **Outliers** (`outliers`): the mean cosine distance to an image's
  `K_OUTLIER` nearest neighbours, flagged above the median plus
  `Thresholds.outlier_z` robust standard deviations (1.4826 x MAD); its
  nearest class is the class whose mean embedding is closest.

Nearest neighbours are exact (scikit-learn, brute force on normalised
vectors) up to `EXACT_LIMIT` images; above, candidates come from a
128-dimension PCA of the embeddings and are scored again exactly.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tltool.data.duplicates import closest_hash_pairs, exact_groups, hash_array

EXACT_LIMIT = 20_000
K_NEAR, K_OUTLIER = 10, 5


@dataclass(frozen=True)
class Thresholds:
    near_similarity: float = 0.95
    near_bits: int = 6
    loose_bits: int = 16  # unrelated images are 32 +- 4 bits apart: 16 is four standard deviations below
    outlier_z: float = 6.0
    folds: int = 5


def normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def neighbours(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities) of each row's k nearest other rows, most similar first."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(unit) - 1)
    if k < 1:
        return np.zeros((len(unit), 0), int), np.zeros((len(unit), 0))
    space = unit
    if len(unit) > EXACT_LIMIT:  # approximate candidates, exact scores
        from sklearn.decomposition import PCA

        space = PCA(min(128, unit.shape[1]), random_state=0).fit_transform(unit)
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine" if space is unit else "euclidean",
                             algorithm="brute").fit(space)
    found = index.kneighbors(space, return_distance=False)
    found = np.array([[j for j in row if j != i][:k] for i, row in enumerate(found)])
    similarity = np.empty(found.shape, np.float32)
    for start in range(0, len(unit), 4096):  # a few MB at a time: unit[found] whole would be k times the embeddings
        part = slice(start, start + 4096)
        similarity[part] = np.einsum("nd,nkd->nk", unit[part], unit[found[part]])
    order = np.argsort(-similarity, axis=1, kind="stable")
    return np.take_along_axis(found, order, 1), np.take_along_axis(similarity, order, 1)


def duplicate_pairs(samples: list, infos: dict, unit: np.ndarray, near: tuple, limits: Thresholds) -> pd.DataFrame:
    """Every exact or near pair: path_a, path_b, split_a, split_b, cosine (of the embeddings), kind, cluster,
    bits.

    Candidates are the groups of identical bytes, each image's `K_NEAR` closest hashes within `near_bits` and its
    `K_NEAR` nearest embeddings, so they grow linearly with the images however alike those are (every pair of
    hashes within 16 bits is nearly every pair on X-rays or product shots).
    """
    found, _ = near
    hashes = hash_array([infos[s.path].phash for s in samples])
    sha1 = np.array([infos[s.path].sha1 for s in samples])
    same = _same_bytes(samples, infos)
    by_hash = closest_hash_pairs(hashes, limits.near_bits, K_NEAR)
    rows_of = np.repeat(np.arange(len(samples)), found.shape[1])
    i = np.concatenate([same[0], by_hash[0], np.minimum(rows_of, found.ravel())]).astype(np.int64)
    j = np.concatenate([same[1], by_hash[1], np.maximum(rows_of, found.ravel())]).astype(np.int64)
    i, j = np.unique(np.stack([i, j]), axis=1) if len(i) else (i, j)
    bits = np.bitwise_count(hashes[i] ^ hashes[j]).astype(int)
    cosine = _cosines(unit, i, j)
    exact = sha1[i] == sha1[j]
    kept = exact | (bits <= limits.near_bits) | ((cosine >= limits.near_similarity) & (bits <= limits.loose_bits))
    rows = [[a, b, round(float(c), 4), "exact" if e else "near", int(n)]
            for a, b, c, e, n in zip(i[kept], j[kept], cosine[kept], exact[kept], bits[kept])]
    return _with_clusters(rows, samples)


def _cosines(unit: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """unit[i] . unit[j] per pair, a few MB at a time (the pairs' rows whole would be 2 x 10 x the embeddings)."""
    out = np.empty(len(i), np.float32)
    for start in range(0, len(i), chunk):
        part = slice(start, start + chunk)
        out[part] = np.einsum("nd,nd->n", unit[i[part]], unit[j[part]])
    return out


def _same_bytes(samples: list, infos: dict) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, of every pair of files with the same bytes (`exact_groups`)."""
    index = {id(s): i for i, s in enumerate(samples)}
    pairs = [(index[id(a)], index[id(b)]) for group in exact_groups(samples, infos)
             for a, b in itertools.combinations(group, 2)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def _with_clusters(rows: list, samples: list) -> pd.DataFrame:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    columns = ["path_a", "path_b", "split_a", "split_b", "cosine", "kind", "cluster", "bits"]
    if not rows:
        return pd.DataFrame(columns=columns)
    a, b = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    graph = coo_matrix((np.ones(len(rows)), (a, b)), shape=(len(samples), len(samples)))
    _, component = connected_components(graph, directed=False)
    numbered = {c: n for n, c in enumerate(dict.fromkeys(component[a]))}
    table = pd.DataFrame([[samples[i].rel, samples[j].rel, samples[i].split, samples[j].split, sim, kind,
                           numbered[component[i]], bits] for (i, j, sim, kind, bits) in rows], columns=columns)
    return table.sort_values(["cluster", "path_a", "path_b"], kind="stable", ignore_index=True)


def label_issues(samples: list, classes: list[str], unit: np.ndarray,
                 limits: Thresholds) -> tuple[pd.DataFrame, str | None]:
    """The images whose label confident learning doubts: path, given, suggested, score (most doubtful first);
    and a note naming the classes too small to score (a class of one image cannot be held out of a probe that
    must still know it), or None."""
    from cleanlab.filter import find_label_issues

    counts = Counter(s.label for s in samples)
    small = [c for c in classes if 0 < counts[c] < 2]
    scored = [c for c in classes if counts[c] >= 2]
    note = f"not scored: {', '.join(small)} (fewer than 2 images)" if small else None
    if len(scored) < 2:
        return pd.DataFrame(columns=["path", "given", "suggested", "score"]), \
            "not looked for: fewer than 2 classes have 2 images or more"
    kept = [i for i, s in enumerate(samples) if s.label in scored]
    labels = np.array([scored.index(samples[i].label) for i in kept])
    probs = out_of_fold_probabilities(unit[kept], labels, limits.folds)
    # n_jobs=1: cleanlab would otherwise fork a pool from a process that has TensorFlow loaded.
    flagged = find_label_issues(labels, probs, filter_by="prune_by_class", return_indices_ranked_by="self_confidence",
                                n_jobs=1)
    table = pd.DataFrame([[samples[kept[i]].rel, scored[labels[i]], scored[int(np.argmax(probs[i]))],
                           round(float(probs[i, labels[i]]), 4)] for i in flagged],
                         columns=["path", "given", "suggested", "score"])
    return table, note


def out_of_fold_probabilities(unit: np.ndarray, labels: np.ndarray, folds: int) -> np.ndarray:
    """(N, classes) probabilities, each row from a probe that never saw that image; every class has 2 images or
    more, so that every fold's probe knows every class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    splits = max(2, min(folds, int(np.bincount(labels).min())))
    return cross_val_predict(LogisticRegression(C=10.0, max_iter=2000), unit, labels, method="predict_proba",
                             cv=StratifiedKFold(splits, shuffle=True, random_state=0), n_jobs=1)


def outliers(samples: list, classes: list[str], unit: np.ndarray, near: tuple, limits: Thresholds) -> pd.DataFrame:
    """Images far from every other: path, label, nearest_class, class_similarity, distance, z (farthest first)."""
    _, similarity = near
    if similarity.shape[1] == 0:
        return pd.DataFrame(columns=["path", "label", "nearest_class", "class_similarity", "distance", "z"])
    distance = 1 - similarity[:, :K_OUTLIER].mean(axis=1)
    median = np.median(distance)
    spread = 1.4826 * np.median(np.abs(distance - median)) or 1e-12
    z = (distance - median) / spread
    members = {c: [i for i, s in enumerate(samples) if c in s.labels] for c in classes}
    centres = normalised(np.stack([unit[members[c]].mean(axis=0) if members[c] else np.zeros(unit.shape[1])
                                   for c in classes]))
    to_class = unit @ centres.T
    rows = [[samples[i].rel, samples[i].cell, classes[int(np.argmax(to_class[i]))],
             round(float(to_class[i].max()), 4), round(float(distance[i]), 4), round(float(z[i]), 2)]
            for i in np.flatnonzero(z > limits.outlier_z)]
    table = pd.DataFrame(rows, columns=["path", "label", "nearest_class", "class_similarity", "distance", "z"])
    return table.sort_values("z", ascending=False, kind="stable", ignore_index=True)
