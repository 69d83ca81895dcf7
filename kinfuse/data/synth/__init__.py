"""Rule-based training data from a corpus: questions about every fact, and rewritten documents.

No writer model is needed (the small models kinfuse trains cannot write usable Q&A): the
rules read each sentence's clause, find its answerable spans and ask for each in several
wordings, with answers that state the fact in a full sentence. See `generate.synthesize`.
"""

from .generate import Group, Synthesis, synthesize

__all__ = ["Group", "Synthesis", "synthesize"]
