"""The default filters on genuine text in other scripts and layouts: what they used to
drop wrongly (a Chinese article with ellipses, a hash or a list; an article inside a
layout table; paragraphs broken mid-sentence; a short but complete Chinese brief; a
Norwegian page) and what they must still catch (a Chinese passage repeated on one line).
Texts written for these tests."""

from __future__ import annotations

import pyarrow as pa
import pytest

from stages import heuristic_rules as hr
from stages.base import DOCUMENT_SCHEMA
from stages.extract import REASON_NO_CONTENT, Extract, ExtractConfig, script_of, too_short
from stages.heuristics import Heuristics, HeuristicsConfig
from stages.langid import LangIdConfig
from tests.stages.heuristic_batches import batch_of, verdicts

# A Chinese news article: four "……", one "#" (a hashtag), and a list of six "-" items.
CHINESE_ARTICLE = "\n".join(
    [
        "市图书馆改造后重新开放",
        "经过一年半的改造，市图书馆于本周一重新向读者开放。开馆当天上午，门口排起了长队，"
        "不少市民早早赶来，想看看新馆的样子。馆长在接受采访时说，这次改造的重点是让图书馆"
        "更适合各个年龄段的读者，而不只是一个借书还书的地方。",
        "新馆最大的变化在二楼。原来的报刊阅览室被改成了儿童阅读区，书架的高度降低了，"
        "地上铺了软垫，家长可以陪孩子坐在地上一起看书。一位带着女儿来的母亲说：“以前带孩子"
        "来，总怕她吵到别人……现在有了自己的区域，我们都放松多了。”",
        "三楼新设了自习区，共有两百多个座位，每个座位都有台灯和电源插座。一名准备考研的学生"
        "告诉记者，他以前在家复习，总是容易分心……来这里以后，效率高了很多。图书馆还在网上"
        "发起了#我的读书角#话题，邀请读者分享自己喜欢的角落。",
        "据介绍，新馆的服务包括：",
        "- 延长开放时间，每天到晚上九点",
        "- 增设自助借还机十台",
        "- 开设老年人电脑课程",
        "- 每月举办一次作家讲座",
        "- 提供免费的无线网络",
        "- 设立外文图书专区",
        "也有读者提出了意见。有人认为新馆的座位还是不够，周末经常一座难求……还有人希望增加"
        "停车位。馆方表示，会认真收集读者的建议，在今后的工作中不断改进。",
        "馆长最后说，图书馆是一座城市的书房……希望每一位市民都能在这里找到属于自己的一本书。",
    ]
)

# The same article's body inside a layout table, as trafilatura writes tables.
TABLE_PAGE = "\n".join(
    [
        "|  |  |  |  |  | ",
        "|  | You are here: | Home News Science |  | ",
        "| Today: Tuesday |  |  | ",
        "|  |  |  | ",
        "| Source: Newsroom 14/11/11-13:51 |  | ",
        "| A survey of the northern valley found river otters on almost every tributary this "
        "year, the first time since records began that the animals were seen so widely. "
        "Biologists counted tracks, droppings and dens along forty kilometres of bank, and "
        "volunteers photographed a female with two cubs near the old mill. The water authority "
        "said that cleaner rivers had brought back the small fish and crayfish that otters eat, "
        "and that the willows planted along eroded banks now give the animals cover. Road "
        "traffic remains the largest danger, and the council has built two tunnels under the "
        "busiest road. Researchers warned that a single chemical spill could undo decades of "
        "work, but they called the recovery a useful sign that patient investment in habitat "
        "pays off, according to the report |  | ",
        "|  |  | ",
        "|  | News | Share prices |  | ",
        "| Search |  |  | ",
    ]
)

# A Russian article whose paragraphs the page broke with <br> in the middle of sentences.
BROKEN_LINES = "\n".join(
    [
        "В городском парке в субботу прошёл ежегодный праздник урожая. Фермеры из",
        "соседних сёл привезли овощи, мёд и домашний сыр, а на главной аллее",
        "работали мастера, которые учили детей плести корзины. По словам организаторов,",
        "в этом году праздник посетили больше десяти тысяч человек, почти вдвое",
        "больше, чем в прошлом. Многие пришли целыми семьями и остались до",
        "вечернего концерта. Городские власти уже пообещали, что в следующем году",
        "праздник продлится два дня, а площадку для ярмарки расширят. Жители",
        "предлагают также добавить велосипедную стоянку и больше скамеек вдоль",
        "аллеи, потому что в этот раз многим пришлось стоять. Организаторы ответили,",
        "что соберут все пожелания и обсудят их с городской администрацией зимой.",
    ]
)

# A complete Chinese news brief of 157 characters: five sentences, well under 200.
CHINESE_BRIEF = (
    "本报讯 昨天下午，市区东部突降暴雨，部分路段出现积水。交警部门及时在低洼路口设置了"
    "警示标志，并安排警力疏导交通。市排水公司出动抢险车辆十余台，连夜排除积水。截至今天早上"
    "六点，全部路段已恢复正常通行。气象部门提醒市民，未来三天仍有阵雨，出行请注意安全。"
)

CHINESE_PASSAGE = (
    "这家工厂生产的零件质量稳定，价格合理，欢迎新老客户来电咨询，我们将竭诚为您服务，"
    "提供最优惠的价格和最周到的售后服务。"
)


def test_chinese_article_with_ellipses_hash_and_list_is_kept():
    assert verdicts([CHINESE_ARTICLE], ["zh"]) == [None]


@pytest.mark.parametrize(
    "reason",
    [
        hr.REASON_GOPHER_MANY_ELLIPSES,
        hr.REASON_GOPHER_MANY_HASHES,
        hr.REASON_GOPHER_FEW_ALPHA_WORDS,
    ],
)
def test_whitespace_words_misjudged_the_chinese_article(reason):
    """With whitespace tokens (the old behaviour) one "word" is a clause, so each of these
    ratios blows up; with one word per character they are per-character ratios."""
    whitespace = HeuristicsConfig(cjk_languages=[])
    text = {
        hr.REASON_GOPHER_MANY_ELLIPSES: "\n".join(CHINESE_ARTICLE.splitlines()[:4]),
        hr.REASON_GOPHER_MANY_HASHES: CHINESE_ARTICLE.splitlines()[3],
        hr.REASON_GOPHER_FEW_ALPHA_WORDS: "\n".join(CHINESE_ARTICLE.splitlines()[4:11]),
    }[reason]
    rule = next(s for s in hr.GOPHER_QUALITY_RULES if s.reason == reason)
    params = whitespace.thresholds("gopher_quality", "zh")
    old = rule.measure(hr.DocView(text), params)
    new = rule.measure(hr.DocView(text, "cjk"), params)
    limit = float(params[rule.threshold])
    fails = (lambda v: v > limit) if rule.threshold.startswith("max_") else (lambda v: v < limit)
    assert fails(old) and not fails(new)


def test_chinese_passage_repeated_on_one_line_is_rejected():
    (reason,) = verdicts([CHINESE_PASSAGE * 3], ["zh"])
    assert reason is not None and reason.startswith(("gopher_dup_", "gopher_top_"))
    # Whitespace words see one long "word" and nothing repeated.
    (old,) = verdicts(
        [CHINESE_PASSAGE * 3], ["zh"], cjk_languages=[], presets=["gopher_repetition"]
    )
    assert old is None
    # The passage once, as a line of a real article, is fine.
    assert verdicts([CHINESE_ARTICLE + "\n" + CHINESE_PASSAGE], ["zh"]) == [None]


def test_article_in_a_layout_table_is_kept_with_its_rows():
    out = Heuristics(HeuristicsConfig())(batch_of([TABLE_PAGE], ["en"]))
    assert out.column("drop_reason").to_pylist() == [None]
    text = out.column("text")[0].as_py()
    assert "| A survey of the northern valley" in text  # rows kept as rows
    assert "|  |  |  |  |  |" not in text  # a row of empty cells has no line to keep
    # Judged as pipe lines, the same page fails.
    assert verdicts([TABLE_PAGE], ["en"], table_cells=False) != [None]


def test_table_cells_are_the_rule_view():
    assert hr.table_cells("| a | b |  | ") == ["a", "b"]
    assert hr.table_cells("a | b") is None
    assert hr.rule_view("x\n| a | b |\n|  |  |\ny") == "x\na\nb\ny"


def test_paragraphs_broken_mid_sentence_are_kept():
    assert verdicts([BROKEN_LINES], ["ru"]) == [None]
    published_c4 = {"c4": {"require_terminal_punctuation": True}}
    assert verdicts([BROKEN_LINES], ["ru"], overrides=published_c4, c4_sentence_languages=None) == [
        hr.REASON_C4_TOO_FEW_SENTENCES
    ]


def test_line_of_whole_sentences_counts_as_punctuated():
    doc = hr.DocView("First sentence here. And a second one with no end\nMenu\nHome")
    assert hr.line_punctuation_fraction(doc, {}) == pytest.approx(1 / 3)


def test_short_complete_chinese_brief_passes_extraction_length_and_rules():
    assert len(CHINESE_BRIEF) < 200
    assert script_of(CHINESE_BRIEF) == "cjk"
    assert too_short(CHINESE_BRIEF, ExtractConfig()) is None
    assert too_short(CHINESE_BRIEF, ExtractConfig(min_text_chars_by_script={})) == float(
        len(CHINESE_BRIEF)
    )
    assert too_short(CHINESE_BRIEF[:40], ExtractConfig()) == 40.0  # a fragment still goes
    assert too_short("A short English line.", ExtractConfig()) == 21.0
    assert verdicts([CHINESE_BRIEF], ["zh"]) == [None]


def test_extract_stage_applies_the_script_minimum():
    html = f"<html><body><article><p>{CHINESE_BRIEF}</p></article></body></html>"
    columns = {field.name: pa.nulls(2, field.type) for field in DOCUMENT_SCHEMA}
    columns["html"] = pa.array([html, html.replace(CHINESE_BRIEF, CHINESE_BRIEF[:30])])
    columns["format"] = pa.array(["html", "html"])
    batch = pa.table(columns, schema=DOCUMENT_SCHEMA)
    out = Extract(ExtractConfig())(batch)
    assert out.column("drop_reason").to_pylist() == [None, REASON_NO_CONTENT]


def test_unknown_script_in_config_is_an_error():
    with pytest.raises(ValueError, match="unknown script 'latin'"):
        ExtractConfig(min_text_chars_by_script={"latin": 10})


def test_thai_skips_rules_without_word_boundaries():
    thai = "\n\n".join(["ภาษาไทยเขียนติดกันโดยไม่มีการเว้นวรรคระหว่างคำ แต่เว้นวรรคระหว่างประโยค"] * 1)
    params = HeuristicsConfig().thresholds("gopher_quality", "th")
    assert params["min_alpha_word_fraction"] is None and params["min_words"] is None
    assert HeuristicsConfig().thresholds("c4", "th")["min_sentences"] is None
    assert verdicts([thai + " " + thai.replace("ภาษา", "คน")], ["th"]) == [None]


def test_language_id_threshold_per_language_and_norwegian_alias():
    cfg = LangIdConfig(languages=["nb", "en"], min_score_by_language={"nb": 0.3})
    assert cfg.languages == ["no", "en"]
    assert cfg.min_score_by_language == {"no": 0.3}
    with pytest.raises(ValueError, match="probability"):
        LangIdConfig(min_score_by_language={"zh": 1.5})


@pytest.fixture(scope="module")
def langid_stage():
    pytest.importorskip("fasttext")
    from stages.langid import LangId

    return LangId


def test_language_id_keeps_a_language_at_its_own_threshold(langid_stage):
    norwegian = (
        "Kommunen har bestemt at den gamle skolen skal pusses opp i løpet av neste år. "
        "Arbeidet starter i mars, og elevene får undervisning i brakker så lenge det pågår."
    )
    columns = {field.name: pa.nulls(1, field.type) for field in DOCUMENT_SCHEMA}
    columns["text"] = pa.array([norwegian])
    columns["format"] = pa.array(["text"])
    batch = pa.table(columns, schema=DOCUMENT_SCHEMA)
    out = langid_stage(LangIdConfig(min_score=0.65, min_score_by_language={}))(batch)
    language = out.column("language")[0].as_py()
    score = out.column("language_score")[0].as_py()
    assert language in ("no", "da", "nn")
    strict = LangIdConfig(min_score=1.0, min_score_by_language={})
    lenient = LangIdConfig(min_score=1.0, min_score_by_language={language: score - 0.01})
    assert langid_stage(strict)(batch).column("drop_reason")[0].as_py() is not None
    assert langid_stage(lenient)(batch).column("drop_reason")[0].as_py() is None


def test_thai_passage_repeated_is_still_rejected():
    passage = "ภาษาไทยเขียนติดกันโดยไม่มีการเว้นวรรคระหว่างคำ แต่เว้นวรรคระหว่างประโยค ผู้อ่านจึงต้องรู้จักคำ"
    (reason,) = verdicts([" ".join([passage] * 3)], ["th"])
    assert reason is not None and reason.startswith(("gopher_dup_", "gopher_top_"))
