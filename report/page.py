"""``python -m pipeline report RUN_DIR``: one self-contained HTML page about a run.

A box of verdicts (``verdict.py``), then eight sections, each from the run's own
files (``data.py`` reads them): the funnel (the ledger, with its accounting
identity recomputed, and example documents per reject reason), kept and rejected per
language, input and host, and every scored rule against its threshold
(``filters.py``), the corpus, the mix and the packing (the phase manifests and
shards), the training metrics and the FFN experts per token by data domain and layer
(``training.py``). A section whose inputs are missing says so instead of
drawing an empty plot. ``--compare RUN_B`` sets two runs side by side
(``compare.py``).

Why numbers sit next to every plot: a reader checks a run against its ledger and
manifests, so every table cell carries the exact value in ``data-value`` (the shown
text may be rounded), and the tests compare those values with the files.
"""

from __future__ import annotations

import html
from pathlib import Path

from model_hooks.shard_format import PhaseManifest
from report import plots
from report.compare import render_compare
from report.data import Corpus, Funnel, RunData, load_run
from report.filters import breakdown_section, reason_examples, scores_section
from report.markup import Num, details, figure, missing, note, page, para, table
from report.training import expert_section, training_section
from report.verdict import identity_checks, verdict_box, verdicts

REPORT_NAME = "report.html"


# -- 1. funnel -------------------------------------------------------------------------


def funnel_section(data: RunData) -> str:
    funnel = data.funnel
    if funnel is None or not funnel.order:
        return missing("No curated/ledger.json in this run: the curation did not run here.")
    stages = funnel.ledger["stages"]
    order = funnel.order
    checks = identity_checks(funnel)
    holds = all(left == right for _, left, right in checks)
    totals = next(check for check in checks if check[0].startswith("run:"))
    verdict = "holds" if holds else "DOES NOT HOLD"
    parts = [
        f'<p class="verdict {"ok" if holds else "bad"}" data-identity="{str(holds).lower()}">'
        f"input {totals[1]:,} = kept + rejected + errors = {totals[2]:,}: {verdict} "
        f"(recomputed from the ledger's stages; order from {funnel.order_source})</p>",
        table(
            "funnel",
            ["stage", "input", "kept", "rejected", "errors", "changed"],
            [
                [
                    s,
                    Num(stages[s]["input"]),
                    Num(stages[s]["kept"]),
                    Num(sum(stages[s]["rejected"].values())),
                    Num(sum(stages[s]["errors"].values())),
                    Num(funnel.changes[s][0]) if s in funnel.changes else "",
                ]
                for s in order
            ],
        ),
        figure(
            plots.funnel(
                order, [stages[s]["input"] for s in order], [stages[s]["kept"] for s in order]
            ),
            "Documents into and out of every stage",
        ),
        details(
            f"The identity, check by check ({len(checks)} checks, "
            f"{sum(a != b for _, a, b in checks)} failing)",
            table(
                "identity",
                ["check", "left", "right", "holds"],
                [[c, Num(a), Num(b), "yes" if a == b else "NO"] for c, a, b in checks],
            ),
            "identity",
        ),
    ]
    parts.extend(_reason_parts(funnel))
    parts.append(reason_examples(data))
    parts.append(_downstream_table(data))
    return "\n".join(parts)


def _reason_parts(funnel: Funnel) -> list[str]:
    stages = funnel.ledger["stages"]
    rows = [
        (stage, reason, n, kind == "errors")
        for stage in funnel.order
        for kind in ("rejected", "errors")
        for reason, n in stages[stage][kind].items()
    ]
    if not rows:
        return [para("No document was rejected.")]
    sink = funnel.reject_rows
    run_input = stages[funnel.order[0]]["input"]
    cells = [
        [
            stage,
            reason,
            "error" if error else "rejected",
            Num(n),
            Num(sink.get((stage, reason), 0) if sink is not None else None),
            Num(n / stages[stage]["input"] if stages[stage]["input"] else None, 4),
            Num(n / run_input if run_input else None, 4),
        ]
        for stage, reason, n, error in rows
    ]
    headers = ["stage", "reason", "kind", "documents (ledger)", "rows in rejects/",
               "share of the stage's input", "share of the run's input"]  # fmt: skip
    return [
        figure(plots.reasons(rows), "Rejects by reason, one colour per stage (hatched: errors)"),
        table("reasons", headers, cells),
    ]


def _downstream_table(data: RunData) -> str:
    """Documents and tokens after curation: tokenized, then each packed phase."""
    rows = []
    corpus = data.corpus
    if corpus and corpus.tokenized_documents is not None:
        rows.append(
            ["tokenize", Num(corpus.tokenized_documents), Num(corpus.tokenized_tokens), Num(None)]
        )
    for phase in data.phases:
        m = phase.manifest
        documents = sum(c.documents for c in m.components) if m.components else None
        rows.append([f"pack: {m.phase}", Num(documents), Num(m.tokens), Num(m.rows)])
    if not rows:
        return missing("No tokenized or packed data in this run yet.")
    return table("downstream", ["step", "documents", "tokens", "sequences"], rows) + note(
        EPOCHS_NOTE
    )


# -- 2. corpus -------------------------------------------------------------------------


def corpus_section(data: RunData) -> str:
    corpus = data.corpus
    if corpus is None:
        return missing("No curated documents (curated/docs/) or tokenized shards in this run.")
    sampled = " (distributions from an even sample)" if corpus.sampled else ""
    parts = [para(f"{corpus.documents:,} curated documents{sampled}.")]
    bars = []
    if corpus.languages:
        bars.append(("documents by language", dict(corpus.languages.most_common(20)), "docs"))
    if corpus.domains:
        bars.append(("documents by domain", dict(corpus.domains.most_common()), "docs"))
    if corpus.tokens_by_domain:
        bars.append(("tokens by domain", dict(corpus.tokens_by_domain.most_common()), "tokens"))
    if bars:
        parts.append(figure(plots.counts_bars(bars), "Languages and domains"))
    parts.append(_counts_table(corpus))
    hists = [
        (title, values, xlabel, log)
        for title, values, xlabel, log in (
            ("quality score", corpus.quality, "quality_score", False),
            ("length in characters", corpus.length_chars, "characters", True),
            ("length in tokens", corpus.length_tokens, "tokens", True),
        )
        if values is not None
    ]
    if hists:
        parts.append(figure(plots.histograms(hists), "Quality-score and length distributions"))
    if not corpus.domains:
        parts.append(
            missing(
                "No domain column in the curated or tokenized documents: the "
                "packed phases tag their segments by mix component instead."
            )
        )
    if corpus.quality is None:
        parts.append(missing("No quality_score column in the curated documents."))
    parts.extend(_dedup_parts(corpus))
    return "\n".join(parts)


def _counts_table(corpus: Corpus) -> str:
    keys = list(dict.fromkeys([*corpus.languages, *corpus.domains]))
    rows = [["language", k, Num(n)] for k, n in corpus.languages.most_common()]
    rows += [["domain", k, Num(n)] for k, n in corpus.domains.most_common()]
    if corpus.tokens_by_domain:
        rows += [["tokens by domain", k, Num(n)] for k, n in corpus.tokens_by_domain.items()]
    return table("corpus-counts", ["what", "value", "count"], rows) if keys or rows else ""


TEMPLATE_LINE_CHARS = 160
MIN_BARS = 3


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, with an ellipsis where the text was cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _dedup_parts(corpus: Corpus) -> list[str]:
    parts = ["<h3>Near-duplicate clusters</h3>"]
    if corpus.cluster_sizes:
        clusters = sum(corpus.cluster_sizes.values())
        sizes = ", ".join(f"{n:,} of size {size}" for size, n in corpus.cluster_sizes.items())
        parts.append(para(f"{clusters:,} clusters (from the {corpus.cluster_source}): {sizes}."))
        if len(corpus.cluster_sizes) >= MIN_BARS:  # a chart of one or two bars says no more
            parts.append(
                figure(
                    plots.labelled_bars(corpus.cluster_sizes, "documents in cluster", "clusters"),
                    f"Near-duplicate cluster sizes (from the {corpus.cluster_source})",
                )
            )
        rows = [[size, Num(n)] for size, n in corpus.cluster_sizes.items()]
        parts.append(table("clusters", ["cluster size", "clusters"], rows))
    else:
        parts.append(missing("No MinHash near-duplicate stage in this run."))
    parts.append("<h3>Top template lines removed</h3>")
    if corpus.top_lines:
        rows = [[_cut(line, TEMPLATE_LINE_CHARS), Num(n)] for line, n in corpus.top_lines[:25]]
        parts.append(table("template-lines", ["line", "documents it was removed from"], rows))
    else:
        parts.append(missing("No template-line stage in this run."))
    return parts


# -- 3. mix and 4. packing -------------------------------------------------------------


EPOCHS_NOTE = (
    "A phase's documents are its sample plan's entries, one per draw: a component used for "
    "more than one epoch (the mix tables' epochs column) draws documents again, so a phase "
    "can hold more documents than were curated or tokenized."
)
COMPONENT_HEADERS = [
    "component", "declared share", "realised share", "difference", "tokens", "documents",
    "epochs",
]  # fmt: skip


def mix_section(data: RunData) -> str:
    phases = [p.manifest for p in data.phases]
    if not phases:
        return missing("No packed phases (packed/<phase>/.manifest.json) in this run.")
    rows = [
        [m.phase, Num(m.seq_len), Num(m.rope_theta, 1), Num(m.tokens), Num(m.rows)] for m in phases
    ]
    parts = [
        para(f"{len(phases)} phase(s), in order from {data.phase_order_source}."),
        table("phases", ["phase", "seq_len", "rope_theta", "tokens", "sequences"], rows),
        *_mix_figures([m for m in phases if m.components]),
    ]
    for m in phases:
        if not m.components:
            parts.append(f"<h3>phase {html.escape(m.phase)}</h3>")
            parts.append(missing("This phase's manifest lists no components."))
            continue
        cells = [
            [c.name, Num(c.declared_share), Num(c.realised_share),
             Num(c.realised_share - c.declared_share), Num(c.tokens), Num(c.documents),
             Num(c.epochs, 3)]
            for c in m.components
        ]  # fmt: skip
        worst = max(abs(c.realised_share - c.declared_share) for c in m.components)
        summary = (
            f"phase {m.phase}: {len(m.components)} components, largest |realised − declared| "
            f"{100 * worst:.2f} percentage points"
        )
        parts.append(details(summary, table(f"mix-{m.phase}", COMPONENT_HEADERS, cells)))
    parts.append(note(EPOCHS_NOTE))
    return "\n".join(parts)


def _mix_figures(phases: list[PhaseManifest]) -> list[str]:
    """Shares side by side per phase; tokens per phase and epochs per component."""
    if not phases:
        return []
    shares = [
        (m.phase, [c.name for c in m.components], [c.declared_share for c in m.components],
         [c.realised_share for c in m.components])
        for m in phases
    ]  # fmt: skip
    names = list(dict.fromkeys(c.name for m in phases for c in m.components))
    epochs = {
        n: [next((c.epochs for c in m.components if c.name == n), 0.0) for m in phases]
        for n in names
    }
    totals = plots.phase_totals([m.phase for m in phases], [m.tokens for m in phases], epochs)
    return [
        figure(
            plots.mix_shares(shares),
            "The curriculum's shape: realised token share of each component per phase (left), "
            "and how far it landed from the declared share, in percentage points (right)",
        ),
        figure(totals, "Tokens per phase and epochs per component"),
    ]


def packing_section(data: RunData) -> str:
    if not data.phases:
        return missing("No packed phases (packed/<phase>/.manifest.json) in this run.")
    rows = []
    for phase in data.phases:
        m, seg = phase.manifest, phase.segments_per_row
        rows.append(
            [
                m.phase,
                Num(m.seq_len),
                Num(m.rows),
                Num(m.tokens),
                Num(m.padding_fraction),
                Num(phase.padding_from_shards),
                Num(m.split_document_fraction),
                Num(float(seg.mean()) if seg.size else None, 2),
            ]
        )
    parts = [
        table(
            "packing",
            [
                "phase",
                "seq_len",
                "sequences",
                "tokens",
                "padding fraction",
                "padding (recounted from shards)",
                "documents split",
                "segments/sequence",
            ],
            rows,
        )
    ]
    known = sorted({d for p in data.phases for d in p.manifest.domains})
    for phase in data.phases:
        m = phase.manifest
        parts.append(f"<h3>phase {html.escape(m.phase)}</h3>")
        parts.append(
            figure(
                plots.packing(phase.segments_per_row, phase.example, m.seq_len, known),
                f"Phase {m.phase}: segments per sequence, "
                "and its first sequence drawn as its segments",
            )
        )
    return "\n".join(parts)


# -- the page --------------------------------------------------------------------------

SECTIONS = {
    "funnel": ("1. Funnel", funnel_section),
    "breakdown": ("2. Kept and rejected by language, input and host", breakdown_section),
    "scores": ("3. Scores against thresholds", scores_section),
    "corpus": ("4. Corpus", corpus_section),
    "mix": ("5. Mix", mix_section),
    "packing": ("6. Packing", packing_section),
    "training": ("7. Training", training_section),
    "experts": ("8. Expert allocation by domain and layer", expert_section),
}


def render(data: RunData) -> str:
    sections = [(key, heading, build(data)) for key, (heading, build) in SECTIONS.items()]
    lead = verdict_box(verdicts(data))
    return page(f"Run report: {data.run_dir.name}", str(data.run_dir), sections, lead)


def write_report(
    run_dir: str | Path, out: str | Path | None = None, compare: str | Path | None = None
) -> Path:
    """Read the run folder, write the page (tmp then rename), return its path. With
    ``compare`` (a second run folder) the page sets the two runs side by side, by
    default as RUN_DIR/report-vs-<its name>.html."""
    run_dir = Path(run_dir)
    for folder in (run_dir, *([Path(compare)] if compare is not None else [])):
        if not folder.is_dir():
            raise FileNotFoundError(f"run folder {folder} does not exist")
    if compare is None:
        path = Path(out) if out is not None else run_dir / REPORT_NAME
        text = render(load_run(run_dir))
    else:
        path = Path(out) if out is not None else run_dir / f"report-vs-{Path(compare).name}.html"
        text = render_compare(load_run(run_dir), load_run(Path(compare)))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path
