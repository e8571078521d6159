"""MinHash near-duplicate detection without Ray: tokens (exactly ``re``'s word tokens, hashed
as ``token_hash`` defines), shingles, signatures (datasketch's bit-identical; rensa's the
same clusters), planted near duplicates found by both backends, unrelated documents kept
apart, the representative rule, verification, and star rounds agreeing with union-find."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from pydantic import ValidationError

import stages.minhash as minhash
from stages.minhash import (
    MinHashConfig,
    Signer,
    fold32,
    jaccard,
    shingle_hashes,
    shingle_set,
    token_hash,
    token_hashes,
)
from stages.minhash_lsh import (
    bucket_edges,
    find_near_duplicates_in_memory,
    large_star,
    node_keys,
    partition_of,
    size_histogram,
    small_star,
    union_find,
)

VOCAB = [f"w{i}" for i in range(4000)]
# Bands that make a pair at Jaccard >= 0.85 a candidate with probability > 0.9999.
SURE = {"bands": 25, "rows_per_band": 5}


def _set(text: str, cfg: MinHashConfig) -> np.ndarray:
    hashes, offsets = shingle_hashes([text], cfg)
    return shingle_set(hashes[offsets[0] : offsets[1]])


def _similarity(a: str, b: str, cfg: MinHashConfig | None = None) -> float:
    cfg = cfg or MinHashConfig()
    return jaccard(_set(a, cfg), _set(b, cfg))


def _variant(text: str, kind: str, rng: random.Random, target: float) -> str:
    """Edit ``text`` (word swaps, insertions or a paragraph reorder) step by step until
    its Jaccard with the original falls to ``target``."""
    words = text.split()
    while True:
        if kind == "edit":
            words[rng.randrange(len(words))] = rng.choice(VOCAB)
        elif kind == "insert":
            words.insert(rng.randrange(len(words)), rng.choice(VOCAB))
        else:  # reorder: move a 20-word block elsewhere
            start = rng.randrange(len(words) - 20)
            block, rest = words[start : start + 20], words[:start] + words[start + 20 :]
            at = rng.randrange(len(rest))
            words = rest[:at] + block + rest[at:]
        candidate = " ".join(words)
        if _similarity(text, candidate) <= target:
            return candidate


def _corpus(rng: random.Random, originals: int = 40, words: int = 300) -> list[str]:
    return [" ".join(rng.choices(VOCAB, k=words)) for _ in range(originals)]


def _table(texts: list[str], shards: int = 3, scores: list[float] | None = None) -> pa.Table:
    """Documents in input order: contiguous runs of ``texts`` per shard."""
    per_shard = -(-len(texts) // shards)
    columns = {
        "id": [f"doc-{i:03d}" for i in range(len(texts))],
        "shard": pa.array([i // per_shard for i in range(len(texts))], pa.int32()),
        "ordinal": pa.array([i % per_shard for i in range(len(texts))], pa.int64()),
        "text": texts,
    }
    if scores is not None:
        columns["quality_score"] = scores
    return pa.table(columns)


def _clusters(drops: pa.Table) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for row in drops.to_pylist():
        groups.setdefault(row["cluster_id"], {row["cluster_id"]}).update(
            {row["id"], row["duplicate_of"]}
        )
    return {frozenset(members) for members in groups.values()}


def test_config_rejects_impossible_bands_and_derives_datasketch_layout():
    with pytest.raises(ValidationError, match="both bands and rows_per_band"):
        MinHashConfig(bands=4)
    with pytest.raises(ValidationError, match="exceeds num_perm"):
        MinHashConfig(num_perm=64, bands=10, rows_per_band=10)
    with pytest.raises(ValidationError):
        MinHashConfig(shingle="token")
    cfg = MinHashConfig(threshold=0.7, num_perm=64)
    assert cfg.band_layout() == _optimal_param(0.7, 64, 0.02, 0.98)
    unverified = MinHashConfig(threshold=0.7, num_perm=64, verify_candidates=False)
    assert unverified.band_layout() == _optimal_param(0.7, 64, 0.5, 0.5)
    assert MinHashConfig().band_layout() == (17, 7)
    assert MinHashConfig(**SURE).band_layout() == (25, 5)
    assert cfg.fingerprint() != MinHashConfig(threshold=0.75, num_perm=64).fingerprint()
    same = MinHashConfig(
        threshold=0.7, num_perm=64, partition_rows=5000, union_find_max_edges=5,
        verify_partition_bytes=1 << 20,
    )  # fmt: skip
    assert cfg.fingerprint() == same.fingerprint()


def test_known_band_layouts_are_datasketchs_and_need_no_datasketch():
    """The defaults' layouts are looked up (the driver imports neither datasketch nor
    scipy for them); each entry must be what datasketch's search gives."""
    from stages.minhash import KNOWN_BAND_LAYOUTS

    for (threshold, num_perm, weight), layout in KNOWN_BAND_LAYOUTS.items():
        assert layout == _optimal_param(threshold, num_perm, 1.0 - weight, weight)
    assert MinHashConfig().band_layout() in KNOWN_BAND_LAYOUTS.values()
    assert MinHashConfig(verify_candidates=False).band_layout() == (9, 13)
    probe = (
        "import sys; from stages.minhash import MinHashConfig; MinHashConfig().band_layout();"
        " MinHashConfig(verify_candidates=False).band_layout();"
        " print(sorted(m for m in ('datasketch', 'scipy') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.strip()  # fmt: skip
    assert found == "[]"


def test_a_missing_rensa_fails_at_config_time_naming_the_fallback(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rensa" else real(name, *a)
    )
    with pytest.raises(ValidationError, match="backend: datasketch"):
        MinHashConfig()
    assert MinHashConfig(backend="datasketch").backend == "datasketch"


def test_shingles_ignore_case_punctuation_and_spacing():
    cfg = MinHashConfig(shingle_size=3)
    a = "The quick, brown fox jumps over the LAZY dog."
    b = "the quick brown fox   jumps over the lazy dog"
    assert np.array_equal(_set(a, cfg), _set(b, cfg))
    _, offsets = shingle_hashes(["one two", "", None, "a b c d e"], cfg)
    assert np.diff(offsets).tolist() == [1, 0, 0, 3]  # short: one shingle; empty: none
    chars = MinHashConfig(shingle="char", shingle_size=4)
    assert _similarity("abcdefgh", "ABCD efgh", chars) < 1.0
    assert _similarity("abcd  efgh", "ABCD efgh", chars) == 1.0


# Unicode edge cases: NFKC ligatures and numerals, a titlecase digraph, German sharp s,
# combining marks (not \w in Python), CJK, characters outside the BMP, NUL and
# underscores.
ODD_TEXTS = [
    "Straße ǅemo ﬁne Ⅻ x_y 3.14 日本語テキスト",
    "ÀB́ à e\u0301 café",
    "a\x00b  c\td\n\ne",
    "\U0001f600 emoji\U0001f642word 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 __init__",
    "",
    None,
    "ASCII only, with Punctuation!",
]


def _reference_tokens(text: str | None) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text or "").casefold())


def test_tokens_are_exactly_re_word_tokens_and_token_hash(monkeypatch):
    rng = random.Random(9)
    texts = ODD_TEXTS + [" ".join(rng.choices(VOCAB, k=rng.randrange(0, 60))) for _ in range(30)]
    texts.append("one token longer than a piece: " + "x" * 25 + " and after it")
    expected = [[token_hash(t) for t in _reference_tokens(text)] for text in texts]
    characters = [minhash._SPACE.sub(" ", minhash.normalize_for_shingles(t)).strip() for t in texts]
    # Many documents a chunk, a few, and documents cut into pieces (at 40 and 7).
    for chunk_chars in (minhash._CHUNK_CHARS, 40, 7):
        monkeypatch.setattr(minhash, "_CHUNK_CHARS", chunk_chars)
        hashes, counts = token_hashes(texts, "word")
        assert counts.tolist() == [len(e) for e in expected]
        assert hashes.tolist() == [h for e in expected for h in e]
        hashes, counts = token_hashes(texts, "char")
        assert counts.tolist() == [len(c) for c in characters]
        assert hashes.tolist() == [token_hash(ch) for c in characters for ch in c]
    assert len({token_hash(t) for t in ["ab", "ba", "a", "b", "aa", "abc"]}) == 6


def test_shingle_sets_and_jaccard_match_numpy_set_operations():
    rng = np.random.default_rng(4)
    for _ in range(20):
        a = rng.integers(0, 50, size=int(rng.integers(0, 40))).astype(np.uint64)
        b = rng.integers(0, 50, size=int(rng.integers(0, 40))).astype(np.uint64)
        assert np.array_equal(shingle_set(a), np.unique(a))
        sa, sb = shingle_set(a), shingle_set(b)
        union = len(np.union1d(sa, sb))
        expected = len(np.intersect1d(sa, sb)) / union if union and len(sa) and len(sb) else 0.0
        assert jaccard(sa, sb) == pytest.approx(expected)


def test_shipped_band_layout_keeps_the_fingerprint_and_signatures():
    cfg = MinHashConfig(threshold=0.7, num_perm=64)
    shipped = cfg.with_band_layout()
    assert (shipped.bands, shipped.rows_per_band) == cfg.band_layout()
    assert cfg.fingerprint() != MinHashConfig(threshold=0.7, num_perm=64, seed=2).fingerprint()
    texts = ["one two three four five six seven", "a b c d e f g h"]
    hashes, offsets = shingle_hashes(texts, cfg)
    assert np.array_equal(
        Signer(cfg).band_keys(Signer(cfg).signatures(hashes, offsets)),
        Signer(shipped).band_keys(Signer(shipped).signatures(hashes, offsets)),
    )


def test_rensa_signatures_estimate_jaccard_like_datasketch():
    """Both backends are unbiased MinHash estimators: on pairs of sets at known
    Jaccard the share of equal signature values is close to it, for either."""
    rng = np.random.default_rng(8)
    rows, targets = [], []
    for target in np.linspace(0.3, 0.95, 40):
        n = 400
        shared = round(2 * n * target / (1 + target))
        base = rng.integers(0, 2**63, size=n, dtype=np.uint64)
        other = np.concatenate([base[:shared], rng.integers(0, 2**63, n - shared, np.uint64)])
        rows += [base, other]
        targets.append(shared / (2 * n - shared))
    hashes = np.concatenate(rows)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    for backend in ("rensa", "datasketch"):
        signatures = Signer(MinHashConfig(num_perm=256, backend=backend)).signatures(
            hashes, offsets
        )
        estimate = (signatures[0::2] == signatures[1::2]).mean(axis=1)
        errors = estimate - np.array(targets)
        assert abs(errors.mean()) < 0.02 and np.abs(errors).max() < 0.12, backend
    empty = Signer(MinHashConfig()).signatures(np.zeros(0, np.uint64), np.array([0, 0]))
    assert empty.shape == (1, 128)


def test_signatures_are_bit_identical_to_datasketch():
    cfg = MinHashConfig(num_perm=64, seed=7, backend="datasketch")
    texts = [" ".join(random.Random(i).choices(VOCAB, k=50 + 30 * i)) for i in range(4)]
    hashes, offsets = shingle_hashes(texts, cfg)
    signatures = Signer(cfg).signatures(hashes, offsets)
    expected = MinHash.generator(
        [fold32(hashes[offsets[i] : offsets[i + 1]]).tolist() for i in range(len(texts))],
        num_perm=64,
        seed=7,
        hashfunc=int,
    )
    for row, reference in zip(signatures, expected, strict=True):
        assert np.array_equal(row, reference.hashvalues)


@pytest.mark.parametrize("backend", ["rensa", "datasketch"])
@pytest.mark.parametrize("kind", ["edit", "insert", "reorder"])
def test_planted_near_duplicates_at_known_jaccard_are_found(kind, backend):
    rng = random.Random(1)
    originals = _corpus(rng)
    targets = [0.95, 0.9, 0.88, 0.85]
    variants = [_variant(originals[i], kind, rng, t) for i, t in enumerate(targets)]
    measured = [_similarity(originals[i], v) for i, v in enumerate(variants)]
    assert all(0.8 < j <= t for j, t in zip(measured, targets, strict=True))
    table = _table(originals + variants)
    drops = find_near_duplicates_in_memory(table, MinHashConfig(**SURE, backend=backend))
    found = {row["id"]: (row["duplicate_of"], row["similarity"]) for row in drops.to_pylist()}
    assert sorted(found) == [f"doc-{i:03d}" for i in range(40, 44)]
    for i, jaccard_value in enumerate(measured):
        kept, similarity = found[f"doc-{40 + i:03d}"]
        assert kept == f"doc-{i:03d}" and similarity == pytest.approx(jaccard_value)


@pytest.mark.parametrize("backend", ["rensa", "datasketch"])
def test_unrelated_documents_are_not_merged(backend):
    rng = random.Random(2)
    originals = _corpus(rng, originals=60)
    far = [_variant(originals[i], "edit", rng, 0.6) for i in range(5)]  # below threshold
    cfg = MinHashConfig(**SURE, backend=backend)
    assert find_near_duplicates_in_memory(_table(originals + far), cfg).num_rows == 0


def test_backends_give_the_same_clusters():
    rng = random.Random(12)
    originals = _corpus(rng, originals=40)
    texts = originals + [_variant(originals[i % 7], "edit", rng, 0.88) for i in range(14)]
    table = _table(texts)
    rensa = find_near_duplicates_in_memory(table, MinHashConfig(**SURE))
    datasketch = find_near_duplicates_in_memory(table, MinHashConfig(**SURE, backend="datasketch"))
    assert _clusters(rensa) and _clusters(rensa) == _clusters(datasketch)
    assert rensa.equals(datasketch)  # kept ids and verified similarities too


def test_representative_is_stable_under_reordering_and_partitioning():
    rng = random.Random(3)
    originals = _corpus(rng, originals=30)
    texts = originals + [_variant(originals[i % 5], "edit", rng, 0.9) for i in range(12)]
    table = _table(texts)
    cfg = MinHashConfig(**SURE)
    expected = find_near_duplicates_in_memory(table, cfg)
    assert _clusters(expected) and max(len(c) for c in _clusters(expected)) >= 3
    for seed in range(3):
        order = list(range(table.num_rows))
        random.Random(seed).shuffle(order)
        assert find_near_duplicates_in_memory(table.take(order), cfg).equals(expected)
    # Buckets split over any number of partitions give the same edges.
    signer = Signer(cfg)
    hashes, offsets = shingle_hashes(texts, cfg)
    keys = signer.band_keys(signer.signatures(hashes, offsets)).reshape(-1)
    nodes = np.repeat(node_keys(table["shard"], table["ordinal"]), signer.bands)
    edge_sets = []
    for partitions in (1, 4, 13):
        part = partition_of(keys, partitions)
        edges = set()
        for p in range(partitions):
            rows = np.flatnonzero(part == p)
            center, member = bucket_edges(keys[rows], nodes[rows])
            edges |= set(
                zip(nodes[rows][center].tolist(), nodes[rows][member].tolist(), strict=True)
            )
        edge_sets.append(edges)
    assert edge_sets[0] == edge_sets[1] == edge_sets[2]


def test_prefer_column_keeps_the_highest_score():
    rng = random.Random(4)
    originals = _corpus(rng, originals=10)
    texts = [*originals, _variant(originals[0], "edit", rng, 0.9)]
    scores = [0.1] * 10 + [0.9]
    cfg = MinHashConfig(**SURE, prefer_column="quality_score")
    drops = find_near_duplicates_in_memory(_table(texts, scores=scores), cfg)
    assert drops.to_pylist()[0] | {"similarity": None} == {
        "id": "doc-000",
        "shard": 0,
        "ordinal": 0,
        "duplicate_of": "doc-010",
        "cluster_id": "doc-000",
        "similarity": None,
    }


def test_verification_removes_a_false_candidate():
    rng = random.Random(5)
    originals = _corpus(rng, originals=10)
    texts = [*originals, _variant(originals[0], "edit", rng, 0.7)]
    loose = {"bands": 32, "rows_per_band": 1}  # any shared shingle almost surely collides
    unverified = find_near_duplicates_in_memory(
        _table(texts), MinHashConfig(**loose, verify_candidates=False)
    )
    assert unverified.column("id").to_pylist() == ["doc-010"]
    verified = find_near_duplicates_in_memory(_table(texts), MinHashConfig(**loose))
    assert verified.num_rows == 0


def _star_components(src: np.ndarray, dst: np.ndarray) -> dict[int, int]:
    u, v = src, dst
    for _ in range(100):
        leaves, centers, violations = large_star(np.concatenate([u, v]), np.concatenate([v, u]))
        if violations == 0:
            break
        u, v = small_star(leaves, centers)
    result = dict(zip(leaves.tolist(), centers.tolist(), strict=True))
    result |= {c: c for c in centers.tolist()}
    return result


def test_star_rounds_agree_with_union_find():
    rng = np.random.default_rng(6)
    for _ in range(20):
        n = int(rng.integers(5, 200))
        src = rng.integers(0, n, size=n).astype(np.int64) * 1000 + 7
        dst = rng.integers(0, n, size=n).astype(np.int64) * 1000 + 7
        keep = src != dst
        nodes, components = union_find(src[keep], dst[keep])
        assert _star_components(src[keep], dst[keep]) == dict(
            zip(nodes.tolist(), components.tolist(), strict=True)
        )
    chain = np.arange(50, dtype=np.int64)  # a long path: the worst case for rounds
    nodes, components = union_find(chain[1:], chain[:-1])
    assert set(components.tolist()) == {0}
    assert set(_star_components(chain[1:], chain[:-1]).values()) == {0}


def test_size_histogram_bins():
    assert size_histogram([2, 2, 3, 8, 9, 16, 17, 1000]) == {
        "2": 2,
        "3": 1,
        "8": 1,
        "9-16": 2,
        "17-32": 1,
        "513-1024": 1,
    }
