"""HTML pages -> main text and title with trafilatura, under a per-page CPU-time limit.

A few pages make trafilatura run for minutes (huge or deeply nested markup), and one
such page must cost one ``error:extract_timeout`` row, not a stalled worker. The limit
counts the CPU time the page takes (``ITIMER_PROF``), not wall-clock time, so a page's
verdict does not depend on how busy the machine is: a wall-clock limit fired on a page
in a loaded 2-CPU run and not at 1 CPU (issue 18). Signals only reach the main thread:
there (the pipeline runs each shard as a Ray task on its worker's main thread) a
one-shot timer interrupts the page at no measurable cost; elsewhere (a caller's thread
pool) the pages go to a persistent child process that applies the same CPU limit to
itself, and is killed and restarted if a page outlasts a generous wall-clock backstop
(a page stuck without using CPU) or crashes it inside lxml's C code.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from stages.base import ERROR_PREFIX, Resources, Stage, StageConfig, set_column, with_reasons
from stages.heuristic_rules import CJK_CHARS

REASON_NO_CONTENT = "no_extractable_text"
REASON_TIMEOUT = f"{ERROR_PREFIX}extract_timeout"
REASON_CRASH = f"{ERROR_PREFIX}extract_crash"

_CHILD_START_SECONDS = 120.0  # importing trafilatura on a loaded machine; not a page's time
_CPU_TIMER, _CPU_SIGNAL = signal.ITIMER_PROF, signal.SIGPROF  # the process's CPU time
_WALL_BACKSTOP_FACTOR = 10.0  # a child page this many times over its CPU limit in wall
_WALL_BACKSTOP_MIN_SECONDS = 60.0  # time (and at least this long) is stuck: killed
_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_NOTHING = (None, None)
Outcome = tuple[tuple[str | None, str | None], str | None]  # ((text, title), reason)


class ExtractConfig(StageConfig):
    favor_precision: bool = True
    """Drop doubtful blocks. bench/extract.py: web/aeb token F1 0.961 vs 0.955 without."""
    favor_recall: bool = False
    """Keep doubtful blocks instead; the opposite trade, exclusive with favor_precision."""
    include_comments: bool = False
    """Keep reader comments: mostly short, repetitive text we do not want to train on."""
    include_tables: bool = True
    """Keep the text of <table> cells (data tables carry facts)."""
    include_links: bool = False
    """Keep link targets in the text (markdown style); off: URLs are noise for training."""
    include_formatting: bool = False
    """Render bold/italics/headings as markdown instead of plain text."""
    deduplicate: bool = False
    """trafilatura's in-process LRU of repeated segments; per worker, so not a real dedup."""
    fast: bool = False
    """Skip the fallback extractors (trafilatura's ``fast``/``no_fallback``): faster, less text."""
    target_language: str | None = None
    """ISO 639-1 code: trafilatura discards pages in other languages (None: keep all)."""
    min_text_chars: int = 200
    """Extracted text shorter than this is rejected as no_extractable_text: about 35
    English words, a sentence or two (pages with less are menus, errors, stubs)."""
    min_text_chars_by_script: dict[str, int] = Field(
        default_factory=lambda: {"cjk": 70, "hangul": 90}
    )
    """The same minimum, in characters of that script, for text written mostly in it
    (``script_of``): "cjk" (Chinese characters and kana), "hangul". One Chinese
    character carries about what three Latin letters do (a 200-character English brief
    is about 60-70 characters in Chinese, 90 in Korean), so 200 for every script
    rejected complete Chinese news briefs. Scripts not named use ``min_text_chars``."""
    timeout_seconds: float = 5.0
    """CPU-time limit for one page; past it the row gets error:extract_timeout."""

    @model_validator(mode="after")
    def _check(self) -> ExtractConfig:
        if self.favor_precision and self.favor_recall:
            raise ValueError("favor_precision and favor_recall exclude each other")
        if self.min_text_chars < 0:
            raise ValueError("min_text_chars must be >= 0")
        for script, minimum in self.min_text_chars_by_script.items():
            if script not in SCRIPTS:
                raise ValueError(
                    f"min_text_chars_by_script: unknown script {script!r}; known: "
                    f"{', '.join(SCRIPTS)}"
                )
            if minimum < 0:
                raise ValueError(f"min_text_chars_by_script[{script!r}] must be >= 0")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        return self

    def trafilatura_options(self) -> dict[str, Any]:
        """Keyword arguments for ``trafilatura.extract`` (the other fields are named as its
        parameters), shared with the bench's bare loop so both use the same settings."""
        options = self.model_dump(
            exclude={"min_text_chars", "min_text_chars_by_script", "timeout_seconds"}
        )
        return {**options, "output_format": "txt"}


# Letters of scripts written with few characters per word, by Unicode block.
_CJK = re.compile(f"[{CJK_CHARS}]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_LETTERS = re.compile(r"[^\W\d_]")
SCRIPTS = {"cjk": _CJK, "hangul": _HANGUL}


def script_of(text: str) -> str | None:
    """ "cjk" or "hangul" when more than half of the text's letters are of that script,
    else None (alphabetic scripts, whose lengths compare with Latin text)."""
    letters = len(_LETTERS.findall(text))
    for script, pattern in SCRIPTS.items():
        if letters and len(pattern.findall(text)) * 2 > letters:
            return script
    return None


def too_short(text: str, cfg: ExtractConfig) -> float | None:
    """The text's length when it is below the minimum for its script, else None."""
    length = len(text)
    if length >= max(cfg.min_text_chars, *cfg.min_text_chars_by_script.values(), 1):
        return None  # the common case: no need to look at the script
    minimum = cfg.min_text_chars_by_script.get(script_of(text) or "", cfg.min_text_chars)
    return float(length) if length < max(minimum, 1) else None


def extract_page(
    html: str, url: str | None, options: dict[str, Any]
) -> tuple[str | None, str | None]:
    """(text, title) of one page. The page is parsed once and the title read from the
    same tree: full trafilatura metadata (dates, authors) costs ~35% more time."""
    import trafilatura
    from trafilatura.metadata import examine_meta, extract_title
    from trafilatura.utils import load_html

    tree = load_html(html)
    if tree is None:
        return None, None
    text = trafilatura.extract(tree, url=url, **options)  # works on a copy of the tree
    if not text:
        return None, None
    title = examine_meta(tree).title or extract_title(tree)
    return text, (" ".join(title.split()) or None) if title else None


class _PageTimeout(BaseException):
    """BaseException, so that trafilatura's own ``except Exception`` cannot swallow it."""


class _Alarm:
    """Whether the page's alarm went off. The exception it raises can still be lost
    when it lands inside a C extension's callback (lxml reports and drops it); the page
    then runs to its end, and this flag still says it overran its limit."""

    fired = False


def _raise_timeout(signum: int, frame: object) -> None:
    _Alarm.fired = True
    raise _PageTimeout


class _ChildExtractor:
    """A child process that extracts pages sent over a pipe; killed on a time-out."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()  # one batch at a time on the pipe, whatever the caller

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        code = (  # a bare package: stages/__init__ would import every other stage
            f"import sys, types; stages = types.ModuleType('stages'); "
            f"stages.__path__ = [{_PACKAGE_DIR!r}]; sys.modules['stages'] = stages; "
            f"from stages.extract import _serve; _serve({to_child_r}, {from_child_w})"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.send = Connection(to_child_w, readable=False)
        self.recv = Connection(from_child_r, writable=False)
        try:
            self.send.send(self.options)
            if not self.recv.poll(_CHILD_START_SECONDS):
                raise TimeoutError(f"no answer in {_CHILD_START_SECONDS} s")
            self.recv.recv()  # the child is ready: its start-up is not charged to a page
        except (EOFError, OSError) as exc:  # a broken environment must fail loudly
            self.close()
            raise RuntimeError("extract child process did not start (see its stderr)") from exc

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.send.close()
            self.recv.close()
            self.process = None

    def run(self, pages: list[tuple[str, str | None]], timeout: float) -> list[Outcome]:
        """One outcome per page. The whole batch goes over in one message and the child
        works through it without waiting for us between pages, each page under its own
        CPU-time limit."""
        with self.lock:
            outcomes: list[Outcome] = []
            while len(outcomes) < len(pages):  # after a time-out, a new child takes the rest
                outcomes += self._run_until_failure(pages[len(outcomes) :], timeout)
            return outcomes

    def _run_until_failure(
        self, pages: list[tuple[str, str | None]], timeout: float
    ) -> list[Outcome]:
        if self.process is not None and self.process.poll() is not None:
            self.close()  # died between batches: not this page's fault
        if self.process is None:
            self._start()
        backstop = max(_WALL_BACKSTOP_FACTOR * timeout, _WALL_BACKSTOP_MIN_SECONDS)
        outcomes: list[Outcome] = []
        try:
            self.send.send((pages, timeout))
            for _ in pages:
                if not self.recv.poll(backstop):  # stuck without spending CPU time
                    self.close()
                    return [*outcomes, (_NOTHING, REASON_TIMEOUT)]
                status, payload = self.recv.recv()
                if status == "ok":
                    outcomes.append((payload, None))
                elif status == "timeout":
                    outcomes.append((_NOTHING, REASON_TIMEOUT))
                else:
                    outcomes.append((_NOTHING, ERROR_PREFIX + payload))
        except (EOFError, OSError):  # the child died (segfault, out of memory)
            self.close()
            outcomes.append((_NOTHING, REASON_CRASH))
        except BaseException:  # interrupted: late replies must not answer the next batch
            self.close()
            raise
        return outcomes


def extract_within(
    html: str, url: str | None, options: dict[str, Any], cpu_seconds: float
) -> Outcome:
    """One page under a one-shot CPU-time timer; the caller (on the main thread) has
    installed ``_raise_timeout`` for ``_CPU_SIGNAL``."""
    _Alarm.fired = False
    try:
        signal.setitimer(_CPU_TIMER, cpu_seconds)
        try:
            outcome = extract_page(html, url, options)
        finally:
            signal.setitimer(_CPU_TIMER, 0)  # one-shot: nothing fires after this
        return (_NOTHING, REASON_TIMEOUT) if _Alarm.fired else (outcome, None)
    except _PageTimeout:
        return _NOTHING, REASON_TIMEOUT
    except Exception as exc:  # one bad page must not end the run
        return _NOTHING, f"{ERROR_PREFIX}{type(exc).__name__}"


def _serve(read_fd: int, write_fd: int) -> None:
    """Child process loop: (a list of (html, url), CPU seconds per page) in; per page
    ("ok", (text, title)), ("timeout", None) or ("error", exception type) out."""
    import trafilatura  # noqa: F401 - import before saying ready

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(_CPU_SIGNAL, _raise_timeout)
    requests, replies = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    options = requests.recv()
    replies.send("ready")
    try:
        while True:
            pages, cpu_seconds = requests.recv()
            for html, url in pages:
                outcome, reason = extract_within(html, url, options, cpu_seconds)
                if reason is None:
                    replies.send(("ok", outcome))
                elif reason == REASON_TIMEOUT:
                    replies.send(("timeout", None))
                else:
                    replies.send(("error", reason.removeprefix(ERROR_PREFIX)))
    except (EOFError, BrokenPipeError):  # the parent is gone
        return


class Extract(Stage):
    """Fill ``text`` and ``title`` of html rows and free their ``html``."""

    name = "extract"
    requires = ("trafilatura",)
    resources = Resources(cpus=1)
    config_class = ExtractConfig

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self.options = cfg.trafilatura_options()
        self.child = _ChildExtractor(self.options)

    def __del__(self) -> None:
        if hasattr(self, "child"):
            self.child.close()

    def __call__(self, batch: pa.Table) -> pa.Table:
        on_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(_CPU_SIGNAL, _raise_timeout) if on_main else None
        try:
            return self._extract_batch(batch, on_main)
        finally:
            if previous is not None:
                signal.signal(_CPU_SIGNAL, previous)

    def _extract_batch(self, batch: pa.Table, on_main: bool) -> pa.Table:
        htmls = batch.column("html").to_pylist()
        urls = batch.column("url").to_pylist()
        texts = batch.column("text").to_pylist()
        titles = batch.column("title").to_pylist()
        reasons: list[str | None] = [None] * batch.num_rows
        scores: list[float | None] = [None] * batch.num_rows
        rows = [i for i, fmt in enumerate(batch.column("format").to_pylist()) if fmt == "html"]
        pages = [(htmls[i], urls[i]) for i in rows if htmls[i]]
        if on_main:
            outcomes = iter([self._run_in_process(html, url) for html, url in pages])
        else:
            outcomes = iter(self.child.run(pages, self.cfg.timeout_seconds) if pages else [])
        for i in rows:
            (text, title), reasons[i] = next(outcomes) if htmls[i] else (_NOTHING, None)
            if reasons[i] is None and (short := too_short(text or "", self.cfg)) is not None:
                reasons[i], scores[i] = REASON_NO_CONTENT, short
            if reasons[i] is None:  # rejected rows keep their page for excluded/
                texts[i], titles[i], htmls[i] = text, title or titles[i], None
        batch = set_column(batch, "text", pa.array(texts, pa.string()))
        batch = set_column(batch, "title", pa.array(titles, pa.string()))
        batch = set_column(batch, "html", pa.array(htmls, pa.string()))
        return with_reasons(batch, reasons, scores)

    def _run_in_process(self, html: str, url: str | None) -> Outcome:
        return extract_within(html, url, self.options, self.cfg.timeout_seconds)
