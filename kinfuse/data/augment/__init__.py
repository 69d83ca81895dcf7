"""Model-written augmentation (opt-in): paraphrases and Q&A about each section of the corpus,
checked against their source. `augment.py` holds the checks, `generators.py` the writers and
their cache, `grounding.py` the text measures."""

from .augment import PARAPHRASE_STYLES, QA_INSTRUCTION, AugmentResult, augment, augment_for_infusion
from .generators import FunctionGenerator, Generator, ModelGenerator, ReplyCache
from .grounding import content_words, grounding, invented_names, split_sections, whole_sentences

__all__ = [
    "AugmentResult", "FunctionGenerator", "Generator", "ModelGenerator", "PARAPHRASE_STYLES", "QA_INSTRUCTION",
    "ReplyCache", "augment", "augment_for_infusion", "content_words", "grounding", "invented_names",
    "split_sections", "whole_sentences",
]
