"""The per-document curation stages, by config name, in the order a run applies them.

A plain dict (no decorators, no import side effects): the runner looks stages up here
and the order of the keys is the order of the funnel.
"""

from stages.base import Stage
from stages.extract import Extract
from stages.heuristics import Heuristics
from stages.langid import LangId

STAGES: dict[str, type[Stage]] = {
    "extract": Extract,
    "langid": LangId,
    "heuristics": Heuristics,
}
