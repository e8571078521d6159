"""Gopher's line rules judge the lines C4 keeps: a menu of short link lines that
extraction left around an article (and that C4 removes from the kept text) no longer
decides the article's fate as "duplicated lines" or "ellipsis lines", while a page
whose real lines repeat is still caught. Chinese lines are counted in words too, so
C4's three-word minimum removes a Chinese menu. Texts written for these tests."""

from __future__ import annotations

from stages import heuristic_rules as hr
from stages.heuristics import DEFAULT_LANGUAGE_OVERRIDES, Heuristics, HeuristicsConfig
from tests.stages.heuristic_batches import batch_of

# A Polish news article followed by the site's menu: short lines, several repeated
# (as trafilatura writes a list whose items hold blocks: the bullet on its own line).
ARTICLE = [
    "Władze miasta ogłosiły w poniedziałek, że remont mostu nad rzeką potrwa do końca "
    "czerwca, a objazd dla samochodów osobowych poprowadzi przez nowe osiedle.",
    "Kierowcy autobusów miejskich dostali nowe rozkłady jazdy. Przewoźnik zapowiedział, że "
    "w godzinach szczytu kursy będą częstsze, żeby pasażerowie nie czekali dłużej niż zwykle.",
    "Mieszkańcy pobliskich ulic skarżą się na hałas i kurz. Wykonawca obiecał, że "
    "najgłośniejsze prace będą prowadzone tylko w dzień, a ulice będą regularnie zamiatane.",
    "Radni opozycji pytają, dlaczego przetarg ogłoszono tak późno. Prezydent miasta "
    "odpowiada, że projekt musiał zostać zmieniony po ekspertyzie konstruktorów.",
    "Koszt remontu wyniesie ponad dwadzieścia milionów złotych, z czego połowę pokryje "
    "dotacja z budżetu państwa. Prace mają ruszyć jeszcze w tym miesiącu.",
]
MENU = ["Zobacz również", "-", "Fakty", "-", "Sport", "-", "Fakty", "-", "Pogoda", "-",
        "Sport", "-", "Fakty", "-", "Motoryzacja", "-", "Fakty..."]  # fmt: skip
ARTICLE_WITH_MENU = "\n".join(ARTICLE + MENU)

# A Chinese article inside a layout table framed by the site's menu cells.
CHINESE_TABLE_PAGE = "\n".join(
    [
        "|  | ",
        "| 新华网首页 |  |  |  | 新华论坛 博客 微博 |  | 注册 游客进入 | ",
        "| 图书馆改造后重新开放 | ",
        "| 经过一年半的改造，市图书馆于本周一重新向读者开放。开馆当天上午，门口排起了长队，"
        "不少市民早早赶来，想看看新馆的样子。馆长在接受采访时说，这次改造的重点是让图书馆"
        "更适合各个年龄段的读者。 | ",
        "| 新馆最大的变化在二楼。原来的报刊阅览室被改成了儿童阅读区，"
        "书架的高度降低了，地上铺了软垫。 | ",
        "| 三楼新设了自习区，共有两百多个座位，每个座位都有台灯"
        "和电源插座。馆方表示，会认真收集读者的建议，在今后的工作中不断改进。 | ",
        "| 分享 | 新华微博 | ",
        "|  | 新浪微博 | ",
        "|  | 腾讯空间 | ",
        "|  | 人人网 | ",
        "|  | 腾讯微博 | ",
        "|  | 开心网 | ",
        "| 健康 | 教育 | 科技 | ",
    ]
)


def judge(text: str, language: str, **config) -> tuple[str | None, str]:
    out = Heuristics(HeuristicsConfig(**config))(batch_of([text], [language]))
    return out.column("drop_reason")[0].as_py(), out.column("text")[0].as_py()


def test_article_with_a_repeated_menu_is_kept_and_loses_the_menu():
    reason, kept = judge(ARTICLE_WITH_MENU, "pl")
    assert reason is None
    assert kept == "\n".join(ARTICLE)  # C4 removed every menu line


def test_without_c4_the_menu_lines_still_count():
    """The view follows the C4 step: Gopher's repetition preset alone (datatrove's
    filter) judges every line, and the menu's repeats drop the page."""
    reason, _ = judge(ARTICLE_WITH_MENU, "pl", presets=["gopher_repetition"])
    assert reason == hr.REASON_GOPHER_DUP_LINE_FRACTION
    # So does the full default config with the view switched off (Gopher as published).
    reason, _ = judge(ARTICLE_WITH_MENU, "pl", skip_lines_c4_removes=False)
    assert reason == hr.REASON_GOPHER_DUP_LINE_FRACTION
    # The view's lines: only those C4 keeps.
    doc = hr.DocView(ARTICLE_WITH_MENU, min_line_words=3)
    assert doc.lines == ARTICLE
    assert hr.dup_line_fraction(doc, {}) == 0.0
    assert hr.ellipsis_line_fraction(doc, {}) == 0.0
    assert hr.dup_line_fraction(hr.DocView(ARTICLE_WITH_MENU), {}) > 0.3


def test_repeated_long_lines_are_still_rejected():
    repeated = "\n".join(ARTICLE[:2] * 3 + ARTICLE[2:] + MENU)
    reason, _ = judge(repeated, "pl")
    assert reason is not None and reason.startswith("gopher_dup_")


def test_a_page_of_menu_lines_only_is_still_rejected():
    reason, _ = judge("\n".join(MENU * 4), "pl")
    assert reason is not None


def test_chinese_line_words():
    assert hr.line_words("新华网首页", cjk=True) == 2.5
    assert hr.line_words("2012年01月11日 08:21:55", cjk=True) == 5.5  # 2012 01 11 08:21:55, 年月日
    assert hr.line_words("注册 游客进入") == 2  # whitespace tokens outside cjk mode


def test_chinese_menu_cells_are_removed_and_the_article_is_kept():
    reason, kept = judge(CHINESE_TABLE_PAGE, "zh")
    assert reason is None
    assert "开心网" not in kept and "新华网首页" in kept  # a row stays whole when any cell does
    assert "经过一年半的改造" in kept
    # Counting whitespace words, C4 left every menu cell, and FineWeb's line rules saw a
    # page of short, unpunctuated lines.
    whitespace_lines = {**DEFAULT_LANGUAGE_OVERRIDES["zh"], "c4": {"min_line_words": None}}
    old, _ = judge(CHINESE_TABLE_PAGE, "zh", language_overrides={"zh": whitespace_lines})
    assert old in (hr.REASON_FINEWEB_SHORT_LINES, hr.REASON_FINEWEB_LOW_LINE_PUNCTUATION)
