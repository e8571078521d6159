"""Extract stage: boilerplate removal, reject and error reasons, the per-page time limit
on the main thread (SIGALRM) and off it (child process), and row order."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pydantic
import pytest

from stages import extract as extract_module
from stages.base import DOCUMENT_SCHEMA, DROP_REASON, DROP_SCORE
from stages.extract import (
    REASON_CRASH,
    REASON_NO_CONTENT,
    REASON_TIMEOUT,
    Extract,
    ExtractConfig,
    _ChildExtractor,
)

PARAGRAPHS = [
    "The River Town council voted on Tuesday to build a footbridge across the Elm River, "
    "ending a debate that has divided the town for more than a decade.",
    "Supporters said the bridge would let children on the east bank walk to the new "
    "school instead of taking a bus that loops through the industrial district.",
    "Opponents argued that the estimated cost of four million dollars would drain the "
    "reserve fund that the town set aside for repairs to its water treatment plant.",
    "Construction is expected to begin next spring and to last about eighteen months, "
    "according to the engineering firm that drew up the plans for the council.",
    "The mayor said she would ask the regional government to pay for a third of the "
    "cost, as it did for the rebuilt harbour wall and the library extension.",
]
BOILERPLATE = ["Accept all cookies", "Subscribe to our newsletter", "All rights reserved"]
ARTICLE_HTML = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>River Town approves footbridge | The Daily Ledger</title>
<meta property="og:title" content="River Town approves footbridge">
</head><body>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience.
<button>Accept all cookies</button></div>
<header><nav class="menu"><ul><li><a href="/">Home</a></li><li><a href="/politics">Politics
</a></li><li><a href="/sport">Sport</a></li><li><a href="/weather">Weather</a></li></ul></nav>
</header>
<main><article><h1>River Town approves footbridge</h1>
{"".join(f"<p>{p}</p>" for p in PARAGRAPHS)}
</article>
<aside class="sidebar"><h3>Newsletter</h3><p>Subscribe to our newsletter</p></aside></main>
<footer><p>Copyright 2024 The Daily Ledger. All rights reserved.</p>
<a href="/privacy">Privacy policy</a> <a href="/contact">Contact us</a></footer>
</body></html>"""


def slow_page(paragraphs: int = 8000) -> str:
    """Big enough to take seconds in trafilatura: a stand-in for a pathological page."""
    body = "".join(
        f"<div><p>Paragraph {i} is about rivers, bridges and the weather in town.</p>"
        f"<a href='/x{i}'>link {i}</a></div>"
        for i in range(paragraphs)
    )
    return f"<html><head><title>Big</title></head><body>{body}</body></html>"


def table(*docs: dict[str, Any]) -> pa.Table:
    rows = [
        {"id": f"d{i}", "shard": 0, "ordinal": i, "source": "t.warc", "record": f"row:{i}"}
        | {"url": f"https://example.org/{i}", "format": "html"}
        | doc
        for i, doc in enumerate(docs)
    ]
    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)


def in_thread(function: Callable[[], Any]) -> Any:
    """Call off the main thread, as a Ray actor pool does: signals cannot be used there."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(function()))
    worker.start()
    worker.join()
    return result[0]


@pytest.fixture(scope="module")
def stage() -> Extract:
    return Extract(ExtractConfig())


def test_article_kept_and_boilerplate_removed(stage: Extract) -> None:
    out = stage(table({"html": ARTICLE_HTML})).to_pylist()[0]
    assert out[DROP_REASON] is None
    for paragraph in PARAGRAPHS:
        assert paragraph in out["text"]
    for noise in [*BOILERPLATE, "Politics", "Privacy policy"]:
        assert noise not in out["text"]
    assert out["title"] == "River Town approves footbridge"
    assert out["html"] is None  # freed once the text is out


@pytest.mark.parametrize(
    "html",
    [None, "", "   ", "\x00\x01\x02 binary junk \xff", "<<<>>><p<div></", "<html></html>"],
)
def test_empty_or_garbage_page_is_no_content(stage: Extract, html: str | None) -> None:
    out = stage(table({"html": html})).to_pylist()[0]
    assert out[DROP_REASON] == REASON_NO_CONTENT
    assert out["text"] is None
    assert out["html"] == html  # a rejected page stays for excluded/


def test_short_text_rejected_with_its_length() -> None:
    stage = Extract(ExtractConfig(min_text_chars=5000))
    out = stage(table({"html": ARTICLE_HTML})).to_pylist()[0]
    assert out[DROP_REASON] == REASON_NO_CONTENT
    assert 500 < out[DROP_SCORE] < 5000


def test_non_html_rows_pass_through(stage: Extract) -> None:
    batch = table(
        {"format": "text", "text": "plain text", "title": "T", "html": None},
        {"format": "code", "text": "print(1)\n", "code_language": "python"},
    )
    out = stage(batch)
    assert out.drop_columns([DROP_REASON, DROP_SCORE]).equals(
        batch.drop_columns([DROP_REASON, DROP_SCORE])
    )
    assert out.column(DROP_REASON).null_count == 2


def test_exception_becomes_error_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(html: str, url: str | None, options: dict[str, Any]) -> None:
        raise ValueError("bad page")

    monkeypatch.setattr(extract_module, "extract_page", broken)
    out = Extract(ExtractConfig())(table({"html": ARTICLE_HTML}))
    assert out.column(DROP_REASON).to_pylist() == ["error:ValueError"]


def test_same_rows_same_order(stage: Extract) -> None:
    batch = table(
        {"html": ARTICLE_HTML},
        {"html": ""},
        {"format": "text", "text": "kept as is"},
        {"html": ARTICLE_HTML.replace("River Town", "Hill Town")},
        {"html": "<html><body><p>hi</p></body></html>"},
    )
    out = stage(batch)
    assert out.num_rows == 5
    assert out.column("id").to_pylist() == batch.column("id").to_pylist()
    assert out.column(DROP_REASON).to_pylist() == [
        None,
        REASON_NO_CONTENT,
        None,
        None,
        REASON_NO_CONTENT,
    ]
    assert out.column("title").to_pylist()[3] == "Hill Town approves footbridge"


def test_timeout_on_main_thread_then_next_rows_extracted() -> None:
    stage = Extract(ExtractConfig(timeout_seconds=0.3))
    handler = signal.getsignal(signal.SIGPROF)
    out = stage(table({"html": slow_page()}, {"html": ARTICLE_HTML}))
    assert out.column(DROP_REASON).to_pylist() == [REASON_TIMEOUT, None]
    assert PARAGRAPHS[0] in out.column("text")[1].as_py()
    assert signal.getsignal(signal.SIGPROF) is handler  # the caller's handler is back
    assert stage.child.process is None  # the main thread needs no child process


def test_timeout_off_main_thread_kills_child_and_restarts() -> None:
    stage = Extract(ExtractConfig(timeout_seconds=0.3))
    try:
        batch = table({"html": ARTICLE_HTML}, {"html": slow_page()}, {"html": ARTICLE_HTML})
        out = in_thread(lambda: stage(batch))
        assert out.column(DROP_REASON).to_pylist() == [None, REASON_TIMEOUT, None]
        main = stage(table({"html": ARTICLE_HTML}))  # the child gives the same text
        assert out.column("text")[2].as_py() == main.column("text")[0].as_py()
        assert out.column("title")[2].as_py() == "River Town approves footbridge"
    finally:
        stage.child.close()


def test_child_crash_is_an_error_and_a_new_child_takes_the_rest() -> None:
    child = _ChildExtractor(ExtractConfig().trafilatura_options())
    try:
        child.run([("<html></html>", None)], timeout=30)  # starts the child
        assert child.process is not None
        threading.Timer(0.3, child.process.kill).start()
        crashed, after = child.run([(slow_page(), None), (ARTICLE_HTML, None)], timeout=60)
        assert crashed == ((None, None), REASON_CRASH)
        (text, _), reason = after
        assert reason is None
        assert PARAGRAPHS[-1] in text
    finally:
        child.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"favor_precision": True, "favor_recall": True},
        {"timeout_seconds": 0},
        {"min_text_chars": -1},
        {"no_such_option": 1},
    ],
)
def test_config_rejects_impossible_values(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ExtractConfig(**fields)


def test_an_alarm_lost_inside_the_page_still_counts_as_a_timeout(monkeypatch) -> None:
    """lxml drops an exception raised in its callbacks: the page then runs to its end,
    and must still be an extract_timeout, not a page kept by chance."""
    import contextlib
    import time

    import stages.extract as extract_module

    def swallows_the_alarm(html, url, options):
        deadline = time.process_time() + 1.0
        while time.process_time() < deadline:  # CPU time: what the limit counts
            with contextlib.suppress(BaseException):  # what a C callback does with it
                sum(range(10_000))
        return "A page that finished after its limit. " * 20, None

    monkeypatch.setattr(extract_module, "extract_page", swallows_the_alarm)
    stage = Extract(ExtractConfig(timeout_seconds=0.2))
    out = stage(table({"html": ARTICLE_HTML}))
    assert out.column(DROP_REASON).to_pylist() == [REASON_TIMEOUT]


def _waits(seconds: float):
    import time

    def page(html, url, options):
        time.sleep(seconds)  # wall time without CPU: a loaded machine, a slow disk
        return "A page that waited but did little work. " * 20, None

    return page


def test_the_limit_counts_cpu_time_not_waiting(monkeypatch) -> None:
    """Issue 18: a page's verdict must not depend on how busy the machine is. A page
    that waits 1 s but computes little is kept under a 0.2 s limit; a page that computes
    past it is a timeout, also in the child process, which times itself out and lives."""
    import stages.extract as extract_module

    monkeypatch.setattr(extract_module, "extract_page", _waits(1.0))
    stage = Extract(ExtractConfig(timeout_seconds=0.2))
    assert stage(table({"html": ARTICLE_HTML})).column(DROP_REASON).to_pylist() == [None]
    busy = Extract(ExtractConfig(timeout_seconds=0.2))
    try:
        out = in_thread(lambda: busy(table({"html": slow_page()}, {"html": ARTICLE_HTML})))
        assert out.column(DROP_REASON).to_pylist() == [REASON_TIMEOUT, None]
        assert busy.child.process is not None  # still alive: the child timed itself out
    finally:
        busy.child.close()
