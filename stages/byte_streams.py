"""Bytes in, bounded memory: the plain, gzip and zstd chunk sources, the buffered reader
the line-based formats share, and charset decoding with binary sniffing.

Files are read as streams and gzip is inflated in chunks with a cap on output, so memory
stays bounded by ``max_doc_bytes``. A multi-member gzip source remembers where each member
starts, so a record can be named by the byte offset of its gzip member (the offset Common
Crawl's index uses), and the records before a corrupt member are kept.

A WARC gzip source reads member by member: a corrupt, truncated or bomb member costs
one rejection and reading goes on at the next member that validates (``GZIP_MAGIC``,
inflates, begins with ``WARC/``). The same rule finds where a byte-range piece of a
multi-member file starts, and where the piece before it stops, so a file read as one
piece or as several gives the same records (see ``GzipSource``).
"""

from __future__ import annotations

import bisect
import hashlib
import re
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

REASON_CORRUPT_GZIP = "corrupt_gzip"
REASON_CORRUPT_ZSTD = "corrupt_zstd"
REASON_TRUNCATED = "truncated_record"
REASON_TOO_LARGE = "too_large"
REASON_BINARY = "binary_content"
REASON_INVALID_ENCODING = "invalid_encoding"

LINE_MAX_BYTES = 64 << 10
_CHUNK_BYTES = 1 << 20
GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1 ID2 CM=deflate: how every gzip member begins
_MEMBER_CHECK_BYTES = 64 << 10  # a candidate member must inflate this far (or end) cleanly
_WARC_START = b"WARC/"
_COMPACT_BYTES = 1 << 20
_SNIFF_BYTES = 64 << 10  # binary / text-likeness is judged on the first 64 KiB
_META_SNIFF_BYTES = 16 << 10
_BOMB_DOCS = 10  # a gzip member may inflate to this many max_doc_bytes before the ratio test
_MAX_REPLACED_SHARE = 0.01  # a declared charset may leave 1% undecodable characters
_MIN_TEXT_SHARE = 0.85  # ASCII text share for the last-resort cp1252 decode
_MAX_CONTROL_SHARE = 0.03
_MAX_NUL_SHARE = 0.001

_META_CHARSET = re.compile(rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([\w.:+-]+)", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([\w.:+-]+)", re.I)
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
_ASCII_TEXT_BYTES = bytes([9, 10, 13, *range(32, 127)])
_BINARY_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF-", b"PK\x03\x04", b"\x1f\x8b")
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# WHATWG: these labels mean a superset in practice; latin-1 pages use cp1252's 0x80-0x9f.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "us-ascii": "cp1252", "ascii": "cp1252", "gb2312": "gb18030", "gbk": "gb18030",
    "x-gbk": "gb18030", "shift_jis": "cp932", "x-sjis": "cp932", "sjis": "cp932",
    "euc-kr": "cp949", "ks_c_5601-1987": "cp949", "tis-620": "cp874",
}  # fmt: skip


class ReadError(Exception):
    """Stops the rest of a file: the stream cannot be trusted past this point."""

    def __init__(self, reason: str, score: float | None = None, offset: int | None = None):
        super().__init__(reason)
        self.reason, self.score, self.offset = reason, score, offset


# --- decoding ----------------------------------------------------------------------------


def decode_bytes(data: bytes, declared: Sequence[str] = ()) -> tuple[str | None, str | None]:
    """``(text, None)`` or ``(None, reason)``. Order: BOM, strict UTF-8, the declared
    charsets, then cp1252 only for bytes that look like text, so binary junk is rejected
    rather than turned into mojibake."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), None
            except UnicodeDecodeError:
                break
    if _looks_binary(data):
        return None, REASON_BINARY
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    for name in declared:
        label = name.strip().strip("\"'").lower()
        try:
            text = data.decode(_CHARSET_ALIASES.get(label, label), errors="replace")
        except (LookupError, UnicodeError, ValueError):  # unknown or non-text codec
            continue
        if text.count("\ufffd") <= len(text) * _MAX_REPLACED_SHARE:
            return text, None
    if _looks_like_text(data):
        return data.decode("cp1252", errors="replace"), None
    return None, REASON_INVALID_ENCODING


def _looks_binary(data: bytes) -> bool:
    sample = data[:_SNIFF_BYTES]
    if not sample:
        return False
    if sample.startswith(_BINARY_MAGIC):
        return True
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    nul_share = sample.count(0) / len(sample)
    return nul_share > _MAX_NUL_SHARE or controls / len(sample) > _MAX_CONTROL_SHARE


def _looks_like_text(data: bytes) -> bool:
    sample = data[:_SNIFF_BYTES]
    other = len(sample.translate(None, _ASCII_TEXT_BYTES))
    return bool(sample) and 1 - other / len(sample) >= _MIN_TEXT_SHARE


def declared_charsets(content_type: str | None, html: bytes) -> list[str]:
    """Declared charsets, HTTP header first (it overrides the page, as browsers do)."""
    found = [m.group(1) for m in [_HEADER_CHARSET.search(content_type or "")] if m]
    meta = _META_CHARSET.search(html[:_META_SNIFF_BYTES])
    if meta:
        found.append(meta.group(1).decode("ascii", "replace"))
    return found


# --- byte streams ------------------------------------------------------------------------


class TrackedFile:
    """A random-access input file read through one cursor that remembers the span of
    bytes read (``lo``..``hi``) and hashes them while the reads run on from ``lo``
    without a jump back: the done marker of a piece records exactly the bytes its rows
    came from, and a rerun compares those bytes instead of the whole file."""

    def __init__(self, raw: pa.NativeFile, start: int = 0) -> None:
        if start:
            raw.seek(start)
        self.raw, self.position, self.lo, self.hi = raw, start, start, start
        self.hasher: Any = hashlib.sha256()  # None once a read did not continue at hi

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size) if size >= 0 else self.raw.read()
        if self.hasher is not None and self.position == self.hi:
            self.hasher.update(data)
        elif data:
            self.hasher = None
        self.lo = min(self.lo, self.position)
        self.position += len(data)
        self.hi = max(self.hi, self.position)
        return data

    def seek(self, position: int) -> None:
        self.raw.seek(position)
        self.position = position

    def drain(self, reopened: pa.NativeFile) -> None:
        """Hash what is left of the file after ``hi`` (read through ``reopened``, the
        file opened again once reading closed it): a whole file's digest covers it all,
        as done markers always recorded, even when the reader stopped early."""
        self.raw = reopened
        self.seek(self.hi)
        while self.read(_CHUNK_BYTES):
            pass

    def digest(self) -> str | None:
        """sha256 of the bytes ``lo``..``hi``, or None when they were not read in one run
        (then ``span_digest`` reads them again)."""
        return None if self.hasher is None else self.hasher.hexdigest()


def span_digest(raw: pa.NativeFile, spans: Sequence[Sequence[int]]) -> str:
    """sha256 of the bytes of ``spans`` (``[lo, hi]`` pairs, in order) of a file."""
    digest = hashlib.sha256()
    for lo, hi in spans:
        raw.seek(lo)
        left = hi - lo
        while left > 0:
            piece = raw.read(min(left, _CHUNK_BYTES))
            if not piece:
                break
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


class PlainSource:
    """Chunks of a plain file. A piece (``stop`` given) reads in small chunks once past
    its stop, where it only finishes its last line or record: a piece's span (what its
    done marker hashes) runs little past its stop."""

    def __init__(
        self, raw: pa.NativeFile | TrackedFile, origin: int = 0, stop: int | None = None
    ) -> None:
        self.raw, self.position, self.stop = raw, origin, stop

    def next_chunk(self) -> bytes:
        size = _CHUNK_BYTES
        if self.stop is not None:
            size = min(size, max(self.stop - self.position, LINE_MAX_BYTES))
        chunk = self.raw.read(size)
        self.position += len(chunk)
        return chunk

    def locate(self, position: int) -> str:
        return str(position)

    def resume(self) -> bool:
        """Whether reading can go on after a ReadError (never for a plain stream)."""
        return False


def warc_member_at(data: bytearray, at: int, more: Callable[[], bytes] | None = None) -> bool:
    """Whether a gzip member of a WARC file starts at ``data[at:]``: the magic, then
    ``_MEMBER_CHECK_BYTES`` of output (or the whole member, or all the bytes there are)
    inflated without error, beginning with ``WARC/``. ``more()`` appends further bytes
    to ``data`` when the check needs them (b"" at the end of the input). Every reader of
    a multi-member file decides member starts with this one test, so the pieces of a
    split file agree on their boundaries."""
    while len(data) - at < len(GZIP_MAGIC):
        if more is None or not more():
            return False
    if data[at : at + len(GZIP_MAGIC)] != GZIP_MAGIC:
        return False
    inflater = zlib.decompressobj(31)
    out = bytearray()
    position = at
    while True:
        if position >= len(data) and (more is None or not more()):
            return out.startswith(_WARC_START)  # a truncated last member still counts
        try:
            piece = inflater.decompress(bytes(data[position:]), _MEMBER_CHECK_BYTES - len(out))
        except zlib.error:
            return False
        rest = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        position = len(data) - len(rest)
        out += piece
        if len(out) >= len(_WARC_START) and not out.startswith(_WARC_START):
            return False
        if inflater.eof or len(out) >= _MEMBER_CHECK_BYTES:
            return out.startswith(_WARC_START)


def warc_gzip_layout(raw: pa.NativeFile, size: int, probe_bytes: int = 1 << 20) -> str | None:
    """None when ``raw`` (a ``.warc.gz`` file of ``size`` bytes) is multi-member: its
    first member (within ``probe_bytes``) inflates to a WARC record and ends before the
    file does, where a second member that validates begins. Otherwise why not: such a
    file can only be read from its start. Reads the first member and the head of the
    second only, 64 KiB at a time (a Common Crawl file's first member, its ``warcinfo``
    record, is under 1 KiB), so planning many files reads little of each."""
    data = bytearray()

    def more() -> bytes:
        chunk = raw.read(_MEMBER_CHECK_BYTES)
        data.extend(chunk)
        return chunk

    inflater = zlib.decompressobj(31)
    head = b""
    try:
        while not inflater.eof and len(data) < probe_bytes and (pending := more()):
            while pending and not inflater.eof:
                out = inflater.decompress(pending, _CHUNK_BYTES)
                head = head if len(head) >= len(_WARC_START) else head + out[: len(_WARC_START)]
                pending = inflater.unconsumed_tail
    except zlib.error:
        return "its first gzip member does not inflate"
    if not inflater.eof:
        return f"its first gzip member is longer than {probe_bytes >> 10} KiB (one member?)"
    if not head.startswith(_WARC_START):
        return "its first gzip member holds no WARC record"
    second = len(data) - len(inflater.unused_data)
    if second >= size:
        return "it is a single gzip member"
    if not warc_member_at(data, second, more):
        return "its first gzip member is not followed by another WARC member"
    return None


class GzipSource:
    """Inflates a (multi-member) gzip stream in bounded chunks and remembers where each
    member starts, so a record can be named by its compressed offset.

    With ``members`` (WARC files: one member per record is the Common Crawl layout) a
    member that fails costs one ReadError, then ``resume`` goes on at the next member
    that ``warc_member_at`` accepts. A byte-range piece (``origin``, ``stop``) begins at
    the first accepted member at or after ``origin`` and ends before the first accepted
    member at or after ``stop``: exactly where the piece after it begins, so every
    member is read by one piece, the one in which it starts."""

    def __init__(
        self, raw: pa.NativeFile | TrackedFile, max_doc_bytes: int, max_ratio: float,
        *, members: bool = False, origin: int = 0, stop: int | None = None,
    ) -> None:  # fmt: skip
        self.raw, self.pending, self.pending_offset = raw, b"", origin
        self.inflater: Any = None
        self.max_member_bytes = _BOMB_DOCS * max_doc_bytes
        self.failed: ReadError | None = None
        self.max_ratio = max_ratio
        self.out_total = self.member_in = self.member_out = 0
        self.starts: list[int] = []  # decompressed position where each member begins
        self.offsets: list[int] = []  # compressed offset of that member
        self.members, self.stop, self.ended = members, stop, False
        if origin:
            self._sync(origin)

    def next_chunk(self) -> bytes:
        if self.failed is None:
            try:
                return self._inflate()
            except ReadError as err:
                self.failed = err
        raise self.failed  # the stream stays broken until resume() (members only)

    def resume(self) -> bool:
        """After a failed member: go on at the next member that validates. False for a
        plain gzip stream, whose rest cannot be trusted."""
        if self.failed is None or not self.members:
            return False
        failed_at = self.offsets[-1] if self.offsets else self.pending_offset
        self.failed, self.inflater = None, None
        if isinstance(self.raw, TrackedFile):  # scan from just after the failed start
            self.raw.seek(failed_at + 1)
            self._sync(failed_at + 1)
        else:  # a stream that cannot seek: scan on from where inflating stopped
            self._sync(self.pending_offset, self.pending)
        return True

    def _sync(self, position: int, buffered: bytes = b"") -> None:
        """Move to the first member that validates at or after ``position`` (the raw
        stream stands just after ``buffered``, which starts at ``position``); none
        before ``stop`` (or the end) ends the stream: the next piece reads from there."""
        buffer, base, searched = bytearray(buffered), position, 0
        self.pending = b""

        def more() -> bytes:
            chunk = self.raw.read(_CHUNK_BYTES)
            buffer.extend(chunk)
            return chunk

        while True:
            found = buffer.find(GZIP_MAGIC, searched)
            if found < 0:
                keep = max(searched, len(buffer) - len(GZIP_MAGIC) + 1)
                del buffer[:keep]
                base, searched = base + keep, 0
                past_stop = self.stop is not None and base >= self.stop
                if past_stop or not more():
                    self.ended = True
                    return
                continue
            if self.stop is not None and base + found >= self.stop:
                self.ended = True  # no member starts in this piece from here on
                return
            if warc_member_at(buffer, found, more):
                self.pending, self.pending_offset = bytes(buffer[found:]), base + found
                return
            searched = found + 1

    def _inflate(self) -> bytes:
        while True:
            if self.ended:
                return b""
            at_stop = self.stop is not None and self.pending_offset >= self.stop
            if self.inflater is None and at_stop and self._piece_ends_here():
                self.ended = True
                return b""
            if not self.pending:
                self.pending = self.raw.read(_CHUNK_BYTES)
                if not self.pending:
                    if self.inflater is not None:
                        raise ReadError(REASON_TRUNCATED, offset=self.offsets[-1])
                    return b""
            if self.inflater is None:
                self.inflater = zlib.decompressobj(31)
                self.starts.append(self.out_total)
                self.offsets.append(self.pending_offset)
                self.member_in = self.member_out = 0
            try:
                out = self.inflater.decompress(self.pending, _CHUNK_BYTES)
            except zlib.error as exc:
                raise ReadError(REASON_CORRUPT_GZIP, offset=self.offsets[-1]) from exc
            eof = self.inflater.eof
            rest = self.inflater.unused_data if eof else self.inflater.unconsumed_tail
            used = len(self.pending) - len(rest)
            self.pending, self.pending_offset = rest, self.pending_offset + used
            self.member_in += used
            self.member_out += len(out)
            self.out_total += len(out)
            if eof:
                self.inflater = None
            if (
                self.member_out > self.max_member_bytes
                and self.member_out > self.max_ratio * self.member_in
            ):
                raise ReadError(REASON_TOO_LARGE, float(self.member_out), self.offsets[-1])
            if out:
                return out

    def _piece_ends_here(self) -> bool:
        """At a member start at or after ``stop``: the piece ends if it validates (the
        next piece begins there); a member that does not is this piece's to reject."""
        buffer = bytearray(self.pending)

        def more() -> bytes:
            chunk = self.raw.read(_CHUNK_BYTES)
            buffer.extend(chunk)
            return chunk

        if not buffer and not more():
            return True  # the end of the file
        ends = warc_member_at(buffer, 0, more)
        self.pending = bytes(buffer)
        return ends

    def locate(self, position: int) -> str:
        index = bisect.bisect_right(self.starts, position) - 1
        if index < 0:
            return str(position)
        inner = position - self.starts[index]
        return f"{self.offsets[index]}+{inner}" if inner else str(self.offsets[index])


class _CountingReader:
    """A file-like view of a stream that counts the bytes read through it."""

    closed = False

    def __init__(self, raw: pa.NativeFile) -> None:
        self.raw, self.read_bytes = raw, 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size) if size >= 0 else self.raw.read()
        self.read_bytes += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:  # the caller's ``with`` closes the underlying stream
        self.closed = True


class ZstdSource:
    """Inflates a zstd stream (one or more frames) in bounded chunks with pyarrow's codec
    (no extra package). Records are named by their decompressed position: zstd frames
    carry no index to seek to. A stream that inflates past ``_BOMB_DOCS`` documents at
    more than ``max_ratio`` is a bomb: the rest of the file becomes one too_large row."""

    def __init__(self, raw: pa.NativeFile, max_doc_bytes: int, max_ratio: float) -> None:
        self.raw = _CountingReader(raw)  # a stream cannot tell(): count what the codec reads
        self.stream = pa.CompressedInputStream(pa.PythonFile(self.raw, mode="r"), "zstd")
        self.max_bytes, self.max_ratio = _BOMB_DOCS * max_doc_bytes, max_ratio
        self.out_total = 0
        self.failed: ReadError | None = None

    def next_chunk(self) -> bytes:
        if self.failed is not None:
            raise self.failed  # the stream stays broken once it broke
        try:
            out = self.stream.read(_CHUNK_BYTES)
        except OSError as exc:  # pyarrow: "Truncated compressed stream", bad frames
            truncated = "truncated" in str(exc).lower()
            reason = REASON_TRUNCATED if truncated else REASON_CORRUPT_ZSTD
            self.failed = ReadError(reason, offset=self.out_total)
            raise self.failed from exc
        self.out_total += len(out)
        ratio_cap = self.max_ratio * self.raw.read_bytes
        if self.out_total > self.max_bytes and self.out_total > ratio_cap:
            self.failed = ReadError(REASON_TOO_LARGE, float(self.out_total), 0)
            raise self.failed
        return out

    def locate(self, position: int) -> str:
        return str(position)

    def resume(self) -> bool:
        """A zstd stream cannot be trusted past a bad frame."""
        return False


class ByteReader:
    """Buffered reads over a chunk source: lines, peeks and skips, with a movable
    ``keep_from`` mark so a WARC record can be re-scanned after a bad Content-Length."""

    def __init__(self, source: PlainSource | GzipSource | ZstdSource, origin: int = 0) -> None:
        """``origin``: the position of the source's first byte (a piece of a plain file
        starts there), so positions and record offsets are the file's own."""
        self.source, self.buf, self.pos, self.eof = source, bytearray(), 0, False
        self.base = origin
        self.keep_from: int | None = None

    def resume(self) -> bool:
        """After a ReadError: whether the source goes on (a WARC gzip source at its next
        member). The bytes buffered from the failed part are dropped."""
        if not self.source.resume():
            return False
        self.base += len(self.buf)
        self.buf, self.pos, self.keep_from, self.eof = bytearray(), 0, None, False
        return True

    def tell(self) -> int:
        return self.base + self.pos

    def seek(self, position: int) -> None:
        if not self.base <= position <= self.base + len(self.buf):
            raise ValueError("position no longer buffered")
        self.pos = position - self.base

    def locate(self, position: int) -> str:
        return self.source.locate(position)

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.source.next_chunk()
        if not chunk:
            self.eof = True
            return False
        keep = self.pos if self.keep_from is None else min(self.pos, self.keep_from - self.base)
        if keep > _COMPACT_BYTES:
            del self.buf[:keep]
            self.base += keep
            self.pos -= keep
        self.buf += chunk
        return True

    def peek(self, size: int) -> bytes:
        while len(self.buf) - self.pos < size and self._fill():
            pass
        return bytes(self.buf[self.pos : self.pos + size])

    def readline(self, limit: int) -> bytes:
        """Up to and including the next newline, or ``limit`` bytes, or what is left."""
        scanned = 0
        while True:
            end = self.buf.find(b"\n", self.pos + scanned, self.pos + limit)
            if end >= 0:
                end += 1
                break
            scanned = len(self.buf) - self.pos
            if scanned >= limit or not self._fill():
                end = min(len(self.buf), self.pos + limit)
                break
        line = bytes(self.buf[self.pos : end])
        self.pos = end
        return line

    def skip(self, size: int) -> int:
        """Discard ``size`` bytes without holding them; returns how many there were."""
        available = len(self.buf) - self.pos
        if size <= available:
            self.pos += size
            return size
        self.base += len(self.buf)
        self.buf, self.pos, self.keep_from = bytearray(), 0, None
        left = size - available
        while left:
            chunk = b"" if self.eof else self.source.next_chunk()
            if not chunk:
                self.eof = True
                return size - left
            taken = min(left, len(chunk))
            self.base += taken
            left -= taken
            self.buf = bytearray(chunk[taken:])
        return size

    def skip_line(self) -> int:
        skipped = 0
        while True:
            piece = self.readline(LINE_MAX_BYTES)
            skipped += len(piece)
            if not piece or piece.endswith(b"\n"):
                return skipped
