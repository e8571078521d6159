"""The planner cuts big inputs into pieces (issue 18): plain JSON Lines and WARC by byte
range, multi-member WARC gzip by byte range, Parquet by row groups; what cannot be cut
stays whole with one warning naming the file and why. Reading every shard's pieces in
shard order gives the rows of reading each file whole, in the same order."""

from __future__ import annotations

import gzip
import json
import logging
import random
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.shards import FilePiece, InputFile, list_input, plan_shards
from stages.readers import BYTES, ROW_GROUPS, ReaderConfig, read_pieces, read_shard

FS = pafs.LocalFileSystem()
CFG = ReaderConfig()
TARGET = 4_000


def _noise(number: int) -> bytes:
    """Hex that gzip cannot squeeze much: compressed files above the target too."""
    return random.Random(number).randbytes(60).hex().encode()


def _record(number: int) -> bytes:
    body = b"<html><body><p>Page %d, %s.</p></body></html>" % (number, _noise(number))
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
    head = b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: https://p/%d\r\n" % number
    head += b"Content-Type: application/http\r\nContent-Length: %d\r\n\r\n" % len(block)
    return head + block + b"\r\n\r\n"


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    lines = [json.dumps({"text": f"line {n} " + "word " * (n % 30)}) for n in range(400)]
    (root / "a-big.jsonl").write_text("\n".join(lines) + "\n")
    (root / "b-small.jsonl").write_text('{"text": "small file"}\n')
    (root / "c-crawl.warc.gz").write_bytes(b"".join(gzip.compress(_record(n)) for n in range(200)))
    (root / "d-one-member.warc.gz").write_bytes(gzip.compress(b"".join(map(_record, range(90)))))
    noisy = [json.dumps({"text": _noise(n).decode()}) for n in range(200)]
    (root / "e-lines.jsonl.gz").write_bytes(gzip.compress("\n".join(noisy).encode()))
    texts = [f"row {n} " + "text " * (n % 50) for n in range(3000)]
    pq.write_table(pa.table({"text": texts}), root / "f-groups.parquet", row_group_size=300)
    pq.write_table(pa.table({"text": texts}), root / "g-one-group.parquet")
    (root / "h-array.json").write_text(json.dumps([{"text": t} for t in texts[:400]]))
    (root / "i-crawl.warc").write_bytes(b"".join(_record(n) for n in range(60)))
    return root


def test_big_files_are_cut_and_the_rest_stays_whole_with_a_warning(tmp_path, caplog):
    root = _folder(tmp_path)
    _, files = list_input(str(root), "in")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        shards = plan_shards([files], TARGET)
    pieces: dict[str, list[FilePiece]] = {}
    for shard in shards:
        assert shard.size_bytes <= TARGET or len(shard.pieces) == 1
        for piece in shard.pieces:
            pieces.setdefault(piece.file.source.split("/", 1)[1], []).append(piece)
    assert list(pieces) == sorted(pieces)  # file order, pieces of a file together
    sizes = {f.source.split("/", 1)[1]: f.size_bytes for f in files}
    for name in ("a-big.jsonl", "c-crawl.warc.gz", "i-crawl.warc"):
        parts = [p.part for p in pieces[name]]
        assert len(parts) == -(-sizes[name] // TARGET) > 1, name
        assert {p.unit for p in parts} == {BYTES}
        assert parts[0].start == 0 and parts[-1].stop == sizes[name]
        assert all(a.stop == b.start for a, b in pairwise(parts))
    groups = [p.part for p in pieces["f-groups.parquet"]]
    assert len(groups) > 1 and {g.unit for g in groups} == {ROW_GROUPS}
    assert [g.first_row for g in groups] == [300 * g.start for g in groups]
    assert groups[-1].stop == pq.ParquetFile(root / "f-groups.parquet").num_row_groups
    whole = ("b-small.jsonl", "d-one-member.warc.gz", "e-lines.jsonl.gz", "g-one-group.parquet",
             "h-array.json")  # fmt: skip
    for name in whole:
        assert [p.part for p in pieces[name]] == [None], name
    warned = [r.getMessage() for r in caplog.records if "is not split" in r.getMessage()]
    assert len(warned) == 4  # b-small is below the target: nothing to say
    for name, why in (("d-one-member.warc.gz", "single gzip member"),
                      ("e-lines.jsonl.gz", "compressed stream"),
                      ("g-one-group.parquet", "one row group"),
                      ("h-array.json", "JSON array")):  # fmt: skip
        assert any(name in line and why in line for line in warned), (name, warned)


def test_reading_the_shards_gives_the_rows_of_the_whole_files(tmp_path):
    root = _folder(tmp_path)
    _, files = list_input(str(root), "in")
    split = plan_shards([files], TARGET)
    assert len(split) > len(files)
    rows = []
    for shard in split:
        items = [(p.file.path, p.file.source, p.part) for p in shard.pieces]
        rows += read_shard(items, 0, FS, CFG).drop_columns(["ordinal"]).to_pylist()
    whole = read_shard([(f.path, f.source) for f in files], 0, FS, CFG)
    assert rows == whole.drop_columns(["ordinal"]).to_pylist()
    assert len({row["id"] for row in rows}) == len(rows)


def test_each_piece_is_hashed_from_its_own_bytes(tmp_path):
    """The done marker's digests cost one read of each split file in all: each piece
    hashes the span it read, and the spans tile the file (overlapping by a line)."""
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"text": f"line {n} " * 9}) + "\n" for n in range(20_000)))
    big = InputFile(str(path), "in/big.jsonl", path.stat().st_size)
    pieces = [p for s in plan_shards([[big]], 400_000) for p in s.pieces]
    assert len(pieces) >= 4
    _, read = read_pieces([(big.path, big.source, p.part) for p in pieces], 0, FS, CFG, True)
    spans = [found.spans[0] for found in read]
    assert [lo for lo, _ in spans] == [max(p.part.start - 1, 0) for p in pieces]
    assert spans[-1][1] == big.size_bytes
    hashed = sum(hi - lo for lo, hi in spans)  # past its stop a piece reads 64 KiB chunks
    assert big.size_bytes <= hashed <= big.size_bytes + len(pieces) * (64 << 10)


@pytest.mark.parametrize("lead", [0, 700])
@pytest.mark.parametrize("target", [300, 1_500, 10**9])
def test_tiny_and_huge_targets(tmp_path, target, lead):
    root = _folder(tmp_path)
    _, files = list_input(str(root), "in")
    shards = plan_shards([files], target, lead_shard_bytes=lead)
    rows = [
        row
        for shard in shards
        for row in read_shard(
            [(p.file.path, p.file.source, p.part) for p in shard.pieces], 0, FS, CFG
        )["id"].to_pylist()
    ]
    assert rows == read_shard([(f.path, f.source) for f in files], 0, FS, CFG)["id"].to_pylist()


def _lead_folder(tmp_path: Path, first: str) -> Path:
    """One input whose first file (by name) is ``first``, then the usual files."""
    root = _folder(tmp_path)
    texts = [f"row {n} " + "text " * (n % 50) for n in range(3000)]
    makers = {
        "jsonl": lambda path: path.write_bytes((root / "a-big.jsonl").read_bytes()),
        "warc.gz": lambda path: path.write_bytes((root / "c-crawl.warc.gz").read_bytes()),
        "warc": lambda path: path.write_bytes((root / "i-crawl.warc").read_bytes()),
        "parquet": lambda path: pq.write_table(pa.table({"text": texts}), path, row_group_size=300),
    }
    makers[first](root / f"0-first.{first}")
    return root


@pytest.mark.parametrize("first", ["jsonl", "warc.gz", "warc", "parquet"])
def test_the_lead_shard_is_a_short_first_piece_and_changes_no_row(tmp_path, first):
    """``lead_shard_bytes`` cuts the plan's first file so that the first shard is short
    (its first output shows early); every later cut stays where it was, and reading the
    shards in order gives the same ids and rows as reading each file whole."""
    root = _lead_folder(tmp_path, first)
    _, files = list_input(str(root), "in")
    target, lead = 15_000, 9_000 if first == "parquet" else 3_000  # two row groups
    assert files[0].size_bytes > target  # cut even without the lead: pieces as usual
    plain = plan_shards([files], target)
    led = plan_shards([files], target, lead_shard_bytes=lead)
    head = led[0]
    assert len(head.pieces) == 1 and head.pieces[0].file == files[0]
    assert head.pieces[0].part is not None and head.pieces[0].part.start == 0
    if first == "parquet":  # whole row groups: the leading ones that fit, at least one
        meta = pq.ParquetFile(files[0].path).metadata
        group_bytes = [
            sum(g.column(c).total_compressed_size for c in range(g.num_columns))
            for g in map(meta.row_group, range(meta.num_row_groups))
        ]
        fit = max(1, max(k for k in range(len(group_bytes)) if sum(group_bytes[:k]) <= lead))
        assert head.pieces[0].part.stop == fit and head.size_bytes == sum(group_bytes[:fit])
    else:
        assert head.size_bytes == lead
    assert len(led) > len(plain)
    later = lambda plan: [p for s in plan for p in s.pieces if p.file != files[0]]  # noqa: E731
    assert later(led) == later(plain)  # only the first file's cuts moved

    def rows(plan):
        out = []
        for shard in plan:
            items = [(p.file.path, p.file.source, p.part) for p in shard.pieces]
            out += read_shard(items, 0, FS, CFG).drop_columns(["ordinal"]).to_pylist()
        return out

    whole = read_shard([(f.path, f.source) for f in files], 0, FS, CFG)
    assert rows(led) == rows(plain) == whole.drop_columns(["ordinal"]).to_pylist()


def test_the_lead_shard_of_small_or_whole_files(tmp_path, caplog):
    """A first file below the target but above the lead is cut (no warning when it
    cannot be: only the lead would have cut it); small first files are grouped up to
    the lead; a lead at or above the target, or 0, changes nothing."""
    root = _folder(tmp_path)
    _, files = list_input(str(root), "in")
    big = files[0]  # a-big.jsonl
    plain = plan_shards([files], 10**9)
    assert len(plain) == 1
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        led = plan_shards([files], 10**9, lead_shard_bytes=2_000)
    assert "is not split" not in caplog.text  # every file is below the target
    assert [p.part.describe() for p in led[0].pieces] == [[BYTES, 0, 2_000]]
    assert led[1].pieces[0].part.describe() == [BYTES, 2_000, big.size_bytes]
    assert [p.file for s in led for p in s.pieces][1:] == [big, *files[1:]]
    for lead in (0, 10**9, 10**10):
        assert plan_shards([files], 10**9, lead_shard_bytes=lead) == plain
    # A first file that cannot be cut is the lead alone; small ones are grouped.
    one_member = [f for f in files if f.source.endswith("d-one-member.warc.gz")]
    small = [f for f in files if f.source.endswith("b-small.jsonl")]
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        (head, rest) = plan_shards([one_member + small], 10**9, lead_shard_bytes=1_000)
    assert [p.part for p in head.pieces] == [None] and head.files == tuple(one_member)
    assert "is not split" not in caplog.text
    assert rest.files == tuple(small)
    led = plan_shards([small * 3 + [big]], 10**9, lead_shard_bytes=1_000)
    assert [len(s.pieces) for s in led] == [3, 1] and led[1].pieces[0].part is None


def test_the_config_plans_a_lead_shard_by_default(tmp_path):
    """``lead_shard_bytes`` reaches the planner from the config: 128 KiB by default,
    where it is below ``shard_input_bytes``."""
    from pipeline.config import CurateConfig
    from pipeline.runner import plan

    root = tmp_path / "in"
    root.mkdir()
    lines = "".join(json.dumps({"text": f"line {n} " + "word " * 40}) + "\n" for n in range(4000))
    (root / "a.jsonl").write_text(lines)  # about 0.9 MB
    config = CurateConfig.model_validate(
        {"inputs": [{"path": str(root)}], "output_dir": str(tmp_path / "o")}
    )
    assert config.lead_shard_bytes == 128 * 1024
    first, rest = plan(config)
    assert first.size_bytes == 128 * 1024 and rest.size_bytes == len(lines) - 128 * 1024
    none = config.model_copy(update={"lead_shard_bytes": 0})
    assert [s.pieces[0].part for s in plan(none)] == [None]


def test_a_folder_written_before_the_lead_resumes_with_lead_shard_bytes_0(tmp_path):
    """Without Ray: a run.json as the version before ``lead_shard_bytes`` wrote it (no
    such key, fingerprinted without it) is claimed by ``lead_shard_bytes: 0``, which
    plans as that version did; the default lead plans another first shard, so it is
    refused, naming the key."""
    import hashlib

    from pipeline.config import ConfigError, CurateConfig, without_run_settings
    from pipeline.curate import RunLayout
    from pipeline.runner import _claim_output_dir

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "x"}\n')
    spec = {"inputs": [{"path": str(tmp_path / "in")}], "output_dir": str(tmp_path / "out")}
    no_lead = CurateConfig.model_validate({**spec, "lead_shard_bytes": 0})
    before = {k: v for k, v in no_lead.portable_dump().items() if k != "lead_shard_bytes"}
    canonical = json.dumps(without_run_settings(before), sort_keys=True)
    old_fingerprint = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert no_lead.fingerprint() == old_fingerprint
    layout = RunLayout.for_output(str(tmp_path / "out"))
    run_file = tmp_path / "out" / "run.json"
    old_run = json.dumps({"config_fingerprint": old_fingerprint, "config": before})
    (tmp_path / "out").mkdir()
    run_file.write_text(old_run)
    _claim_output_dir(layout, no_lead, overwrite=False)  # resumes: no refusal
    run_file.write_text(old_run)
    with pytest.raises(ConfigError, match=r"differs in lead_shard_bytes: null -> 131072\)"):
        _claim_output_dir(layout, CurateConfig.model_validate(spec), overwrite=False)


def test_a_file_that_cannot_be_inspected_stays_whole(tmp_path, caplog):
    gone = InputFile(str(tmp_path / "gone.parquet"), "in/gone.parquet", 10**8)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        (shard,) = plan_shards([[gone]], TARGET)
    assert [p.part for p in shard.pieces] == [None]
    assert "in/gone.parquet" in caplog.text and "could not be inspected" in caplog.text


def test_a_run_gives_the_same_outputs_whatever_the_split(ray_session, tmp_path):
    """End to end: the curated documents (ids, texts, order), the rejects and the ledger
    of a run that cuts the big files equal those of a run that reads them whole; exact
    dedup keeps the same first copy when the copies lie in different pieces."""
    from pipeline.config import CurateConfig
    from pipeline.runner import run_curate

    root = tmp_path / "in"
    root.mkdir()
    sentence = "The {n}th river runs past old stone bridges and quiet farms toward the sea. "
    lines = [json.dumps({"text": f"Document {n}. " + sentence.format(n=n) * 4}) for n in range(300)]
    lines[250] = lines[20]  # a copy in a later piece: the first one survives
    lines[100] = "{broken json"
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    texts = [f"Row {n}. " + sentence.format(n=n) * 3 for n in range(900)]
    texts[850] = texts[10]
    pq.write_table(pa.table({"text": texts}), root / "b.parquet", row_group_size=100)

    def run(name: str, shard_bytes: int, lead_bytes: int = 0) -> tuple[list, list, dict, int]:
        config = CurateConfig.model_validate(
            {
                "inputs": [{"path": str(root), "name": "in"}],
                "output_dir": str(tmp_path / name),
                "shard_input_bytes": shard_bytes,
                "min_piece_bytes": 1,
                "lead_shard_bytes": lead_bytes,
                "stages": {"extract": None, "langid": None, "heuristics": None, "domain": None},
            }
        )
        result = run_curate(config)
        docs = pq.read_table(tmp_path / name / "docs", columns=["id", "record", "text"])
        rejects = pq.read_table(tmp_path / name / "rejects", columns=["id", "stage", "reason"])
        ledger = {k: result.ledger[k] for k in ("totals", "stages")}
        rows = sorted(map(str, rejects.to_pylist()))  # the rejects folder's files: by shard
        return docs.to_pylist(), rows, ledger, result.ledger["shards"]

    whole_docs, whole_rejects, whole_ledger, whole_shards = run("whole", 10**9)
    split_docs, split_rejects, split_ledger, split_shards = run("split", 20_000)
    assert whole_shards == 1 and split_shards >= 6
    assert split_docs == whole_docs
    assert split_rejects == whole_rejects and split_ledger == whole_ledger
    # A lead shard (the first 5 kB of a.jsonl) before one shard of the rest, and a lead
    # before the usual cuts: the same documents, rejects and ledger.
    lead_docs, lead_rejects, lead_ledger, lead_shards = run("lead", 10**9, 5_000)
    assert lead_shards == 2
    assert (lead_docs, lead_rejects, lead_ledger) == (whole_docs, whole_rejects, whole_ledger)
    both = run("split-lead", 20_000, 5_000)
    assert both[3] == split_shards + 1
    assert both[:3] == (whole_docs, whole_rejects, whole_ledger)
    dropped = [r for r in whole_rejects if "exact_dedup" in r]
    assert len(dropped) == 2  # one copy of each pair
    records = [row["record"] for row in whole_docs]
    assert "line:1" in records and "row:10" in records and "row:850" not in records


def test_done_markers_compare_each_piece_by_its_own_bytes(tmp_path):
    """Without Ray: the records of a split JSONL and a split Parquet file, then a same-size
    change inside one piece of each; only the shards that read the changed bytes see it."""
    from pipeline.curate import input_changes, input_records

    root = tmp_path / "in"
    root.mkdir()
    lines = [json.dumps({"text": f"line {n:05d} " * 8}) for n in range(6_000)]
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    texts = [f"row {n:05d} " + _noise(n).decode() for n in range(6_000)]
    pq.write_table(pa.table({"text": texts}), root / "b.parquet", row_group_size=500,
                   compression="none")  # fmt: skip
    _, files = list_input(str(root), "in")
    shards = plan_shards([files], 200_000)
    assert len(shards) >= 6
    markers = []
    for shard in shards:
        readable = list(shard.pieces)
        items = [(p.file.path, p.file.source, p.part) for p in readable]
        _, read = read_pieces(items, shard.index, FS, CFG, True)
        markers.append(input_records(shard, FS, dict(zip(readable, read, strict=True))))
    for shard, marker in zip(shards, markers, strict=True):
        assert all(r["sha256"] for r in marker) and all("spans" in r for r in marker)
        old_mtimes = {f.source: 0 for f in shard.files}  # every file looks touched
        assert input_changes(marker, shard, FS, old_mtimes) == []

    def edit(path: Path, old: bytes, new: bytes) -> None:
        data = path.read_bytes()
        assert len(old) == len(new) and data.count(old) == 1
        path.write_bytes(data.replace(old, new))

    edit(root / "a.jsonl", b'{"text": "line 05000', b'{"text": "LINE 05000')
    edit(root / "b.parquet", b"row 01234", b"ROW 01234")
    changed = [
        shard.index
        for shard, marker in zip(shards, markers, strict=True)
        if input_changes(marker, shard, FS, {f.source: 0 for f in shard.files})
    ]
    assert len(changed) == 2, changed  # one piece of each file read the changed bytes
    sources = [{p.file.source for p in shards[index].pieces} for index in changed]
    assert sources == [{"in/a.jsonl"}, {"in/b.parquet"}]


def test_a_tiny_target_groups_whole_files_instead_of_crumbs(tmp_path):
    """``shard_input_bytes: 1`` (one shard per file, as some tests and users ask) must
    not cut files into one-byte pieces: pieces are at least ``min_piece_bytes``."""
    from pipeline.config import CurateConfig
    from pipeline.runner import plan

    root = tmp_path / "in"
    root.mkdir()
    for number in range(3):
        (root / f"{number}.jsonl").write_text('{"text": "x"}\n' * 2000)  # 28 kB each
    config = CurateConfig.model_validate(
        {"inputs": [{"path": str(root)}], "output_dir": str(tmp_path / "o"), "shard_input_bytes": 1}
    )
    shards = plan(config)
    assert [[p.part for p in s.pieces] for s in shards] == [[None]] * 3
    small = config.model_copy(update={"min_piece_bytes": 10_000})
    assert len(plan(small)) == 9  # 28 kB in pieces of at least 10 kB: three each
