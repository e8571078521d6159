"""The langid stage on hand-written documents: labels, reasons, skipped formats and
the shipped model."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest
from pydantic import ValidationError

from stages.base import DOCUMENT_SCHEMA, DROP_REASON, DROP_SCORE, missing_requirements
from stages.langid import (
    DEFAULT_MODEL_PATH,
    LANGUAGE,
    LANGUAGE_SCORE,
    REASON_EMPTY,
    REASON_LANGUAGE,
    REASON_LOW_SCORE,
    LangId,
    LangIdConfig,
)

DOCS = {
    "en": "The library opens at nine in the morning.\n"
    "Children can borrow up to five books at a time.\n"
    "Please return them before the end of the month.",
    "de": "Die Bibliothek öffnet um neun Uhr morgens.\n"
    "Kinder dürfen bis zu fünf Bücher gleichzeitig ausleihen.\n"
    "Bitte geben Sie sie vor dem Ende des Monats zurück.",
    "fr": "La bibliothèque ouvre à neuf heures du matin.\n"
    "Les enfants peuvent emprunter jusqu'à cinq livres à la fois.\n"
    "Merci de les rendre avant la fin du mois.",
    "es": "La biblioteca abre a las nueve de la mañana.\n"
    "Los niños pueden llevarse hasta cinco libros a la vez.\n"
    "Por favor, devuélvalos antes de que termine el mes.",
    "ru": "Библиотека открывается в девять часов утра.\n"
    "Дети могут брать до пяти книг одновременно.\n"
    "Пожалуйста, верните их до конца месяца.",
    "zh": "图书馆每天早上九点开门。\n孩子们一次最多可以借五本书。\n请在月底之前归还。",
    "ja": "図書館は朝九時に開きます。\n子どもは一度に五冊まで本を借りることができます。\n"
    "月末までに返却してください。",
}
MODEL_MD5 = "340156704bb8c8e50c4abf35a7ec2569"


@pytest.fixture(scope="module")
def stage() -> LangId:
    return LangId(LangIdConfig())


def table(texts: list[str | None], formats: list[str | None] | None = None) -> pa.Table:
    formats = formats if formats is not None else ["text"] * len(texts)
    return pa.table({"text": pa.array(texts, pa.string()), "format": formats})


def test_identifies_seven_languages(stage: LangId) -> None:
    out = stage(table(list(DOCS.values())))
    assert out.column(LANGUAGE).to_pylist() == list(DOCS)
    assert all(score >= 0.65 for score in out.column(LANGUAGE_SCORE).to_pylist())
    assert out.column(DROP_REASON).null_count == len(DOCS)


def test_language_filter_rejects_other_languages_with_their_score() -> None:
    out = LangId(LangIdConfig(languages=["en", "de"]))(table(list(DOCS.values())))
    reasons = dict(zip(DOCS, out.column(DROP_REASON).to_pylist(), strict=True))
    assert reasons == {
        "en": None,
        "de": None,
        **{code: REASON_LANGUAGE for code in ("fr", "es", "ru", "zh", "ja")},
    }
    for row in out.to_pylist():
        if row[DROP_REASON] is not None:
            assert row[DROP_SCORE] == pytest.approx(row[LANGUAGE_SCORE])


def test_low_score_rejected_unless_rule_off() -> None:
    unsure = ["ok", DOCS["en"]]
    out = LangId(LangIdConfig(min_score=0.9))(table(unsure))
    assert out.column(DROP_REASON).to_pylist() == [REASON_LOW_SCORE, None]
    score = out.column(LANGUAGE_SCORE)[0].as_py()
    assert score < 0.9
    assert out.column(DROP_SCORE)[0].as_py() == pytest.approx(score)

    kept = LangId(LangIdConfig(min_score=None))(table(unsure))
    assert kept.column(DROP_REASON).null_count == 2


def test_empty_text_rejected(stage: LangId) -> None:
    out = stage(table(["", "  \n\t ", None, DOCS["fr"]]))
    assert out.column(DROP_REASON).to_pylist() == [REASON_EMPTY] * 3 + [None]
    assert out.column(LANGUAGE).to_pylist() == [None, None, None, "fr"]
    assert out.column(DROP_SCORE).to_pylist()[:3] == [None] * 3


def test_code_passes_unidentified() -> None:
    stage = LangId(LangIdConfig(languages=["de"]))
    code = "def main():\n    return 0\n"
    out = stage(table([code, code, DOCS["de"]], ["code", None, "html"]))
    assert out.column(LANGUAGE).to_pylist()[0] is None
    assert out.column(LANGUAGE_SCORE).to_pylist()[0] is None
    # A null format is identified like text: here it is not German.
    assert out.column(DROP_REASON).to_pylist() == [None, REASON_LANGUAGE, None]


def test_columns_and_types_on_document_schema(stage: LangId) -> None:
    rows = [{"id": str(i), "format": "html", "text": text} for i, text in enumerate(DOCS.values())]
    batch = pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)
    out = stage(batch)
    assert out.num_rows == batch.num_rows
    assert out.column_names == [*DOCUMENT_SCHEMA.names, LANGUAGE, LANGUAGE_SCORE]
    assert out.schema.field(LANGUAGE).type == pa.string()
    assert out.schema.field(LANGUAGE_SCORE).type == pa.float32()
    assert out.schema.field(DROP_REASON).type == pa.string()
    assert out.schema.field(DROP_SCORE).type == pa.float64()
    assert out.column("id").to_pylist() == batch.column("id").to_pylist()
    assert all(0.0 < s <= 1.0 for s in out.column(LANGUAGE_SCORE).to_pylist())


def test_empty_batch(stage: LangId) -> None:
    out = stage(table([]))
    assert out.num_rows == 0
    assert out.schema.field(LANGUAGE_SCORE).type == pa.float32()


def test_max_chars_reads_only_the_start() -> None:
    text = DOCS["en"] + "\n" + "\n".join([DOCS["de"]] * 20)
    assert LangId(LangIdConfig(max_chars=None))(table([text])).column(LANGUAGE)[0].as_py() == "de"
    short = LangId(LangIdConfig(max_chars=120))
    assert short(table([text])).column(LANGUAGE)[0].as_py() == "en"
    # Leading blank lines do not use up the budget.
    assert short(table([" \n" * 200 + DOCS["fr"]])).column(LANGUAGE)[0].as_py() == "fr"


def test_shipped_model_loads() -> None:
    assert hashlib.md5(DEFAULT_MODEL_PATH.read_bytes()).hexdigest() == MODEL_MD5
    assert missing_requirements(LangId) == []
    stage = LangId(LangIdConfig(model_path=str(DEFAULT_MODEL_PATH)))
    assert len(stage.model.get_labels()) == 176


def test_config_rejects_impossible_values() -> None:
    with pytest.raises(ValueError, match="xx"):
        LangId(LangIdConfig(languages=["en", "xx"]))
    with pytest.raises(ValidationError):
        LangIdConfig(min_score=1.5)
    with pytest.raises(ValidationError):
        LangIdConfig(max_chars=0)
    with pytest.raises(ValidationError):
        LangIdConfig(language=["en"])  # type: ignore[call-arg]
