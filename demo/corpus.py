"""A small synthetic corpus that exercises every curation stage, written in about a second.

Why it exists: the stages need realistic input for end-to-end tests and demos, on any
machine and without a network, and the real pages in ``../shared/data`` belong to their
publishers and may not be copied into this repository. So the corpus is built from text
we may ship: prose written for this project (``demo/text/``) and the
documentation that ships inside the Python interpreter itself (``pydoc_data.topics`` and
standard library docstrings and sources, PSF licence).

What ``generate_demo_corpus(out_dir, seed)`` writes (the seed picks which article goes
where, dates, spam wording and edits; the same seed on the same Python gives the same bytes):

* ``crawl/crawl-0000N.warc.gz``: three WARC/1.0 files, one gzip member per record, a
  ``warcinfo`` record, then request + response pairs. Pages live on a few fictional
  sites, each with its own navigation, cookie banner, related links, footer and one
  in-article template line (the boilerplate that extraction and template-line removal
  must handle). Good articles: English notes built from the Python language reference
  plus hand-written pieces, and a few each in German, French, Spanish, Chinese and
  Russian. Spam the heuristics must reject: keyword stuffing, link lists, very short
  pages, lorem ipsum, bullet-only pages, symbol soup. Spam only the fluency stage
  should catch: spun pages (a real article's words shuffled into new sentences, every
  word spelled right, the punctuation and layout of prose). News briefs whose own text
  is one short paragraph padded with the site's recurring notes, for template-line
  removal to leave with (almost) nothing. Exact duplicates (same article,
  another URL and sidebar) and near-duplicates (words edited and a paragraph added,
  word 5-gram Jaccard 0.82-0.92). Records a reader must skip: PNG images, robots.txt,
  a 404 and a 301.
* ``html/``: about twenty standalone pages (``.html`` and ``.html.gz``), two of them
  duplicates of crawled pages, so dedup must work across inputs.
* ``code/``: stdlib Python modules (copied with a provenance line) and short Go, Rust,
  C and JavaScript programs written for this project.
* ``text/stem.jsonl``: math and science explanations; ``text/books.jsonl``: three long
  documents (each over 40,000 words) assembled from stdlib docstrings, for 32k/128k packing;
  ``text/scans.jsonl``: OCR output of scanned print articles, alternately a clean scan
  (1-4% of letters misread) and a poor one (15-30%, the range of degraded historical
  scans), with OCR's typical confusions (rn/m, e/c, l/1, o/0...).
* Bad input: a WARC record whose Content-Length is too small (the other records of that
  file stay readable), a truncated ``.html.gz``, a cp1252 page declared as UTF-8, an
  empty ``.html`` and a binary file named ``.html``.
* ``labels.json``: the ground truth (kind, language, original of each duplicate) for
  every document, so funnel tests can check what each stage should catch.

The Python-derived text depends on the interpreter version, so two machines with
different Pythons produce different (but each internally consistent) corpora.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import gzip
import hashlib
import html
import inspect
import json
import pydoc_data.topics
import random
import re
import shutil
import string
import struct
import sysconfig
import unicodedata
import uuid
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

DATA_DIR = Path(__file__).with_name("text")
PAGE = string.Template((DATA_DIR / "page.html").read_text("utf-8"))
LANGUAGES = ("en", "de", "fr", "es", "zh", "ru")
WARC_FILES = 3
HTML_ARTICLES = 18  # standalone pages; two more are cross-input duplicates
EXACT_DUPLICATES = 8  # the last two of them go to html/
NEAR_DUPLICATES = 8
SPAM_PER_KIND = 5
SPUN_PAGES = 5
SCANS = 6
CLEAN_SCAN_ERRORS, POOR_SCAN_ERRORS = (0.01, 0.04), (0.15, 0.30)  # share of letters misread
# What OCR engines misread each letter as (one or two characters).
OCR_CONFUSIONS = {
    "a": ("o", "e"), "b": ("h", "6"), "c": ("e",), "d": ("cl",), "e": ("c", "o"),
    "f": ("t",), "g": ("q", "9"), "h": ("b", "li"), "i": ("l", "1"), "l": ("1", "I"),
    "m": ("rn", "n"), "n": ("u", "ri"), "o": ("0", "c"), "r": ("n",), "s": ("5",),
    "t": ("f", "l"), "u": ("n", "v"), "w": ("vv",), "y": ("v",),
}  # fmt: skip
MIN_BOOK_WORDS = 40_000
ARTICLE_WORDS = 280  # a topic is cut into notes of about this length
MIN_ARTICLE_WORDS = 150
NEAR_DUP_JACCARD = (0.82, 0.92)  # on the article paragraphs; extraction adds a little noise
# pydoc topics about numbers and operators become STEM documents, not web notes.
STEM_TOPICS = frozenset({
    "binary", "bitwise", "booleans", "comparisons", "floating", "imaginary", "integers",
    "numbers", "numeric-types", "operator-summary", "power", "shifting", "truth", "unary",
})  # fmt: skip
CODE_MODULES = ("bisect", "colorsys", "fnmatch", "graphlib", "heapq", "sched", "shlex", "textwrap")
# Stdlib folders whose docstrings are tests, tools, GUI code or tables, not prose.
BOOK_SKIP = frozenset({
    "test", "site-packages", "dist-packages", "idlelib", "lib2to3", "tkinter", "turtledemo",
    "ensurepip", "distutils", "pydoc_data", "encodings", "__pycache__", "this", "antigravity",
})  # fmt: skip
CRAWL_START = datetime(2024, 7, 1, 6, 0, 0)
_WORD = re.compile(r"[\"'‘’“(]*[A-Za-z][A-Za-z'’-]*[.,;:)\"'’”!?]*")
_DOCSTRING = re.compile(
    r"(?:\A|:[ \t]*(?:#[^\n]*)?\n)(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*[rRuU]?(\"\"\"|''')(.*?)\1", re.S
)
_DEF_NAME = re.compile(r"\b(?:def|class)\s+(\w+)")


@dataclass(slots=True)
class Article:
    """One piece of good prose; ``_Sites.place`` fills in where and when it was published."""

    key: str
    title: str
    paragraphs: list[str]
    lang: str
    site: str
    section: str = ""
    url: str = ""
    date: str = ""
    author: str = ""


@dataclass(slots=True)
class Page:
    """One fetched URL; ``label`` goes to labels.json."""

    url: str
    body: bytes
    label: dict[str, object]
    status: str = "200 OK"
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    length_delta: int = 0  # added to the WARC Content-Length: the damaged-record case


# ---------------------------------------------------------------- prose sources


def _prose(block: str) -> str | None:
    """One reflowed paragraph if it reads as English prose (not code, grammar or a table)."""
    text = " ".join(line.strip() for line in block.strip().splitlines())
    words = text.split()
    if len(words) < 12 or not text.endswith((".", ".)")):
        return None
    if any(mark in text for mark in (">>>", "::=", "***", "===", "---", "{", "}")):
        return None
    return text if sum(bool(_WORD.fullmatch(w)) for w in words) >= 0.75 * len(words) else None


def _read_blocks(name: str) -> list[tuple[dict[str, str], list[str]]]:
    """Hand-written texts: ``key: value`` lines, a blank line, one paragraph per line."""
    blocks = []
    for block in (DATA_DIR / name).read_text("utf-8").split("\n%%\n"):
        head, _, body = block.strip().partition("\n\n")
        meta = dict(line.split(": ", 1) for line in head.splitlines())
        blocks.append((meta, [p.strip() for p in body.split("\n\n") if p.strip()]))
    return blocks


def _handwritten_articles() -> list[Article]:
    return [
        Article(f"hand:{lang}:{i}", meta["title"], paras, lang, meta["site"], meta["section"])
        for lang in LANGUAGES
        for i, (meta, paras) in enumerate(_read_blocks(f"articles_{lang}.txt"))
    ]


def _topic_texts() -> tuple[list[Article], list[dict[str, str]]]:
    """Language-reference topics as web notes, and the numeric ones as STEM documents.

    Topics repeat each other (``compound`` contains ``if``, ``while``...), so a paragraph
    is used once only: the corpus must hold no duplicates except the deliberate ones."""
    seen: set[str] = set()
    notes: list[Article] = []
    stem: list[dict[str, str]] = []
    for name in sorted(pydoc_data.topics.topics):
        text = pydoc_data.topics.topics[name]
        title = text.strip().splitlines()[0].strip()
        paras = []
        for block in re.split(r"\n\s*\n", text):
            para = _prose(block)
            if para and para not in seen:
                seen.add(para)
                paras.append(para)
        if name in STEM_TOPICS:
            if paras:
                stem.append({"id": f"topic-{name}", "title": title, "text": _join(title, paras)})
            continue
        chunks: list[list[str]] = [[]]
        for para in paras:
            if sum(len(p.split()) for p in chunks[-1]) >= ARTICLE_WORDS:
                chunks.append([])
            chunks[-1].append(para)
        if len(chunks) > 1 and sum(len(p.split()) for p in chunks[-1]) < MIN_ARTICLE_WORDS:
            chunks[-2].extend(chunks.pop())
        for i, chunk in enumerate(chunks):
            if sum(len(p.split()) for p in chunk) >= MIN_ARTICLE_WORDS and not _repetitive(chunk):
                part = f"{title} (part {i + 1})" if len(chunks) > 1 else title
                notes.append(Article(f"topic:{name}:{i}", part, chunk, "en", "fieldnotes"))
    return notes, stem


def _repetitive(paragraphs: list[str]) -> bool:
    """Gopher's duplicate n-gram test with some margin: reference prose that lists many
    similar methods repeats itself, and a note meant as good text must not be rejected."""
    words = " ".join(paragraphs).split()
    total = sum(map(len, words))
    for n, limit in ((5, 0.20), (10, 0.10)):
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        covered = set()
        for i, gram in enumerate(grams):
            if counts[gram] > 1:
                covered.update(range(i, i + n))
        if sum(len(words[i]) for i in covered) > limit * total:
            return True
    return False


def _join(title: str, paragraphs: list[str]) -> str:
    return "\n\n".join([title, *paragraphs])


def _stdlib_docstrings(lib: Path, files: list[Path], seen: set[str]) -> list[str]:
    """One book chapter per module: its docstrings in source order, with the name of the
    function or class each belongs to as a heading. A regex is 10x faster than ``ast``."""
    chapters = []
    for path in files:
        source = path.read_text("utf-8", "replace")
        module = ".".join(path.relative_to(lib).with_suffix("").parts).removesuffix(".__init__")
        parts = []
        for match in _DOCSTRING.finditer(source):
            names = _DEF_NAME.findall(source, max(0, match.start() - 300), match.start() + 1)
            doc = inspect.cleandoc(match.group(2))
            paras = [p for p in doc.split("\n\n") if _readable(p) and p not in seen]
            seen.update(paras)
            if paras:
                parts.append("\n\n".join([names[-1], *paras] if names and match.start() else paras))
        if sum(len(p.split()) for p in parts) >= 60:
            chapters.append("\n\n".join([f"The {module} module", *parts]))
    return chapters


def _readable(paragraph: str) -> bool:
    words = paragraph.split()
    if len(words) < 6 or ">>>" in paragraph:
        return False
    return sum(bool(_WORD.fullmatch(w)) for w in words) >= 0.6 * len(words)


def _first_lines_only(text: str) -> str:
    """Drop every repeat of a non-blank line ("Args:", "__init__" headings, shared
    parameter notes): a real book does not repeat them, and FineWeb's duplicate-line
    rule rightly rejects a text that does."""
    seen: set[str] = set()
    kept = []
    for line in text.split("\n"):
        key = line.strip()
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept))


def _books() -> list[dict[str, str]]:
    """Three long reference books: stdlib packages, then top-level modules in two halves."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    tops = [p for p in sorted(lib.iterdir()) if p.name not in BOOK_SKIP and p.name[0] != "_"]
    modules = [p for p in tops if p.suffix == ".py" and p.stem not in CODE_MODULES]
    packages = [f for p in tops if p.is_dir() for f in sorted(p.rglob("*.py")) if _wanted(lib, f)]
    seen: set[str] = set()
    volumes = [_stdlib_docstrings(lib, packages, seen)]
    chapters = _stdlib_docstrings(lib, modules, seen)
    half, running, total = 0, 0, sum(len(c.split()) for c in chapters)
    while running < total / 2:
        running += len(chapters[half].split())
        half += 1
    volumes += [chapters[:half], chapters[half:]]
    books = []
    for number, volume in enumerate(volumes, 1):
        first, last = (c.split()[1].split(".")[0] for c in (volume[0], volume[-1]))
        title = f"The Python standard library from {first} to {last}, in its own words"
        chapters = [f"Chapter {i}. {c}" for i, c in enumerate(volume, 1)]
        text = _first_lines_only(_join(title, chapters))
        if len(text.split()) < MIN_BOOK_WORDS:
            raise RuntimeError(f"book {number} has only {len(text.split())} words")
        books.append({"id": f"book-{number}", "title": title, "text": text})
    return books


def _wanted(lib: Path, path: Path) -> bool:
    """Skip folders at any depth (``__pycache__``, a package's ``test`` folder)."""
    return not set(path.relative_to(lib).parts) & BOOK_SKIP


# ---------------------------------------------------------------- pages


def _slug(title: str, fallback: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return "-".join(re.findall(r"[a-z0-9]+", ascii_title.lower())[:8]) or fallback


@dataclass(slots=True)
class _Sites:
    """The fictional sites' templates, and the articles their sidebars link to."""

    sites: dict[str, dict]
    pool: list[Article]
    rng: random.Random

    def place(self) -> None:
        """Give every article a section, author, publication date and unique URL."""
        used: set[str] = set()
        for n, art in enumerate(self.pool):
            site = self.sites[art.site]
            art.section = art.section or self.rng.choice(site["sections"])
            art.author = self.rng.choice(site["authors"])
            day = datetime(2023, 1, 1) + timedelta(days=self.rng.randrange(540))
            art.date = day.strftime("%Y-%m-%d")
            path = f"{_slug(art.section, 'news')}/{day:%Y/%m}/{_slug(art.title, f'a{n:04d}')}"
            art.url = f"https://{site['host']}/{path}"
            while art.url in used:
                art.url += "-2"
            used.add(art.url)

    def render(self, key: str, title: str, body: str, url: str, *, related: Sequence[Article] = (),
               date: str = "", author: str = "") -> bytes:  # fmt: skip
        """A full page in the site's template: everything but ``body`` is boilerplate."""
        site, e = self.sites[key], html.escape
        menu = enumerate(site["sections"])
        nav = "".join(f'<li><a href="/{_slug(s, f"s{i}")}/">{e(s)}</a></li>' for i, s in menu)
        links = "".join(f'<li><a href="{e(a.url)}">{e(a.title)}</a></li>' for a in related)
        foot = "".join(f'<li><a href="/{_slug(s, "p")}">{e(s)}</a></li>' for s in site["footer"])
        meta = {"@context": "https://schema.org", "@type": "Article", "headline": title,
                "datePublished": date, "author": {"@type": "Person", "name": author}}  # fmt: skip
        byline = site["byline"].format(author=author, date=date) if date else ""
        fields = {k: e(v) for k, v in site.items() if isinstance(v, str)}
        fields |= {
            "site_name": e(site["name"]), "title": e(title), "url": e(url), "nav": nav,
            "meta": json.dumps(meta, ensure_ascii=False), "body": body, "links": links,
            "css": f"{self.rng.randrange(16**6):06x}", "footer": foot, "byline": e(byline),
        }  # fmt: skip
        return PAGE.substitute(fields).encode()

    def article(self, art: Article, url: str = "", paragraphs: list[str] | None = None) -> bytes:
        paras = [*(paragraphs or art.paragraphs), self.sites[art.site]["note"]]  # template line
        body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)
        others = [a for a in self.pool if a.site == art.site and a.key != art.key]
        related = self.rng.sample(others, min(4, len(others)))
        return self.render(art.site, art.title, body, url or art.url, related=related,
                           date=art.date, author=art.author)  # fmt: skip


def _spam_pages(web: _Sites, spam: dict, rng: random.Random) -> list[Page]:
    """Pages each Gopher/C4/FineWeb rule family should reject, a few per kind."""
    pages = []
    for kind in ("keywords", "links", "short", "lorem", "bullets", "symbols"):
        for i in range(SPAM_PER_KIND):
            kw = rng.choice(spam["products"])
            title = f"{kw.title()} {rng.choice(['deals', 'offers', 'sale', 'reviews'])} 2024"
            if kind == "keywords":
                lines = [rng.choice(spam["keyword_lines"]).format(kw=kw) for _ in range(30)]
            elif kind == "links":
                hosts = [f"{rng.choice(spam['products'])}-{rng.randrange(999)}" for _ in range(40)]
                lines = [f'<a href="https://{h.replace(" ", "-")}.example/">'
                         f'{rng.choice(spam["anchors"])}</a>' for h in hosts]  # fmt: skip
            elif kind == "short":
                lines = [rng.choice(spam["short"])]
            elif kind == "lorem":
                title = "Lorem ipsum dolor sit amet"
                lines = [_lorem(spam["lorem"], rng) for _ in range(4)]
            elif kind == "bullets":
                lines = [f"✔ {item}" for item in rng.sample(spam["bullets"], 12) * 2]
            else:
                soup = (" ".join(rng.choices(spam["symbols"], k=12)) for _ in range(20))
                lines = [html.escape(f"{symbols} {kw.upper()}") for symbols in soup]
            tag = "li" if kind in ("links", "bullets") else "p"
            body = "".join(f"<{tag}>{line}</{tag}>\n" for line in lines)
            body = f"<ul>\n{body}</ul>" if tag == "li" else body
            key = "linkhub" if kind == "links" else "dealzone"
            url = f"https://{web.sites[key]['host']}/{kind}/{_slug(title, 'x')}-{i}.html"
            page = web.render(key, title, body, url, date="2024-05-01", author="admin")
            pages.append(Page(url, page, {"kind": f"spam:{kind}", "lang": "en"}))
    return pages


def _spin(paragraph: str, rng: random.Random) -> str:
    """What article spinners publish: the paragraph's own words in a new order, cut
    into sentences of 8-18 words with a comma now and then, so that duplicate
    detection and every spelling or punctuation rule sees nothing wrong."""
    words = [w.strip('.,;:!?()"“”‘’').lower() for w in paragraph.split()]
    words = [w for w in words if w]
    rng.shuffle(words)
    sentences, i = [], 0
    while i < len(words):
        chunk = words[i : i + rng.randrange(8, 19)]
        i += len(chunk)
        if len(chunk) > 6 and rng.random() < 0.4:
            chunk[rng.randrange(2, len(chunk) - 2)] += ","
        sentences.append(" ".join(chunk)[:1].upper() + " ".join(chunk)[1:] + ".")
    return " ".join(sentences)


def _spun_pages(web: _Sites, sources: list[Article], rng: random.Random) -> list[Page]:
    """Content-farm copies of real articles: the title kept, every paragraph spun."""
    pages = []
    for i, art in enumerate(rng.sample(sources, SPUN_PAGES)):
        paras = [_spin(p, rng) for p in art.paragraphs]
        body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)
        url = f"https://{web.sites['dealzone']['host']}/reviews/{_slug(art.title, 'x')}-{i}.html"
        page = web.render("dealzone", art.title, body, url, date="2024-05-02", author="dealbot")
        pages.append(Page(url, page, {"kind": "spam:spun", "lang": "en", "source": art.url}))
    return pages


def _brief_pages(web: _Sites, rng: random.Random) -> list[Page]:
    """Harbor Lane news briefs: one paragraph of news, then the briefs desk's note and
    the site's note, the same on every brief. Those that say little are left with too
    little once template lines are removed."""
    site = web.sites["harbor"]
    pages = []
    for i, (meta, paras) in enumerate(_read_blocks("briefs_en.txt")):
        paras = [*paras, site["brief_note"], site["note"]]
        body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)
        day = datetime(2024, 6, 3) + timedelta(days=rng.randrange(28))
        url = f"https://{site['host']}/briefs/{day:%Y/%m}/{_slug(meta['title'], f'b{i}')}"
        page = web.render("harbor", meta["title"], body, url, date=day.strftime("%Y-%m-%d"),
                          author=rng.choice(site["authors"]))  # fmt: skip
        chars = sum(len(p) for p in paras[:-2]) + len(paras) - 3
        pages.append(Page(url, page, {"kind": "brief", "lang": "en", "own_chars": chars}))
    return pages


def _ocr(text: str, error_rate: float, rng: random.Random) -> str:
    """``text`` as an OCR engine that misreads ``error_rate`` of the letters would give it."""
    out = []
    for char in text:
        options = OCR_CONFUSIONS.get(char.lower())
        if options and rng.random() < error_rate:
            out.append(rng.choice(options))
        else:
            out.append(char)
    return "".join(out)


def _scans(articles: list[Article], rng: random.Random) -> list[dict[str, object]]:
    """Alternately clean and poor OCR scans of the English print articles."""
    english = [a for a in articles if a.lang == "en"]
    scans = []
    for i in range(SCANS):
        art = english[i % len(english)]
        low, high = POOR_SCAN_ERRORS if i % 2 else CLEAN_SCAN_ERRORS
        rate = round(rng.uniform(low, high), 3)
        text = _ocr(_join(art.title, art.paragraphs), rate, rng)
        scans.append({"id": f"scan-{i}", "title": art.title, "text": text, "error_rate": rate})
    return scans


def _lorem(words: list[str], rng: random.Random) -> str:
    sentences = [" ".join(rng.choices(words, k=rng.randrange(8, 16))) for _ in range(5)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def _shingles(paragraphs: list[str]) -> set[tuple[str, ...]]:
    words = " ".join(paragraphs).lower().split()
    return {tuple(words[i : i + 5]) for i in range(len(words) - 4)}


def _jaccard(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> float:
    return len(a & b) / len(a | b)


def _near_duplicate(art: Article, spam: dict, rng: random.Random) -> tuple[list[str], float]:
    """Add an update note, then swap words one at a time until the word 5-gram Jaccard
    with the original drops below a target drawn inside ``NEAR_DUP_JACCARD``."""
    target = rng.uniform(NEAR_DUP_JACCARD[0] + 0.02, NEAR_DUP_JACCARD[1])
    swaps, update = spam["edits"], spam["update_paragraph"]
    original = _shingles(art.paragraphs)
    words = [p.split() for p in art.paragraphs]
    spots = [(i, j) for i, ws in enumerate(words) for j, w in enumerate(ws) if w.lower() in swaps]
    rng.shuffle(spots)
    paras = [*art.paragraphs, update]
    jaccard = _jaccard(original, _shingles(paras))
    for i, j in spots:
        if jaccard <= target:
            break
        new = swaps[words[i][j].lower()]
        words[i][j] = new.capitalize() if words[i][j][0].isupper() else new
        trial = [*(" ".join(ws) for ws in words), update]
        trial_jaccard = _jaccard(original, _shingles(trial))
        if trial_jaccard < NEAR_DUP_JACCARD[0]:
            break
        paras, jaccard = trial, trial_jaccard
    return paras, round(jaccard, 4)


def _png(rng: random.Random, size: int = 16) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    r, g, b = (rng.randrange(256) for _ in range(3))
    rows = b"".join(b"\0" + bytes([r, g, (b + y * 8) % 256]) * size for y in range(size))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    pixels = chunk(b"IDAT", zlib.compress(rows, 9))
    return b"\x89PNG\r\n\x1a\n" + header + pixels + chunk(b"IEND", b"")


def _other_records(web: _Sites, rng: random.Random) -> list[Page]:
    """Responses a reader must skip: images, robots.txt, a 404 and a redirect."""
    host, blog = (web.sites[key]["host"] for key in ("harbor", "fieldnotes"))
    skip = {"kind": "non_html"}
    images = (f"https://{host}/static/img/{name}.png" for name in ("logo", "chart", "share"))
    pages = [Page(url, _png(rng), skip, content_type="image/png") for url in images]
    robots = f"User-agent: *\nDisallow: /search\nSitemap: https://{host}/sitemap.xml\n"
    robots_url = f"https://{host}/robots.txt"
    pages.append(Page(robots_url, robots.encode(), skip, content_type="text/plain"))
    body = "<p>Sorry, the page you were looking for does not exist.</p>"
    missing = f"https://{host}/local/2019/01/old-story"
    page = web.render("harbor", "Page not found", body, missing)
    pages.append(Page(missing, page, {"kind": "http_404"}, status="404 Not Found"))
    moved = [("Location", f"https://{blog}/")]
    pages.append(Page(f"https://{blog}/notes/old-index.html", b"", {"kind": "http_301"},
                      status="301 Moved Permanently", headers=moved))  # fmt: skip
    return pages


# ---------------------------------------------------------------- files


def _b32_sha1(data: bytes) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data).digest()).decode()


def _record_id(kind: str, uri: str, date: str) -> str:
    seed = hashlib.sha1(f"{kind} {uri} {date}".encode()).digest()[:16]
    return f"<urn:uuid:{uuid.UUID(bytes=seed, version=4)}>"


def _warc_record(kind: str, date: str, block: bytes, fields: list[tuple[str, str]],
                 length_delta: int = 0) -> bytes:  # fmt: skip
    """One record as its own gzip member (the layout Common Crawl uses)."""
    uri = dict(fields).get("WARC-Target-URI", "")
    head = [("WARC-Type", kind), ("WARC-Record-ID", _record_id(kind, uri, date)),
            ("WARC-Date", date), *fields, ("WARC-Block-Digest", _b32_sha1(block)),
            ("Content-Length", str(len(block) + length_delta))]  # fmt: skip
    text = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head) + "\r\n"
    return gzip.compress(text.encode() + block + b"\r\n\r\n", mtime=0)


def _write_warc(path: Path, pages: list[Page], start: datetime) -> None:
    date = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    # "pipeline.demo" was this module's name before demo/ became a package; the warcinfo
    # record keeps it so the corpus stays byte-identical to earlier runs (and their ids).
    info = (f"software: pipeline.demo\r\nformat: WARC File Format 1.0\r\nhostname: {path.stem}"
            "\r\nrobots: obey\r\nisPartOf: longcat-demo-crawl\r\n")  # fmt: skip
    fields = [("WARC-Filename", path.name), ("Content-Type", "application/warc-fields")]
    out = [_warc_record("warcinfo", date, info.encode(), fields)]
    for n, page in enumerate(pages):
        when = start + timedelta(seconds=7 * n + 3)
        date = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        host, _, rest = page.url.removeprefix("https://").partition("/")
        request = (
            f"GET /{rest} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: LongCatDemoBot/1.0 "
            "(+https://crawler.example/bot)\r\nAccept: text/html,*/*;q=0.8\r\n\r\n"
        )
        http = [("Date", when.strftime("%a, %d %b %Y %H:%M:%S GMT")), ("Server", "nginx"),
                ("Content-Type", page.content_type), ("Content-Length", str(len(page.body))),
                *page.headers, ("Connection", "close")]  # fmt: skip
        head = f"HTTP/1.1 {page.status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in http)
        uri = ("WARC-Target-URI", page.url)
        pair = ("WARC-Concurrent-To", _record_id("response", page.url, date))
        mime = "application/http; msgtype="
        out.append(_warc_record("request", date, request.encode(),
                                [uri, pair, ("Content-Type", f"{mime}request")]))  # fmt: skip
        digest = ("WARC-Payload-Digest", _b32_sha1(page.body))
        response = head.encode() + b"\r\n" + page.body
        out.append(_warc_record("response", date, response,
                                [uri, ("Content-Type", f"{mime}response"), digest],
                                page.length_delta))  # fmt: skip
    path.write_bytes(b"".join(out))


def _prepare(out_dir: Path) -> None:
    """Refuse to write into a folder we did not make; clear one we did (a rerun)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / "labels.json").exists():
            raise FileExistsError(f"{out_dir} is not empty and holds no demo corpus")
        for name in ("crawl", "html", "code", "text"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("crawl", "html", "code", "text"):
        (out_dir / name).mkdir(parents=True, exist_ok=True)


def _write_crawl(out_dir: Path, web: _Sites, crawled: list[Article], near: list[Article],
                 dups: list[Article], damaged: Article, spam: dict,
                 extra: list[Page]) -> dict[str, dict]:  # fmt: skip
    rng = web.rng
    pages = [Page(a.url, web.article(a), {"kind": "article", "lang": a.lang}) for a in crawled]
    for n, art in enumerate(dups):
        url = (f"{art.url}?utm_source=newsletter&utm_medium=email", f"{art.url}/amp")[n % 2]
        pages.append(Page(url, web.article(art, url), {"kind": "duplicate", "lang": "en",
                                                        "of": art.url}))  # fmt: skip
    for art in near:
        paras, jaccard = _near_duplicate(art, spam, rng)
        url = f"{art.url}-updated"
        label = {"kind": "near_duplicate", "lang": "en", "of": art.url, "jaccard": jaccard}
        pages.append(Page(url, web.article(art, url, paras), label))
    pages += _spam_pages(web, spam, rng) + _other_records(web, rng) + extra
    label = {"kind": "bad:warc_content_length", "lang": "en"}
    pages.append(Page(damaged.url, web.article(damaged), label, length_delta=-100))
    rng.shuffle(pages)
    labels = {}
    per_file = -(-len(pages) // WARC_FILES)
    for n in range(WARC_FILES):
        name = f"crawl/crawl-{n:05d}.warc.gz"
        chunk = pages[n * per_file : (n + 1) * per_file]
        _write_warc(out_dir / name, chunk, CRAWL_START + timedelta(hours=n))
        labels |= {f"{name} {p.url}": p.label for p in chunk}
    return labels


def _write_html(html_dir: Path, web: _Sites, standalone: list[Article], dups: list[Article],
                broken: list[Article]) -> dict[str, dict]:  # fmt: skip
    """Standalone pages (every third gzipped), cross-input duplicates and the bad files."""
    labels: dict[str, dict] = {}
    for n, art in enumerate(standalone):
        page, name = web.article(art), f"{art.site}-{n:03d}.html"
        if n % 3 == 2:
            page, name = gzip.compress(page, mtime=0), f"{name}.gz"
        (html_dir / name).write_bytes(page)
        labels[f"html/{name}"] = {"kind": "article", "lang": art.lang, "url": art.url}
    for n, art in enumerate(dups):
        (html_dir / f"copy-{n}.html").write_bytes(web.article(art))
        labels[f"html/copy-{n}.html"] = {"kind": "duplicate", "lang": "en", "of": art.url}
    truncated = gzip.compress(web.article(broken[0]), mtime=0)
    cp1252 = web.article(broken[1]).decode().encode("cp1252", "xmlcharrefreplace")
    bad = {"truncated.html.gz": ("truncated_gzip", truncated[: len(truncated) * 3 // 5]),
           "legacy-cp1252.html": ("invalid_utf8", cp1252), "empty.html": ("empty", b""),
           "image.html": ("binary", _png(web.rng, 32) + web.rng.randbytes(2048))}  # fmt: skip
    for name, (kind, data) in bad.items():
        (html_dir / name).write_bytes(data)
        labels[f"html/{name}"] = {"kind": f"bad:{kind}"}
    return labels


def _write_code(code_dir: Path) -> int:
    """Stdlib modules keep their text; the first line says where they come from."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    note = ("# From CPython {} Lib/{}.py. Copyright (c) Python Software Foundation;"
            " licensed under the PSF License Agreement.\n")  # fmt: skip
    count = 0
    for name in CODE_MODULES:
        if (lib / f"{name}.py").exists():
            header = note.format(sysconfig.get_python_version(), name).encode()
            (code_dir / f"{name}.py").write_bytes(header + (lib / f"{name}.py").read_bytes())
            count += 1
    for path in sorted((DATA_DIR / "code").iterdir()):
        shutil.copyfile(path, code_dir / path.name)
        count += 1
    return count


def _write_text(text_dir: Path, stem_topics: list[dict[str, str]],
                scans: list[dict[str, object]]) -> dict[str, dict]:  # fmt: skip
    stem = [{"id": f"stem-{i}", "title": m["title"], "text": _join(m["title"], paras)}
            for i, (m, paras) in enumerate(_read_blocks("stem_en.txt"))]  # fmt: skip
    labels = {}
    for name, kind, docs in (("stem", "stem", stem + stem_topics), ("books", "book", _books()),
                             ("scans", "scan", scans)):  # fmt: skip
        lines = (json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
        (text_dir / f"{name}.jsonl").write_text("".join(lines), "utf-8")
        for doc in docs:
            label = {"kind": kind, "lang": "en"}
            if "error_rate" in doc:
                label["error_rate"] = doc["error_rate"]
            labels[f"text/{name}.jsonl {doc['id']}"] = label
    return labels


def generate_demo_corpus(out_dir: Path, seed: int = 0) -> dict[str, int]:
    """Write the corpus under ``out_dir`` and return how many items of each kind it holds."""
    out_dir = Path(out_dir)
    _prepare(out_dir)
    rng = random.Random(seed)
    spam = json.loads((DATA_DIR / "spam.json").read_text("utf-8"))
    notes, stem_topics = _topic_texts()
    articles = _handwritten_articles() + notes
    rng.shuffle(articles)
    web = _Sites(json.loads((DATA_DIR / "sites.json").read_text("utf-8")), articles, rng)
    web.place()
    # Three pages with curly quotes (cp1252 can encode them) become the bad inputs.
    broken = [a for a in articles if a.site == "fieldnotes" and "’" in "".join(a.paragraphs)][:3]
    good = [a for a in articles if a not in broken]
    standalone, crawled = good[:HTML_ARTICLES], good[HTML_ARTICLES:]
    long_en = [a for a in crawled if a.lang == "en" and len(" ".join(a.paragraphs).split()) > 250]
    near = long_en[:NEAR_DUPLICATES]
    dups = long_en[NEAR_DUPLICATES : NEAR_DUPLICATES + EXACT_DUPLICATES]
    # The fluency and template-line cases draw from their own generator, so adding them
    # moved no article, date or edit of the rest of the corpus.
    extra_web = dataclasses.replace(web, rng=random.Random(f"{seed}:fluency-and-templates"))
    plain = [a for a in crawled if a.lang == "en" and a not in near and a not in dups]
    extra = _spun_pages(extra_web, plain, extra_web.rng) + _brief_pages(extra_web, extra_web.rng)
    scans = _scans(_handwritten_articles(), extra_web.rng)
    labels = _write_crawl(out_dir, web, crawled, near, dups[:-2], broken[0], spam, extra)
    labels |= _write_html(out_dir / "html", web, standalone, dups[-2:], broken[1:])
    labels |= _write_text(out_dir / "text", stem_topics, scans)
    code_files = _write_code(out_dir / "code")
    (out_dir / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False) + "\n")
    kinds = [str(v["kind"]) for v in labels.values()]
    return {
        "good_articles": kinds.count("article"),
        "spam": sum(k.startswith("spam:") for k in kinds),
        "duplicates": kinds.count("duplicate"),
        "near_duplicates": kinds.count("near_duplicate"),
        "languages": len({v["lang"] for v in labels.values() if v["kind"] == "article"}),
        "code_files": code_files,
        "spun": kinds.count("spam:spun"),
        "briefs": kinds.count("brief"),
        "scans": kinds.count("scan"),
        "stem_docs": kinds.count("stem"),
        "long_docs": kinds.count("book"),
        "non_html_records": sum(k in ("non_html", "http_404", "http_301") for k in kinds),
        "bad_files": sum(k.startswith("bad:") for k in kinds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.corpus", description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(generate_demo_corpus(args.out_dir, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
