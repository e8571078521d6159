"""Best-fit-decreasing packing: whole short documents, seq_len pieces of long ones,
boundaries that give the documents back, padding accounted."""

import numpy as np
import pyarrow as pa
import pytest

from model_hooks.shard_format import PACKED_SCHEMA, validate_rows
from stages.pack import (
    UNITS_SCHEMA,
    best_fit_decreasing,
    concatenate_and_chunk,
    pack_window,
    slice_units,
    split_into_pieces,
)

SEQ_LEN = 64


def _documents(seed=0, count=200):
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([rng.integers(1, 40, count), [SEQ_LEN, 150, 64 * 3, 65]])
    return [
        (np.arange(n, dtype=np.uint32) + 1000 * i, f"doc{i}", "web" if i % 2 else "code")
        for i, n in enumerate(lengths)
    ]


def _units(documents):
    return pa.table(
        {
            "window": pa.array([0] * len(documents), pa.int32()),
            "unit": pa.array(range(len(documents)), pa.int64()),
            "id": [d for _, d, _ in documents],
            "domain": [m for _, _, m in documents],
            "offset": pa.array([0] * len(documents), pa.int64()),
            "tokens": pa.array([t.tolist() for t, _, _ in documents], pa.list_(pa.uint32())),
        },
        schema=UNITS_SCHEMA,
    )


def _segments(table):
    """Every (doc_id, offset, tokens) segment of a packed table."""
    out = []
    for row in table.to_pylist():
        cu = row["cu_seqlens"]
        for k, doc in enumerate(row["doc_ids"]):
            out.append((doc, row["doc_offsets"][k], row["tokens"][cu[k] : cu[k + 1]]))
    return out


def test_rows_follow_the_shard_format_and_give_the_documents_back():
    documents = _documents()
    table, stats = pack_window(_units(documents), SEQ_LEN, pad_id=0, seed=[1, 2])
    assert table.schema == PACKED_SCHEMA
    validate_rows(table, SEQ_LEN)
    pieces = {}
    for doc, offset, tokens in _segments(table):
        pieces.setdefault(doc, []).append((offset, tokens))
    for tokens, doc, _ in documents:
        rebuilt = [t for _, part in sorted(pieces[doc]) for t in part]
        assert rebuilt == tokens.tolist()
        if len(tokens) <= SEQ_LEN:
            assert len(pieces[doc]) == 1  # never cut a document that fits
        else:
            # cut only into seq_len pieces plus the remainder
            assert [len(p) for _, p in sorted(pieces[doc])][:-1] == [SEQ_LEN] * (
                len(pieces[doc]) - 1
            )
    assert stats.split_documents == 3  # 150, 192 and 65 tokens
    assert stats.tokens == sum(len(t) for t, _, _ in documents)
    assert stats.padding_tokens == stats.rows * SEQ_LEN - stats.tokens
    # the padding is pad ids after n_tokens
    row = table.slice(0, 1).to_pylist()[0]
    assert set(row["tokens"][row["n_tokens"] :]) <= {0}


def test_bfd_pads_less_than_concatenating_needs_cuts():
    documents = _documents(seed=3, count=2000)
    packed, stats = pack_window(_units(documents), SEQ_LEN, pad_id=0)
    naive, cut = concatenate_and_chunk(documents, SEQ_LEN, pad_id=0)
    assert stats.padding_tokens / (stats.rows * SEQ_LEN) < 0.01
    assert stats.split_documents == 3 < cut
    assert naive.num_rows <= packed.num_rows
    validate_rows(naive, SEQ_LEN)


def test_best_fit_picks_the_tightest_bin():
    bins = best_fit_decreasing(np.array([6, 5, 4, 3, 2]), seq_len=10)
    # 6 -> bin0 (4 free); 5 -> bin1 (5 free); 4 -> bin0 (full); 3 -> bin1 (2 free); 2 -> bin1
    assert bins == [[0, 2], [1, 3, 4]]
    with pytest.raises(ValueError, match="does not fit"):
        best_fit_decreasing(np.array([11]), seq_len=10)


def test_packing_is_deterministic_and_independent_of_unit_row_order():
    units = _units(_documents(seed=5))
    first, _ = pack_window(units, SEQ_LEN, pad_id=0, seed=[7])
    shuffled = units.take(np.random.default_rng(0).permutation(units.num_rows))
    second, _ = pack_window(shuffled, SEQ_LEN, pad_id=0, seed=[7])
    assert first.equals(second)


def test_split_into_pieces_records_offsets():
    pieces = split_into_pieces(np.arange(150, dtype=np.uint32), "d", "web", 10, SEQ_LEN)
    assert [(len(p.tokens), p.offset) for p in pieces] == [(64, 10), (64, 74), (22, 138)]


def test_slice_units_cuts_the_planned_ranges():
    tokens = pa.array([[1, 2, 3, 4], [5, 6], [7, 8, 9]], pa.list_(pa.uint32()))
    plan = pa.table(
        {
            "window": pa.array([0, 1, 0], pa.int32()),
            "unit": pa.array([4, 2, 9], pa.int64()),
            "row": pa.array([2, 0, 0], pa.int64()),
            "id": ["c", "a", "a"],
            "domain": ["x", "y", "y"],
            "token_start": pa.array([0, 0, 0], pa.int64()),
            "token_end": pa.array([3, 4, 2], pa.int64()),
        }
    )
    units = slice_units(tokens, plan)
    assert units.schema == UNITS_SCHEMA
    assert units["tokens"].to_pylist() == [[7, 8, 9], [1, 2, 3, 4], [1, 2]]
