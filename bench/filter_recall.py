"""What the default filters wrongly drop, per language, and what junk they catch.

Genuine side: real articles whose every page a filter should keep (shared data: DAniEL
news in en/zh/el/pl/ru with gold language, ScrapingHub's article benchmark, trafilatura's
and Readability's test pages, the Leipzig sentences of 75 languages joined into
paragraphs). Junk side: the demo generator's spam pages (keyword stuffing, link farms,
lorem ipsum, bullet and symbol soup, spun text, OCR scans) and junk made from the same
real text in each language (a passage repeated, a navigation-only page of short link
lines, a table of numbers).

Each document goes through the stages a default curate config runs (extract, langid with
every language, the heuristic presets) in this process, with no Ray, under several
configurations:

* ``defaults``: the stage configs' defaults as they are now;
* ``previous``: the defaults before the multilingual fixes (tables judged as pipe
  lines, C4's end-of-line punctuation rule and five-sentence minimum for every
  language, Gopher's line rules over every line, whitespace words for Chinese and
  Japanese, one language-id threshold and one minimum length for every script);
* ``datatrove``: datatrove's Trafilatura, LanguageFilter and its Gopher, C4 and FineWeb
  filters with their defaults (FineWeb's C4 setting), in datatrove's own venv.

It prints, per source and language, the share of genuine documents kept and the reasons
of the drops; per junk kind, the share rejected.

    python -m bench.filter_recall [--data DIR] [--quick] [--json PATH] [--no-peer]
        [--extract-settings]

``--extract-settings`` also extracts the DAniEL pages under other trafilatura settings
(balanced, favor_recall, no tables) and prints per language the token F1 against the
gold text and the share the default filters keep.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.contract import Row, add_contract_arguments, row, write_json
from bench.peers import cache_dir, find_datatrove
from stages.base import DOCUMENT_SCHEMA, DROP_REASON, DROP_STAGE, apply_to_live_rows
from stages.extract import Extract, ExtractConfig
from stages.heuristic_rules import CJK_CHARS
from stages.heuristics import UNSPACED_LANGUAGES, Heuristics, HeuristicsConfig
from stages.langid import LangId, LangIdConfig

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
GENUINE = "genuine"
# lid.176 names Norwegian Bokmål "no"; the Leipzig files call it nb.
LID_CODES = {"nb": "no"}
SENTENCES_PER_DOC = 12


@dataclass
class Doc:
    source: str  # corpus name
    key: str
    lang: str | None  # gold (or agreed) language, lid.176 code
    kind: str  # "genuine" or "junk:<what>"
    html: str | None = None
    text: str | None = None
    url: str | None = None
    locale: str | None = None  # handbook pages: the locale folder's language
    gold: str | None = None  # the article's own text, where the corpus has it
    fates: dict[str, str | None] = field(default_factory=dict)  # config -> reason or None


_MARKUP = re.compile(r"<[^>]+>")
_TOKEN = re.compile(rf"[{CJK_CHARS}]|\w+")
WELL_EXTRACTED_F1 = 0.5


def token_f1(text: str, gold: str) -> float:
    """Bag-of-tokens F1 (a Han or kana character is a token): how much of the page's
    extracted text is its article."""
    ours, truth = Counter(_TOKEN.findall(text.lower())), Counter(_TOKEN.findall(gold.lower()))
    common = sum((ours & truth).values())
    if not common:
        return 0.0
    precision, recall = common / sum(ours.values()), common / sum(truth.values())
    return 2 * precision * recall / (precision + recall)


# --------------------------------------------------------------------------- loading
def _decode(raw: bytes) -> str:
    from trafilatura.utils import decode_file

    return decode_file(raw)


def load_daniel(data: Path, limit: int | None) -> list[Doc]:
    base = data / "web" / "daniel-dev"
    languages = json.loads((base / "languages.json").read_text())
    docs = []
    for path in sorted((base / "html").glob("*.html.gz"))[:limit]:
        key = path.name.removesuffix(".html.gz")
        html = _decode(gzip.decompress(path.read_bytes()))
        gold = _MARKUP.sub("", (base / "gold" / f"{key}.txt").read_text("utf-8"))
        docs.append(Doc("daniel", key, languages[key], GENUINE, html=html, gold=gold))
    return docs


def load_aeb(data: Path, limit: int | None) -> list[Doc]:
    truth = json.loads((data / "web" / "aeb" / "ground-truth.json").read_text())
    docs = []
    for path in sorted((data / "web" / "aeb" / "html").glob("*.html.gz"))[:limit]:
        key = path.name.removesuffix(".html.gz")
        html = _decode(gzip.decompress(path.read_bytes()))
        docs.append(Doc("aeb", key, "en", GENUINE, html=html, url=truth[key].get("url"),
                        gold=truth[key]["articleBody"]))  # fmt: skip
    return docs


def load_trafilatura(data: Path, limit: int | None) -> list[Doc]:
    base = data / "web" / "trafilatura"
    evaldata = json.loads((base / "evaldata.json").read_text())
    docs = []
    for url, entry in sorted(evaldata.items())[:limit]:
        path = base / entry["file"]
        if not path.exists():
            continue
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
        docs.append(Doc("trafilatura", url, None, GENUINE, html=_decode(raw), url=url))
    return docs


def load_readability(data: Path, limit: int | None) -> list[Doc]:
    docs = []
    for folder in sorted(p for p in (data / "web" / "readability").iterdir() if p.is_dir())[:limit]:
        source = folder / "source.html"
        if source.exists():
            docs.append(
                Doc("readability", folder.name, None, GENUINE, html=_decode(source.read_bytes()))
            )
    return docs


def handbook_dir() -> Path:
    return cache_dir() / "debian" / "x" / "usr" / "share" / "doc" / "debian-handbook" / "html"


def ensure_handbook() -> Path | None:
    """The Debian Administrator's Handbook in 26 locales (``apt-get download
    debian-handbook``, unpacked in the bench cache); None when apt cannot get it."""
    html = handbook_dir()
    if html.exists():
        return html
    folder = cache_dir() / "debian"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", "debian-handbook"], cwd=folder, check=True,
                       capture_output=True, timeout=600)  # fmt: skip
        deb = next(folder.glob("debian-handbook_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(folder / "x")], check=True, timeout=600)
    except (OSError, subprocess.SubprocessError, StopIteration) as exc:
        print(f"debian-handbook unavailable: {exc}", file=sys.stderr)
        return None
    return html if html.exists() else None


def load_handbook(limit: int | None, download: bool = True) -> list[Doc]:
    """Chapters of the handbook per locale: technical prose that quotes commands and
    configuration files. A locale folder also holds untranslated pages, so the language
    is set later by agreement with lid.176 (``label_languages``). Without ``download``,
    only a copy already in the cache is read."""
    html = ensure_handbook() if download else handbook_dir()
    if html is None or not html.exists():
        return []
    docs = []
    for locale in sorted(p for p in html.iterdir() if p.is_dir()):
        pages = sorted(locale.glob("*.html"))[: limit or 40]
        code = locale.name.split("-")[0].lower()
        code = {"nb": "no"}.get(code, code)
        for page in pages:
            raw = page.read_bytes()
            docs.append(Doc("handbook", f"{locale.name}/{page.stem}", None, GENUINE,
                            html=_decode(raw), locale=code))  # fmt: skip
    return docs


def load_sentences(data: Path, limit: int | None) -> list[Doc]:
    """Leipzig sentences (news and web) of one language, joined a dozen at a time into
    paragraphs of four: genuine running text in 75 languages."""
    docs = []
    for path in sorted((data / "langid" / "lingua" / "sentences").glob("*.txt")):
        code = path.stem
        lines = [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
        unspaced = code in ("zh", "ja", "th")
        joiner = "" if unspaced else " "
        for start in range(0, len(lines) - SENTENCES_PER_DOC + 1, SENTENCES_PER_DOC)[:limit]:
            chunk = lines[start : start + SENTENCES_PER_DOC]
            paragraphs = [joiner.join(chunk[i : i + 4]) for i in range(0, len(chunk), 4)]
            docs.append(
                Doc("sentences", f"{code}-{start}", LID_CODES.get(code, code), GENUINE,
                    text="\n\n".join(paragraphs))
            )  # fmt: skip
    return docs


def demo_junk(limit: int | None) -> list[Doc]:
    """The demo generator's spam pages, scans and spun text, with its labels."""
    from demo.corpus import generate_demo_corpus
    from stages.byte_streams import ByteReader, GzipSource
    from stages.warc import read_warc

    docs: list[Doc] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate_demo_corpus(out, seed=0)
        labels = json.loads((out / "labels.json").read_text())
        for path in sorted((out / "crawl").glob("*.warc.gz")):
            with path.open("rb") as raw:
                reader = ByteReader(GzipSource(raw, 50_000_000, 1000))
                for record in read_warc(reader, 50_000_000):
                    label = labels.get(f"crawl/{path.name} {record.url}", {})
                    kind = str(label.get("kind", ""))
                    if kind.startswith("spam:") and record.payload:
                        docs.append(Doc("demo", record.url or "", "en", f"junk:{kind[5:]}",
                                        html=_decode(record.payload), url=record.url))  # fmt: skip
        for line in (out / "text" / "scans.jsonl").read_text("utf-8").splitlines():
            item = json.loads(line)
            label = next((v for k, v in labels.items() if k.endswith(f" {item.get('id')}")), {})
            if float(label.get("error_rate", 0)) >= 0.15:  # the generator's poor scans
                docs.append(Doc("demo", str(item.get("id")), "en", "junk:ocr_poor",
                                text=item["text"]))  # fmt: skip
    return docs[: limit * 10] if limit else docs


_TITLE_CUT = re.compile(r"[\s,，、。.!?！？]+")


def real_junk(genuine: list[Doc], per_language: int, rng: random.Random) -> list[Doc]:
    """Junk built from each language's genuine text: the first passage repeated three
    times (on one line and as paragraphs), a page of short navigation lines, and a table
    of numbers with one caption."""
    by_lang: dict[str, list[str]] = defaultdict(list)
    for doc in genuine:
        text = doc.extracted
        if doc.lang and text:
            by_lang[doc.lang].append(text)
    docs = []
    for lang, texts in sorted(by_lang.items()):
        for i, text in enumerate(texts[:per_language]):
            passage = text.strip().split("\n")[0][:400]
            if len(passage) < 60:
                continue
            docs.append(Doc("real-junk", f"{lang}-rep-line-{i}", lang, "junk:repeated_line",
                            text=" ".join([passage] * 3)))  # fmt: skip
            docs.append(Doc("real-junk", f"{lang}-rep-para-{i}", lang, "junk:repeated_paragraphs",
                            text="\n\n".join([passage] * 3)))  # fmt: skip
            words = [w for w in _TITLE_CUT.split(text) if w][:200]
            nav = [" ".join(words[j : j + rng.randint(1, 2)]) or "›" for j in range(0, 80, 2)]
            docs.append(Doc("real-junk", f"{lang}-nav-{i}", lang, "junk:navigation",
                            text="\n".join(nav)))  # fmt: skip
            cells = [f"| {rng.randint(1, 9999)} | {rng.random() * 100:.2f} | {rng.choice('+-')}"
                     f"{rng.random() * 9:.1f}% |" for _ in range(30)]  # fmt: skip
            docs.append(Doc("real-junk", f"{lang}-table-{i}", lang, "junk:number_table",
                            text=passage[:80] + "\n" + "\n".join(cells)))  # fmt: skip
    return docs


# --------------------------------------------------------------------------- ours
@dataclass(frozen=True)
class Variant:
    name: str
    extract: ExtractConfig
    langid: LangIdConfig
    heuristics: HeuristicsConfig


# The defaults before the multilingual fixes, spelled out with today's switches.
_PREVIOUS_UNSPACED: dict[str, dict[str, Any]] = {
    "gopher_quality": {"min_words": None, "max_words": None, "min_mean_word_chars": None,
                       "max_mean_word_chars": None},
    "c4": {"min_line_words": None},
    "fineweb": {"max_newline_word_ratio": None},
}  # fmt: skip


def variants() -> list[Variant]:
    previous = Variant(
        "previous",
        ExtractConfig(min_text_chars_by_script={}),
        LangIdConfig(min_score_by_language={}),
        HeuristicsConfig(
            table_cells=False,
            cjk_languages=[],
            skip_lines_c4_removes=False,
            c4_sentence_languages=None,
            overrides={
                "c4": {"require_terminal_punctuation": True, "reject_curly_bracket": True},
                "fineweb": {"max_dup_line_char_fraction": 0.01},
            },
            language_overrides={lang: _PREVIOUS_UNSPACED for lang in UNSPACED_LANGUAGES},
        ),
    )
    return [previous, Variant("defaults", ExtractConfig(), LangIdConfig(), HeuristicsConfig())]


def _extract_cache(docs: list[Doc], options: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for doc in docs:
        digest.update(doc.source.encode() + b"\0" + doc.key.encode() + b"\0")
        digest.update(hashlib.sha256((doc.html or "").encode()).digest())
    return cache_dir() / "filter_recall" / f"extracted-{digest.hexdigest()[:16]}.json"


def extract_all(docs: list[Doc], cfg: ExtractConfig | None = None) -> None:
    """Each page's text as the extract stage gives it (no length limit: that is judged
    per variant), cached by options and pages, since trafilatura dominates the run."""
    pages = [d for d in docs if d.html is not None]
    cfg = (cfg or ExtractConfig()).model_copy(update={"min_text_chars": 0})
    cache = _extract_cache(pages, cfg.trafilatura_options())
    if cache.exists():
        texts = json.loads(cache.read_text())
    else:
        stage = Extract(cfg)
        texts = []
        for start in range(0, len(pages), 32):
            chunk = pages[start : start + 32]
            batch = _table([(d, None) for d in chunk])
            out = stage(batch)
            for text, reason in zip(out.column("text").to_pylist(),
                                    out.column(DROP_REASON).to_pylist(), strict=True):  # fmt: skip
                texts.append([text, reason])
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(texts))
    for doc, (text, reason) in zip(pages, texts, strict=True):
        doc.extracted = text if reason is None else None  # type: ignore[attr-defined]
        doc.extract_error = reason  # type: ignore[attr-defined]
    for doc in docs:
        if doc.html is None:
            doc.extracted = doc.text  # type: ignore[attr-defined]
            doc.extract_error = None  # type: ignore[attr-defined]


def _table(rows: list[tuple[Doc, str | None]]) -> pa.Table:
    """Document rows; with a text given, the row is a text document."""
    columns: dict[str, list[Any]] = {name: [] for name in DOCUMENT_SCHEMA.names}
    for ordinal, (doc, text) in enumerate(rows):
        is_html = text is None and doc.html is not None
        values = {
            "id": f"{doc.source}/{doc.key}", "shard": 0, "ordinal": ordinal, "source": doc.source,
            "record": doc.key, "url": doc.url, "date": None,
            "format": "html" if is_html else "text", "code_language": None,
            "html": doc.html if is_html else None, "text": None if is_html else text,
            "title": None, DROP_REASON: None, "drop_score": None, DROP_STAGE: None,
        }  # fmt: skip
        for name in DOCUMENT_SCHEMA.names:
            columns[name].append(values[name])
    return pa.table(columns, DOCUMENT_SCHEMA)


def run_variant(variant: Variant, docs: list[Doc]) -> None:
    """Record each document's fate (None: kept, else ``stage:reason``) under the variant."""
    from stages.extract import too_short

    stages = [LangId(variant.langid), Heuristics(variant.heuristics)]
    live: list[tuple[Doc, str]] = []
    for doc in docs:
        if doc.extract_error is not None:  # type: ignore[attr-defined]
            doc.fates[variant.name] = f"extract:{doc.extract_error}"  # type: ignore[attr-defined]
        elif doc.html is not None and (short := too_short(doc.extracted or "", variant.extract)):  # type: ignore[attr-defined]
            doc.fates[variant.name] = f"extract:{short}"
        else:
            live.append((doc, doc.extracted))  # type: ignore[attr-defined]
    for start in range(0, len(live), 256):
        chunk = live[start : start + 256]
        batch = _table(chunk)
        for stage in stages:
            batch = apply_to_live_rows(stage, batch)
        batch = batch.sort_by("ordinal")
        for (doc, _), reason, stage_name in zip(
            chunk,
            batch.column(DROP_REASON).to_pylist(),
            batch.column(DROP_STAGE).to_pylist(),
            strict=True,
        ):
            doc.fates[variant.name] = None if reason is None else f"{stage_name}:{reason}"


# --------------------------------------------------------------------------- extraction
# trafilatura settings compared on the pages with a gold text (issue 14: do the extract
# stage's settings lose articles, say on old table-layout sites?).
EXTRACT_SETTINGS = {
    "favor_precision (default)": ExtractConfig(),
    "balanced": ExtractConfig(favor_precision=False),
    "favor_recall": ExtractConfig(favor_precision=False, favor_recall=True),
    "favor_precision, no tables": ExtractConfig(include_tables=False),
}


def compare_extract_settings(docs: list[Doc]) -> tuple[list[Row], list[str]]:
    """Per extract setting and language of the DAniEL pages: mean token F1 against the
    gold text, the pages whose article survived extraction (F1 >= 0.5), and the share
    kept by the default filters after that extraction."""
    daniel = [d for d in docs if d.source == "daniel" and d.gold is not None]
    defaults = next(v for v in variants() if v.name == "defaults")
    lines = ["", "Extraction settings on the DAniEL pages (token F1 against gold; kept by the"
             " default filters):", "", "| setting | lang | n | mean F1 | F1 >= 0.5 | kept |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    rows: list[Row] = []
    for name, cfg in EXTRACT_SETTINGS.items():
        copies = [Doc(d.source, d.key, d.lang, d.kind, html=d.html, gold=d.gold) for d in daniel]
        extract_all(copies, cfg)
        run_variant(defaults, copies)
        by_lang: dict[str, list[Doc]] = defaultdict(list)
        for doc in copies:
            by_lang[doc.lang or "?"].append(doc)
        for lang, group in sorted(by_lang.items()):
            f1 = [token_f1(d.extracted or "", d.gold or "") for d in group]  # type: ignore[attr-defined]
            kept = sum(d.fates["defaults"] is None for d in group) / len(group)
            good = sum(f >= WELL_EXTRACTED_F1 for f in f1)
            lines.append(f"| {name} | {lang} | {len(group)} | {sum(f1) / len(f1):.3f} | "
                         f"{good} | {kept:.1%} |")  # fmt: skip
            rows.append(row(f"extraction token F1, {name}, daniel/{lang}", sum(f1) / len(f1),
                            unit="mean token F1"))  # fmt: skip
    return rows, lines


# --------------------------------------------------------------------------- datatrove
_PEER_SCRIPT = r"""
import json, sys
import datatrove.utils.lid as lid
lid.cached_asset_path_or_download = lambda *a, **k: sys.argv[3]  # our shipped lid.176
from datatrove.data import Document
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter,
    GopherQualityFilter, GopherRepetitionFilter, LanguageFilter)
docs = [json.loads(line) for line in open(sys.argv[1])]
extractor = Trafilatura(favour_precision=True, timeout=5.0, deduplicate=False)
steps = [("langid", LanguageFilter(languages=None, language_threshold=0.65)),
         ("gopher_repetition", GopherRepetitionFilter()),
         ("gopher_quality", GopherQualityFilter()),
         ("c4", C4QualityFilter(filter_no_terminal_punct=False)),
         ("fineweb", FineWebQualityFilter())]
out = open(sys.argv[2], "w")
for d in docs:
    text = d["text"]
    fate = None
    if d["html"] is not None:
        try:
            text = extractor.extract(d["html"])
        except Exception as exc:
            text = None
        if not text:
            fate = "extract:empty"
    if fate is None:
        doc = Document(text=text, id=d["id"], metadata={})
        for name, step in steps:
            try:
                verdict = step.filter(doc)
            except Exception as exc:
                verdict = (False, type(exc).__name__)
            ok, reason = (verdict, None) if isinstance(verdict, bool) else verdict
            if not ok:
                fate = f"{name}:{reason or 'dropped'}"
                break
    out.write(json.dumps({"id": d["id"], "fate": fate}) + "\n")
"""


def run_datatrove(docs: list[Doc], python: Path) -> None:
    """datatrove's fate of each document, cached by inputs (its extraction is slow)."""
    from stages.langid import DEFAULT_MODEL_PATH

    digest = hashlib.sha256(_PEER_SCRIPT.encode())
    for doc in docs:
        digest.update(hashlib.sha256(f"{doc.html}\0{doc.text}".encode()).digest())
    cache = cache_dir() / "filter_recall" / f"datatrove-{digest.hexdigest()[:16]}.json"
    if not cache.exists():
        with tempfile.TemporaryDirectory() as tmp:
            inp, outp, script = Path(tmp, "in.jsonl"), Path(tmp, "out.jsonl"), Path(tmp, "peer.py")
            script.write_text(_PEER_SCRIPT)
            with inp.open("w") as f:
                for i, doc in enumerate(docs):
                    f.write(json.dumps({"id": str(i), "html": doc.html, "text": doc.text}) + "\n")
            command = [str(python), str(script), str(inp), str(outp), str(DEFAULT_MODEL_PATH)]
            subprocess.run(command, check=True, timeout=3600)
            fates = [json.loads(line)["fate"] for line in outp.read_text().splitlines()]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(fates))
    for doc, fate in zip(docs, json.loads(cache.read_text()), strict=True):
        doc.fates["datatrove"] = fate


# --------------------------------------------------------------------------- report
def label_languages(docs: list[Doc]) -> list[Doc]:
    """Pages without a gold language take lid.176's label of their extracted text; a
    handbook page keeps its locale's language only where lid.176 agrees (the others are
    untranslated pages, left out)."""
    import fasttext

    from stages.langid import DEFAULT_MODEL_PATH, LABEL_PREFIX

    model = fasttext.load_model(str(DEFAULT_MODEL_PATH))
    kept = []
    for doc in docs:
        text = getattr(doc, "extracted", None)
        if doc.lang is None and text:
            (label,), _ = model.predict(" ".join(text.split())[:2000])
            label = label.removeprefix(LABEL_PREFIX)
            if doc.locale is not None and label != doc.locale:
                continue
            doc.lang = label
        kept.append(doc)
    return kept


def summarise(docs: list[Doc], names: list[str]) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    groups: dict[tuple[str, str], list[Doc]] = defaultdict(list)
    for doc in docs:
        if doc.kind == GENUINE:
            groups[(doc.source, doc.lang or "?")].append(doc)
    header = "| source | lang | n | " + " | ".join(f"kept, {n}" for n in names) + " |"
    lines = [header, "|" + "---|" * (3 + len(names))]
    for (source, lang), group in sorted(groups.items()):
        kept = [sum(d.fates.get(n, "x") is None for d in group) / len(group) for n in names]
        lines.append(f"| {source} | {lang} | {len(group)} | "
                     + " | ".join(f"{k:.1%}" for k in kept) + " |")  # fmt: skip
    lines += ["", f"Pages with a gold text whose extraction has token F1 >= {WELL_EXTRACTED_F1}"
              " (the others lost their article at extraction, before any filter):",
              "", "| source | lang | n | " + " | ".join(f"kept, {n}" for n in names) + " |",
              "|" + "---|" * (3 + len(names))]  # fmt: skip
    for (source, lang), group in sorted(groups.items()):
        good = [d for d in group if d.gold is not None and getattr(d, "extracted", None)
                and token_f1(d.extracted, d.gold) >= WELL_EXTRACTED_F1]  # type: ignore[attr-defined]  # fmt: skip
        if good:
            kept = [sum(d.fates.get(n, "x") is None for d in good) / len(good) for n in names]
            lines.append(f"| {source} | {lang} | {len(good)} of {len(group)} | "
                         + " | ".join(f"{k:.1%}" for k in kept) + " |")  # fmt: skip
            rows.append(row(f"well-extracted articles kept, {source}/{lang} (n={len(good)})",
                            kept[names.index("defaults")], kept[names.index("datatrove")]
                            if "datatrove" in names else None, peer_name="datatrove",
                            unit="fraction kept"))  # fmt: skip
    by_lang: dict[str, list[Doc]] = defaultdict(list)
    for doc in docs:
        if doc.kind == GENUINE and doc.source != "sentences":
            by_lang[doc.lang or "?"].append(doc)
    for lang, group in sorted(by_lang.items(), key=lambda item: -len(item[1])):
        if len(group) < 10:
            continue
        kept = {n: sum(d.fates.get(n, "x") is None for d in group) / len(group) for n in names}
        rows.append(row(f"genuine web articles kept, {lang} (n={len(group)})", kept["defaults"],
                        kept.get("datatrove"), peer_name="datatrove",
                        unit="fraction kept"))  # fmt: skip
    junk: dict[str, list[Doc]] = defaultdict(list)
    for doc in docs:
        if doc.kind != GENUINE:
            junk[doc.kind].append(doc)
    lines += ["", "| junk | n | " + " | ".join(f"rejected, {n}" for n in names) + " |",
              "|" + "---|" * (2 + len(names))]  # fmt: skip
    for kind, group in sorted(junk.items()):
        rejected = [sum(d.fates.get(n) is not None for d in group) / len(group) for n in names]
        lines.append(
            f"| {kind} | {len(group)} | " + " | ".join(f"{r:.1%}" for r in rejected) + " |"
        )
    total = [d for group in junk.values() for d in group]
    if total:
        rejected = {n: sum(d.fates.get(n) is not None for d in total) / len(total) for n in names}
        rows.append(row(f"junk rejected (n={len(total)})", rejected["defaults"],
                        rejected.get("datatrove"), peer_name="datatrove",
                        unit="fraction rejected"))  # fmt: skip
    lines += ["", "Reasons for genuine documents dropped (defaults):"]
    for (source, lang), group in sorted(groups.items()):
        reasons = Counter(d.fates.get("defaults") for d in group if d.fates.get("defaults"))
        if reasons:
            lines.append(
                f"- {source}/{lang}: " + ", ".join(f"{r} {c}" for r, c in reasons.most_common(4))
            )
    notes += lines
    return rows, notes


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.filter_recall", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-peer", action="store_true", help="skip datatrove")
    parser.add_argument("--show", default=None, help="print the fates of one source/lang")
    parser.add_argument("--extract-settings", action="store_true",
                        help="also compare trafilatura settings on the DAniEL pages")  # fmt: skip
    add_contract_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not (args.data / "web" / "daniel-dev").exists():
        message = f"skipped: ../shared/data with web/daniel-dev not found ({args.data})"
        print(message)
        write_json(args.json, "filter_recall", [], [message])
        return 0
    limit = 20 if args.quick else None
    genuine = (load_daniel(args.data, limit) + load_aeb(args.data, limit)
               + load_trafilatura(args.data, limit) + load_readability(args.data, limit)
               + load_sentences(args.data, 2 if args.quick else None)
               + load_handbook(3 if args.quick else None, download=not args.quick))  # fmt: skip
    junk = demo_junk(2 if args.quick else None)
    extract_all(genuine + junk)
    genuine = label_languages(genuine)
    junk += real_junk(genuine, 2 if args.quick else 6, random.Random(0))
    docs = genuine + junk
    extract_all(docs)
    names = []
    for variant in variants():
        run_variant(variant, docs)
        names.append(variant.name)
    if not args.no_peer:
        peer = find_datatrove()
        if peer.available:
            run_datatrove(docs, peer.python)  # type: ignore[arg-type]
            names.append("datatrove")
        else:
            print(f"datatrove: {peer.status}", file=sys.stderr)
    rows, notes = summarise(docs, names)
    if args.extract_settings:
        extract_rows, extract_notes = compare_extract_settings(docs)
        rows += extract_rows
        notes += extract_notes
    print("\n".join(notes))
    if args.show:
        for doc in docs:
            if f"{doc.source}/{doc.lang}" == args.show or doc.kind == args.show:
                print(doc.key, {n: doc.fates.get(n) for n in names})
    write_json(args.json, "filter_recall", rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
