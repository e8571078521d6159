"""The packed-shard format: the one contract between the packer (``stages/``) and the
trainer (``model_hooks/``). The consumer defines what it consumes, so it lives here;
it imports only pyarrow and numpy (no torch), so the packer can use it.

A phase directory holds Arrow IPC files (``shard-00000.arrow``), memory-mappable and
read zero-copy, and one ``.manifest.json``:

    packed/<phase>/
      .manifest.json
      shard-00000.arrow
      ...

The manifest (and the packer's ``.progress.json`` / ``.windows/``) are dot files so
that the folder reads as a dataset: ``pyarrow.dataset.dataset(dir, format="arrow")``,
``datasets.load_dataset("arrow", data_dir=dir)`` and DuckDB skip hidden files (HF
``datasets`` does not skip ``_``-prefixed files, pyarrow does not skip ``__`` ones
only). A phase written before this name (``manifest.json``) still reads.

Each row is one training sequence of exactly ``seq_len`` tokens:

* ``tokens``      list<uint16 or uint32>[seq_len]: documents back to back, then
                  ``pad_id``; uint16 when the vocabulary fits (``token_type``)
* ``cu_seqlens``  list<int32>: segment boundaries, ``[0, len_0, len_0+len_1, ..., used]``;
                  the padding after ``used`` is not a segment
* ``doc_ids``     list<string>: the curated document id of each segment
* ``domains``     list<string>: the data domain of each segment (loss per domain)
* ``doc_offsets`` list<int64>: where each segment starts inside its document (a
                  document longer than ``seq_len`` is split into several segments)
* ``n_tokens``    int32: tokens in use (``cu_seqlens[-1]``)

The trainer masks attention per segment (no attention across documents), resets
positions at each segment start, and puts no loss on padding. The schema's key-value
metadata names the project version and the tokenizer (``shard_metadata``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 1
MANIFEST_NAME = ".manifest.json"
LEGACY_MANIFEST_NAME = "manifest.json"  # phases packed before the dot name
PROJECT = "longcat-curriculum"


def packed_schema(token_type: pa.DataType | None = None) -> pa.Schema:
    """The packed row schema with ``tokens`` of ``token_type`` (default uint32)."""
    return pa.schema(
        [
            ("tokens", pa.list_(token_type or pa.uint32())),
            ("cu_seqlens", pa.list_(pa.int32())),
            ("doc_ids", pa.list_(pa.string())),
            ("domains", pa.list_(pa.string())),
            ("doc_offsets", pa.list_(pa.int64())),
            ("n_tokens", pa.int32()),
        ]
    )


PACKED_SCHEMA = packed_schema()  # what the packer builds; shards may narrow the tokens
TOKEN_TYPES = (pa.uint16(), pa.uint32())


def token_type(vocab_size: int) -> pa.DataType:
    """The narrowest unsigned type that holds every id: uint16 up to 65,536 tokens."""
    return pa.uint16() if vocab_size <= 2**16 else pa.uint32()


def project_version() -> str:
    """This project's installed version (``0+unknown`` when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PROJECT)
    except PackageNotFoundError:
        return "0+unknown"


def shard_metadata(tokenizer: str, tokenizer_sha256: str, vocab_size: int) -> dict[str, str]:
    """Key-value schema metadata every token file carries, so a file read alone says
    which tokenizer its ids belong to and what wrote it."""
    return {
        "longcat_curriculum.version": project_version(),
        "tokenizer": tokenizer,
        "tokenizer.sha256": tokenizer_sha256,
        "tokenizer.vocab_size": str(vocab_size),
    }


def narrow_tokens(table: pa.Table, vocab_size: int, metadata: dict[str, str]) -> pa.Table:
    """A packed table with ``tokens`` in ``token_type(vocab_size)`` and ``metadata``."""
    schema = packed_schema(token_type(vocab_size)).with_metadata(metadata)
    return table.cast(schema)


@dataclass(frozen=True)
class ShardEntry:
    file: str  # relative to the phase directory
    rows: int
    tokens: int  # tokens in use (padding excluded)
    sha256: str


@dataclass(frozen=True)
class ComponentShare:
    name: str
    declared_share: float  # weight in the mix YAML
    realised_share: float  # share of the phase's non-padding tokens
    tokens: int
    documents: int
    epochs: float  # tokens taken / tokens available in the selection


@dataclass(frozen=True)
class PhaseManifest:
    phase: str
    seq_len: int
    rope_theta: float | None
    pad_id: int
    eos_id: int
    vocab_size: int
    seed: int
    shards: list[ShardEntry]
    components: list[ComponentShare] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    padding_fraction: float = 0.0
    split_document_fraction: float = 0.0
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseManifest:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"packed shards of format {data.get('format_version')}, "
                f"this code reads {FORMAT_VERSION}"
            )
        data = dict(data)
        data["shards"] = [ShardEntry(**s) for s in data["shards"]]
        data["components"] = [ComponentShare(**c) for c in data.get("components", [])]
        return cls(**data)


def manifest_path(phase_dir: str | os.PathLike[str]) -> Path:
    """The phase's manifest: ``.manifest.json``, else an older phase's ``manifest.json``."""
    path = Path(phase_dir) / MANIFEST_NAME
    legacy = Path(phase_dir) / LEGACY_MANIFEST_NAME
    return legacy if not path.is_file() and legacy.is_file() else path


def read_manifest(phase_dir: str | os.PathLike[str]) -> PhaseManifest:
    return PhaseManifest.from_dict(json.loads(manifest_path(phase_dir).read_text()))


def write_manifest(phase_dir: str | os.PathLike[str], manifest: PhaseManifest) -> None:
    path = Path(phase_dir) / MANIFEST_NAME
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(manifest.to_json())
    temporary.replace(path)
    (Path(phase_dir) / LEGACY_MANIFEST_NAME).unlink(missing_ok=True)  # one manifest


def _check_schema(schema: pa.Schema) -> None:
    allowed = [packed_schema(t) for t in TOKEN_TYPES]
    if not any(schema.equals(a, check_metadata=False) for a in allowed):
        raise ValueError(f"packed table schema {schema} is none of {allowed}")


def validate_rows(table: pa.Table, seq_len: int) -> None:
    """Raise if a table breaks the row contract (used by the packer and tests)."""
    _check_schema(table.schema)
    for row in table.to_pylist():
        if len(row["tokens"]) != seq_len:
            raise ValueError(f"row of {len(row['tokens'])} tokens, seq_len is {seq_len}")
        cu = row["cu_seqlens"]
        segments = len(cu) - 1
        if cu[0] != 0 or any(b <= a for a, b in itertools.pairwise(cu)):
            raise ValueError(f"cu_seqlens not strictly increasing from 0: {cu}")
        if cu[-1] != row["n_tokens"] or row["n_tokens"] > seq_len:
            raise ValueError(f"cu_seqlens end {cu[-1]} != n_tokens {row['n_tokens']}")
        if not (len(row["doc_ids"]) == len(row["domains"]) == len(row["doc_offsets"]) == segments):
            raise ValueError("doc_ids, domains and doc_offsets need one entry per segment")


def write_shard(path: str | os.PathLike[str], table: pa.Table) -> ShardEntry:
    """Write one Arrow IPC shard atomically (tmp then rename); return its manifest entry.

    Uncompressed IPC on purpose: a reader memory-maps it and hands token slices to the
    trainer without a copy."""
    _check_schema(table.schema)
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1024)
    data = temporary.read_bytes()
    temporary.replace(path)
    used = int(np.asarray(table.column("n_tokens").to_numpy()).sum()) if table.num_rows else 0
    return ShardEntry(path.name, table.num_rows, used, hashlib.sha256(data).hexdigest())


def open_shard(path: str | os.PathLike[str]) -> pa.Table:
    """Memory-map one shard: the returned table's buffers point into the page cache."""
    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_file(source).read_all()
