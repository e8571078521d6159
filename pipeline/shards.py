"""Input listing, the shard plan, and idempotent writes.

A shard is a group of input files, or pieces of files, of about ``shard_input_bytes``:
a file larger than that is cut into pieces of about that size where its format allows
(byte ranges of plain JSON Lines and WARC files and of multi-member WARC gzip files,
row-group ranges of Parquet files; see ``split_file``), so one big file no longer runs
on one core. Pieces stay in file order, and a record is read by the piece in which it
starts and named by its place in the whole file, so the documents, their ids and their
order do not depend on the cut. The plan is a pure function of the listing (sorted
paths) and of the files' first bytes and footers, so shard numbers, and with them
document order and the choice of which duplicate survives, are the same on every run.

Writes follow one rule: write to a temporary name, rename into place, then write the
marker that says the shard is done. A crash leaves at most a hidden temporary file
(``.NAME.tmp-*``: folder readers such as pyarrow datasets skip dot files); a marker only
exists for a complete shard.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import json
import logging
import os
import posixpath
import stat
import uuid
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.byte_streams import LINE_MAX_BYTES, warc_gzip_layout
from stages.readers import BYTES, ROW_GROUPS, Part, count_line_starts, reader_kind

GLOB_CHARACTERS = set("*?[")
log = logging.getLogger("pipeline")


# Why an entry of an input folder is listed but cannot be read: each becomes one
# rejected row (stage "read") in the ledger, so input = kept + rejected + errors still
# counts every entry that looked like input.
REASON_DANGLING_SYMLINK = "dangling_symlink"
REASON_SYMLINK_LOOP = "symlink_loop"
REASON_SYMLINK_OUTSIDE = "symlink_outside_input"
REASON_FIFO = "fifo"
REASON_SOCKET = "socket"
REASON_DEVICE = "device_file"
REASON_NON_UTF8_NAME = "non_utf8_filename"
REASON_UNLISTABLE = "unlistable_folder"


@dataclass(frozen=True, slots=True)
class InputFile:
    path: str  # path inside its filesystem
    source: str  # input name + path relative to the input root: stable across mounts
    size_bytes: int
    mtime_ns: int = 0  # recorded in the shard's done marker: a changed file is noticed
    problem: str | None = None  # a REASON_* above: listed, never opened


@dataclass(frozen=True, slots=True)
class FilePiece:
    """A whole input file (``part`` None) or one part of it, as a shard holds it."""

    file: InputFile
    part: Part | None = None
    size_bytes: int = 0  # the bytes of the file this piece reads (all of them if whole)

    def describe(self) -> list[Any] | None:
        """How a done marker records the piece: None for a whole file."""
        return None if self.part is None else self.part.describe()


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    input_index: int  # shards never mix inputs, so one filesystem serves a shard
    pieces: tuple[FilePiece, ...]

    @property
    def files(self) -> tuple[InputFile, ...]:
        """The shard's input files, each once, in order (a split file's piece counts)."""
        return tuple({piece.file: None for piece in self.pieces})

    @property
    def size_bytes(self) -> int:
        return sum(piece.size_bytes for piece in self.pieces)

    def listing(self) -> list[list[Any]]:
        """``[source, size, mtime_ns, problem, piece]`` per piece: what a done marker
        records, so a rerun can tell whether the shard's input is still the same."""
        return [
            [p.file.source, p.file.size_bytes, p.file.mtime_ns, p.file.problem, p.describe()]
            for p in self.pieces
        ]


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


def list_input(
    path: str, name: str, follow_symlinks_outside: bool = False
) -> tuple[pafs.FileSystem, list[InputFile]]:
    """The files of one input spec, sorted by source; entries that look like input but
    cannot be read (see the REASON_* constants) are listed with their ``problem``.
    Raises FileNotFoundError if nothing matches."""
    filesystem, inner = resolve_filesystem(path)
    base, pattern = _split_glob(inner)
    if isinstance(filesystem, pafs.LocalFileSystem):
        files = _list_local(base, pattern, name, follow_symlinks_outside)
    else:
        files = _list_remote(filesystem, base, pattern, name)
    if not files:
        raise FileNotFoundError(f"input {name!r}: no readable files match {path}")
    return filesystem, sorted(files, key=lambda f: f.source)


def _wanted(relative: str, pattern: str | None) -> bool:
    """The glob decides when there is one; otherwise the file must have a reader (a
    folder may hold files we do not read: READMEs without .txt, images)."""
    if pattern is not None:
        return fnmatch.fnmatchcase(relative, pattern)
    return reader_kind(relative) is not None


def _list_remote(
    filesystem: pafs.FileSystem, base: str, pattern: str | None, name: str
) -> list[InputFile]:
    """Object stores and other pyarrow filesystems: no symlinks, no special files."""
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
        if _wanted(relative, pattern):
            mtime = entry.mtime_ns or 0
            files.append(InputFile(entry.path, f"{name}/{relative}", entry.size or 0, mtime))
    return files


def _list_local(base: str, pattern: str | None, name: str, follow_outside: bool) -> list[InputFile]:
    """Walk a local input folder once per real folder, names as bytes.

    Symlinks are followed only when they resolve inside the input root (or anywhere with
    ``follow_outside``); a folder reached twice (a link to an ancestor, two links to one
    folder) is walked once, and a file reached through several links is listed once, so
    the work is bounded by the number of real entries. Dangling links, link loops,
    links pointing out, FIFOs, sockets, devices and names that are not UTF-8 are listed
    with a problem instead of being read or skipped silently."""
    try:
        top = os.stat(base)
    except FileNotFoundError:
        raise FileNotFoundError(f"input {name!r}: {base} does not exist") from None
    if stat.S_ISREG(top.st_mode) and pattern is None:
        relative = posixpath.basename(base)
        return [InputFile(base, f"{name}/{relative}", top.st_size, top.st_mtime_ns)]
    if not stat.S_ISDIR(top.st_mode):
        raise FileNotFoundError(f"input {name!r}: {base} is not a file or a folder")
    root_real = os.path.realpath(base)
    walker = _LocalWalker(base, root_real, pattern, name, follow_outside)
    walker.walk(os.fsencode(base), b"", top)
    return walker.files


class _LocalWalker:
    """State of one ``_list_local`` walk: folders seen (device, inode), files seen."""

    def __init__(
        self, base: str, root_real: str, pattern: str | None, name: str, follow_outside: bool
    ) -> None:
        self.base, self.root_real, self.pattern, self.name = base, root_real, pattern, name
        self.follow_outside = follow_outside
        self.folders_seen: set[tuple[int, int]] = set()
        self.files_seen: set[tuple[int, int]] = set()
        self.files: list[InputFile] = []
        self.links: list[tuple[bytes, bytes]] = []  # symlinks met, followed after

    def walk(self, folder: bytes, relative: bytes, info: os.stat_result) -> None:
        """Real folders first, links after: a file or folder reachable both directly
        and through a link is listed under its own name, whatever the name order."""
        pending = [(folder, relative, info)]
        while pending or self.links:
            if not pending:
                links, self.links = self.links, []
                for link, link_relative in links:
                    child = self._entry(link, link_relative, follow=True)
                    if child is not None:
                        pending.append(child)
                pending.reverse()
                continue
            folder, relative, info = pending.pop()
            if (info.st_dev, info.st_ino) in self.folders_seen:
                continue  # a loop, or a second link to a folder already walked
            self.folders_seen.add((info.st_dev, info.st_ino))
            try:
                with os.scandir(folder) as scan:
                    entries = sorted(scan, key=lambda entry: entry.name)
            except OSError as exc:
                self._problem(relative or b".", f"{REASON_UNLISTABLE}:{exc.errno}", force=True)
                continue
            found = []
            for entry in entries:
                entry_relative = relative + b"/" + entry.name if relative else entry.name
                child = self._entry(entry.path, entry_relative)
                if child is not None:
                    found.append(child)
            pending.extend(reversed(found))  # depth first, in name order

    def _entry(self, full: bytes, relative: bytes, follow: bool = False) -> tuple | None:
        """List one entry; return (folder, relative, stat) when it is a folder to walk.
        A symlink is put aside until the real entries are walked (``follow`` then)."""
        try:
            own = os.lstat(full)
        except OSError:
            return None  # vanished since the folder was listed
        if stat.S_ISLNK(own.st_mode) and not follow:
            self.links.append((full, relative))
            return None
        if stat.S_ISLNK(own.st_mode):
            try:
                info = os.stat(full)
            except FileNotFoundError:
                return self._problem(relative, REASON_DANGLING_SYMLINK)
            except OSError as exc:  # ELOOP: a link to itself, or a cycle of links
                reason = (
                    REASON_SYMLINK_LOOP if exc.errno == errno.ELOOP else REASON_DANGLING_SYMLINK
                )
                return self._problem(relative, reason)
            target = os.path.realpath(os.fsdecode(full))
            inside_root = target == self.root_real or target.startswith(
                self.root_real.rstrip("/") + "/"
            )
            if not inside_root and not self.follow_outside:
                # Never read: a link to /etc/passwd must not end up in the rejects' snippets.
                return self._problem(
                    relative, REASON_SYMLINK_OUTSIDE, force=stat.S_ISDIR(info.st_mode)
                )
        else:
            info = own
        if stat.S_ISDIR(info.st_mode):
            return (full, relative, info)
        if stat.S_ISREG(info.st_mode):
            if (info.st_dev, info.st_ino) in self.files_seen:
                return None  # the same file through another link: listed once
            text = self._decoded(relative)
            if text is None:
                return self._problem(relative, REASON_NON_UTF8_NAME)
            if _wanted(text, self.pattern):
                self.files_seen.add((info.st_dev, info.st_ino))
                path = posixpath.join(self.base, text)
                self.files.append(
                    InputFile(path, f"{self.name}/{text}", info.st_size, info.st_mtime_ns)
                )
            return None
        if stat.S_ISFIFO(info.st_mode):
            return self._problem(relative, REASON_FIFO)
        if stat.S_ISSOCK(info.st_mode):
            return self._problem(relative, REASON_SOCKET)
        return self._problem(relative, REASON_DEVICE)

    @staticmethod
    def _decoded(relative: bytes) -> str | None:
        try:
            return relative.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _problem(self, relative: bytes, reason: str, force: bool = False) -> None:
        """List an entry that cannot be read, if its name is one the input would read
        (``force``: always, for folders); a name that is not UTF-8 is shown escaped."""
        text = relative.decode("utf-8", "backslashreplace")
        if force or _wanted(text, self.pattern):
            problem = REASON_NON_UTF8_NAME if self._decoded(relative) is None else reason
            source = f"{self.name}/{text}"
            self.files.append(InputFile(posixpath.join(self.base, text), source, 0, 0, problem))
        return None


def plan_shards(
    inputs: list[list[InputFile]],
    shard_input_bytes: int,
    filesystems: list[pafs.FileSystem] | None = None,
    min_piece_bytes: int = 1,
    lead_shard_bytes: int = 0,
) -> list[Shard]:
    """Cut each file larger than the target into pieces (``split_file``), then group
    each input's pieces greedily, in file order, inputs in config order; a piece larger
    than the target is a shard alone. ``filesystems`` (one per input; local files when
    not given) is where the footers and first gzip members are read. Pieces are at least
    ``min_piece_bytes`` (the curate config's ``min_piece_bytes``, 1 MiB by default).

    The plan's first shard, the lead, holds at most ``lead_shard_bytes`` where that is
    below the target (0: no lead): the first file's first piece is cut to that size
    where its format allows, so the first output of a run (or its first failure) shows
    after one short shard instead of one full one; ``map_items`` starts the smallest
    shard first. It is one piece per plan, so it may be below ``min_piece_bytes``. Like
    any other cut it changes no id, no document and no order (tests/pipeline/
    test_split_plan.py)."""
    shards: list[Shard] = []
    piece_bytes = max(shard_input_bytes, min_piece_bytes)
    lead_bytes = lead_shard_bytes if 0 < lead_shard_bytes < shard_input_bytes else 0
    for input_index, files in enumerate(inputs):
        filesystem = filesystems[input_index] if filesystems else pafs.LocalFileSystem()
        current: list[FilePiece] = []
        current_bytes = 0
        for file in files:
            first_of_plan = not shards and not current
            for piece in split_file(file, piece_bytes, filesystem, lead_bytes * first_of_plan):
                limit = lead_bytes if lead_bytes and not shards else shard_input_bytes
                if current and current_bytes + piece.size_bytes > limit:
                    shards.append(Shard(len(shards), input_index, tuple(current)))
                    current, current_bytes = [], 0
                current.append(piece)
                current_bytes += piece.size_bytes
        if current:
            shards.append(Shard(len(shards), input_index, tuple(current)))
    return shards


_WHOLE_BY_NATURE = {
    "html": "one document per file",
    "text": "one document per file",
    "code": "one document per file",
}


def split_file(
    file: InputFile, target_bytes: int, filesystem: pafs.FileSystem, lead_bytes: int = 0
) -> list[FilePiece]:
    """The pieces of one file, about ``target_bytes`` each, or the whole file. With
    ``lead_bytes`` (the plan's first file, ``plan_shards``) the first piece is about
    that size and the rest is cut as usual, where the format allows.

    Split: plain JSON Lines (and ``.json`` holding lines) and plain WARC by byte range;
    ``.warc.gz`` by byte range when it is multi-member (one member per record, as Common
    Crawl writes them: found by inflating the first member only); Parquet by row-group
    range (sizes from the footer). Whole, with one warning naming the file and why: a
    single-member gzip or a zstd stream (it can only be inflated from its start), a
    ``.json`` array (parsed whole), a Parquet file of one row group, one-document
    formats. Planning reads footers and first members, never whole files."""
    whole = [FilePiece(file, None, file.size_bytes)]
    lead_bytes = lead_bytes if 0 < lead_bytes < min(target_bytes, file.size_bytes) else 0
    if file.problem is not None or (file.size_bytes <= target_bytes and not lead_bytes):
        return whole
    kind = reader_kind(file.path)
    lower = file.path.lower()
    try:
        reason = None
        if kind in ("jsonl", "warc") and not lower.endswith((".gz", ".zst")):
            if lower.endswith(".json") and _json_array(filesystem, file.path):
                reason = "a JSON array is parsed whole (convert it to JSON Lines to split it)"
            elif kind == "jsonl":
                return _numbered_lines(_byte_pieces(file, target_bytes, lead_bytes), filesystem)
            else:
                return _byte_pieces(file, target_bytes, lead_bytes)
        elif kind == "warc" and lower.endswith(".gz"):
            with filesystem.open_input_file(file.path) as raw:
                reason = warc_gzip_layout(raw, file.size_bytes)
            if reason is None:
                return _byte_pieces(file, target_bytes, lead_bytes)
        elif kind == "parquet":
            pieces = _row_group_pieces(file, target_bytes, filesystem, lead_bytes)
            if len(pieces) > 1:
                return pieces
            reason = "it has one row group"
        elif lower.endswith((".gz", ".zst")):
            reason = "a compressed stream can only be read from its start"
        else:
            reason = _WHOLE_BY_NATURE.get(kind or "", "no reader splits this format")
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError)
        reason = f"it could not be inspected ({type(exc).__name__}: {exc})"
    if file.size_bytes <= target_bytes:
        return whole  # only the lead would have cut it: nothing worth a warning
    log.warning(
        "input %s (%.1f MB) is not split, one worker reads it whole: %s",
        file.source, file.size_bytes / 1e6, reason,
    )  # fmt: skip
    return whole


def _byte_pieces(file: InputFile, target_bytes: int, lead_bytes: int = 0) -> list[FilePiece]:
    """Equal byte ranges of at most ``target_bytes`` (no small last piece), after a
    first range of ``lead_bytes`` when that is given."""
    size = file.size_bytes
    count = -(-(size - lead_bytes) // target_bytes)
    bounds = [lead_bytes + (size - lead_bytes) * number // count for number in range(count + 1)]
    if lead_bytes:
        bounds.insert(0, 0)
    return [
        FilePiece(file, Part(BYTES, start, stop), stop - start) for start, stop in pairwise(bounds)
    ]


def _numbered_lines(pieces: list[FilePiece], filesystem: pafs.FileSystem) -> list[FilePiece]:
    """JSON Lines pieces with the number of lines that start before each, so a piece
    names its records ``line:N`` as the whole file would (one sequential read)."""
    with filesystem.open_input_stream(pieces[0].file.path, compression=None) as stream:
        before = count_line_starts(stream, [piece.part.start for piece in pieces])
    return [
        replace(piece, part=replace(piece.part, first_row=lines))
        for piece, lines in zip(pieces, before, strict=True)
    ]


def _row_group_pieces(
    file: InputFile, target_bytes: int, filesystem: pafs.FileSystem, lead_bytes: int = 0
) -> list[FilePiece]:
    """Consecutive row groups in pieces of about ``target_bytes`` (compressed sizes
    from the footer), after a first piece of the leading groups that fit in
    ``lead_bytes`` (at least one) when that is given; the rows before each piece keep
    ``row:N`` the file's numbering."""
    with filesystem.open_input_file(file.path) as raw:
        metadata = pq.ParquetFile(raw).metadata
    sizes, rows = [], []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        sizes.append(sum(group.column(c).total_compressed_size for c in range(group.num_columns)))
        rows.append(group.num_rows)
    stops: list[int] = []
    if lead_bytes and len(sizes) > 1:
        lead_stop = 1
        while lead_stop < len(sizes) - 1 and sum(sizes[: lead_stop + 1]) <= lead_bytes:
            lead_stop += 1
        stops.append(lead_stop)
    begin = stops[-1] if stops else 0
    stops += [begin + stop for stop in _even_group_stops(sizes[begin:], target_bytes)]
    if len(stops) <= 1:
        return [FilePiece(file, None, file.size_bytes)]
    pieces: list[FilePiece] = []
    for start, stop in pairwise([0, *stops]):
        part = Part(ROW_GROUPS, start, stop, sum(rows[:start]))
        pieces.append(FilePiece(file, part, sum(sizes[start:stop])))
    return pieces


def _even_group_stops(sizes: list[int], target_bytes: int) -> list[int]:
    """Where consecutive groups of ``sizes`` end when cut into about equal pieces of at
    most about ``target_bytes`` (one stop per piece, the last at ``len(sizes)``)."""
    total = sum(sizes)
    count = max(1, min(len(sizes), -(-total // target_bytes)))
    stops: list[int] = []
    done = 0
    for index, size in enumerate(sizes):
        done += size
        if index == len(sizes) - 1 or done >= total * (len(stops) + 1) / count:
            stops.append(index + 1)
    return stops


def _json_array(filesystem: pafs.FileSystem, path: str) -> bool:
    """Whether a ``.json`` file holds one array (the reader's own test: its first
    non-blank byte within the first line's worth of bytes is ``[``)."""
    with filesystem.open_input_file(path) as raw:
        return raw.read(LINE_MAX_BYTES).lstrip()[:1] == b"["


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
