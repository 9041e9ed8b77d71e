"""Copies of one image inside a dataset: exact (the same bytes) and near (a few bits of perceptual hash apart).

There is one definition of each, used by `fit`, `inspect` and `audit`:

- **exact**: the same SHA-1 of the file's bytes (`ImageInfo.sha1`);
- **near** (from the file check alone, no backbone): perceptual hashes
  (`tltool.data.images.perceptual_hash`) at most `PHASH_BITS` of 64 bits
  apart. On `benchmarks/audit.py`, a shift of one pixel, a rescale and a
  JPEG re-encoding move an image's hash by 0-6 bits (median 2), while
  different images are about 32 apart; but images with little in them can
  be close too: on the bundled digits example (8 x 8 digits, scaled up),
  143 pairs of different digits lie 4 or 6 bits apart, none 2 or fewer. So
  `fit`, which warns without anyone asking, counts 2 bits as near (every
  exact copy, and 63% of those re-encoded, rescaled and shifted copies);
  `audit`, asked for a closer look, takes 6 (`--near-bits`) and reports the
  bits of every pair.

A pair across splits is a **leak**: the copy in train lets the validation or
test figures see an image the model trained on, and a test image's copy in
val lets the test figures see an image that thresholds or early stopping
were tuned on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PHASH_BITS = 2
COLUMNS = ["path_a", "path_b", "split_a", "split_b", "hash_similarity", "kind", "bits"]  # 1 - bits / 64


def hash_array(hexes: list[str]) -> np.ndarray:
    """16-hex-digit perceptual hashes as uint64."""
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def hash_pairs(a: np.ndarray, b: np.ndarray | None = None, max_bits: int = PHASH_BITS, chunk: int = 128):
    """Index pairs (i, j, bits) whose hashes differ in at most `max_bits` bits: of `a` with `b`, or within `a`
    (i < j) when `b` is None. Exhaustive, in chunks of rows: 20,000 x 80,000 hashes take about 6 s."""
    other = a if b is None else b
    found = []
    for start in range(0, len(a), chunk):
        bits = np.bitwise_count(a[start:start + chunk, None] ^ other[None, :])
        rows, cols = np.nonzero(bits <= max_bits)
        rows += start
        keep = rows < cols if b is None else np.ones(len(rows), bool)
        found += zip(rows[keep].tolist(), cols[keep].tolist(), bits[rows[keep] - start, cols[keep]].tolist())
    return found


def closest_hash_pairs(hashes: np.ndarray, max_bits: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, of hashes at most `max_bits` apart, found without comparing every pair.

    Multi-index hashing (Norouzi et al., CVPR 2012): cut the 64 bits into max_bits + 1 blocks; two hashes that
    differ in at most max_bits bits agree on at least one block whole. Per block, the hashes are sorted by that
    block and then by the whole hash, and each is compared with the next `k` that share its block: every pair
    within a group of up to k + 1 is compared, and in a larger group (look-alike images: X-rays, product shots,
    handwriting) each hash meets its k neighbours in that order. O(N log N) per block, at most k pairs a hash.
    """
    n, blocks = len(hashes), max_bits + 1
    edges = np.linspace(0, 64, blocks + 1).astype(int)
    found_i, found_j = [], []
    for low, high in zip(edges[:-1], edges[1:]):
        key = (hashes >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)
        order = np.lexsort((hashes, key))
        grouped = key[order]
        for step in range(1, min(k, n - 1) + 1):
            same = grouped[step:] == grouped[:-step]
            found_i.append(order[:-step][same])
            found_j.append(order[step:][same])
    i = np.concatenate(found_i) if found_i else np.zeros(0, np.int64)
    j = np.concatenate(found_j) if found_j else np.zeros(0, np.int64)
    close = np.bitwise_count(hashes[i] ^ hashes[j]) <= max_bits
    return np.minimum(i, j)[close], np.maximum(i, j)[close]


def exact_groups(samples: list, infos: dict) -> list[list]:
    """Groups of two or more samples with the same bytes."""
    groups: dict[str, list] = {}
    for s in samples:
        if s.path in infos:
            groups.setdefault(infos[s.path].sha1, []).append(s)
    return [members for members in groups.values() if len(members) > 1]


# Each held-out split against every split before it: a test image copied into val matters too, since
# multi-label runs tune their thresholds on val and report on test.
SPLIT_PAIRS = (("val", "train"), ("test", "train"), ("test", "val"))


def leaks(samples: list, infos: dict, max_bits: int = PHASH_BITS) -> pd.DataFrame:
    """Every validation or test image with a copy in an earlier split (val in train; test in train or val),
    exact or near by perceptual hash, one row per pair: its path, the copy's, both splits, the hash similarity
    (1 - bits / 64), the kind and the bits."""
    by_split = {split: [s for s in samples if s.split == split and s.path in infos]
                for split in ("train", "val", "test")}
    rows = []
    for held_split, other_split in SPLIT_PAIRS:
        held, other = by_split[held_split], by_split[other_split]
        if not held or not other:
            continue
        pairs = hash_pairs(hash_array([infos[s.path].phash for s in held]),
                           hash_array([infos[s.path].phash for s in other]), max_bits)
        for i, j, bits in pairs:
            a, b = held[i], other[j]
            exact = infos[a.path].sha1 == infos[b.path].sha1  # the same bytes: 0 bits apart, always found here
            rows.append([a.rel, b.rel, a.split, b.split, round(1 - bits / 64, 4), "exact" if exact else "near", bits])
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["split_a", "path_a", "split_b", "bits"], kind="stable",
                                                           ignore_index=True)


def describe_leaks(table: pd.DataFrame, images: dict[str, int]) -> str | None:
    """fit's one line about leaks, or None without any."""
    if table.empty:
        return None
    parts = []
    for held_split, other_split in SPLIT_PAIRS:
        held = table[(table["split_a"] == held_split) & (table["split_b"] == other_split)]
        if len(held):
            exact = held[held["kind"] == "exact"]["path_a"].nunique()
            parts.append(f"{held['path_a'].nunique()} of {images[held_split]} {held_split} images have a copy in "
                         f"{other_split} ({exact} exact, {held['path_a'].nunique() - exact} near)")
    return "leakage: " + "; ".join(parts)
