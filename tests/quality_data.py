"""A tiny labelled set for the quality tests, made in the test: reference-like science
prose against keyword spam and link-farm pages, written as JSONL and HTML so that
train-quality reads them through the project's readers and extractor."""

from __future__ import annotations

import json
import random
from pathlib import Path

SCIENCE = (
    "A prime number has exactly two divisors, one and itself.",
    "The derivative measures how quickly a function changes near a point.",
    "Energy is conserved when no external force acts on the system.",
    "Every polynomial of odd degree has at least one real root.",
    "The experiment measured the temperature of the solution every minute.",
    "Light of a shorter wavelength carries more energy per photon.",
    "The proof proceeds by induction on the number of vertices.",
    "Cells divide after copying their chromosomes during the cell cycle.",
    "The theorem states that the sum of the angles of a triangle is constant.",
    "Water molecules form hydrogen bonds with their neighbours.",
    "A matrix is invertible exactly when its determinant is not zero.",
    "The planet completes one orbit around the star every four hundred days.",
)
SPAM = (
    "Buy cheap watches online best price cheap watches discount.",
    "Click here for free followers, free followers today only!",
    "Casino bonus casino bonus win big win big now.",
    "Best deals cheap flights cheap flights lowest price guaranteed.",
    "Order replica handbags now and save ninety percent today.",
    "Hot offers limited time free gift click here now.",
    "Top crypto signals crypto signals best crypto signals free.",
    "Weight loss pills cheap pills fast shipping buy now.",
)


def prose(pool: tuple[str, ...], rng: random.Random, sentences: int) -> str:
    """Paragraphs of sentences drawn from ``pool``, three to a line."""
    lines = [" ".join(rng.choices(pool, k=3)) for _ in range(max(1, sentences // 3))]
    return "\n".join(lines)


def write_labelled_set(folder: Path, documents_per_class: int = 30, seed: int = 0) -> Path:
    """positive.jsonl, negative.jsonl and negative HTML pages, plus train.yaml naming them;
    returns the config path. The model goes to ``folder/model``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, pool in (("positive", SCIENCE), ("negative", SPAM)):
        rows = [
            {"id": f"{name}-{i}", "text": prose(pool, rng, 12)} for i in range(documents_per_class)
        ]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pages = folder / "pages"
    pages.mkdir(exist_ok=True)
    for i in range(6):
        paragraphs = "".join(f"<p>{line}</p>" for line in prose(SPAM, rng, 30).splitlines())
        html = f"<html><head><title>Deals {i}</title></head><body><article>{paragraphs}</article>"
        (pages / f"deal-{i}.html").write_text(html + "<footer>Imprint</footer></body></html>")
    config = {
        "positive": [{"path": "positive.jsonl", "name": "science"}],
        "negative": [{"path": "negative.jsonl", "name": "spam"}, {"path": "pages", "name": "html"}],
        "output_dir": "model",
        "extract": {"min_text_chars": 50},
        "example_chars": 600,
        "heldout_fraction": 0.25,
        "thresholds": [0.5],
        "fasttext": {"epoch": 15, "dim": 8, "bucket": 2000, "min_count": 1},
        "fluency_lm_order": 3,
    }
    path = folder / "train.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path
