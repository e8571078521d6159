import pyarrow as pa

from stages.exact_dedup import (
    DIGEST_COLUMN,
    ExactDedupConfig,
    choose_duplicates,
    find_duplicates_in_memory,
    normalize_text,
    text_digests,
)


def test_normalisation_ignores_case_spacing_and_punctuation():
    assert normalize_text("Hello,   World!\n") == normalize_text("hello world")
    assert normalize_text("ﬁne") == normalize_text("fine")  # NFKC folds the ligature
    assert normalize_text("hello world") != normalize_text("hello there world")


def test_digests_follow_the_normalize_switch():
    texts = pa.array(["A  text.", "a text", None])
    on = text_digests(texts, ExactDedupConfig(normalize=True)).to_pylist()
    off = text_digests(texts, ExactDedupConfig(normalize=False)).to_pylist()
    assert on[0] == on[1] and off[0] != off[1]
    assert len(on[2]) == 32


def _table(rows):
    shard, ordinal, ids, digests = zip(*rows, strict=True)
    return pa.table(
        {
            "id": list(ids),
            "shard": pa.array(shard, pa.int32()),
            "ordinal": pa.array(ordinal, pa.int64()),
            DIGEST_COLUMN: list(digests),
        }
    )


def test_first_copy_in_input_order_is_kept_whatever_the_row_order():
    rows = [(1, 0, "b", "x"), (0, 5, "a", "x"), (0, 7, "c", "x"), (2, 0, "d", "y")]
    expected = {("b", "a"), ("c", "a")}
    for ordering in (rows, rows[::-1], rows[1:] + rows[:1]):
        drops = find_duplicates_in_memory(_table(ordering))
        pairs = set(zip(drops["id"].to_pylist(), drops["duplicate_of"].to_pylist(), strict=True))
        assert pairs == expected


def test_singleton_group_drops_nothing():
    assert choose_duplicates(_table([(0, 0, "a", "x")])).num_rows == 0


def test_split_by_drops_names_the_kept_copy():
    from stages.duplicates import split_by_drops

    documents = pa.table({"id": ["a", "b", "c"], "text": ["x", "x", "y"]})
    drops = find_duplicates_in_memory(
        _table([(0, 0, "a", "x"), (0, 1, "b", "x"), (0, 2, "c", "y")])
    )
    kept, dropped = split_by_drops(documents, drops, "exact_duplicate")
    assert kept.column("id").to_pylist() == ["a", "c"]
    assert dropped.column("id").to_pylist() == ["b"]
    assert dropped.column("duplicate_of").to_pylist() == ["a"]
    assert dropped.column("drop_reason").to_pylist() == ["exact_duplicate"]
