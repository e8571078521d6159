"""The run report: every section shows real data, its tables equal the ledger and the
manifests, and the page renders in a real headless Chromium.

The run folder is built by ``tests/report/report_run.py``, small and synthetic but in the
real layouts. The browser test saves its screenshot under ``runs/test-artifacts/report/``
(or ``$REPORT_ARTIFACTS``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from model_hooks.shard_format import read_manifest
from pipeline.cli import main as cli_main
from pipeline.ledger import stage_changes
from report.data import stage_order
from report.page import write_report
from report.training import THROUGHPUT_ROW, expert_matrix, phase_boundaries
from tests.report.report_run import DOMAINS, build_run, entry

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("REPORT_ARTIFACTS", REPO / "runs" / "test-artifacts" / "report"))
SECTIONS = ("funnel", "breakdown", "scores", "corpus", "mix", "packing", "training", "experts")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def report(run_dir: Path) -> tuple[Path, dict]:
    path = write_report(run_dir)
    return path, parse(path.read_text())


# -- reading the page back -------------------------------------------------------------


class _Page(HTMLParser):
    """Sections by id: status, image sources, tables (cells as (text, data-value))."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.verdicts: list[list[str]] = []  # [level, text] of the box at the top
        self.in_verdict = False
        self.current: dict | None = None
        self.table: list | None = None
        self.cell: list | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "li" and "data-verdict" in a:
            self.verdicts.append([a["data-verdict"], ""])
            self.in_verdict = True
        if tag == "section":
            self.current = {"status": a["data-status"], "images": [], "tables": {}, "text": []}
            self.sections[a["id"]] = self.current
        elif self.current is None:
            return
        elif tag == "img":
            self.current["images"].append(a["src"])
        elif tag == "details":
            self.current.setdefault("details", []).append(a.get("data-details", ""))
        elif tag == "table":
            self.table = self.current["tables"].setdefault(a["data-table"], [])
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = ["", a.get("data-value")]

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self.in_verdict:
            self.verdicts[-1][1] = self.verdicts[-1][1].removesuffix("details").strip()
            self.in_verdict = False
        if tag in ("td", "th") and self.cell is not None and self.table is not None:
            self.table[-1].append(tuple(self.cell))
            self.cell = None
        elif tag == "table":
            self.table = None
        elif tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.in_verdict:
            self.verdicts[-1][1] += data
        if self.cell is not None:
            self.cell[0] += data
        elif self.current is not None:
            self.current["text"].append(data)


def parse(text: str) -> dict:
    page = _Page()
    page.feed(text)
    return page.sections


def parse_verdicts(text: str) -> list[list[str]]:
    page = _Page()
    page.feed(text)
    return page.verdicts


def rows(section: dict, name: str) -> list[list]:
    """Body rows of a table: text cells as str, number cells as their exact value."""
    body = section["tables"][name][1:]
    return [[text if value is None else _number(value) for text, value in row] for row in body]


def _number(value: str) -> int | float | None:
    if value == "":
        return None
    return int(value) if value.lstrip("-").isdigit() else float(value)


def png_sizes(sources: list[str]) -> list[tuple[int, int]]:
    from PIL import Image

    sizes = []
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert len(data) > 3000, "an image this small draws nothing"
        sizes.append(Image.open(io.BytesIO(data)).size)
    return sizes


# -- the tests -------------------------------------------------------------------------


def test_every_section_shows_data(report) -> None:
    path, sections = report
    text = path.read_text()
    assert list(sections) == list(SECTIONS)
    for name in SECTIONS:
        section = sections[name]
        assert section["status"] == "ok", name
        assert section["images"], f"{name} has no plot"
        assert all(width >= 400 for width, _ in png_sizes(section["images"])), name
        assert any(len(t) > 1 for t in section["tables"].values()), f"{name} has no table rows"
    assert 'class="missing"' not in text  # every optional input exists in this run
    # self-contained: nothing is fetched (document URLs appear only as text)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(|@import""", text)


def test_funnel_equals_the_ledger(report, run_dir: Path) -> None:
    ledger = json.loads((run_dir / "curated" / "ledger.json").read_text())
    stages = ledger["stages"]
    funnel = report[1]["funnel"]
    shown = rows(funnel, "funnel")
    # The order comes from funnel.txt, not from the JSON's sorted keys.
    assert [r[0] for r in shown][:3] == ["read", "extract", "langid"]
    changed = {name: stage_changes(entry) for name, entry in stages.items()}
    assert shown == [
        [
            name,
            e["input"],
            e["kept"],
            sum(e["rejected"].values()),
            sum(e["errors"].values()),
            "" if changed[name] is None else changed[name][0],
        ]
        for name, e in ((r[0], stages[r[0]]) for r in shown)
    ]
    assert len(shown) == len(stages)
    checks = rows(funnel, "identity")
    assert all(check[3] == "yes" and check[1] == check[2] for check in checks)
    run = next(c for c in checks if c[0].startswith("run:"))
    totals = ledger["totals"]
    assert run[1:3] == [totals["input"], totals["kept"] + totals["rejected"] + totals["errors"]]
    reasons = {(r[0], r[1]): (r[3], r[4]) for r in rows(funnel, "reasons")}
    expected = {(s, reason): n for s, e in stages.items() for kind in ("rejected", "errors")
                for reason, n in e[kind].items()}  # fmt: skip
    assert {key: ledger_n for key, (ledger_n, _) in reasons.items()} == expected
    assert all(ledger_n == sink_n for ledger_n, sink_n in reasons.values())
    downstream = {r[0]: r[1:] for r in rows(funnel, "downstream")}
    tokenized = pq.read_table(run_dir / "tokenized" / "docs")
    assert downstream["tokenize"][:2] == [
        ledger["documents_written"],
        sum(tokenized["n_tokens"].to_pylist()),
    ]
    for phase in ("pretrain", "long"):
        manifest = read_manifest(run_dir / "packed" / phase)
        assert downstream[f"pack: {phase}"][1:] == [manifest.tokens, manifest.rows]


def test_corpus_counts_and_dedup_figures(report, run_dir: Path) -> None:
    corpus = report[1]["corpus"]
    docs = pq.read_table(run_dir / "curated" / "docs")
    counts = {(r[0], r[1]): r[2] for r in rows(corpus, "corpus-counts")}
    for value, n in zip(*np.unique(docs["language"].to_numpy(zero_copy_only=False),
                                   return_counts=True), strict=True):  # fmt: skip
        assert counts[("language", value)] == n
    assert counts[("domain", "web")] == sum(d == "web" for d in docs["domain"].to_pylist())
    tokenized = pq.read_table(run_dir / "tokenized" / "docs")
    web = [n for d, n in zip(tokenized["domain"].to_pylist(), tokenized["n_tokens"].to_pylist(),
                             strict=True) if d == "web"]  # fmt: skip
    assert counts[("tokens by domain", "web")] == sum(web)
    assert rows(corpus, "clusters") == [["2", 2], ["3", 1]]
    assert rows(corpus, "template-lines")[0] == ["Subscribe to our newsletter", 9]


def test_mix_and_packing_equal_the_manifests(report, run_dir: Path) -> None:
    sections = report[1]
    phases = rows(sections["mix"], "phases")
    assert [p[0] for p in phases] == ["pretrain", "long"]  # curriculum order, not by name
    for name in ("pretrain", "long"):
        manifest = read_manifest(run_dir / "packed" / name)
        assert phases[[p[0] for p in phases].index(name)][3:] == [manifest.tokens, manifest.rows]
        assert rows(sections["mix"], f"mix-{name}") == [
            [c.name, c.declared_share, c.realised_share, c.realised_share - c.declared_share,
             c.tokens, c.documents, c.epochs] for c in manifest.components
        ]  # fmt: skip
    for row in rows(sections["packing"], "packing"):
        manifest = read_manifest(run_dir / "packed" / row[0])
        slots = manifest.rows * manifest.seq_len
        assert row[1:5] == [manifest.seq_len, manifest.rows, manifest.tokens,
                            manifest.padding_fraction]  # fmt: skip
        assert row[5] == pytest.approx(1 - manifest.tokens / slots)
        assert row[6] == manifest.split_document_fraction
    assert len(sections["packing"]["images"]) == 2  # one drawing per phase


def test_training_and_expert_heatmap_equal_the_metrics(report, run_dir: Path) -> None:
    records = [
        json.loads(x) for x in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()
    ]
    training = dict((r[0], r[1]) for r in rows(report[1]["training"], "training"))
    assert training["steps"] == len(records)
    assert training["tokens seen"] == records[-1]["tokens_seen"]
    assert training["phases"] == "pretrain → long"
    assert training["loss books, last measured"] == 5.0  # None entries are skipped
    experts = rows(report[1]["experts"], "experts")
    assert [r[0] for r in experts] == list(DOMAINS)
    for row in experts:
        per_step = np.array([r["ffn_experts_per_token_by_domain"][row[0]] for r in records])
        assert row[1:] == pytest.approx(per_step.mean(axis=0).tolist(), abs=1e-12)


def test_partial_run_and_cli(tmp_path: Path, run_dir: Path, capsys) -> None:
    """Only curation ran: the funnel and corpus show data, the rest say what is missing;
    a broken identity is shown as broken."""
    shutil.copytree(run_dir / "curated", tmp_path / "curated")
    ledger_path = tmp_path / "curated" / "ledger.json"
    ledger = json.loads(ledger_path.read_text())
    ledger["stages"]["langid"]["kept"] -= 1
    ledger_path.write_text(json.dumps(ledger))
    assert cli_main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "report.html")
    sections = parse(Path(printed).read_text())
    assert sections["funnel"]["status"] == sections["corpus"]["status"] == "ok"
    for name in ("mix", "packing", "training", "experts"):
        assert sections[name]["status"] == "missing" and not sections[name]["images"]
    assert "DOES NOT HOLD" in "".join(sections["funnel"]["text"])
    assert cli_main(["report", str(tmp_path / "absent")]) == 2


def test_fallbacks_for_older_or_partial_files(tmp_path: Path) -> None:
    """Without funnel.txt the stage order is the pipeline's; a trainer that logged one
    number per domain gives a one-column heatmap; phase starts come from the metrics."""
    ledger = {"stages": {name: entry(5, {}) for name in ("tokenize", "extract", "read")}}
    assert stage_order(ledger, tmp_path / "absent.txt") == (
        ["read", "extract", "tokenize"],
        "canonical",
    )
    records = [
        {"ffn_experts_per_token_by_domain": {"web": 2.0, "code": None}},
        {"ffn_experts_per_token_by_domain": {"web": 3.0, "code": 1.0}},
    ]
    matrix, domains, layers = expert_matrix(records)
    assert (domains, layers, matrix.tolist()) == (["web", "code"], ["all layers"], [[2.5], [1.0]])
    marks = phase_boundaries([{"phase": "a"}, {"phase": "a"}, {"phase": "b"}], np.array([1, 2, 3]))
    assert marks == [(0.0, "a"), (2.0, "b")]


# -- the page in a real browser --------------------------------------------------------

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--virtual-time-budget=10000",
]  # fmt: skip


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("chromium not found: `make test` installs it (apt-get install chromium)")


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_page_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    from PIL import Image

    chromium = _chromium()
    path, sections = report
    url = path.resolve().as_uri()
    dom = _browse(chromium, tmp_path / "profile", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = sum(len(s["images"]) for s in sections.values())
    assert f'data-images-total="{images}"' in dom.stdout, dom.stderr[-2000:]
    assert f'data-images-rendered="{images}"' in dom.stdout  # every PNG decoded
    assert 'class="verdicts"' in dom.stdout and "<li class=" in dom.stdout  # the box at the top
    collapsed = sum(len(s.get("details", [])) for s in sections.values())
    assert collapsed > 10 and dom.stdout.count("<details") == collapsed
    assert dom.stdout.count("<img ") == images
    for problem in ("Uncaught", "ERROR:CONSOLE", "Not allowed to load"):
        assert problem not in dom.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    shutil.copy(path, ARTIFACTS / "report.html")
    taken = _browse(chromium, tmp_path / "profile", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,4000", url)  # fmt: skip
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    print(f"report screenshot: {shot}")
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape[:2] == (4000, 1200)
    drawn = (picture < 235).any(axis=2).mean()  # not a blank page
    assert drawn > 0.05, f"only {drawn:.1%} of the screenshot is drawn"
    packed = picture.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
    assert len(np.unique(packed)) > 50  # coloured plots, not only text


# -- the drill-downs, the scores and the verdicts --------------------------------------


def _rejects(run_dir: Path) -> list[dict]:
    return pq.read_table(run_dir / "curated" / "rejects").to_pylist()


def test_reason_examples_are_the_rejected_documents(report, run_dir: Path) -> None:
    """Every reason of the ledger has a collapsed block; its table lists the first rows
    of the rejects sink for that reason, with their score and the run's threshold."""
    funnel = report[1]["funnel"]
    ledger = json.loads((run_dir / "curated" / "ledger.json").read_text())
    reasons = {(s, r) for s, e in ledger["stages"].items() for kind in ("rejected", "errors")
               for r in e[kind]}  # fmt: skip
    assert {d for d in funnel["details"] if d.startswith("reason-")} == {
        f"reason-{s}-{r}" for s, r in reasons
    }
    rejects = _rejects(run_dir)
    for stage, reason in reasons:
        expected = [r for r in rejects if (r["stage"], r["reason"]) == (stage, reason)][:5]
        shown = rows(funnel, f"examples-{stage}-{reason}")
        assert [row[0] for row in shown] == [r["id"] for r in expected]
        assert [row[3] for row in shown] == [r["language"] or "und" for r in expected]
        assert [row[4] for row in shown] == [r["score"] for r in expected]
        assert all(row[6].startswith("rejected text") for row in shown)
        assert all(len(row[6]) <= 301 for row in shown)  # cut, with an ellipsis
    words = rows(funnel, "examples-heuristics-gopher_too_few_words")
    assert {(row[3], row[5]) for row in words} == {("zh", 20)}  # zh's own, not the run's 40
    low = rows(funnel, "examples-langid-language_score_below_min")
    assert {(row[3], row[5]) for row in low} == {("en", 0.65), ("de", 0.5)}
    shares = {(r[0], r[1]): r[5:] for r in rows(funnel, "reasons")}
    assert shares[("heuristics", "gopher_too_few_words")] == [
        4 / ledger["stages"]["heuristics"]["input"], 4 / ledger["stages"]["read"]["input"]
    ]  # fmt: skip


def test_kept_and_rejected_by_language_source_and_host(report, run_dir: Path) -> None:
    from collections import Counter

    section = report[1]["breakdown"]
    docs = pq.read_table(run_dir / "curated" / "docs").to_pylist()
    rejects = _rejects(run_dir)
    language = {r[0]: r[1:] for r in rows(section, "by-language")}
    kept = Counter(d["language"] for d in docs)
    rejected = Counter(r["language"] or "und" for r in rejects)
    ledger = json.loads((run_dir / "curated" / "ledger.json").read_text())["languages"]
    for value in set(kept) | set(rejected):
        # the ledger's count, and the rejects sink's rows beside it
        assert language[value][:2] == [kept.get(value, 0), rejected.get(value, 0)], value
        assert language[value][:2] == [
            ledger[value]["kept"],
            sum(ledger[value]["dropped"].values()),
        ]
        assert language[value][4] == rejected.get(value, 0)
    # zh is eaten by one heuristic: the table's top reason and the verdict say so
    assert language["zh"][3].startswith("gopher_too_few_words (4)")
    assert "language-zh" in section["details"]
    shown = rows(section, "lang-examples-zh-heuristics-gopher_too_few_words")
    assert len(shown) == 3 and {row[3] for row in shown} == {"zh"}
    assert {row[5] for row in shown} == {20}  # zh's own threshold rejected them
    source = {r[0]: r[1:3] for r in rows(section, "by-source")}
    assert source["crawl"][1] + source["text"][1] == len(rejects)
    assert source["crawl"][0] == sum(d["source"].startswith("crawl/") for d in docs)
    host = {r[0]: r[1:3] for r in rows(section, "by-host")}
    assert host["(no URL)"] == [sum(d["url"] is None for d in docs),
                                sum(r["url"] is None for r in rejects)]  # fmt: skip
    assert section["images"]


def test_scores_against_the_run_thresholds(report, run_dir: Path) -> None:
    section = report[1]["scores"]
    table = {(r[0], r[1]): r for r in rows(section, "scores")}
    rejects = _rejects(run_dir)
    docs = pq.read_table(run_dir / "curated" / "docs")
    langid = table[("langid", "language_score_below_min")]
    assert langid[3] == 0.65 and langid[4] == docs.num_rows  # every kept doc has a score
    assert langid[5] == sum(r["reason"] == "language_score_below_min" for r in rejects)
    words = table[("heuristics", "gopher_too_few_words")]
    assert words[3] == 40 and words[4] == "not recorded" and words[5] == 4
    assert "not recorded" in words[8] and words[7] == "zh 20"
    assert langid[7] == "de 0.5"  # ja has its own threshold too, but no ja document here
    minhash = table[("minhash_dedup", "near_duplicate")]
    assert minhash[3] == 0.8 and minhash[5] == 4
    # every kept langid score is at least 0.7, every dropped one below 0.65: in the tail
    assert langid[6] == pytest.approx(2 / (docs.num_rows + 2)) and "tail" in langid[8]
    assert len(section["images"]) == 1


def test_scores_verdict_sees_a_threshold_in_the_bulk() -> None:
    from report.scores import RuleScores, ScoredRule, scored_rules

    rule = ScoredRule("quality", "quality_below_min", "P", "min_score", 0.5, True, "q")
    inside = RuleScores(rule, np.linspace(0.5, 1.0, 50), np.linspace(0.0, 0.49, 50))
    assert inside.verdict().startswith("cuts into the bulk") and inside.dropped_side_share() == 0.5
    tail = RuleScores(rule, np.linspace(0.5, 1.0, 98), np.array([0.1, 0.2]))
    assert tail.verdict().startswith("sits in the tail")
    edge = RuleScores(rule, np.linspace(0.5, 1.0, 85), np.linspace(0.0, 0.49, 15))
    assert edge.verdict().startswith("cuts into the edge of the bulk")
    off = {"gopher_quality": {"max_words": None}}
    rules = scored_rules({"heuristics": {"presets": ["gopher_quality"], "overrides": off}})
    names = {r.threshold_name: r.threshold for r in rules}
    assert names["min_words"] == 50 and "max_words" not in names  # None: the rule is off


def test_verdicts_flag_what_is_out_of_range(report, run_dir: Path, tmp_path: Path) -> None:
    from report.data import load_model_config
    from report.verdict import expert_target_verdict, grad_ratio_verdict

    verdicts = {text.split(":")[0].split(" ")[0]: (level, text)
                for level, text in parse_verdicts(report[0].read_text())}  # fmt: skip
    assert verdicts["Accounting"][0] == "ok"
    assert verdicts["Padding"][0] == "bad" and "pretrain 12.35%" in verdicts["Padding"][1]
    assert verdicts["R_g"][0] == "ok"  # 0.05 throughout
    assert verdicts["The"][0] == "ok" and "K_e = 1.5" in verdicts["The"][1]
    assert verdicts["More"][0] == "bad" and "zh (5 of" in verdicts["More"][1]
    assert "la (" not in verdicts["More"][1]  # Latin was not selected: not "eaten"
    # R_g above the limit only during warm-up is fine; after it, flagged
    warm = [{"step": i + 1, "lr": min(i + 1, 3) * 1e-3, "grad_norm_ratio": 5.0 if i < 2 else 0.05}
            for i in range(6)]  # fmt: skip
    assert grad_ratio_verdict(warm).level == "ok"
    warm[4]["grad_norm_ratio"] = 0.3
    flagged = grad_ratio_verdict(warm)
    assert flagged.level == "bad" and "max 0.3 at step 5" in flagged.text
    # K_e off by more than 5% in one layer; the target read from a checkpoint
    import torch

    torch.save({"model_config": {"target_ffn_experts": 2.5}}, tmp_path / "ckpt.pt")
    target = load_model_config(tmp_path / "ckpt.pt")["target_ffn_experts"]
    records = [{"lr": 1.0, "ffn_experts_per_token": [2.5, 2.7]} for _ in range(4)]
    off = expert_target_verdict(records, target)
    assert off.level == "bad" and "layer 1 at 2.70, +8%" in off.text
    assert expert_target_verdict(records[:1], None).level == "info"


def test_rejects_sink_records_the_language() -> None:
    """The per-language view needs the language of rejected documents: the sink keeps
    it (null for a document dropped before language id ran)."""
    import pyarrow as pa

    from pipeline.curate import rejects_table

    dropped = pa.table({
        "id": ["a", "b"], "shard": pa.array([0, 0], pa.int32()), "ordinal": [0, 1],
        "source": ["s", "s"], "record": ["r0", "r1"], "url": [None, None],
        "drop_stage": ["read", "heuristics"], "drop_reason": ["empty_document", "x"],
        "drop_score": [None, 0.5], "text": ["", "你好"], "language": [None, "zh"],
    })  # fmt: skip
    assert rejects_table(dropped).column("language").to_pylist() == [None, "zh"]
    without = rejects_table(dropped.drop_columns(["language"]))
    assert without.column("language").to_pylist() == [None, None]


def test_misleading_details_are_fixed(report) -> None:
    """A cut template line ends in an ellipsis; the packed phases' document counts come
    with the epochs note; the heatmap states its colour scale."""
    from tests.report.report_run import LONG_TEMPLATE_LINE

    sections = report[1]
    lines = rows(sections["corpus"], "template-lines")
    assert lines[2] == [LONG_TEMPLATE_LINE[:159].rstrip() + "…", 3] and len(lines[2][0]) <= 160
    for name in ("mix", "funnel"):
        assert "more than one epoch" in " ".join(sections[name]["text"])
    experts = [value for row in rows(sections["experts"], "experts") for value in row[1:]]
    caption = f"colour scale {min(experts):.2f} to {max(experts):.2f}"
    assert caption in " ".join(sections["experts"]["text"])


def test_smoothing_skips_gaps_and_phase_labels_do_not_overlap() -> None:
    from report.plots import new_figure
    from report.training_plots import phase_lines, smooth, smoothing_window

    values = np.array([1.0, np.nan, 3.0, 5.0, np.nan])
    assert smooth(values, 3).tolist() == [1.0, 2.0, 4.0, 4.0, 5.0]
    assert smoothing_window(5) == 1 and smoothing_window(200) == 11
    fig, (ax,) = new_figure(6, 3)
    ax.plot([0, 100], [0, 1])
    phase_lines(ax, [(0.0, "pretrain"), (1.0, "midtrain_1"), (2.0, "midtrain_2")], label=True)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_training_table_flags_out_of_range(report) -> None:
    training = {r[0]: r[1:] for r in rows(report[1]["training"], "training")}
    assert training["gradient norm ratio R_g, max after warm-up (limit 0.1)"] == [0.05, "ok"]
    assert training["K_e: target FFN experts per token"][0] == 1.5
    assert training["FFN experts per token after warm-up, layer 0"] == [1.5, "ok"]
    assert training[THROUGHPUT_ROW][0] == 1000.0  # 500 tokens in 0.5 s


def test_wall_times_from_a_separate_timings_file(tmp_path: Path) -> None:
    """The trainer may move wall-time fields out of metrics.jsonl: they are joined back
    by step, and a field both files hold keeps the metrics' value."""
    from report.data import load_metrics

    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "tokens": 100}) + "\n" + json.dumps({"step": 2, "tokens": 100})
    )
    (tmp_path / "timings.jsonl").write_text(
        json.dumps({"step": 2, "step_time_s": 0.25, "tokens": 7}) + "\n"
    )
    records = load_metrics(tmp_path)
    assert records == [{"step": 1, "tokens": 100},
                       {"step": 2, "tokens": 100, "step_time_s": 0.25}]  # fmt: skip


def test_compare_two_runs_side_by_side(tmp_path: Path, run_dir: Path, capsys) -> None:
    """``report A --compare B``: both funnels, languages, mixes and training curves, the
    numbers equal each run's ledger and manifests; the page renders in Chromium."""
    other = build_run(tmp_path / "b", seed=1)
    ledger_path = other / "curated" / "ledger.json"
    ledger_b = json.loads(ledger_path.read_text())
    later = False  # B's heuristics let two more documents through, which every later stage sees
    for name in stage_order(ledger_b, other / "curated" / "funnel.txt")[0]:
        stage = ledger_b["stages"][name]
        if later:
            stage["input"] += 2
        if name == "heuristics":
            stage["rejected"]["gopher_too_few_words"] -= 2
            later = True
        if later:
            stage["kept"] += 2
    ledger_path.write_text(json.dumps(ledger_b))
    ledger_a = json.loads((run_dir / "curated" / "ledger.json").read_text())
    assert cli_main(["report", str(run_dir), "--compare", str(other)]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == run_dir / "report-vs-b.html"
    page = parse(path.read_text())
    assert list(page) == ["compare-funnel", "compare-languages", "compare-mix", "compare-training"]
    assert all(
        s["status"] == "ok" and s["images"] for k, s in page.items() if k != "compare-languages"
    )
    funnel = {r[0]: r[1:] for r in rows(page["compare-funnel"], "compare-funnel")}
    for stage, mine in ledger_a["stages"].items():
        theirs = ledger_b["stages"][stage]
        assert funnel[stage] == [
            mine["input"], mine["kept"], theirs["input"], theirs["kept"],
            theirs["kept"] - mine["kept"],
        ]  # fmt: skip
    assert funnel["template_lines"][-1] == 2
    reasons = {(r[0], r[1]): r[2:] for r in rows(page["compare-funnel"], "compare-reasons")}
    assert reasons[("heuristics", "gopher_too_few_words")] == [4, 2, -2]
    mix = {(r[0], r[1]): r[2:] for r in rows(page["compare-mix"], "compare-mix")}
    for phase in ("pretrain", "long"):
        mine = read_manifest(run_dir / "packed" / phase).components
        theirs = read_manifest(other / "packed" / phase).components
        for a, b in zip(mine, theirs, strict=True):
            assert mix[(phase, a.name)] == [a.realised_share, b.realised_share, a.tokens, b.tokens]
    languages = {r[0]: r[1:] for r in rows(page["compare-languages"], "compare-languages")}
    docs = pq.read_table(other / "curated" / "docs")["language"].to_pylist()
    assert languages["de"][2] == docs.count("de")
    assert parse_verdicts(path.read_text())  # both runs' verdict boxes
    assert cli_main(["report", str(run_dir), "--compare", str(tmp_path / "absent")]) == 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        dom = _browse(chromium, tmp_path / "profile", "--dump-dom", path.resolve().as_uri())
        images = sum(len(s["images"]) for s in page.values())
        assert f'data-images-rendered="{images}"' in dom.stdout, dom.stderr[-2000:]
        for problem in ("Uncaught", "ERROR:CONSOLE", "Not allowed to load"):
            assert problem not in dom.stderr


def test_rejects_written_without_a_language(tmp_path: Path, run_dir: Path) -> None:
    """A run curated before the rejects carried a language: its rejects are counted as
    "(not recorded)" and the page says why, instead of showing every language unharmed."""
    shutil.copytree(run_dir / "curated", tmp_path / "curated")
    sink = tmp_path / "curated" / "rejects" / "documents-00000.parquet"
    pq.write_table(pq.read_table(sink).drop_columns(["language"]), sink)
    ledger_path = tmp_path / "curated" / "ledger.json"
    ledger = json.loads(ledger_path.read_text())
    del ledger["languages"]  # nor did its ledger count per language
    ledger_path.write_text(json.dumps(ledger))
    section = parse(write_report(tmp_path).read_text())["breakdown"]
    language = {r[0]: r[1:3] for r in rows(section, "by-language")}
    assert language["(not recorded)"] == [0, len(_rejects(run_dir))]
    assert language["en"][1] == 0 and "zh" not in language  # zh was only ever rejected
    assert "carry no language column" in " ".join(section["text"])


def test_compare_runs_that_only_curated(tmp_path: Path, run_dir: Path) -> None:
    """Two runs without packing or training: the funnel and languages compare, the mix
    and training parts say what is missing instead of failing."""
    for name in ("a", "b"):
        shutil.copytree(run_dir / "curated", tmp_path / name / "curated")
    page = parse(write_report(tmp_path / "a", compare=tmp_path / "b").read_text())
    assert page["compare-funnel"]["status"] == page["compare-languages"]["status"] == "ok"
    assert page["compare-mix"]["status"] == page["compare-training"]["status"] == "missing"
    differences = [r[-1] for r in rows(page["compare-funnel"], "compare-funnel")]
    assert set(differences) == {0}


def test_source_files_count_as_code_like_the_ledger(tmp_path: Path) -> None:
    import pyarrow as pa

    from report.rejects import load_drilldown

    (tmp_path / "docs").mkdir()
    docs = pa.table({"source": ["code/a.py", "text/b.jsonl"], "url": [None, None],
                     "language": [None, None], "format": ["code", "text"]})  # fmt: skip
    pq.write_table(docs, tmp_path / "docs" / "shard-00000.parquet")
    groups = load_drilldown(tmp_path).groups["language"]
    assert {k: g.kept for k, g in groups.items()} == {"code": 1, "und": 1}
