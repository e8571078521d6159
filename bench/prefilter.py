"""Would a fast first-pass text let language id and the cheap rules drop pages before
trafilatura, without changing any verdict? (issue 18, "beyond the floor").

Extraction is 70-75% of the bare-library floor's CPU. resiliparse's
``extract_plain_text(html, main_content=True)`` is many times faster than trafilatura,
so a page whose fast text already fails language id or a heuristic rule by a wide margin
could be dropped without ever being extracted. That is only admissible when the full
pipeline would have dropped the page too: a page the full pipeline keeps and the
prefilter drops is a changed verdict (data lost), whatever CPU it saves.

For every page this script computes

* the **full verdict**, as a curate run computes it today: the ``Extract`` stage with the
  default ``ExtractConfig`` (trafilatura, then ``too_short``), then ``LangId`` and
  ``Heuristics`` with their default configs, called on pyarrow tables through
  ``apply_to_live_rows`` as the pipeline calls them; with the extract stage's CPU time;
* the **fast text** (resiliparse) with its CPU time, and on it each candidate prefilter
  rule's measure: the extract stage's minimum length (per script), lid.176's score
  against the language's minimum (``LangId`` stage on the fast text), each Gopher
  quality and repetition rule, C4's page rejections and each FineWeb rule (on C4's
  cleaned fast text, as the pipeline orders them), with the language's thresholds.

A candidate rule at strictness ``s`` drops a page when its fast-text measure is beyond
the threshold by the factor ``s`` (a ``min_*`` rule: value < limit / s; a ``max_*`` rule:
value > limit * s); ``s = 1`` is the rule as published. For each candidate and ``s`` it
counts the pages dropped before trafilatura, the **verdict changes** (dropped, but kept
by the full pipeline) and the trafilatura CPU saved; then the union of the candidates at
the least strict ``s`` with no verdict change, its net saving (minus the fast pass's own
CPU on every page), and the extraction token F1 of the kept pages with and without it.

    python -m bench.prefilter [--pages N] [--languages en,de,...] [--data DIR] [--fresh]

Extraction outcomes and their CPU times are cached per page under the bench cache
(``--fresh`` measures again); the fast pass is always measured.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.corpus import DEBIAN_PACKAGES, MAX_TEXT_BYTES, MIN_TEXT_BYTES
from bench.peers import cache_dir
from stages.base import DOCUMENT_SCHEMA, DROP_REASON, DROP_STAGE, apply_to_live_rows
from stages.extract import Extract, ExtractConfig, script_of, too_short
from stages.heuristic_rules import (
    FINEWEB_RULES,
    GOPHER_QUALITY_RULES,
    GOPHER_REPETITION_RULES,
    REASON_C4_TOO_FEW_SENTENCES,
    STOP_WORD_THRESHOLD,
    DocView,
    RuleSpec,
    c4_clean,
    rule_view,
)
from stages.heuristics import C4, Heuristics, HeuristicsConfig
from stages.langid import LANGUAGE, LANGUAGE_SCORE, LangId, LangIdConfig

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STRICTNESS = (1.0, 1.5, 2.0, 3.0, 4.0, 8.0)
GENUINE_SOURCES = frozenset({"daniel", "aeb", "trafilatura", "readability", "handbook"})
BATCH = 256
ORDER_CHECK_PAGES = 40  # pages extracted a second time, in another order


# --------------------------------------------------------------------------- pages
@dataclass
class Page:
    """One web page of the benchmark and everything measured on it."""

    source: str
    key: str
    html: str
    url: str | None = None
    lang: str | None = None  # gold or locale language, where the corpus says
    gold: str | None = None  # the article's own text, where the corpus has it
    genuine: bool = False  # a page every filter should keep (curated article sets)
    locale: str | None = None  # handbook pages: the locale folder's language
    # full pipeline
    full_fate: str | None = None  # None: kept; else "stage:reason"
    full_text: str | None = None  # the extracted text (before C4's line removal)
    full_lang: str | None = None
    extract_cpu: float = 0.0
    # fast pass
    fast_text: str = ""
    fast_cpu: float = 0.0
    fast_lang: str | None = None
    fast_score: float | None = None
    checks: dict[str, tuple[float, float, bool]] = field(default_factory=dict)
    """Candidate rule -> (value on the fast text, threshold, True for a max_* rule)."""

    @property
    def kept(self) -> bool:
        return self.full_fate is None

    @property
    def language(self) -> str:
        """The language a per-language table groups the page under: gold, else lid.176
        on the full extraction, else on the fast text."""
        return self.lang or self.full_lang or self.fast_lang or "?"


def _decode(raw: bytes) -> str:
    from trafilatura.utils import decode_file

    return decode_file(raw)


def load_pages(data: Path, cache: Path) -> dict[str, list[Page]]:
    """Every page available, by kind: the curated article sets of ``data/web`` (DAniEL
    per language, AEB, trafilatura's and Readability's tests), the Debian handbook per
    locale, the Common Crawl WARC responses, Python's and SymPy's HTML documentation
    (the Debian packages ``bench.corpus`` unpacks in the bench cache)."""
    kinds: dict[str, list[Page]] = defaultdict(list)
    web = data / "web"
    daniel = web / "daniel-dev"
    if daniel.is_dir():
        languages = json.loads((daniel / "languages.json").read_text())
        for path in sorted((daniel / "html").glob("*.html.gz")):
            key = path.name.removesuffix(".html.gz")
            gold = (daniel / "gold" / f"{key}.txt").read_text("utf-8")
            gold = gold.replace("<p>", "\n").replace("</p>", "\n")
            html = _decode(gzip.decompress(path.read_bytes()))
            page = Page("daniel", key, html, lang=languages[key], gold=gold, genuine=True)
            kinds[f"daniel/{languages[key]}"].append(page)
    truth_file = web / "aeb" / "ground-truth.json"
    if truth_file.is_file():
        truth = json.loads(truth_file.read_text())
        for path in sorted((web / "aeb" / "html").glob("*.html.gz")):
            key = path.name.removesuffix(".html.gz")
            html = _decode(gzip.decompress(path.read_bytes()))
            kinds["aeb"].append(Page("aeb", key, html, url=truth[key].get("url"), lang="en",
                                     gold=truth[key]["articleBody"], genuine=True))  # fmt: skip
    evaldata_file = web / "trafilatura" / "evaldata.json"
    if evaldata_file.is_file():
        for url, entry in sorted(json.loads(evaldata_file.read_text()).items()):
            path = web / "trafilatura" / entry["file"]
            if path.is_file():
                raw = path.read_bytes()
                raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
                kinds["trafilatura"].append(
                    Page("trafilatura", url, _decode(raw), url=url, genuine=True)
                )
    readability = web / "readability"
    if readability.is_dir():
        for folder in sorted(p for p in readability.iterdir() if (p / "source.html").is_file()):
            html = _decode((folder / "source.html").read_bytes())
            kinds["readability"].append(Page("readability", folder.name, html, genuine=True))
    _load_warc(data, kinds)
    _load_debian(cache, kinds)
    return {kind: [p for p in pages if p.html.strip()] for kind, pages in kinds.items()}


def _load_warc(data: Path, kinds: dict[str, list[Page]]) -> None:
    import pyarrow.fs as pafs

    from stages.readers import ReaderConfig, read_file

    for path in sorted((data / "warc").glob("*.warc.gz")):
        if ".wat." in path.name or ".wet." in path.name:
            continue
        for number, found in enumerate(
            read_file(str(path), path.name, pafs.LocalFileSystem(), ReaderConfig())
        ):
            if found[DROP_REASON] is None and found["html"]:
                key = f"{path.name}/{number}"
                kinds["warc"].append(Page("warc", key, found["html"], url=found["url"]))


def _load_debian(cache: Path, kinds: dict[str, list[Page]]) -> None:
    """Pages already in the bench cache (nothing is downloaded here: ``python -m
    bench.corpus`` and ``python -m bench.filter_recall`` fetch them)."""
    handbook = cache / "debian" / "x" / "usr" / "share" / "doc" / "debian-handbook" / "html"
    if handbook.is_dir():
        for locale in sorted(p for p in handbook.iterdir() if p.is_dir()):
            code = {"nb": "no"}.get(locale.name.split("-")[0].lower(), locale.name[:2])
            for path in sorted(locale.glob("*.html")):
                # lang stays None: set by agreement with lid.176 (untranslated pages exist)
                page = Page("handbook", f"{locale.name}/{path.stem}", _decode(path.read_bytes()),
                            genuine=True, locale=code)  # fmt: skip
                kinds[f"handbook/{locale.name}"].append(page)
    for package, (kind, inside, prefix) in DEBIAN_PACKAGES.items():
        base = cache / "debian" / package / inside
        if not base.is_dir() or package.startswith("golang"):
            continue
        for path in sorted(base.rglob("*.html")):
            if MIN_TEXT_BYTES <= path.stat().st_size <= MAX_TEXT_BYTES:
                url = prefix + str(path.relative_to(base))
                kinds[kind].append(Page(kind, url, _decode(path.read_bytes()), url=url))


def take(kinds: dict[str, list[Page]], count: int, seed: int = 0) -> list[Page]:
    """``count`` pages round-robin over the kinds (each shuffled with ``seed``), so every
    size holds every kind and language the pool has."""
    rng = random.Random(seed)
    queues = []
    for kind in sorted(kinds):
        pages = list(kinds[kind])
        rng.shuffle(pages)
        queues.append(pages)
    chosen: list[Page] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop())
    return chosen


# --------------------------------------------------------------------------- tables
def page_table(pages: list[Page], texts: list[str | None] | None = None) -> pa.Table:
    """Document rows as the readers make them: html rows (``texts`` None) or html rows
    whose text is already filled, as they leave the extract stage."""
    columns: dict[str, list[Any]] = {name: [] for name in DOCUMENT_SCHEMA.names}
    for ordinal, page in enumerate(pages):
        text = None if texts is None else texts[ordinal]
        values = {
            "id": f"{page.source}/{page.key}", "shard": 0, "ordinal": ordinal,
            "source": page.source, "record": page.key, "url": page.url, "date": None,
            "format": "html", "code_language": None,
            "html": page.html if texts is None else None, "text": text, "title": None,
            DROP_REASON: None, "drop_score": None, DROP_STAGE: None,
        }  # fmt: skip
        for name in DOCUMENT_SCHEMA.names:
            columns[name].append(values[name])
    return pa.table(columns, DOCUMENT_SCHEMA)


# --------------------------------------------------------------------------- full verdict
def _page_digest(page: Page, options: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    digest.update((page.url or "").encode() + b"\0" + page.html.encode())
    return digest.hexdigest()[:24]


def extract_pages(
    pages: list[Page], cfg: ExtractConfig, cache_file: Path | None, log: Callable[[str], None]
) -> tuple[int, int]:
    """Each page through the ``Extract`` stage, one page per call so that its CPU time is
    the page's own (process CPU around the stage call: trafilatura plus the stage's
    bookkeeping). Outcomes and times are cached per page; returns (measured, cached)."""
    stage = Extract(cfg)
    options = cfg.trafilatura_options()
    cached: dict[str, list[Any]] = {}
    if cache_file is not None and cache_file.is_file():
        cached = json.loads(cache_file.read_text())
    measured = 0
    for number, page in enumerate(pages):
        key = _page_digest(page, options)
        if key not in cached:
            table = page_table([page])
            start = time.process_time()
            out = stage(table)
            cpu = time.process_time() - start
            reason = out.column(DROP_REASON)[0].as_py()
            cached[key] = [out.column("text")[0].as_py(), reason, cpu]
            measured += 1
            if measured % 200 == 0:
                log(f"  extracted {number + 1}/{len(pages)}")
                if cache_file is not None:
                    _write_json(cache_file, cached)
        text, reason, cpu = cached[key]
        page.full_text = text if reason is None else None
        page.full_fate = None if reason is None else f"extract:{reason}"
        page.extract_cpu = cpu
    if cache_file is not None and measured:
        _write_json(cache_file, cached)
    return measured, len(pages) - measured


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value))
    temporary.replace(path)


def judge_full(pages: list[Page], langid: LangId, heuristics: Heuristics) -> float:
    """LangId then Heuristics on the extracted pages, in batches, as the pipeline runs
    them (``apply_to_live_rows``); sets each page's fate and full-text language. Returns
    the CPU seconds of the two stages."""
    live = [p for p in pages if p.full_fate is None]
    cpu = 0.0
    for start in range(0, len(live), BATCH):
        chunk = live[start : start + BATCH]
        batch = page_table(chunk, [p.full_text for p in chunk])
        began = time.process_time()
        batch = apply_to_live_rows(langid, batch)
        batch = apply_to_live_rows(heuristics, batch)
        cpu += time.process_time() - began
        rows = zip(batch.column(DROP_REASON).to_pylist(), batch.column(DROP_STAGE).to_pylist(),
                   batch.column(LANGUAGE).to_pylist(), strict=True)  # fmt: skip
        for page, (reason, stage_name, language) in zip(chunk, rows, strict=True):
            page.full_fate = None if reason is None else f"{stage_name}:{reason}"
            page.full_lang = language
    return cpu


# --------------------------------------------------------------------------- fast pass
def fast_texts(pages: list[Page]) -> None:
    """resiliparse's main-content plain text of each page, with its CPU time."""
    from resiliparse.extract.html2text import extract_plain_text

    for page in pages:
        start = time.process_time()
        try:
            text = extract_plain_text(page.html, main_content=True)
        except Exception as exc:  # counted as an empty fast text: never a drop reason alone
            print(f"resiliparse failed on {page.source}/{page.key}: {exc!r}", file=sys.stderr)
            text = ""
        page.fast_cpu = time.process_time() - start
        page.fast_text = text or ""


_PRESET_RULES: dict[str, tuple[RuleSpec, ...]] = {
    "gopher_quality": GOPHER_QUALITY_RULES,
    "gopher_repetition": GOPHER_REPETITION_RULES,
    "fineweb": FINEWEB_RULES,
}
LENGTH, LANGID = "length", "langid"
# Each candidate's family, whose CPU on the fast text of every page is the prefilter's cost.
FAMILY = {
    "extract:no_extractable_text": LENGTH,
    "langid:language_score_below_min": LANGID,
    "langid:language_not_selected": LANGID,
    **{f"heuristics:{spec.reason}": preset for preset, specs in _PRESET_RULES.items()
       for spec in specs},
}  # fmt: skip


def _family(name: str) -> str:
    return FAMILY.get(name, C4)  # C4's page rejections are the only others


def _rule_checks(
    text: str, language: str | None, cfg: HeuristicsConfig, cpu: dict[str, float]
) -> dict[str, tuple[float, float, bool]]:
    """Each heuristic rule's measure on ``text``, judged independently of the others,
    with the thresholds the Heuristics stage would use for ``language``. Each preset
    splits the text afresh (``DocView`` caches its pieces), so that ``cpu`` gets the
    cost each preset would have on its own; FineWeb's includes C4's cleaning, which it
    needs."""
    checks: dict[str, tuple[float, float, bool]] = {}
    words = "cjk" if language in cfg.cjk_languages else "whitespace"
    view = rule_view if cfg.table_cells else str
    stop_words = (
        cfg.stop_word_languages is None or language is None or language in cfg.stop_word_languages
    )
    cleaned: str | None = None
    c4_cpu = 0.0
    for preset in cfg.presets:
        began = time.process_time()
        params = cfg.thresholds(preset, language)
        if preset == C4:
            kept_text, reason, score = c4_clean(text, {**params, "table_cells": cfg.table_cells})
            if reason == REASON_C4_TOO_FEW_SENTENCES:
                minimum = float(params["min_sentences"])  # type: ignore[arg-type]
                checks[f"heuristics:{reason}"] = (float(score or 0), minimum, False)
            elif reason is not None:  # lorem ipsum, no line left: yes/no, no margin
                checks[f"heuristics:{reason}"] = (1.0, 0.0, True)
            else:
                cleaned = kept_text
            c4_cpu = time.process_time() - began
            cpu[C4] = cpu.get(C4, 0.0) + c4_cpu
            continue
        source = text if preset != "fineweb" else cleaned
        if source is None:  # C4 rejected the page: FineWeb never sees it
            continue
        doc = DocView(view(source), words)
        for spec in _PRESET_RULES[preset]:
            limit = params[spec.threshold]
            if limit is None or (spec.threshold == STOP_WORD_THRESHOLD and not stop_words):
                continue
            is_max = spec.threshold.startswith("max_")
            checks[f"heuristics:{spec.reason}"] = (spec.measure(doc, params), float(limit), is_max)
        spent = time.process_time() - began + (c4_cpu if preset == "fineweb" else 0.0)
        cpu[preset] = cpu.get(preset, 0.0) + spent
    return checks


def judge_fast(
    pages: list[Page], extract_cfg: ExtractConfig, langid: LangId, heuristics_cfg: HeuristicsConfig
) -> dict[str, float]:
    """The candidate rules' measures on each page's fast text; returns each family's CPU
    seconds over all pages (resiliparse not included)."""
    cpu: dict[str, float] = defaultdict(float)
    for start in range(0, len(pages), BATCH):
        chunk = pages[start : start + BATCH]
        began = time.process_time()
        out = langid(page_table(chunk, [p.fast_text for p in chunk]))
        cpu[LANGID] += time.process_time() - began
        languages = out.column(LANGUAGE).to_pylist()
        scores = out.column(LANGUAGE_SCORE).to_pylist()
        for page, language, score in zip(chunk, languages, scores, strict=True):
            page.fast_lang, page.fast_score = language, score
            began = time.process_time()
            minimum = extract_cfg.min_text_chars
            if too_short(page.fast_text, extract_cfg) is not None:  # the script's minimum
                script = script_of(page.fast_text) or ""
                minimum = extract_cfg.min_text_chars_by_script.get(script, minimum)
            length = float(len(page.fast_text))
            checks = {"extract:no_extractable_text": (length, float(minimum), False)}
            cpu[LENGTH] += time.process_time() - began
            if language is not None and score is not None:
                lid_min = langid.cfg.min_score_by_language.get(language, langid.cfg.min_score)
                if lid_min is not None:
                    checks["langid:language_score_below_min"] = (score, lid_min, False)
                if langid.keep is not None:
                    # Not selected: the value is the score the wrong label got; it drops
                    # when that score is at least 1 - 0.5/s (s = 1: any score).
                    selected = language in langid.keep
                    checks["langid:language_not_selected"] = (0.0 if selected else score, 0.5, True)
            checks.update(_rule_checks(page.fast_text, language, heuristics_cfg, cpu))
            page.checks = checks
    return dict(cpu)


def drops(check: tuple[float, float, bool], strictness: float, name: str) -> bool:
    """Whether a candidate rule drops the page at this strictness."""
    value, limit, is_max = check
    if name == "langid:language_not_selected":
        return value > 0 and value >= 1 - 0.5 / strictness
    if is_max:
        return value > limit * strictness
    return value < limit / strictness


# --------------------------------------------------------------------------- comparison
@dataclass
class Candidate:
    """One prefilter rule at one strictness, counted over the pages."""

    name: str
    strictness: float
    dropped: int = 0
    safe: int = 0  # dropped, and dropped by the full pipeline too
    changed: int = 0  # dropped, but kept by the full pipeline: a verdict change
    changed_genuine: int = 0
    same_reason: int = 0  # safe drops whose full reason is this very rule
    saved_cpu: float = 0.0  # extract CPU of the dropped pages
    changed_keys: list[str] = field(default_factory=list)


def _tally(result: Candidate, page: Page) -> None:
    """Count one page the prefilter drops: CPU saved, and a verdict change or a safe drop."""
    result.dropped += 1
    result.saved_cpu += page.extract_cpu
    if page.kept:
        result.changed += 1
        result.changed_genuine += page.genuine
        result.changed_keys.append(f"{page.source}/{page.key}")
    else:
        result.safe += 1


def evaluate(pages: list[Page], name: str, strictness: float) -> Candidate:
    result = Candidate(name, strictness)
    for page in pages:
        check = page.checks.get(name)
        if check is None or not drops(check, strictness, name):
            continue
        _tally(result, page)
        result.same_reason += not page.kept and page.full_fate == name
    return result


def evaluate_set(pages: list[Page], chosen: dict[str, float]) -> Candidate:
    """The union of candidate rules, each at its strictness: a page goes when any drops it."""
    result = Candidate(" + ".join(sorted(chosen)) or "(none)", 0.0)
    for page in pages:
        if not any(n in page.checks and drops(page.checks[n], s, n) for n, s in chosen.items()):
            continue
        _tally(result, page)
    return result


def choose(pages: list[Page], names: Iterable[str]) -> dict[str, float]:
    """Each candidate at the least strictness of ``STRICTNESS`` at which it changes no
    verdict on ``pages`` and still drops one; a rule that changes a verdict at every
    strictness (or never drops) is left out."""
    chosen: dict[str, float] = {}
    for name in names:
        for strictness in STRICTNESS:
            candidate = evaluate(pages, name, strictness)
            if candidate.changed == 0:
                if candidate.dropped:
                    chosen[name] = strictness
                break
    return chosen


# Prefilter sets, cheapest first: each adds one family of rules to the one before.
SETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("length", (LENGTH,)),
    ("length + langid", (LENGTH, LANGID)),
    ("+ gopher_quality", (LENGTH, LANGID, "gopher_quality")),
    ("+ gopher_repetition", (LENGTH, LANGID, "gopher_quality", "gopher_repetition")),
    ("+ c4 + fineweb", (LENGTH, LANGID, "gopher_quality", "gopher_repetition", C4, "fineweb")),
)


@dataclass
class SetResult:
    """One prefilter set: its rules at their zero-change strictness, in sample and
    chosen on the other half of the pages, and the same rules as published."""

    label: str
    families: tuple[str, ...]
    chosen: dict[str, float]
    in_sample: Candidate
    held_out: Candidate  # strictness chosen on one half, counted on the other (both ways)
    published: Candidate  # every rule of the families at s = 1
    cost_cpu: float  # resiliparse + the families' rules on every page


def evaluate_sets(
    pages: list[Page], chosen: dict[str, float], family_cpu: dict[str, float]
) -> list[SetResult]:
    names = sorted({name for page in pages for name in page.checks})
    halves = (pages[0::2], pages[1::2])
    held_choice = (choose(halves[0], names), choose(halves[1], names))
    results = []
    fast_cpu = sum(p.fast_cpu for p in pages)
    for label, families in SETS:

        def pick(table: dict[str, float], families: tuple[str, ...] = families) -> dict[str, float]:
            return {n: s for n, s in table.items() if _family(n) in families}

        held = [evaluate_set(halves[1], pick(held_choice[0])),
                evaluate_set(halves[0], pick(held_choice[1]))]  # fmt: skip
        held_out = Candidate("held out", 0.0)
        for part in held:
            held_out.dropped += part.dropped
            held_out.changed += part.changed
            held_out.changed_genuine += part.changed_genuine
            held_out.saved_cpu += part.saved_cpu
            held_out.changed_keys += part.changed_keys
        cost = fast_cpu + sum(family_cpu.get(f, 0.0) for f in families if f != C4 or
                              "fineweb" not in families)  # fineweb's CPU includes C4's  # fmt: skip
        results.append(SetResult(
            label, families, pick(chosen), evaluate_set(pages, pick(chosen)), held_out,
            evaluate_set(pages, {n: 1.0 for n in names if _family(n) in families}), cost,
        ))  # fmt: skip
    return results


@dataclass
class Comparison:
    """Everything the report needs: per page results and per candidate counts."""

    pages: list[Page]
    candidates: dict[str, list[Candidate]]  # name -> one per strictness
    chosen: dict[str, float]  # name -> least strictness with no verdict change
    sets: list[SetResult]
    extract_cpu: float
    fast_cpu: float  # resiliparse
    family_cpu: dict[str, float]  # lid and each rule family on the fast text
    full_rules_cpu: float  # lid + heuristics on the full text
    measured: int
    cached: int


def compare(
    pages: list[Page],
    extract_cfg: ExtractConfig | None = None,
    langid_cfg: LangIdConfig | None = None,
    heuristics_cfg: HeuristicsConfig | None = None,
    cache_file: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Comparison:
    """Full verdicts and fast-pass candidates for ``pages``, and their accounting."""
    extract_cfg = extract_cfg or ExtractConfig()
    langid_cfg = langid_cfg or LangIdConfig()
    heuristics_cfg = heuristics_cfg or HeuristicsConfig()
    measured, cached = extract_pages(pages, extract_cfg, cache_file, log)
    langid = LangId(langid_cfg)
    heuristics = Heuristics(heuristics_cfg)
    full_rules_cpu = judge_full(pages, langid, heuristics)
    log("  fast pass (resiliparse)")
    fast_texts(pages)
    family_cpu = judge_fast(pages, extract_cfg, langid, heuristics_cfg)
    names = sorted({name for page in pages for name in page.checks})
    candidates = {n: [evaluate(pages, n, s) for s in STRICTNESS] for n in names}
    chosen = choose(pages, names)
    return Comparison(
        pages=pages,
        candidates=candidates,
        chosen=chosen,
        sets=evaluate_sets(pages, chosen, family_cpu),
        extract_cpu=sum(p.extract_cpu for p in pages),
        fast_cpu=sum(p.fast_cpu for p in pages),
        family_cpu=family_cpu,
        full_rules_cpu=full_rules_cpu,
        measured=measured,
        cached=cached,
    )


# --------------------------------------------------------------------------- checks
def mean_f1(pages: Iterable[Page]) -> tuple[float | None, int]:
    """Mean token F1 of the extracted text against the gold text, over pages with one."""
    from bench.filter_recall import token_f1

    scores = [token_f1(p.full_text or "", p.gold) for p in pages if p.gold is not None]
    return (statistics.fmean(scores) if scores else None), len(scores)


def order_check(pages: list[Page], cfg: ExtractConfig, count: int) -> tuple[int, int]:
    """Extract a sample of kept pages again, in reverse order and in a fresh stage: the
    text must not depend on which pages trafilatura saw before (with ``deduplicate``
    off it keeps no state between pages), else dropping pages could change the others'
    text. Returns (pages checked, pages whose text differs)."""
    sample = [p for p in pages if p.full_text is not None][:count][::-1]
    stage = Extract(cfg)
    differ = 0
    for page in sample:
        out = stage(page_table([page]))
        differ += out.column("text")[0].as_py() != page.full_text
    return len(sample), differ


def label_languages(pages: list[Page]) -> None:
    """Handbook pages take their locale's language where lid.176 agrees on the full
    text (a locale folder also holds untranslated pages, labelled by lid.176)."""
    for page in pages:
        if page.lang is None and page.locale is not None and page.full_lang == page.locale:
            page.lang = page.locale


# --------------------------------------------------------------------------- report
def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _f1_line(label: str, pages: list[Page], dropped: Candidate) -> str:
    lost = set(dropped.changed_keys)
    kept = [p for p in pages if p.kept]
    after = [p for p in kept if f"{p.source}/{p.key}" not in lost]
    f1_full, n_full = mean_f1(kept)
    f1_after, n_after = mean_f1(after)
    if f1_full is None or f1_after is None:
        return f"- {label}: no gold texts among the kept pages"
    return (
        f"- extraction token F1 of kept pages with a gold text, {label}: {f1_full:.4f} over"
        f" {n_full} pages without the prefilter, {f1_after:.4f} over {n_after} with it"
    )


def report(result: Comparison, command: str, scenario: str) -> list[str]:
    """The markdown lines of the result: setting, per-rule table, per-set table, F1,
    per-language table."""
    pages = result.pages
    n = len(pages)
    kept = sum(p.kept for p in pages)
    genuine = sum(p.genuine for p in pages)
    fates = Counter((p.full_fate or "kept").split(":")[0] for p in pages)
    traf = result.extract_cpu
    dropped_at = ", ".join(f"{stage} {count}" for stage, count in sorted(fates.items())
                           if stage != "kept")  # fmt: skip
    timeouts = sum("timeout" in (p.full_fate or "") for p in pages)
    spent: dict[str, float] = defaultdict(float)
    for page in pages:
        if not page.kept:
            spent[(page.full_fate or "").split(":")[0]] += page.extract_cpu
    ceiling = ", ".join(f"{stage} {_pct(cpu, traf)}" for stage, cpu in sorted(spent.items()))
    ceiling += f"; all {_pct(sum(spent.values()), traf)}"
    families = ", ".join(f"{name} {1000 * cpu / n:.2f}" for name, cpu in
                         sorted(result.family_cpu.items(), key=lambda kv: -kv[1]))  # fmt: skip
    lines = [
        f"- command: `{command}`; {scenario}",
        f"- pages: {n} ({genuine} from curated article sets, every one a page a filter should"
        f" keep; the rest Common Crawl WARC responses and Python/SymPy documentation pages);"
        f" kept by the full pipeline {kept} ({_pct(kept, n)}); dropped at {dropped_at}",
        f"- CPU per page (process CPU, one page at a time): extract stage (trafilatura)"
        f" {1000 * traf / n:.1f} ms, resiliparse {1000 * result.fast_cpu / n:.2f} ms"
        f" ({traf / max(result.fast_cpu, 1e-9):.1f}x faster); lid + heuristics on the full"
        f" text {1000 * result.full_rules_cpu / n:.2f} ms (extraction ="
        f" {_pct(traf, traf + result.full_rules_cpu)} of extract + lid + heuristics here)",
        f"- CPU per page of each rule family on the fast text, ms (each family alone; fineweb"
        f" includes C4's cleaning): {families}",
        f"- extraction outcomes: {result.measured} measured in this run, {result.cached} from"
        f" the cache (CPU times as measured when cached); {timeouts} page(s) over the extract"
        " stage's wall-clock limit (a load-dependent verdict, issue 18)",
        f"- ceiling: trafilatura CPU spent on pages the full pipeline drops, by the stage that"
        f" drops them (no prefilter can save more): {ceiling}",
        "",
        "Each candidate rule on the fast text, as published (s = 1) and at the least"
        " strictness s with no verdict change on these pages (a `min_*` rule drops below"
        " limit/s, a `max_*` rule above limit*s; s up to 8):",
        "",
        "| rule on the fast text | dropped at s=1 | kept by full (verdict changes), genuine"
        " | safe s | dropped at safe s | same reason as full | trafilatura CPU saved |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in sorted(result.candidates.items(), key=lambda kv: -kv[1][0].dropped):
        first = rows[0]
        if first.dropped == 0:
            continue
        safe_s = result.chosen.get(name)
        safe = next((c for c in rows if c.strictness == safe_s), None)
        tail = (f"{safe_s:g} | {safe.dropped} | {safe.same_reason} | "
                f"{_pct(safe.saved_cpu, traf)} |" if safe else "none | 0 | - | - |")  # fmt: skip
        lines.append(f"| {name} | {first.dropped} | {first.changed}, {first.changed_genuine} | "
                     + tail)  # fmt: skip
    lines += [
        "",
        "Prefilter sets (each rule at its safe s chosen on all pages; held out: s chosen on"
        " every other page and counted on the rest, both ways; cost: resiliparse plus the"
        " families' rules on every page; net = saved - cost, all as shares of trafilatura's"
        " CPU):",
        "",
        "| set | rules | dropped | verdict changes | held out: dropped, changes (genuine) |"
        " trafilatura CPU saved | cost | net | as published: dropped, changes (genuine) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in result.sets:
        ins, held, pub = item.in_sample, item.held_out, item.published
        lines.append(
            f"| {item.label} | {len(item.chosen)} | {ins.dropped} | {ins.changed} |"
            f" {held.dropped}, {held.changed} ({held.changed_genuine}) |"
            f" {_pct(ins.saved_cpu, traf)} | {_pct(item.cost_cpu, traf)} |"
            f" {_pct(ins.saved_cpu - item.cost_cpu, traf)} |"
            f" {pub.dropped}, {pub.changed} ({pub.changed_genuine}) |"
        )
    widest = result.sets[-1]
    lines += [
        "",
        _f1_line("widest set at its safe s", pages, widest.in_sample),
        _f1_line("every rule as published", pages, widest.published),
        "",
        "Per language (gold, else lid.176 on the full text), widest set:",
        "",
        "| language | pages | kept by full | dropped at safe s | changes at safe s | changes"
        " as published | trafilatura ms/page | resiliparse ms/page |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_lang: dict[str, list[Page]] = defaultdict(list)
    for page in pages:
        by_lang[page.language].append(page)
    published = {n: 1.0 for n in result.candidates}
    for language, group in sorted(by_lang.items(), key=lambda kv: -len(kv[1])):
        if len(group) < 10:
            continue
        safe = evaluate_set(group, widest.chosen)
        naive = evaluate_set(group, published)
        lines.append(
            f"| {language} | {len(group)} | {sum(p.kept for p in group)} | {safe.dropped} |"
            f" {safe.changed} | {naive.changed} |"
            f" {1000 * statistics.fmean(p.extract_cpu for p in group):.1f} |"
            f" {1000 * statistics.fmean(p.fast_cpu for p in group):.2f} |"
        )
    small = sorted(lang for lang, group in by_lang.items() if len(group) < 10)
    if small:
        lines.append(f"| other ({', '.join(small)}) | {sum(len(by_lang[x]) for x in small)} |"
                     " | | | | | |")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.prefilter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--languages", default=None,
                        help="comma-separated languages LangId keeps (default: all)")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="measure every extraction again")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the report's lines to this file")  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.data / "web").is_dir():
        print(f"skipped: ../shared/data with web/ not found ({args.data})")
        return 0
    try:
        import resiliparse  # noqa: F401
    except ImportError:
        print("resiliparse is not installed: pip install -e '.[dev]' -c constraints.txt")
        return 1

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log("loading pages")
    pool = load_pages(args.data, cache_dir())
    pages = take(pool, args.pages)
    log(f"{len(pages)} of {sum(map(len, pool.values()))} pages; extracting")
    languages = args.languages.split(",") if args.languages else None
    extract_cfg = ExtractConfig()
    cache_file = cache_dir() / "prefilter" / "extract.json"
    if args.fresh and cache_file.exists():
        cache_file.unlink()
    began = time.monotonic()
    result = compare(pages, extract_cfg, LangIdConfig(languages=languages), HeuristicsConfig(),
                     cache_file, log)  # fmt: skip
    label_languages(pages)
    checked, differ = order_check(pages, extract_cfg, ORDER_CHECK_PAGES)
    command = "python -m bench.prefilter " + " ".join(argv if argv is not None else sys.argv[1:])
    scenario = (f"LangId keeps {', '.join(languages)}" if languages else
                "default configs (LangId keeps every language)")  # fmt: skip
    lines = report(result, command.strip(), scenario)
    lines.append("")
    lines.append(f"- order check: {checked} kept pages extracted again in reverse order in a"
                 f" fresh stage, {differ} with a different text")  # fmt: skip
    lines.append(f"- wall time {time.monotonic() - began:.0f} s")
    changed = sorted(result.sets[-1].published.changed_keys)[:12]
    if changed:
        lines.append("- some pages kept by the full pipeline that the rules as published would"
                     " drop on the fast text: " + ", ".join(changed))  # fmt: skip
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
