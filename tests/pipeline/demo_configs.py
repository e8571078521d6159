"""Curate configs over the demo corpus (the ``demo_corpus`` fixture) for the tests that
run the three global steps end to end."""

from __future__ import annotations

from pathlib import Path

_GLOBAL_STEPS = """\
inputs:
  - {{path: {corpus}/crawl/*.warc.gz, name: crawl}}
  - {{path: {corpus}/html, name: html}}
  - {{path: {corpus}/text/*.jsonl, name: text}}
output_dir: {out}
shard_input_bytes: 400000
stages:
  extract: {{favor_precision: true}}
  langid: {{languages: [en, de, fr, es, zh, ru], min_score: 0.5}}
  heuristics: {{presets: [gopher_repetition, gopher_quality, c4, fineweb]}}
  exact_dedup: {{normalize: true}}
  minhash_dedup: {{shingle: word, shingle_size: 5, num_perm: 128, threshold: 0.8}}
  template_lines: {{min_host_documents: 3, min_corpus_documents: 4, min_line_chars: 20}}
ray: {ray}
"""


def global_steps_config(corpus: Path, out: str, ray: str) -> str:
    """Extraction, filters, exact and MinHash dedup and template lines into ``out``,
    with the ``ray`` section given as flow YAML (``{num_cpus: 1}``)."""
    return _GLOBAL_STEPS.format(corpus=corpus, out=out, ray=ray)
