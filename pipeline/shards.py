"""Input listing, the shard plan, and idempotent writes.

A shard is a group of input files of about ``shard_input_bytes``. The plan is a pure
function of the listing (sorted paths), so shard numbers, and with them document
order and the choice of which duplicate survives, are the same on every run.

Writes follow one rule: write to a temporary name, rename into place, then write the
marker that says the shard is done. A crash leaves at most a hidden temporary file
(``.NAME.tmp-*``: folder readers such as pyarrow datasets skip dot files); a marker only
exists for a complete shard.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.readers import reader_kind

GLOB_CHARACTERS = set("*?[")


@dataclass(frozen=True, slots=True)
class InputFile:
    path: str  # path inside its filesystem
    source: str  # input name + path relative to the input root: stable across mounts
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    input_index: int  # shards never mix inputs, so one filesystem serves a shard
    files: tuple[InputFile, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)


def resolve_filesystem(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for a local path or any URI."""
    if "://" in uri_or_path:
        return pafs.FileSystem.from_uri(uri_or_path)
    return pafs.LocalFileSystem(), uri_or_path


def _split_glob(path: str) -> tuple[str, str | None]:
    """``/data/crawl/*.warc.gz`` -> (``/data/crawl``, ``*.warc.gz``)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if GLOB_CHARACTERS & set(part):
            return "/".join(parts[:i]) or "/", "/".join(parts[i:])
    return path, None


def list_input(path: str, name: str) -> tuple[pafs.FileSystem, list[InputFile]]:
    """The readable files of one input spec, sorted. Raises FileNotFoundError if none."""
    filesystem, inner = resolve_filesystem(path)
    base, pattern = _split_glob(inner)
    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {name!r}: {base} does not exist")
    if info.type == pafs.FileType.File and pattern is None:
        entries = [info]
        base = posixpath.dirname(base)
    else:
        entries = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    files = []
    for entry in entries:
        if entry.type != pafs.FileType.File:
            continue
        relative = posixpath.relpath(entry.path, base)
        if pattern is not None and not fnmatch.fnmatchcase(relative, pattern):
            continue
        if pattern is None and reader_kind(entry.path) is None:
            continue  # a folder may hold files we do not read (READMEs without .txt, images)
        files.append(InputFile(entry.path, f"{name}/{relative}", entry.size or 0))
    if not files:
        raise FileNotFoundError(f"input {name!r}: no readable files match {path}")
    return filesystem, sorted(files, key=lambda f: f.source)


def plan_shards(inputs: list[list[InputFile]], shard_input_bytes: int) -> list[Shard]:
    """Greedy grouping of each input's sorted files, inputs in config order; a file larger
    than the target is a shard alone."""
    shards: list[Shard] = []
    for input_index, files in enumerate(inputs):
        current: list[InputFile] = []
        current_bytes = 0
        for file in files:
            if current and current_bytes + file.size_bytes > shard_input_bytes:
                shards.append(Shard(len(shards), input_index, tuple(current)))
                current, current_bytes = [], 0
            current.append(file)
            current_bytes += file.size_bytes
        if current:
            shards.append(Shard(len(shards), input_index, tuple(current)))
    return shards


def shard_name(index: int) -> str:
    return f"{index:05d}"


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise deterministically: same table, same bytes (no timestamps, fixed options)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=4096, write_statistics=True)
    return sink.getvalue()


def write_bytes_atomic(filesystem: pafs.FileSystem, path: str, data: bytes) -> None:
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    folder, name = posixpath.split(path)
    temporary = posixpath.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")  # hidden if left
    with filesystem.open_output_stream(temporary) as stream:
        stream.write(data)
    filesystem.move(temporary, path)


def write_parquet_atomic(filesystem: pafs.FileSystem, path: str, table: pa.Table) -> dict[str, Any]:
    """Write one Parquet file atomically; return its manifest entry."""
    data = parquet_bytes(table)
    write_bytes_atomic(filesystem, path, data)
    return {"rows": table.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_parquet_if_rows(
    filesystem: pafs.FileSystem, path: str, table: pa.Table
) -> dict[str, Any]:
    """Like ``write_parquet_atomic``, but a table without rows leaves no file (and
    removes one an earlier run left): a zero-row Parquet file stops HF ``datasets``
    ("BatchSize must be greater than 0"), and the row counts live in the stats anyway."""
    if table.num_rows:
        return write_parquet_atomic(filesystem, path, table)
    if filesystem.get_file_info(path).type == pafs.FileType.File:
        filesystem.delete_file(path)
    return {"rows": 0, "bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def write_json_atomic(filesystem: pafs.FileSystem, path: str, value: Any) -> None:
    text = json.dumps(value, indent=2) + "\n"  # insertion order: funnel order stays
    write_bytes_atomic(filesystem, path, text.encode())


def read_json(filesystem: pafs.FileSystem, path: str) -> Any | None:
    """The JSON at ``path``, or None when it does not exist."""
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read())


def read_parquet(
    filesystem: pafs.FileSystem,
    path: str,
    schema: pa.Schema | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """A Parquet file, or an empty table of ``schema`` when the file does not exist."""
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        if schema is None:
            raise FileNotFoundError(path)
        return schema.empty_table()
    return pq.read_table(path, filesystem=filesystem, columns=columns)
