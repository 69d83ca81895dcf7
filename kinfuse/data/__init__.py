"""Training data: what a run trains on and how it becomes blocks.

`chunker.py` tokenises and packs rows into blocks; `mix.py` assembles the training mix
(corpus, Q&A, rewrites, anchors) round by round; `synth/` writes questions about every fact by
rule; `augment/` has a model write paraphrases and Q&A (opt-in); `probes.py` reads evaluation
probes and keeps training rows away from them; `answers.py` compares answers. The files
general.txt and general_prompts.jsonl are the general sample shipped with kinfuse.
"""
