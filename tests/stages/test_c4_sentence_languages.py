"""C4's five-sentence minimum applies to English only by default (FineWeb-2 runs no C4
rule on other languages): a complete Chinese news brief of three long sentences and a
Greek one of three are kept, a three-sentence English page still goes, and C4's line
filter still cleans every language. Texts written for these tests."""

from __future__ import annotations

from stages import heuristic_rules as hr
from stages.heuristics import Heuristics, HeuristicsConfig
from tests.stages.heuristic_batches import batch_of, verdicts

# Three paragraphs, one sentence each (a Chinese news sentence joins clauses with commas).
CHINESE_BRIEF = "\n".join(
    [
        "春节将近，应节食品纷纷上市，县卫生局为保障食品卫生安全，共在市面抽验六十七件年节食品，"
        "今天公布检验结果，有两件香肠被检出未标示亚硝酸盐及色素等食品添加物，已要求业者回收且裁罚。",
        "县卫生局人员近日分别到超市、传统市场及食品工厂等处，抽验肉制品、年糕、火锅料及瓜子、"
        "开心果等应景食品，检验防腐剂、保色剂、色素、漂白剂及人工甘味剂等项目。",
        "检验结果显示，一件香肠验出含亚硝酸盐、另一件蒜味香肠验出含色素，虽未超标但均未依规定标示，"
        "已通知贩售商回收改正，违规业者将依食品卫生管理法裁处三至十五万元。",
    ]
)
GREEK_BRIEF = (
    "Νέα αεροπορική επιδρομή κατά στόχων στη βόρεια και κεντρική Λωρίδα της Γάζας "
    "πραγματοποίησε χθες το βράδυ η αεροπορία, όπως ανακοίνωσαν οι τοπικές αρχές, "
    "τραυματίζοντας τουλάχιστον δώδεκα ανθρώπους, ανάμεσά τους και τέσσερα παιδιά. "
    "Οι κάτοικοι της περιοχής περιέγραψαν ισχυρές εκρήξεις που ακούστηκαν σε όλη την πόλη "
    "και ζημιές σε σπίτια, σχολεία και στο δίκτυο ηλεκτροδότησης της περιοχής. "
    "Οι διεθνείς οργανώσεις κάλεσαν όλες τις πλευρές να σεβαστούν τους αμάχους και να "
    "επιτρέψουν την πρόσβαση της ανθρωπιστικής βοήθειας στους τραυματίες χωρίς καθυστέρηση."
)
ENGLISH_THREE_SENTENCES = (
    "The council voted on Monday to close the old library branch on the east side of the "
    "river, after a long debate that lasted well into the evening and drew a large crowd. "
    "Residents said the branch was the only quiet place for students in the neighbourhood "
    "and asked the council to find money for repairs instead of selling the building. "
    "The mayor promised that a mobile library would visit the area twice a week from spring."
)


def test_three_sentence_briefs_in_chinese_and_greek_are_kept():
    assert sum(map(hr.sentence_count, CHINESE_BRIEF.splitlines())) == 3
    assert hr.sentence_count(GREEK_BRIEF) == 3
    assert verdicts([CHINESE_BRIEF, GREEK_BRIEF], ["zh", "el"]) == [None, None]


def test_english_three_sentences_still_too_few():
    assert verdicts([ENGLISH_THREE_SENTENCES], ["en"]) == [hr.REASON_C4_TOO_FEW_SENTENCES]
    # A document without a language is judged by every rule.
    assert verdicts([ENGLISH_THREE_SENTENCES], [None]) == [hr.REASON_C4_TOO_FEW_SENTENCES]


def test_every_language_with_none_as_c4_published():
    texts = [CHINESE_BRIEF, GREEK_BRIEF, ENGLISH_THREE_SENTENCES]
    assert (
        verdicts(texts, ["zh", "el", "en"], c4_sentence_languages=None)
        == [hr.REASON_C4_TOO_FEW_SENTENCES] * 3
    )
    assert verdicts(texts, ["zh", "el", "en"], c4_sentence_languages=["zh"]) == [
        hr.REASON_C4_TOO_FEW_SENTENCES,
        None,
        None,
    ]


def test_c4_line_filter_still_cleans_other_languages():
    menu = "Αρχική\nΕιδήσεις Σπορ\n"
    out = Heuristics(HeuristicsConfig())(batch_of([menu + GREEK_BRIEF], ["el"]))
    assert out.column("drop_reason")[0].as_py() is None
    assert out.column("text")[0].as_py() == GREEK_BRIEF  # the two-word lines are gone
