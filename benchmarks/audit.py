"""Data-audit benchmark (issue 23): `tltool audit` against cleanlab and imagehash on planted faults.

Two sets, each with its faults planted:

- **labels**: scikit-learn's 1,797 handwritten digits as 32 x 32 PNGs, ink
  dark on light, pre-split 1,437 train / 360 test; 5% of the train images
  (72) moved to another digit's folder.
- **pairs**: the explanation benchmark's set (`benchmarks/explain.py`):
  digits pasted at random places on crops of scikit-learn's two sample
  photos, 128 x 128, pre-split 2,000 train / 300 val / 300 test. 40 test
  images are shifted by one pixel, rescaled to 140 x 140 and re-encoded as
  JPEG (quality 75), and the copies placed in train under their own label (40
  leaked pairs across splits); 30 train images get a byte-for-byte copy under
  another name in the same folder (30 exact pairs). The bare digits are no
  set for duplicates: two different samples of a digit are more alike, by
  pixels, pHash and embedding, than such a copy is to its original.

tltool: `tltool.audit` with the pretrained MobileNetV2 of ../shared/weights
at 96 px (its defaults otherwise). The peers, on the same images:

- cleanlab's `find_label_issues` (ranked by self-confidence) on the same
  embeddings, with out-of-fold probabilities of scikit-learn's
  `LogisticRegression` (defaults, 5-fold) on the raw embeddings;
- imagehash's pHash, a pair being a duplicate at a Hamming distance of at
  most 10 bits (imagededup's default threshold for PHash), and an exact copy
  at 0 bits.

It prints recall and precision for flipped labels, leaked pairs (across
splits, exact or near) and exact copies.

`--scale N` instead times the audit's searches on N look-alike images, with
their peak memory: perceptual hashes each within 16 bits of one of 100
centres, and embeddings of MobileNetV2's width (1,280) clustered around 100
centres too (`clustered`): the nearest neighbours (approximate above 20,000
images), the pair search, the outliers and the label probe (10 classes). The
embedding pass itself runs at the backbone's forward speed (README,
"Backbone speed and size").

    python benchmarks/audit.py [--work DIR] [--weights FILE]
    python benchmarks/audit.py --scale 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "..", "..", "shared", "weights", "mobilenetv2_dogs.weights.h5")
sys.path.insert(0, os.path.join(HERE, ".."))


def make_digits(folder: str, seed: int = 0) -> set:
    """scikit-learn's 1,797 digits as 32 x 32 PNGs, pre-split 1,437 train / 360 test, with 5% of the train
    images (72) moved to another digit's folder; returns their paths."""
    from PIL import Image
    from sklearn.datasets import load_digits

    shutil.rmtree(folder, ignore_errors=True)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.images))
    flipped = set(rng.choice(order[360:], 72, replace=False).tolist())
    moved = set()
    for rank, i in enumerate(order.tolist()):
        label = int(digits.target[i])
        if i in flipped:
            label = (label + int(rng.integers(1, 10))) % 10
        rel = os.path.join("test" if rank < 360 else "train", str(label), f"digit_{i:04d}.png")
        os.makedirs(os.path.join(folder, os.path.dirname(rel)), exist_ok=True)
        Image.fromarray((255 - digits.images[i] * 15).astype(np.uint8)).resize(
            (32, 32), Image.Resampling.BILINEAR).convert("RGB").save(os.path.join(folder, rel))
        if i in flipped:
            moved.add(rel)
    return moved


def make_set(folder: str, seed: int = 0) -> dict:
    """The planted set; returns the truth: flipped train paths, leaked (test, train) pairs, exact pairs."""
    from PIL import Image

    from benchmarks.explain import boxes_path
    from benchmarks.explain import make_set as digits_on_photos

    shutil.rmtree(folder, ignore_errors=True)
    if os.path.exists(boxes_path(folder)):
        os.remove(boxes_path(folder))  # the set is made again, with its faults
    digits_on_photos(folder, seed)
    rng = np.random.default_rng(seed)
    truth = {"flipped": set(), "leaked": set(), "exact": set()}
    train = sorted(os.path.join("train", c, n) for c in os.listdir(os.path.join(folder, "train"))
                   for n in os.listdir(os.path.join(folder, "train", c)))
    test = sorted(os.path.join("test", c, n) for c in os.listdir(os.path.join(folder, "test"))
                  for n in os.listdir(os.path.join(folder, "test", c)))
    chosen = rng.permutation(len(train))
    for rel in [train[i] for i in chosen[:len(train) // 20]]:  # 5%
        label = int(rel.split(os.sep)[1])
        moved = os.path.join("train", str((label + int(rng.integers(1, 10))) % 10), os.path.basename(rel))
        os.replace(os.path.join(folder, rel), os.path.join(folder, moved))
        truth["flipped"].add(moved)
    for rel in [test[i] for i in rng.permutation(len(test))[:40]]:
        original = Image.open(os.path.join(folder, rel)).convert("RGB")
        shifted = Image.new("RGB", original.size)
        shifted.paste(original, (1, 0))
        side = int(original.width * 1.1)
        copy = os.path.join("train", rel.split(os.sep)[1], "copy_of_" + os.path.basename(rel).replace(".png", ".jpg"))
        shifted.resize((side, side), Image.Resampling.BILINEAR).save(os.path.join(folder, copy), quality=75)
        truth["leaked"].add(frozenset((rel, copy)))
    for rel in [train[i] for i in chosen[len(train) // 20:len(train) // 20 + 30]]:
        copy = rel.replace(".png", "_again.png")
        shutil.copy(os.path.join(folder, rel), os.path.join(folder, copy))
        truth["exact"].add(frozenset((rel, copy)))
    return truth


def scores(found: set, planted: set) -> tuple[float, float]:
    hits = len(found & planted)
    return hits / max(len(planted), 1), hits / max(len(found), 1)


def peer_labels(data: str, weights: str) -> set:
    """cleanlab's find_label_issues on the audit's own embeddings (from the cache), with out-of-fold
    probabilities of a plain LogisticRegression on the raw embeddings."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from tltool.data.dataset import load_dataset
    from tltool.models.registry import get_backbone
    from tltool.quality.embeddings import Embedder

    dataset = load_dataset(data, progress=False)
    samples = dataset.samples
    embedder = Embedder.from_backbone(get_backbone("mobilenetv2"), weights, 96, "stretch", 1337)
    vectors = embedder.embed([s.path for s in samples], [dataset.infos[s.path].sha1 for s in samples],
                             progress=False)
    labels = np.array([dataset.classes.index(s.label) for s in samples])
    probs = cross_val_predict(LogisticRegression(max_iter=1000), vectors, labels, cv=5, method="predict_proba")
    return {samples[i].rel for i in find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")}


def peer_pairs(data: str) -> dict:
    """imagehash's pHash of every image; pairs within 10 bits, with their distance."""
    import imagehash
    from PIL import Image

    rels = sorted(os.path.relpath(os.path.join(d, n), data) for d, _, names in os.walk(data) for n in names)
    hashes = np.array([int(str(imagehash.phash(Image.open(os.path.join(data, r)))), 16) for r in rels], np.uint64)
    bits = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    return {frozenset((rels[i], rels[j])): int(bits[i, j]) for i, j in zip(*np.nonzero(bits <= 10)) if i < j}


def clustered(n: int, rng, centres: int = 100, spread: int = 16):
    """n hashes, each at most `spread` bits from one of `centres` random hashes, and unit embeddings clustered
    the same way: look-alike images (X-rays, product shots), where most hashes lie close together."""
    from tltool.quality import findings

    which = rng.integers(0, centres, n)
    centre_hashes = rng.integers(0, 2**63, centres, dtype=np.int64).astype(np.uint64)
    flips = np.zeros(n, np.uint64)
    for row, count in enumerate(rng.integers(0, spread + 1, n)):
        for bit in rng.choice(64, count, replace=False):
            flips[row] |= np.uint64(1) << np.uint64(bit)
    centre_vectors = rng.normal(size=(centres, 1280)).astype(np.float32)
    unit = findings.normalised(centre_vectors[which] + 0.5 * rng.normal(size=(n, 1280)).astype(np.float32))
    return centre_hashes[which] ^ flips, unit


def scale(n: int) -> None:
    """Seconds and peak memory of each search stage on n look-alike images (`clustered`)."""
    import resource
    import time
    from types import SimpleNamespace

    from tltool.quality import findings

    rng = np.random.default_rng(0)
    hashes, unit = clustered(n, rng)
    samples = [SimpleNamespace(rel=f"{i}", path=f"{i}", split="train", label=str(i % 10), labels=(str(i % 10),))
               for i in range(n)]
    infos = {f"{i}": SimpleNamespace(phash=f"{int(h):016x}", sha1=f"{i}") for i, h in enumerate(hashes)}
    classes = [str(c) for c in range(10)]
    start = time.perf_counter()
    near = findings.neighbours(unit, findings.K_NEAR)
    stages = [("nearest neighbours", time.perf_counter() - start)]
    import tracemalloc

    tracemalloc.start()
    start = time.perf_counter()
    pairs = findings.duplicate_pairs(samples, infos, unit, near, findings.Thresholds())
    seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    stages.append((f"the pair search, hashes within 16 bits of 100 centres ({len(pairs)} near pairs; its own peak "
                   f"{peak / 2**30:.2f} GiB, traced)", seconds))
    start = time.perf_counter()
    findings.outliers(samples, classes, unit, near, findings.Thresholds())
    stages.append(("outliers", time.perf_counter() - start))
    start = time.perf_counter()
    findings.out_of_fold_probabilities(unit, np.arange(n) % 10, 5)
    stages.append(("label probe, 5 folds", time.perf_counter() - start))
    for name, seconds in stages:
        print(f"{n:,} images, {name}: {seconds:.1f} s")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB "
          f"(the embeddings alone: {unit.nbytes / 2**30:.2f} GiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "tltool-bench-audit"))
    parser.add_argument("--weights", default=WEIGHTS)
    parser.add_argument("--scale", type=int, help="time the searches on this many random embeddings instead")
    args = parser.parse_args()
    if args.scale:
        return scale(args.scale)
    if not os.path.isfile(args.weights):
        sys.exit(f"{args.weights}: no such file; give the pretrained MobileNetV2 with --weights")
    import pandas as pd

    import tltool

    digits = os.path.join(args.work, "digits")
    flipped = make_digits(digits)
    on_digits = tltool.audit(digits, backbone="mobilenetv2", weights=args.weights, image_size=96,
                             out=os.path.join(args.work, "audit-digits"), overwrite=True, progress=False)
    data = os.path.join(args.work, "data")
    truth = make_set(data)
    found = tltool.audit(data, backbone="mobilenetv2", weights=args.weights, image_size=96,
                         out=os.path.join(args.work, "audit"), overwrite=True, progress=False)
    dup = found.duplicates
    across = {frozenset(p) for p in zip(dup[dup["split_a"] != dup["split_b"]]["path_a"],
                                        dup[dup["split_a"] != dup["split_b"]]["path_b"])}
    exact = {frozenset(p) for p in zip(dup[dup["kind"] == "exact"]["path_a"], dup[dup["kind"] == "exact"]["path_b"])}
    ours = {"flipped labels": scores(set(on_digits.label_issues["path"]), flipped),
            "leaked pairs": scores(across, truth["leaked"]), "exact copies": scores(exact, truth["exact"])}

    theirs = {"flagged": peer_labels(digits, args.weights), "pairs": peer_pairs(data)}
    split = {rel: rel.split(os.sep)[0] for pair in theirs["pairs"] for rel in pair}
    their_across = {p for p in theirs["pairs"] if len({split[r] for r in p}) == 2}
    their_exact = {p for p, bits in theirs["pairs"].items() if bits == 0}  # the same hash: all a hash can tell
    peer = {"flipped labels": scores(theirs["flagged"], flipped),
            "leaked pairs": scores(their_across, truth["leaked"]), "exact copies": scores(their_exact, truth["exact"])}
    rows = [[kind, *ours[kind], *peer[kind]] for kind in ours]
    table = pd.DataFrame(rows, columns=["planted", "tltool recall", "tltool precision", "peer recall",
                                        "peer precision"]).set_index("planted")
    print(f"labels: {on_digits.images} digits; pairs: {found.images} digits on photos; peers: cleanlab + "
          "LogisticRegression (labels), imagehash pHash <= 10 bits (pairs)\n")
    print(table.to_string(float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
