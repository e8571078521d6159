"""bench/prefilter.py's accounting: a page the full pipeline keeps is never a safe
prefilter drop, and every count adds up (synthetic pages made here; no ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.prefilter import (
    STRICTNESS,
    Page,
    choose,
    compare,
    drops,
    evaluate,
    evaluate_set,
    mean_f1,
)

ARTICLE = [
    "The river town of Marlow rebuilt its old stone bridge after the spring floods of"
    " last year, and the work was finished two weeks ahead of the schedule.",
    "Engineers from the county said that the new piers rest on deeper foundations, which"
    " should protect them from the kind of scouring that weakened the old ones.",
    "Local shop owners were relieved, because the detour had added nearly twenty minutes"
    " to every delivery that came into the high street from the north.",
    "A small ceremony on Saturday morning drew a crowd of families, retired boatmen and a"
    " brass band that played while the mayor cut a ribbon across the road.",
    "The council plans to publish the final cost of the project in its autumn report,"
    " together with a study of how the river has changed its course since 1950.",
    "Residents who want to comment on the study can write to the planning office or attend"
    " one of the open evenings that will be held in the library next month.",
]


def _html(paragraphs: list[str], nav: str = "Home | News | Sport | Contact") -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        "<html><head><title>Marlow news</title></head><body>"
        f"<nav>{nav}</nav><article><h1>Bridge reopens</h1>{body}</article>"
        "<footer>Copyright the Marlow Gazette</footer></body></html>"
    )


def _pages() -> list[Page]:
    article = Page("test", "article", _html(ARTICLE), gold="\n".join(ARTICLE), genuine=True)
    empty = Page("test", "empty", "<html><body><nav>Home About</nav></body></html>")
    repeated = Page("test", "repeated", _html([ARTICLE[0]] * 6))
    stub = Page("test", "stub", _html(["Coming soon."]))
    return [article, empty, repeated, stub]


def test_compare_accounting_on_synthetic_pages() -> None:
    pytest.importorskip("resiliparse", reason="resiliparse (the fast first pass) not installed")
    pages = _pages()
    result = compare(pages)
    by_key = {p.key: p for p in pages}
    # The full pipeline (extract, langid, heuristics) keeps the article and drops the rest.
    assert by_key["article"].kept, by_key["article"].full_fate
    assert by_key["empty"].full_fate is not None
    assert by_key["repeated"].full_fate is not None
    assert by_key["empty"].fast_text.strip() == "" or len(by_key["empty"].fast_text) < 50
    kept = {p.key for p in pages if p.kept}
    assert "extract:no_extractable_text" in result.candidates
    assert "langid:language_score_below_min" in result.candidates
    for name, rows in result.candidates.items():
        assert [c.strictness for c in rows] == list(STRICTNESS)
        for candidate in rows:
            dropping = [p for p in pages if name in p.checks
                        and drops(p.checks[name], candidate.strictness, name)]  # fmt: skip
            assert candidate.dropped == len(dropping) == candidate.safe + candidate.changed
            assert candidate.safe == sum(not p.kept for p in dropping)
            assert candidate.changed == sum(p.kept for p in dropping)
            assert candidate.same_reason <= candidate.safe
            assert {k.split("/", 1)[1] for k in candidate.changed_keys} <= kept
    for item in result.sets:
        for counted in (item.in_sample, item.published):
            assert counted.dropped == counted.safe + counted.changed
        assert item.in_sample.changed == 0  # chosen so, on these pages
        assert set(item.chosen) <= set(result.chosen)
    # The length rule on the fast text drops the empty page before trafilatura, safely.
    length = evaluate(pages, "extract:no_extractable_text", 1.0)
    assert length.safe >= 1 and length.changed == 0
    # Removing only pages the full pipeline drops leaves the kept pages' F1 as it was.
    widest = result.sets[-1].in_sample
    kept_pages = [p for p in pages if p.kept]
    kept_after = [p for p in kept_pages if f"{p.source}/{p.key}" not in widest.changed_keys]
    assert mean_f1(kept_after) == mean_f1(kept_pages)
    assert mean_f1(kept_pages)[1] == 1


def _judged(key: str, kept: bool, value: float, extract_cpu: float = 1.0) -> Page:
    """A page whose verdict and fast-text measure are set by hand (no extraction)."""
    page = Page("hand", key, "<html></html>", genuine=kept)
    page.full_fate = None if kept else "heuristics:gopher_too_few_words"
    page.extract_cpu = extract_cpu
    page.checks = {"heuristics:gopher_too_few_words": (value, 50.0, False)}
    return page


def test_a_kept_page_is_a_verdict_change_never_a_safe_drop() -> None:
    pages = [
        _judged("short-dropped", kept=False, value=3.0, extract_cpu=2.0),
        _judged("short-kept", kept=True, value=30.0),  # fast text shorter than the real one
        _judged("long-kept", kept=True, value=400.0),
        _judged("long-dropped", kept=False, value=80.0),
    ]
    name = "heuristics:gopher_too_few_words"
    published = evaluate(pages, name, 1.0)
    assert (published.dropped, published.safe, published.changed) == (2, 1, 1)
    assert published.changed_keys == ["hand/short-kept"]
    assert published.changed_genuine == 1
    assert published.same_reason == 1
    assert published.saved_cpu == 3.0
    # At s=2 the rule drops below 25 words only: the kept page at 30 is spared.
    assert choose(pages, [name]) == {name: 2.0}
    safe = evaluate_set(pages, {name: 2.0})
    assert (safe.dropped, safe.safe, safe.changed) == (1, 1, 0)
    # A rule that drops a kept page at every strictness is never chosen.
    pages.append(_judged("empty-kept", kept=True, value=0.0))
    assert choose(pages, [name]) == {}


def test_command_without_the_shared_data_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.prefilter import main

    assert main(["--data", str(tmp_path), "--pages", "5"]) == 0
    assert "skipped: ../shared/data with web/ not found" in capsys.readouterr().out
