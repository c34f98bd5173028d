"""`MultiCSRDataBuilder`: premises -> LLM hypotheses -> LLM ratings -> filtered (anchor, positive, negative)
triplets.

The stages, each counted in a [`SynthesisReport`] (premises left after it, drops by reason):

1. `unique_premises`: a premise that appeared earlier is dropped (`duplicate_premise`).
2. `valid_hypotheses`: the LLM writes an entailment and a contradiction of each premise; each answer must
   hold a hypothesis line ([`parse_hypothesis`]); a premise keeps going when both do and they differ.
3. `valid_scores`: the LLM rates (premise, entailment) and (premise, contradiction) from 0 to 5; both answers
   must be a number in range ([`parse_score`]).
4. `passed_thresholds`: MultiCSR's filter ([`threshold_reason`]): entailment rated >= 3, contradiction <= 3,
   ratings different (Wang et al. 2023).
5. `unique_texts`: a triplet whose entailment or contradiction repeats a premise or a hypothesis of an earlier
   kept triplet is dropped, so that no text is its own in-batch negative.

Every answer is cached on disk ([`AnswerCache`]), so a rerun, or a run resumed after a kill, generates only
what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from hf_contrastive.core.utils import atomic_save
from hf_contrastive.embeddings.synthesis.cache import AnswerCache
from hf_contrastive.embeddings.synthesis.generators import GenerationSettings, TextGenerator
from hf_contrastive.embeddings.synthesis.parsing import (
    DEFAULT_CONTRADICTION_PROMPT,
    DEFAULT_ENTAILMENT_PROMPT,
    DEFAULT_SCORE_ANSWER_START,
    DEFAULT_SCORE_PROMPT,
    DROP_REASONS,
    PromptTemplate,
    normalize_text,
    parse_hypothesis,
    parse_score,
    threshold_reason,
)

logger = logging.getLogger(__name__)

__all__ = ["CACHE_FILE_NAME", "STAGES", "MultiCSRData", "MultiCSRDataBuilder", "SynthesisReport"]

CACHE_FILE_NAME = "answers.jsonl"
"""Name of the answer cache inside `cache_dir`."""

STAGES: dict[str, str] = {
    "input": "premises given",
    "unique_premises": "after dropping repeated premises",
    "valid_hypotheses": "entailment and contradiction both parsed",
    "valid_scores": "both ratings parsed, in [0, 5]",
    "passed_thresholds": "positive >= threshold, negative <= threshold, different",
    "unique_texts": "no hypothesis repeating another text (= triplets out)",
}
"""The pipeline's stages in order, name -> what survived it."""

_KINDS = ("entailment", "contradiction", "score")
SCORES_FILE_NAME = "multicsr_scores.jsonl"
REPORT_FILE_NAME = "multicsr_report.json"


@dataclass
class SynthesisReport:
    r"""What survived each stage of the pipeline, and why the rest was dropped.

    Args:
        counts (`dict[str, int]`, *optional*):
            Premises left after each stage of [`STAGES`], in order.
        dropped (`dict[str, Counter]`, *optional*):
            Stage -> reason -> count. In `valid_hypotheses` and `valid_scores` the reasons are per answer and
            prefixed with its kind (`entailment/echoes_premise`, `contradiction/unparsable_score`), so one
            premise may count twice there; elsewhere each dropped premise counts once.
        answers (`dict[str, dict[str, int]]`, *optional*):
            Answer kind (`entailment`, `contradiction`, `score`) -> `requested`, `generated`, `from_cache`.
        generator (`str`, *optional*, defaults to `""`):
            The generator's identity.
        seconds (`float`, *optional*, defaults to `0.0`):
            Wall time of the run.
    """

    counts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, Counter] = field(default_factory=dict)
    answers: dict[str, dict[str, int]] = field(default_factory=dict)
    generator: str = ""
    seconds: float = 0.0

    @property
    def triplets(self) -> int:
        """Triplets out (premises that survived every stage)."""
        return self.counts.get("unique_texts", 0)

    def drop(self, stage: str, reason: str, n: int = 1) -> None:
        """Count `n` drops at `stage` for `reason` (a key of [`DROP_REASONS`], maybe `kind/`-prefixed)."""
        if stage not in STAGES:
            raise ValueError(f"Unknown stage {stage!r}; expected one of {list(STAGES)}.")
        if reason.split("/")[-1] not in DROP_REASONS:
            raise ValueError(f"Unknown drop reason {reason!r}; expected one of {sorted(DROP_REASONS)}.")
        self.dropped.setdefault(stage, Counter())[reason] += n

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable data."""
        return {
            "generator": self.generator,
            "counts": dict(self.counts),
            "dropped": {s: dict(sorted(c.items())) for s, c in self.dropped.items()},
            "answers": {k: dict(v) for k, v in self.answers.items()},
            "triplets": self.triplets,
            "seconds": round(self.seconds, 3),
        }

    def __str__(self) -> str:
        rows = [("stage", "premises", "dropped", "reasons")]
        previous = None
        for stage in STAGES:
            if stage not in self.counts:
                continue
            n = self.counts[stage]
            lost = "" if previous is None else str(previous - n)
            reasons = ", ".join(f"{r} {c}" for r, c in sorted(self.dropped.get(stage, Counter()).items()))
            rows.append((stage, str(n), lost, reasons))
            previous = n
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"MultiCSR data from {self.generator or 'a generator'}: {self.triplets} triplets"]
        for r in rows:
            lines.append(f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
        calls = ", ".join(
            f"{k} {v.get('requested', 0)} "
            f"({v.get('generated', 0)} generated, {v.get('from_cache', 0)} from cache)"
            for k, v in self.answers.items()
        )
        if calls:
            lines.append(f"  answers: {calls}")
        lines.append(f"  time: {self.seconds:.1f} s")
        return "\n".join(lines)


@dataclass
class MultiCSRData:
    r"""The pipeline's output.

    Args:
        dataset (`datasets.Dataset`):
            Columns `anchor` (premise), `positive` (entailment), `negative` (contradiction), the layout
            `ContrastiveTrainer` takes as is (`loss="multicsr"` or `"simcse_sup"`).
        scores (`datasets.Dataset`):
            Row-aligned ratings: `positive_score`, `negative_score` (kept apart: a column named `negative_*`
            would be read as one more hard negative).
        report (`SynthesisReport`):
            Counts per stage and reason.
    """

    dataset: Dataset
    scores: Dataset
    report: SynthesisReport

    def save_to_disk(self, folder: str | os.PathLike) -> Path:
        """Write the triplets (`datasets` `save_to_disk` layout, so `datasets.load_from_disk(folder)` gives
        them), the ratings (`multicsr_scores.jsonl`) and the report (`multicsr_report.json`) into `folder`,
        replaced whole (a killed save leaves the previous folder)."""
        folder = Path(folder)
        with atomic_save(folder) as tmp:
            self.dataset.save_to_disk(str(tmp))
            with open(tmp / SCORES_FILE_NAME, "w", encoding="utf-8") as f:
                for row in self.scores:
                    f.write(json.dumps(row) + "\n")
            (tmp / REPORT_FILE_NAME).write_text(json.dumps(self.report.as_dict(), indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load_from_disk(cls, folder: str | os.PathLike) -> MultiCSRData:
        """Read back a folder written by [`save_to_disk`]."""
        folder = Path(folder)
        for name in (SCORES_FILE_NAME, REPORT_FILE_NAME):
            if not (folder / name).is_file():
                raise ValueError(f"{folder} is not a MultiCSR data folder: {name} is missing.")
        dataset = load_from_disk(str(folder))
        rows = [
            json.loads(line) for line in (folder / SCORES_FILE_NAME).read_text(encoding="utf-8").splitlines()
        ]
        scores = Dataset.from_dict({k: [r[k] for r in rows] for k in ("positive_score", "negative_score")})
        raw = json.loads((folder / REPORT_FILE_NAME).read_text(encoding="utf-8"))
        report = SynthesisReport(
            counts=raw["counts"],
            dropped={s: Counter(c) for s, c in raw["dropped"].items()},
            answers=raw["answers"],
            generator=raw["generator"],
            seconds=raw["seconds"],
        )
        return cls(dataset, scores, report)


def _check_template(name: str, text: str, fields: Sequence[str]) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str.format template, got {type(text).__name__}.")
    missing = [f for f in fields if "{" + f + "}" not in text]
    if missing:
        raise ValueError(
            f"{name} must contain the field(s) {['{' + f + '}' for f in missing]}; got {text!r}."
        )


class MultiCSRDataBuilder:
    r"""MultiCSR's data pipeline (Wang et al. 2023): an LLM writes and rates NLI-style triplets for premises.

    Args:
        generator (`Any`):
            A `(model, tokenizer)` pair, a decoder-only `transformers` model (with `tokenizer=`), a
            `text-generation` pipeline, or a callable `list[str] prompts -> list[str] answers` (see
            [`TextGenerator`]).
        tokenizer (`Any`, *optional*):
            The model's tokenizer, when `generator` is a model.
        generator_name (`str`, *optional*):
            The generator's identity in cache keys (defaults: see [`TextGenerator`]). Required for a lambda or
            a local function when `cache_dir` is set.
        cache_dir (`str | os.PathLike`, *optional*):
            Folder of the answer cache (`answers.jsonl`); `None` keeps answers in memory only.
        entailment_prompt (`str`, *optional*, defaults to `DEFAULT_ENTAILMENT_PROMPT`):
            Template with `{premise}` asking for a sentence the premise entails.
        contradiction_prompt (`str`, *optional*, defaults to `DEFAULT_CONTRADICTION_PROMPT`):
            Template with `{premise}` asking for a sentence that contradicts it.
        score_prompt (`str`, *optional*, defaults to `DEFAULT_SCORE_PROMPT`):
            Template with `{sentence1}` and `{sentence2}` asking for a similarity rating from 0 to 5.
        entailment_answer_start (`str`, *optional*, defaults to `""`):
            How entailment answers start (see [`PromptTemplate`]).
        contradiction_answer_start (`str`, *optional*, defaults to `""`):
            How contradiction answers start.
        score_answer_start (`str`, *optional*, defaults to `"Score: "`):
            How rating answers start; the model continues with the number.
        system_prompt (`str`, *optional*):
            A system message for chat templates (`None`: the template's default).
        max_new_tokens (`int`, *optional*, defaults to `48`):
            Token budget of a hypothesis.
        score_max_new_tokens (`int`, *optional*, defaults to `6`):
            Token budget of a rating (ratings are always decoded greedily).
        temperature (`float`, *optional*, defaults to `0.0`):
            Hypotheses: `0` greedy, above `0` seeded sampling.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus mass when sampling hypotheses.
        seed (`int`, *optional*, defaults to `0`):
            Sampling seed.
        stop_at_newline (`bool`, *optional*, defaults to `True`):
            Stop each answer at its first newline (models only).
        batch_size (`int`, *optional*, defaults to `16`):
            Prompts per generation call (not part of the cache key).
        positive_threshold (`float`, *optional*, defaults to `3.0`):
            Lowest rating a kept entailment may have (the paper's 3).
        negative_threshold (`float`, *optional*, defaults to `3.0`):
            Highest rating a kept contradiction may have (the paper's 3).
        require_different_scores (`bool`, *optional*, defaults to `True`):
            Drop triplets whose two ratings are equal (the paper's setting).
        min_words (`int`, *optional*, defaults to `3`):
            Fewest words of a hypothesis.
    """

    def __init__(
        self,
        generator: Any,
        tokenizer: Any = None,
        *,
        generator_name: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        entailment_prompt: str = DEFAULT_ENTAILMENT_PROMPT,
        contradiction_prompt: str = DEFAULT_CONTRADICTION_PROMPT,
        score_prompt: str = DEFAULT_SCORE_PROMPT,
        entailment_answer_start: str = "",
        contradiction_answer_start: str = "",
        score_answer_start: str = DEFAULT_SCORE_ANSWER_START,
        system_prompt: str | None = None,
        max_new_tokens: int = 48,
        score_max_new_tokens: int = 6,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop_at_newline: bool = True,
        batch_size: int = 16,
        positive_threshold: float = 3.0,
        negative_threshold: float = 3.0,
        require_different_scores: bool = True,
        min_words: int = 3,
    ) -> None:
        _check_template("entailment_prompt", entailment_prompt, ["premise"])
        _check_template("contradiction_prompt", contradiction_prompt, ["premise"])
        _check_template("score_prompt", score_prompt, ["sentence1", "sentence2"])
        for name, value in (
            ("positive_threshold", positive_threshold),
            ("negative_threshold", negative_threshold),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 5.0:
                raise ValueError(f"{name} is a rating in [0, 5], got {value!r}.")
        for name, value in (("batch_size", batch_size), ("min_words", min_words)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.generator = TextGenerator(generator, tokenizer, name=generator_name, system_prompt=system_prompt)
        if cache_dir is not None and not self.generator.unique_name:
            raise ValueError(
                f"The generator {self.generator.identity!r} is a lambda or a local function: pass "
                "generator_name= so that its cached answers cannot be mistaken for another function's."
            )
        self.templates = {
            "entailment": PromptTemplate(entailment_prompt, entailment_answer_start),
            "contradiction": PromptTemplate(contradiction_prompt, contradiction_answer_start),
            "score": PromptTemplate(score_prompt, score_answer_start),
        }
        hypothesis = GenerationSettings(
            max_new_tokens=max_new_tokens,
            temperature=float(temperature),
            top_p=float(top_p),
            seed=int(seed),
            stop_at_newline=bool(stop_at_newline),
        )
        rating = GenerationSettings(
            max_new_tokens=score_max_new_tokens, stop_at_newline=bool(stop_at_newline)
        )
        self.settings = {"entailment": hypothesis, "contradiction": hypothesis, "score": rating}
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.positive_threshold = float(positive_threshold)
        self.negative_threshold = float(negative_threshold)
        self.require_different_scores = bool(require_different_scores)
        self.min_words = min_words
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cache: AnswerCache | None = (
            AnswerCache(self.cache_dir / CACHE_FILE_NAME) if self.cache_dir else None
        )
        self._memory: dict[str, str] = {}

    # -- cache ---------------------------------------------------------------------------------------------
    def cache_key(self, kind: str, inputs: Sequence[str]) -> str:
        """The cache key of one answer: generator identity, prompt template and answer start, system prompt,
        generation settings and the texts it is about (`(premise,)` or `(premise, hypothesis)`)."""
        if kind not in _KINDS:
            raise ValueError(f"Unknown answer kind {kind!r}; expected one of {_KINDS}.")
        template = self.templates[kind]
        payload = {
            "generator": self.generator.identity,
            "kind": kind,
            "template": template.text,
            "answer_start": template.answer_start,
            "system_prompt": self.system_prompt,
            "chat_template": self.generator.uses_chat_template,
            "settings": self.settings[kind].as_dict(),
            "inputs": list(inputs),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def _cached(self, key: str) -> str | None:
        if self.cache is not None:
            return self.cache.get(key)
        return self._memory.get(key)

    def _store(self, records: list[dict[str, Any]]) -> None:
        if self.cache is not None:
            self.cache.add(records)
        else:
            self._memory.update({r["key"]: r["answer"] for r in records})

    # -- generation ----------------------------------------------------------------------------------------
    def answers(
        self, kind: str, inputs: Sequence[Sequence[str]], report: SynthesisReport | None = None
    ) -> list[str]:
        """The answers of one kind for a list of inputs, from the cache or generated (and cached batch by
        batch).

        Args:
            kind (`str`):
                `entailment`, `contradiction` (inputs `(premise,)`) or `score` (inputs `(premise,
                hypothesis)`).
            inputs (`Sequence[Sequence[str]]`):
                The texts of each prompt.
            report (`SynthesisReport`, *optional*):
                Receives the requested / generated / from-cache counts.

        Returns:
            `list[str]`: one whole answer (answer start included) per input.
        """
        template = self.templates[kind]
        names = ("premise",) if kind != "score" else ("sentence1", "sentence2")
        for item in inputs:
            if len(item) != len(names):
                raise ValueError(f"A {kind} prompt takes {len(names)} text(s) {names}, got {item!r}.")
        keys = [self.cache_key(kind, item) for item in inputs]
        found = {k: self._cached(k) for k in dict.fromkeys(keys)}
        todo = [k for k, v in found.items() if v is None]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        start = time.perf_counter()
        for b in range(0, len(todo), self.batch_size):
            batch = todo[b : b + self.batch_size]
            messages = [template.format(**dict(zip(names, inputs[first[k]]))) for k in batch]
            seed = int(hashlib.sha256(f"{self.settings[kind].seed}:{batch[0]}".encode()).hexdigest()[:8], 16)
            continuations = self.generator(
                messages, [template.answer_start] * len(batch), self.settings[kind], seed
            )
            records = []
            for k, text in zip(batch, continuations):
                found[k] = template.answer_start + text
                records.append(
                    {
                        "key": k,
                        "kind": kind,
                        "generator": self.generator.identity,
                        "inputs": list(inputs[first[k]]),
                        "answer": found[k],
                    }
                )
            self._store(records)
            logger.info(
                "MultiCSR data: %s answers %d/%d generated (%.1f s)",
                kind,
                min(b + self.batch_size, len(todo)),
                len(todo),
                time.perf_counter() - start,
            )
        if report is not None:
            generated = set(todo)
            report.answers[kind] = {
                "requested": len(keys),
                "generated": len(todo),
                "from_cache": sum(1 for k in keys if k not in generated),
            }
        return [found[k] for k in keys]

    # -- the pipeline --------------------------------------------------------------------------------------
    def build(self, premises: Sequence[str]) -> MultiCSRData:
        """Generate, rate and filter triplets for `premises`; see the module docstring for the stages.

        Args:
            premises (`Sequence[str]`):
                Non-empty sentences (a blank or non-string premise is refused with its index).

        Returns:
            [`MultiCSRData`]: the triplets, their ratings and the report (also logged).
        """
        if isinstance(premises, str) or not isinstance(premises, Sequence):
            raise TypeError(f"premises must be a sequence of strings, got {type(premises).__name__}.")
        for i, p in enumerate(premises):
            if not isinstance(p, str):
                raise TypeError(f"premises[{i}] is a {type(p).__name__}, expected a string: {p!r}.")
            if not p.strip():
                raise ValueError(f"premises[{i}] is empty or blank; expected a sentence.")
        start = time.perf_counter()
        report = SynthesisReport(generator=self.generator.identity)
        report.counts["input"] = len(premises)

        unique = list(dict.fromkeys(p.strip() for p in premises))
        if len(unique) < len(premises):
            report.drop("unique_premises", "duplicate_premise", len(premises) - len(unique))
        report.counts["unique_premises"] = len(unique)

        entailments = self.answers("entailment", [(p,) for p in unique], report)
        contradictions = self.answers("contradiction", [(p,) for p in unique], report)
        candidates: list[tuple[str, str, str]] = []
        for premise, e_answer, c_answer in zip(unique, entailments, contradictions):
            entailment, e_reason = parse_hypothesis(e_answer, premise, self.min_words)
            contradiction, c_reason = parse_hypothesis(c_answer, premise, self.min_words)
            for kind, reason, answer in (
                ("entailment", e_reason, e_answer),
                ("contradiction", c_reason, c_answer),
            ):
                if reason is not None:
                    report.drop("valid_hypotheses", f"{kind}/{reason}")
                    logger.debug("Dropped the %s of %r (%s): %r", kind, premise[:80], reason, answer[:200])
            if entailment is None or contradiction is None:
                continue
            if normalize_text(entailment) == normalize_text(contradiction):
                report.drop("valid_hypotheses", "identical_hypotheses")
                logger.debug("Dropped %r: identical hypotheses %r", premise[:80], entailment[:200])
                continue
            candidates.append((premise, entailment, contradiction))
        report.counts["valid_hypotheses"] = len(candidates)

        ratings = self.answers(
            "score", [(p, e) for p, e, _ in candidates] + [(p, c) for p, _, c in candidates], report
        )
        scored: list[tuple[str, str, str, float, float]] = []
        n = len(candidates)
        for i, (premise, entailment, contradiction) in enumerate(candidates):
            pos, p_reason = parse_score(ratings[i])
            neg, n_reason = parse_score(ratings[n + i])
            for kind, reason, answer in (
                ("entailment", p_reason, ratings[i]),
                ("contradiction", n_reason, ratings[n + i]),
            ):
                if reason is not None:
                    report.drop("valid_scores", f"{kind}/{reason}")
                    logger.debug(
                        "Dropped the %s rating of %r (%s): %r", kind, premise[:80], reason, answer[:200]
                    )
            if pos is not None and neg is not None:
                scored.append((premise, entailment, contradiction, pos, neg))
        report.counts["valid_scores"] = len(scored)

        passed = []
        for row in scored:
            reason = threshold_reason(
                row[3],
                row[4],
                self.positive_threshold,
                self.negative_threshold,
                self.require_different_scores,
            )
            if reason is None:
                passed.append(row)
            else:
                report.drop("passed_thresholds", reason)
        report.counts["passed_thresholds"] = len(passed)

        seen = {normalize_text(p) for p in unique}
        kept = []
        for row in passed:
            texts = (normalize_text(row[1]), normalize_text(row[2]))
            if any(t in seen for t in texts):
                report.drop("unique_texts", "duplicate_text")
                continue
            seen.update(texts)
            kept.append(row)
        report.counts["unique_texts"] = len(kept)
        report.seconds = time.perf_counter() - start

        dataset = Dataset.from_dict(
            {
                "anchor": [r[0] for r in kept],
                "positive": [r[1] for r in kept],
                "negative": [r[2] for r in kept],
            }
        )
        scores = Dataset.from_dict(
            {"positive_score": [r[3] for r in kept], "negative_score": [r[4] for r in kept]}
        )
        lost = report.counts["input"] - report.triplets
        if lost:
            reasons = ", ".join(
                f"{stage}: " + ", ".join(f"{r} {c}" for r, c in sorted(counter.items()))
                for stage, counter in report.dropped.items()
            )
            logger.warning(
                "MultiCSR data: %d of %d premises dropped (%s)", lost, report.counts["input"], reasons
            )
        logger.info("%s", report)
        return MultiCSRData(dataset, scores, report)
