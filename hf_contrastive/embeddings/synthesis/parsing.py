"""Prompts, strict answer parsing and the filters of MultiCSR's data pipeline (Wang et al. 2023).

Every function here is pure: an answer goes in, a value or the reason it is unusable comes out. The reasons
are the keys of [`DROP_REASONS`]; the builder counts them.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass

__all__ = [
    "DEFAULT_CONTRADICTION_PROMPT",
    "DEFAULT_ENTAILMENT_PROMPT",
    "DEFAULT_SCORE_ANSWER_START",
    "DEFAULT_SCORE_PROMPT",
    "DROP_REASONS",
    "PromptTemplate",
    "normalize_text",
    "parse_hypothesis",
    "parse_score",
    "threshold_reason",
]

DEFAULT_ENTAILMENT_PROMPT = "Paraphrase this sentence in different words:\n{premise}"
"""The entailment prompt: a restatement of the premise is entailed by it. MultiCSR's code lists paraphrasing
among its entailment prompts; small instruction models follow it far better than "write an entailment"."""

DEFAULT_CONTRADICTION_PROMPT = (
    "Write the negation of this sentence, a sentence that says the opposite:\n{premise}"
)
"""The contradiction prompt: a sentence that cannot be true together with the premise."""

DEFAULT_SCORE_PROMPT = (
    "Scoring the semantic similarity of the following sentences between 0.0 and 5.0: "
    "(a) {sentence1} (b) {sentence2}"
)
"""The rating prompt, in the words of MultiCSR's scoring stage (Wang et al. 2023): similarity on the STS scale
0-5. Small models are sensitive to its exact wording (a rephrased version made SmolLM2-135M rate every pair
0)."""

DEFAULT_SCORE_ANSWER_START = "Score: "
"""How the rating answer starts: the model continues after it, so that it answers with a number."""

DROP_REASONS: dict[str, str] = {
    "duplicate_premise": "the premise already appeared earlier in the input (kept once)",
    "empty": "the answer holds no text",
    "no_hypothesis": "the answer is only an introduction (a line ending with ':') without the sentence",
    "too_short": "the hypothesis has fewer words than min_words",
    "echoes_premise": "the hypothesis is the premise again (same words, case and punctuation aside)",
    "identical_hypotheses": "the entailment and the contradiction are the same sentence",
    "unparsable_score": "the rating answer is not a number (optionally 'Score: 4', '4/5', '4 out of 5')",
    "score_out_of_range": "the rating is a number outside [0, 5]",
    "positive_below_threshold": "the entailment's rating is below positive_threshold",
    "negative_above_threshold": "the contradiction's rating is above negative_threshold",
    "equal_scores": "both ratings are equal (require_different_scores)",
    "duplicate_text": "a hypothesis repeats a premise or a hypothesis of an earlier kept triplet",
}
"""Why a premise or an answer is dropped, reason -> meaning (the keys of the report's counts)."""

_PUNCT = str.maketrans("", "", string.punctuation + "\u201c\u201d\u2018\u2019")
_QUOTES = "\"'`*\u201c\u201d\u2018\u2019"
_HYPOTHESIS_LABEL = re.compile(
    r"^(?:sentence|hypothesis|paraphrase|paraphrased sentence|entailment|entailed|contradiction|negation|"
    r"negated sentence|opposite|answer|output|new sentence|rewritten sentence)\s*:\s*",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^(?:here\s+is|here's|the|this)\s+(?:\w+\s+){0,2}?"
    r"(?:sentence|negation|opposite|paraphrase|contradiction)"
    r"(?:\s+of\s+(?:this|the)\s+sentence)?(?:\s+is)?(?:\s*:\s*|\s+(?=[\"'\u201c]))",
    re.IGNORECASE,
)
_SCORE = re.compile(
    r"^(?:(?:similarity\s+score|score|similarity|rating|answer)\s*(?::|=|is)?\s*)?"
    r"([-+]?\d+(?:\.\d+)?)"
    r"\s*(?:/\s*5(?:\.0+)?|out\s+of\s+5(?:\.0+)?)?\s*[.!]?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PromptTemplate:
    r"""One prompt of the pipeline: the user message and how the answer starts.

    Args:
        text (`str`):
            A `str.format` template of the user message (`{premise}` for hypotheses, `{sentence1}` and
            `{sentence2}` for ratings).
        answer_start (`str`, *optional*, defaults to `""`):
            Text the answer begins with. A model continues after it (it is appended to the chat-formatted
            prompt); a callable receives the message, a newline and this text, and returns the continuation.
            The parsed (and cached) answer is this text followed by the continuation.
    """

    text: str
    answer_start: str = ""

    def format(self, **fields: str) -> str:
        """The user message with its fields filled in."""
        return self.text.format(**fields)


def normalize_text(text: str) -> str:
    """Lower-cased text without punctuation or repeated spaces (echo and duplicate detection)."""
    return " ".join(text.lower().translate(_PUNCT).split())


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    if text and text[0] in _QUOTES and text.count(text[0]) == 1:
        text = text[1:].strip()  # an opening quote never closed (the answer was cut off)
    return text


def parse_hypothesis(answer: str, premise: str, min_words: int = 3) -> tuple[str | None, str | None]:
    r"""The hypothesis sentence of an answer, or the reason there is none.

    The hypothesis is the first non-empty line of the answer, without a leading label (`Paraphrase:`,
    `Contradiction:`, `Sentence:` ...), an introduction ending in a colon or an opening quote (`The sentence
    is:`, `The negation of this sentence is "..."`) and surrounding quotes; later lines are ignored. What
    remains is checked like any hypothesis, so an introduced copy of the premise counts as `echoes_premise`.

    Args:
        answer (`str`):
            The model's answer (its answer start included).
        premise (`str`):
            The premise it answers; a hypothesis equal to it is refused.
        min_words (`int`, *optional*, defaults to `3`):
            Fewest words a hypothesis may have.

    Returns:
        `tuple[str | None, str | None]`: `(hypothesis, None)`, or `(None, reason)` with a key of
        [`DROP_REASONS`]: `empty`, `no_hypothesis`, `too_short` or `echoes_premise`.
    """
    if not isinstance(answer, str):
        raise TypeError(f"An answer must be a string, got {type(answer).__name__}: {answer!r}.")
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    if not lines:
        return None, "empty"
    line = _HYPOTHESIS_LABEL.sub("", lines[0]).strip()
    if line.endswith(":"):
        return None, "no_hypothesis"
    line = _PREAMBLE.sub("", line, count=1).strip()
    line = _strip_quotes(line)
    if not line or not normalize_text(line):
        return None, "empty"
    if line.endswith(":"):
        return None, "no_hypothesis"
    if normalize_text(line) == normalize_text(premise):
        return None, "echoes_premise"
    if len(line.split()) < min_words:
        return None, "too_short"
    return " ".join(line.split()), None


def parse_score(answer: str, low: float = 0.0, high: float = 5.0) -> tuple[float | None, str | None]:
    r"""The similarity rating of an answer, or the reason there is none.

    Strict: the first non-empty line must be a number, optionally after a label (`Score: 4`, `similarity is
    3.5`) and optionally followed by `/5` or `out of 5` and a full stop. `"1. Both sentences ..."` or `"The
    score is high"` are not ratings.

    Args:
        answer (`str`):
            The model's answer (its answer start included).
        low (`float`, *optional*, defaults to `0.0`):
            Lowest valid rating.
        high (`float`, *optional*, defaults to `5.0`):
            Highest valid rating.

    Returns:
        `tuple[float | None, str | None]`: `(rating, None)`, or `(None, reason)` with reason
        `unparsable_score` or `score_out_of_range`.
    """
    if not isinstance(answer, str):
        raise TypeError(f"An answer must be a string, got {type(answer).__name__}: {answer!r}.")
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    if not lines:
        return None, "unparsable_score"
    match = _SCORE.match(lines[0].strip(_QUOTES + " "))
    if match is None:
        return None, "unparsable_score"
    value = float(match.group(1))
    if not math.isfinite(value) or not low <= value <= high:
        return None, "score_out_of_range"
    return value, None


def threshold_reason(
    positive_score: float,
    negative_score: float,
    positive_threshold: float = 3.0,
    negative_threshold: float = 3.0,
    require_different_scores: bool = True,
) -> str | None:
    r"""MultiCSR's filter on one (entailment, contradiction) pair of ratings; `None` when the pair is kept.

    Kept when `positive_score >= positive_threshold`, `negative_score <= negative_threshold` and, with
    `require_different_scores`, the two ratings differ (the paper's setting: 3, 3, different).

    Args:
        positive_score (`float`):
            Rating of (premise, entailment).
        negative_score (`float`):
            Rating of (premise, contradiction).
        positive_threshold (`float`, *optional*, defaults to `3.0`):
            Lowest rating a positive may have.
        negative_threshold (`float`, *optional*, defaults to `3.0`):
            Highest rating a negative may have.
        require_different_scores (`bool`, *optional*, defaults to `True`):
            Refuse pairs whose two ratings are equal.

    Returns:
        `str | None`: the first failed condition (`positive_below_threshold`, `negative_above_threshold`,
        `equal_scores`), or `None`.
    """
    if positive_score < positive_threshold:
        return "positive_below_threshold"
    if negative_score > negative_threshold:
        return "negative_above_threshold"
    if require_different_scores and positive_score == negative_score:
        return "equal_scores"
    return None
