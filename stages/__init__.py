"""The per-document curation stages, by config name, in the order a run applies them.

A plain dict (no decorators, no import side effects): the runner looks stages up here
and the order of the keys is the order of the funnel.
"""

from stages.base import Stage
from stages.decontaminate import Decontaminate
from stages.domain import Domain
from stages.extract import Extract
from stages.fluency import Fluency
from stages.heuristics import Heuristics
from stages.langid import LangId
from stages.quality import Quality

STAGES: dict[str, type[Stage]] = {
    "extract": Extract,
    "langid": LangId,
    "heuristics": Heuristics,
    "quality": Quality,  # model-based, on what the cheap rules kept (LongCat step 1)
    "fluency": Fluency,  # then fluency and completeness (step 2)
    "domain": Domain,  # tags only, never rejects
    "decontaminate": Decontaminate,  # last: eval overlap is checked on what survives
}
