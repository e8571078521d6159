"""The benchmark corpus: real documents, written once as WARC and JSONL so that our
pipeline and datatrove read exactly the same bytes.

Sources, in order of preference:

* ``../shared/data`` (beside the project): the Common Crawl / ClueWeb WARC responses,
  the web pages of ``web/`` (AEB, trafilatura's evaluation set, Readability's tests),
  the Gutenberg books cut into chapters (three editions of Moby-Dick: real near
  duplicates), the STEM sources and the code files;
* larger real text from Debian packages, fetched with ``apt-get download`` into a cache
  and unpacked with ``dpkg-deb -x``: Python's and SymPy's HTML documentation (web
  pages) and Go's standard library sources (text);
* without either, the bundled demo corpus generator (``demo.corpus``), so the command
  still runs end to end (the results' notes say so).

Every item becomes a WARC response record (web pages) or a JSONL line with ``id``,
``url`` and ``text`` (everything else). Items are taken round-robin over the kinds in a
seeded order, so a corpus of any size holds every kind; the URL is unique per item and
is what the two pipelines' outputs are matched on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import shutil
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from stages.base import DROP_REASON
from stages.readers import ReaderConfig, read_file

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Debian packages of real text and where, once unpacked, their documents are.
DEBIAN_PACKAGES: dict[str, tuple[str, str, str]] = {
    # package: (kind, folder inside the package, URL prefix for its pages)
    "python3.11-doc": ("debian/python-docs", "usr/share/doc/python3.11/html", "https://docs.python.org/3.11/"),
    "python-sympy-doc": ("debian/sympy-docs", "usr/share/doc/python-sympy-doc/html", "https://docs.sympy.org/1.11/"),
    "golang-1.19-src": ("debian/go-src", "usr/share/go-1.19/src", "https://go.dev/src/"),
}  # fmt: skip
PAGES_PER_WARC = 100
DOCS_PER_JSONL = 200
MAX_TEXT_BYTES = 400_000  # a source file or page over this is skipped (generated tables)
MIN_TEXT_BYTES = 500


@dataclass(frozen=True, slots=True)
class Item:
    """One document of the pool: a web page (raw HTML bytes) or a text document."""

    kind: str
    url: str
    body: bytes | str
    charset: str | None = None  # declared in the HTTP header of a re-wrapped page

    @property
    def is_page(self) -> bool:
        return isinstance(self.body, bytes)


@dataclass
class Pool:
    """Every available item, grouped by kind, and what was (not) available."""

    kinds: dict[str, list[Item]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    origin: str = "shared"  # "shared", "shared+debian", "debian", "demo"

    def add(self, item: Item) -> None:
        self.kinds.setdefault(item.kind, []).append(item)

    def __len__(self) -> int:
        return sum(len(items) for items in self.kinds.values())

    def take(self, count: int, seed: int = 0) -> list[Item]:
        """``count`` items round-robin over the kinds, each kind in a seeded order, so
        that every size holds every kind; a pool smaller than ``count`` is repeated
        with distinct URLs (exact copies: the notes say so)."""
        rng = random.Random(seed)
        queues = []
        for kind in sorted(self.kinds):
            items = list(self.kinds[kind])
            rng.shuffle(items)
            queues.append(items)
        ordered: list[Item] = []
        while any(queues):
            for queue in queues:
                if queue:
                    ordered.append(queue.pop())
        if not ordered:
            raise ValueError("the benchmark corpus pool is empty")
        taken = ordered[:count]
        copy = 1
        while len(taken) < count:
            for item in ordered[: count - len(taken)]:
                taken.append(Item(item.kind, f"{item.url}#copy{copy}", item.body, item.charset))
            copy += 1
        return taken


@dataclass
class Corpus:
    """A corpus written to disk: WARC files of pages and JSONL files of texts."""

    root: Path
    warc_dir: Path
    text_dir: Path
    pages: int
    texts: int
    megabytes: float
    by_kind: dict[str, int]
    urls: list[str]

    @property
    def documents(self) -> int:
        return self.pages + self.texts

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        return (
            f"{self.documents} documents ({self.pages} web pages in WARC, {self.texts} texts"
            f" in JSONL; {self.megabytes:.1f} MB): {kinds}"
        )


# ---------------------------------------------------------------- sources


def _shared_pages(data: Path, pool: Pool) -> None:
    web = data / "web"
    truth_file = web / "aeb" / "ground-truth.json"
    if truth_file.is_file():
        truth = json.loads(truth_file.read_text("utf-8"))
        for path in sorted((web / "aeb" / "html").glob("*.html.gz")):
            key = path.name.removesuffix(".html.gz")
            url = truth.get(key, {}).get("url") or f"https://aeb.invalid/{key}"
            pool.add(Item("web/aeb", url, gzip.decompress(path.read_bytes())))
    evaldata_file = web / "trafilatura" / "evaldata.json"
    if evaldata_file.is_file():
        for url, entry in json.loads(evaldata_file.read_text("utf-8")).items():
            page = web / "trafilatura" / entry["file"]
            if page.is_file():
                pool.add(Item("web/trafilatura", url, page.read_bytes()))
    readability = web / "readability"
    if readability.is_dir():
        for folder in sorted(p for p in readability.iterdir() if (p / "source.html").is_file()):
            url = f"https://readability.invalid/{folder.name}/"
            pool.add(Item("web/readability", url, (folder / "source.html").read_bytes()))


def _rows(path: Path, source: str) -> Iterator[dict]:
    """Documents our reader finds in one file (WARC, HTML, JSONL, source), rejects skipped."""
    for found in read_file(str(path), source, pafs.LocalFileSystem(), ReaderConfig()):
        if found[DROP_REASON] is None:
            yield found


def _rewrapped(path: Path, kind: str, pool: Pool) -> None:
    """Pages of a real WARC file (or of the demo corpus), re-wrapped one record each."""
    for number, found in enumerate(_rows(path, path.name)):
        if found["html"] is not None:
            url = found["url"] or f"https://{kind.replace('/', '-')}.invalid/{path.name}/{number}"
            pool.add(Item(kind, url, found["html"].encode("utf-8"), "utf-8"))
        elif found["text"] is not None:
            url = f"https://bench.invalid/{kind}/{path.name}/{number}"
            pool.add(Item(kind, url, found["text"]))


def _chapters(text: str, pattern: str) -> list[str]:
    pieces = re.split(pattern, text, flags=re.MULTILINE)
    return [p.strip() for p in pieces if len(p.split()) >= 300]


def _shared_texts(data: Path, pool: Pool) -> None:
    for book in sorted((data / "long").glob("*.txt")):
        text = book.read_text("utf-8", "replace")
        for number, chapter in enumerate(_chapters(text, r"^(?:CHAPTER|Chapter) [\dIVXLC]+")):
            pool.add(Item("books", f"https://bench.invalid/books/{book.stem}/{number}", chapter))
    for edition in sorted((data / "neardup" / "gutenberg_editions").glob("*.txt")):
        text = edition.read_text("utf-8", "replace")
        for number, chapter in enumerate(_chapters(text, r"^CHAPTER \d+")):
            url = f"https://bench.invalid/editions/{edition.stem}/{number}"
            pool.add(Item("books/editions", url, chapter))
    for folder in ("stem", "code"):
        for path in sorted((data / folder).rglob("*")):
            if path.is_file() and MIN_TEXT_BYTES <= path.stat().st_size <= MAX_TEXT_BYTES:
                relative = path.relative_to(data)
                text = path.read_text("utf-8", "replace")
                pool.add(Item(folder, f"https://bench.invalid/{relative}", text))


def debian_packages(cache: Path, packages: list[str]) -> tuple[dict[str, Path], list[str]]:
    """Unpacked package folders, downloading (``apt-get download``) what the cache lacks;
    and notes on what could not be had."""
    root = cache / "debian"
    root.mkdir(parents=True, exist_ok=True)
    unpacked, notes = {}, []
    for package in packages:
        target = root / package
        if (target / ".unpacked").is_file():
            unpacked[package] = target
            continue
        debs = sorted(root.glob(f"{package}_*.deb"))
        if not debs and shutil.which("apt-get"):
            try:
                subprocess.run(
                    ["apt-get", "download", package],
                    cwd=root, capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                notes.append(f"apt-get download {package} failed: {exc}")
            debs = sorted(root.glob(f"{package}_*.deb"))
        if not debs:
            notes.append(f"Debian package {package} not available (no apt-get or no network)")
            continue
        shutil.rmtree(target, ignore_errors=True)
        done = subprocess.run(
            ["dpkg-deb", "-x", str(debs[-1]), str(target)], capture_output=True, text=True
        )
        if done.returncode != 0:
            notes.append(f"dpkg-deb -x {debs[-1].name} failed: {done.stderr.strip()[-200:]}")
            continue
        (target / ".unpacked").write_text(debs[-1].name + "\n")
        unpacked[package] = target
    return unpacked, notes


def _debian_items(package: str, folder: Path, pool: Pool) -> None:
    kind, inside, prefix = DEBIAN_PACKAGES[package]
    base = folder / inside
    suffix = ".go" if package.startswith("golang") else ".html"
    for path in sorted(base.rglob(f"*{suffix}")):
        size = path.stat().st_size
        if not MIN_TEXT_BYTES <= size <= MAX_TEXT_BYTES or "testdata" in path.parts:
            continue
        url = prefix + str(path.relative_to(base))
        if suffix == ".html":
            pool.add(Item(kind, url, path.read_bytes()))
        else:
            pool.add(Item(kind, url, path.read_text("utf-8", "replace")))


def _demo_items(cache: Path, pool: Pool) -> None:
    """The bundled demo corpus, read by our own readers (pages re-wrapped, texts as is)."""
    from demo.corpus import generate_demo_corpus

    target = cache / "demo-corpus"
    if not (target / "labels.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        generate_demo_corpus(target)
    for path in sorted(p for p in target.rglob("*") if p.is_file() and p.name != "labels.json"):
        _rewrapped(path, f"demo/{path.relative_to(target).parts[0]}", pool)


def build_pool(data: Path | None, cache: Path, debian: bool, log: list[str] | None = None) -> Pool:
    """Every item available from the shared data, the Debian packages (when ``debian``)
    and, when neither gives anything, the demo corpus."""
    pool = Pool()
    if data is not None and data.is_dir():
        _shared_pages(data, pool)
        for warc in sorted((data / "warc").glob("*.warc.gz")):
            _rewrapped(warc, "warc/commoncrawl", pool)
        _shared_texts(data, pool)
    else:
        pool.notes.append(f"shared data not found at {data}: no ../shared/data documents")
    if debian:
        folders, notes = debian_packages(cache, list(DEBIAN_PACKAGES))
        pool.notes.extend(notes)
        for package, folder in folders.items():
            _debian_items(package, folder, pool)
    origins = []
    if any(not k.startswith("debian/") for k in pool.kinds):
        origins.append("shared")
    if any(k.startswith("debian/") for k in pool.kinds):
        origins.append("debian")
    if not pool.kinds:
        pool.notes.append("no real data available: the corpus is the bundled demo generator's")
        _demo_items(cache, pool)
        origins.append("demo")
    pool.origin = "+".join(origins)
    return pool


# ---------------------------------------------------------------- writing


def _warc_record(kind: str, fields: list[tuple[str, str]], block: bytes) -> bytes:
    record_id = f"<urn:uuid:{uuid.UUID(bytes=hashlib.sha1(block).digest()[:16])}>"
    head = [("WARC-Type", kind), ("WARC-Record-ID", record_id),
            ("WARC-Date", "2024-01-01T00:00:00Z"), *fields,
            ("Content-Length", str(len(block)))]  # fmt: skip
    text = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head) + "\r\n"
    return gzip.compress(text.encode() + block + b"\r\n\r\n", compresslevel=1, mtime=0)


def _response(item: Item) -> bytes:
    assert isinstance(item.body, bytes)
    content_type = "text/html" + (f"; charset={item.charset}" if item.charset else "")
    http = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(item.body)}\r\n\r\n"
    ).encode()
    fields = [
        ("WARC-Target-URI", item.url),
        ("Content-Type", "application/http; msgtype=response"),
        ("WARC-Identified-Payload-Type", "text/html"),  # as Common Crawl's records carry
    ]
    return _warc_record("response", fields, http + item.body)


def write_corpus(items: list[Item], root: Path) -> Corpus:
    """``root/warc/part-N.warc.gz`` (pages) and ``root/text/part-N.jsonl`` (texts)."""
    shutil.rmtree(root, ignore_errors=True)
    warc_dir, text_dir = root / "warc", root / "text"
    warc_dir.mkdir(parents=True)
    text_dir.mkdir(parents=True)
    pages = [i for i in items if i.is_page]
    texts = [i for i in items if not i.is_page]
    for number, start in enumerate(range(0, len(pages), PAGES_PER_WARC)):
        chunk = pages[start : start + PAGES_PER_WARC]
        path = warc_dir / f"part-{number:05d}.warc.gz"
        path.write_bytes(b"".join(_response(item) for item in chunk))
    for number, start in enumerate(range(0, len(texts), DOCS_PER_JSONL)):
        chunk = texts[start : start + DOCS_PER_JSONL]
        with open(text_dir / f"part-{number:05d}.jsonl", "w", encoding="utf-8") as handle:
            for item in chunk:
                line = {"id": item.url, "url": item.url, "text": item.body}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return Corpus(
        root=root,
        warc_dir=warc_dir,
        text_dir=text_dir,
        pages=len(pages),
        texts=len(texts),
        megabytes=size / 1e6,
        by_kind=dict(Counter(i.kind for i in items)),
        urls=[i.url for i in items],
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.corpus [--docs N] [--no-debian]``: build a corpus and describe it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.corpus", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "longcat-bench")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--no-debian", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    pool = build_pool(args.data, args.cache, not args.no_debian)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    corpus = write_corpus(pool.take(args.docs), out)
    print(f"pool: {len(pool)} items ({pool.origin}); " + "; ".join(pool.notes))
    print(f"corpus in {out}: {corpus.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
