"""RULER's prompt constants, kept verbatim because they *are* the benchmark.

Source: NVIDIA/RULER ``scripts/data/synthetic/constants.py`` (templates, answer prefixes,
tokens to generate), ``scripts/data/template.py`` (the ``base`` model template) and the
task scripts under ``scripts/data/synthetic/`` (needle sentence, noise sentence, depths,
document prompt). Read from the forks in the code index that track upstream (FACTS.md §5
pins the upstream commit ``c3f5e3b``); the variable-tracking answer prefix keeps upstream's
spelling "assgined".
"""

from __future__ import annotations

import numpy as np

# scripts/data/template.py: the base (non-chat) model template.
BASE_TEMPLATE = "{task_template}"

NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to "
    "memorize it. I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = (
    " The special magic {type_needle_v} for {query} mentioned in the provided text are"
)
NIAH_NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    "{context}\nQuestion: Find all variables that are assigned the value {query} in the text "
    "above."
)
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} "
    "variables are assgined the value {query}, they are: "
)

CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most "
    "common words in the above list?"
)
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"

FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three "
    "most frequently appeared coded words. {context}\nQuestion: Do not provide any "
    "explanation. Please ignore the dots '....'. What are the three most frequently appeared "
    "words in the above coded text?"
)
FWE_ANSWER_PREFIX = (
    " Answer: According to the coded text above, the three most frequently appeared words are:"
)

QA_TEMPLATE = (
    "Answer the question based on the given documents. Only give me the answer and do not "
    "output any other words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the "
    "question based on the given documents. Only give me the answer and do not output any "
    "other words.\n\nQuestion: {query}"
)
QA_ANSWER_PREFIX = " Answer:"
QA_DOCUMENT = "Document {i}:\n{document}"

# tokens_to_generate per task family (scripts/data/synthetic/constants.py).
TOKENS_TO_GENERATE = {"niah": 128, "vt": 30, "cwe": 120, "fwe": 50, "qa": 32}

# The noise haystack sentence (niah.py ``noise``/``repeat``, variable_tracking.py ``noise``).
NOISE_SENTENCE = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)

# Needle depths in percent: np.round(np.linspace(0, 100, 40)) (niah.py DEPTHS).
DEPTHS = tuple(int(x) for x in np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int))
