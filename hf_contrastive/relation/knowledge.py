"""Knowledge from a language model for few-shot relation extraction (TKRE's stage 0).

Two kinds of output, both validated before use:

- **explanations** of relation instances (why the sentence expresses its relation between the two
  entities); TKRE's pretraining reads them as a second segment after the sentence;
- **schema-constrained synthetic examples**: given the relation types and their descriptions, new
  sentences with both entities marked `<e1>..</e1>` / `<e2>..</e2>`.

Every output is checked and the bad ones are dropped with a count of why ([`ValidationReport`]):
a synthetic example must have both entities present and marked exactly once, well-formed, disjoint
and different, a relation in the schema, and must not duplicate a training sentence, an earlier
synthetic one or the prompt's own demonstration; an
explanation must be non-trivial and mention both entities.

The generator is any `transformers` causal LM (a path, Hub id or loaded model; chat template used
when the tokenizer has one) or any callable `fn(prompt: str) -> str`. Outputs are cached on disk,
one JSON file per (prompt, model, generation settings, sample index) key, so a rerun reads them back
instead of generating again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_contrastive.relation.data import RelationExample, parse_marked_sentence

logger = logging.getLogger(__name__)

SEMEVAL_RELATION_DESCRIPTIONS: dict[str, str] = {
    "Cause-Effect(e1,e2)": "<e1> causes or produces <e2>. Example: The <e1>earthquake</e1> caused a huge <e2>tsunami</e2>.",
    "Cause-Effect(e2,e1)": "<e2> causes or produces <e1>. Example: The <e1>flood</e1> was triggered by heavy <e2>rain</e2>.",
    "Component-Whole(e1,e2)": "<e1> is a part of <e2>. Example: The <e1>handle</e1> of the <e2>door</e2> was broken.",
    "Component-Whole(e2,e1)": "<e2> is a part of <e1>. Example: The <e1>bicycle</e1> has a new <e2>saddle</e2>.",
    "Content-Container(e1,e2)": "<e1> is kept inside <e2>. Example: The <e1>letters</e1> were stored in a wooden <e2>box</e2>.",
    "Content-Container(e2,e1)": "<e2> is kept inside <e1>. Example: The <e1>jar</e1> was full of <e2>honey</e2>.",
    "Entity-Destination(e1,e2)": "<e1> moves into or toward <e2>. Example: The <e1>ball</e1> rolled into the <e2>pond</e2>.",
    "Entity-Destination(e2,e1)": "<e2> moves into or toward <e1>. Example: The <e1>tank</e1> received the pumped <e2>water</e2>.",
    "Entity-Origin(e1,e2)": "<e1> comes from or leaves <e2>. Example: The <e1>smoke</e1> came out of the <e2>chimney</e2>.",
    "Entity-Origin(e2,e1)": "<e2> comes from or leaves <e1>. Example: The <e1>well</e1> supplied fresh <e2>water</e2>.",
    "Instrument-Agency(e1,e2)": "<e1> is a tool used by <e2>. Example: The <e1>scalpel</e1> was used by the <e2>surgeon</e2>.",
    "Instrument-Agency(e2,e1)": "<e2> is a tool used by <e1>. Example: The <e1>farmer</e1> cut the grass with a <e2>scythe</e2>.",
    "Member-Collection(e1,e2)": "<e1> is a member of <e2>. Example: Each <e1>player</e1> of the <e2>team</e2> got a medal.",
    "Member-Collection(e2,e1)": "<e2> is a member of <e1>. Example: The <e1>flock</e1> of <e2>sheep</e2> crossed the road.",
    "Message-Topic(e1,e2)": "<e1> is a message about <e2>. Example: The <e1>report</e1> discusses the <e2>budget</e2>.",
    "Message-Topic(e2,e1)": "<e2> is a message about <e1>. Example: The <e1>election</e1> was the subject of the <e2>article</e2>.",
    "Product-Producer(e1,e2)": "<e1> is made by <e2>. Example: The <e1>bread</e1> was baked by the <e2>baker</e2>.",
    "Product-Producer(e2,e1)": "<e2> is made by <e1>. Example: The <e1>factory</e1> makes <e2>cars</e2>.",
}
"""Descriptions of the 18 directed SemEval-2010 relations, each with a hand-written marked example."""

REASONS = (
    "empty_output",
    "missing_marker",
    "overlapping_entities",
    "label_not_in_schema",
    "duplicate_of_training",
    "duplicate_of_generated",
    "copy_of_prompt_example",
    "identical_entities",
    "entity_not_mentioned",
    "too_short",
)
"""Why an output is dropped (keys of ``ValidationReport.dropped``)."""


@dataclass
class ValidationReport:
    """Counts of kept and dropped outputs, with the reason of each drop."""

    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    generated: int = 0
    cached: int = 0

    def drop(self, reason: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"Unknown drop reason {reason!r}; expected one of {REASONS}.")
        self.dropped[reason] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "generated": self.generated,
            "from_cache": self.cached,
        }


def normalize_text(text: str) -> str:
    """Lower-cased text without entity tags, punctuation and repeated spaces (duplicate detection)."""
    text = re.sub(r"</?e[12]>", " ", text.lower())
    text = text.translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def parse_synthetic(
    output: str, requested_label: str, schema: Sequence[str]
) -> tuple[RelationExample | None, str | None]:
    """Turn one generation into an example, or give the reason it is unusable.

    The output may say `Relation: <label>` (then that label must be in the schema) and
    `Sentence: <marked sentence>`; otherwise the first line that has a tag is taken as the sentence
    and the requested label is kept.
    """
    text = (output or "").strip()
    if not text:
        return None, "empty_output"
    label = requested_label
    m = re.search(r"^\s*relation\s*:\s*(.+?)\s*$", text, flags=re.IGNORECASE | re.MULTILINE)
    if m:
        label = m.group(1).strip().strip("`'\".")
    if label not in set(schema):
        return None, "label_not_in_schema"
    m = re.search(r"^\s*sentence\s*:\s*(.+?)\s*$", text, flags=re.IGNORECASE | re.MULTILINE)
    if m:
        sentence = m.group(1)
    else:
        tagged = [line for line in text.splitlines() if "<e1>" in line or "<e2>" in line]
        sentence = tagged[0] if tagged else text.splitlines()[0]
    sentence = sentence.strip().strip('"').strip()
    try:
        tokens, e1, e2 = parse_marked_sentence(sentence)
    except ValueError as err:
        overlap = "overlap" in str(err) or "inside" in str(err)
        return None, "overlapping_entities" if overlap else "missing_marker"
    if any("<" in t or ">" in t for t in tokens):
        return None, "missing_marker"  # a broken tag such as "</e2" left in the text
    example = RelationExample(tokens, e1, e2, label=label)
    if normalize_text(example.subject_text) == normalize_text(example.object_text):
        return None, "identical_entities"
    return example, None


class KnowledgeGenerator:
    """Explanations and synthetic relation examples from a language model, validated and cached.

    Args:
        model (`str | os.PathLike | Callable[[str], str] | Any`): a causal-LM path / Hub id, a loaded `PreTrainedModel` (pass `tokenizer`), or a
            callable `fn(prompt) -> str`. A callable is a completion function: when an answer is
            started for it (see `synthesize(prefill=...)`) it receives the prompt, a newline and that
            start, and returns the continuation.
        tokenizer (`Any`, *optional*): the model's tokenizer (loaded from `model` when it is a path).
        cache_dir (`str | os.PathLike | None`, *optional*): folder of the on-disk cache; `None` disables caching.
        model_name (`str | None`, *optional*): name used in cache keys (defaults to the path or the callable's qualified name).
        max_new_tokens (`int`, 64), temperature (`float`, 0.8), top_p (`float`, 0.95): generation
            settings (`temperature=0` is greedy); they are part of the cache key.
        seed (`int`, 0): sampling seed; each (prompt, sample index) gets its own derived seed.
        batch_size (`int`, 8): prompts per `generate` call.
    """

    def __init__(
        self,
        model: str | os.PathLike | Callable[[str], str] | Any,
        tokenizer: Any = None,
        cache_dir: str | os.PathLike | None = None,
        model_name: str | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.8,
        top_p: float = 0.95,
        seed: int = 0,
        batch_size: int = 8,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        self.fn: Callable[[str], str] | None = None
        self.model = None
        self.tokenizer = tokenizer
        if isinstance(model, (str, os.PathLike)):
            self.model_name = model_name or os.fspath(model)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(os.fspath(model))
            self.model = AutoModelForCausalLM.from_pretrained(os.fspath(model)).eval()
        elif hasattr(model, "generate") and hasattr(model, "config"):
            if tokenizer is None:
                raise ValueError("A loaded model needs its tokenizer= as well.")
            self.model = model.eval()
            self.model_name = model_name or getattr(model.config, "_name_or_path", type(model).__name__)
        elif callable(model):
            self.fn = model
            self.model_name = model_name or getattr(model, "__qualname__", type(model).__name__)
        else:
            raise TypeError(
                f"model must be a path, a transformers causal LM or a callable prompt -> text; got {type(model).__name__}."
            )
        self.settings = {
            "max_new_tokens": int(max_new_tokens),
            "temperature": float(temperature),
            "top_p": float(top_p),
            "seed": int(seed),
        }
        self.batch_size = int(batch_size)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)

    # -- generation with a cache ---------------------------------------------------------------
    def cache_key(self, prompt: str, sample: int = 0) -> str:
        payload = json.dumps(
            {"prompt": prompt, "model": self.model_name, "settings": self.settings, "sample": sample},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _read(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["output"]
        except (json.JSONDecodeError, KeyError):
            return None

    def _write(self, key: str, prompt: str, output: str) -> None:
        if self.cache_dir is None:
            return
        path = self.cache_dir / f"{key}.json"
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(
            json.dumps(
                {"prompt": prompt, "model": self.model_name, "settings": self.settings, "output": output}
            ),
            encoding="utf-8",
        )
        os.replace(tmp, path)

    def generate(
        self,
        prompts: Sequence[str],
        samples: Sequence[int] | None = None,
        report: ValidationReport | None = None,
        prefixes: Sequence[str] | None = None,
    ) -> list[str]:
        """One output per prompt (`samples[i]` distinguishes repeated prompts), cached.

        `prefixes[i]` starts the answer to prompt i (the model continues it; the returned output
        includes it). It steers a small model into the expected format.
        """
        samples = list(samples) if samples is not None else [0] * len(prompts)
        prefixes = list(prefixes) if prefixes is not None else [""] * len(prompts)
        keys = [self.cache_key(p + "\x00" + x, s) for p, s, x in zip(prompts, samples, prefixes)]
        outputs: list[str | None] = [self._read(k) for k in keys]
        todo = [i for i, o in enumerate(outputs) if o is None]
        if report is not None:
            report.cached += len(prompts) - len(todo)
            report.generated += len(todo)
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start : start + self.batch_size]
            texts = self._run([prompts[i] for i in idx], [keys[i] for i in idx], [prefixes[i] for i in idx])
            for i, text in zip(idx, texts):
                outputs[i] = prefixes[i] + text  # the cache keeps the whole answer, started part included
                self._write(keys[i], prompts[i], outputs[i])
        return [o or "" for o in outputs]

    def _run(self, prompts: list[str], keys: list[str], prefixes: list[str]) -> list[str]:
        if self.fn is not None:
            return [str(self.fn(p + ("\n" + x if x else ""))) for p, x in zip(prompts, prefixes)]
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            texts = [
                tok.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                + x
                for p, x in zip(prompts, prefixes)
            ]
        else:
            texts = [p + "\n" + x for p, x in zip(prompts, prefixes)]
        side = tok.padding_side
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        try:
            enc = tok(
                texts,
                return_tensors="pt",
                padding=True,
                add_special_tokens=not getattr(tok, "chat_template", None),
            )
        finally:
            tok.padding_side = side
        # A seed per batch derived from its keys: the same prompts regenerate the same outputs.
        torch.manual_seed(int(keys[0][:8], 16) ^ self.settings["seed"])
        greedy = self.settings["temperature"] == 0
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.settings["max_new_tokens"],
                do_sample=not greedy,
                temperature=None if greedy else self.settings["temperature"],
                top_p=None if greedy else self.settings["top_p"],
                pad_token_id=tok.pad_token_id,
            )
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    # -- synthetic examples ------------------------------------------------------------------
    @staticmethod
    def synthesis_prompt(label: str, description: str) -> str:
        return (
            f"Relation type: {label}. Meaning: {description}\n"
            "Write one new, different English sentence that expresses this relation. Mark the first entity "
            "as <e1>...</e1> and the second as <e2>...</e2>. Answer in two lines:\n"
            f"Relation: {label}\nSentence: <the sentence with its markers>"
        )

    def synthesize(
        self,
        relations: Mapping[str, str],
        per_relation: int = 8,
        training_examples: Sequence[RelationExample] = (),
        schema: Sequence[str] | None = None,
        prefill: str | None = "The <e1>",
    ) -> tuple[list[RelationExample], ValidationReport]:
        """`per_relation` candidate sentences for each relation (label -> description), validated.

        The answer is started with `Relation: <label>` and `Sentence: <prefill>` (`prefill=None`
        lets the model write everything). Returns the kept examples (with
        `meta["source"] = "synthetic"`) and the report.
        """
        if not relations:
            raise ValueError("synthesize needs at least one relation with its description.")
        if per_relation < 1:
            raise ValueError(f"per_relation must be >= 1, got {per_relation}.")
        schema = list(schema) if schema is not None else list(relations)
        missing = sorted(set(relations) - set(schema))
        if missing:
            raise ValueError(f"Relations {missing} are asked for but are not in the schema {schema}.")
        prompts, samples, labels, prefixes = [], [], [], []
        for label, desc in relations.items():
            for s in range(per_relation):
                prompts.append(self.synthesis_prompt(label, desc))
                samples.append(s)
                labels.append(label)
                prefixes.append(f"Relation: {label}\nSentence: {prefill}" if prefill is not None else "")
        report = ValidationReport(total=len(prompts))
        outputs = self.generate(prompts, samples, report, prefixes)
        demos = [d.split("Example:", 1)[1] for d in relations.values() if "Example:" in d]
        return self.validate_synthetic(
            outputs, labels, schema, training_examples, report, prompt_examples=demos
        )

    @staticmethod
    def validate_synthetic(
        outputs: Sequence[str],
        labels: Sequence[str],
        schema: Sequence[str],
        training_examples: Sequence[RelationExample] = (),
        report: ValidationReport | None = None,
        prompt_examples: Sequence[str] = (),
    ) -> tuple[list[RelationExample], ValidationReport]:
        """Parse and check generations (see the module docstring); drop the bad ones with a reason.

        `prompt_examples` are the demonstrations shown in the prompts: a copy of one is dropped too.
        """
        report = report or ValidationReport(total=len(outputs))
        seen = {normalize_text(e.text) for e in training_examples}
        demos = {normalize_text(t) for t in prompt_examples}
        generated: set[str] = set()
        kept: list[RelationExample] = []
        for i, (text, label) in enumerate(zip(outputs, labels)):
            example, reason = parse_synthetic(text, label, schema)
            if example is not None:
                key = normalize_text(example.text)
                if key in seen:
                    reason = "duplicate_of_training"
                elif key in demos:
                    reason = "copy_of_prompt_example"
                elif key in generated:
                    reason = "duplicate_of_generated"
            if reason is not None:
                report.drop(reason)
                continue
            generated.add(key)
            example.id = f"synthetic-{i}"
            example.meta["source"] = "synthetic"
            kept.append(example)
        report.kept = len(kept)
        return kept, report

    # -- explanations -------------------------------------------------------------------------
    @staticmethod
    def explanation_prompt(example: RelationExample, description: str | None = None) -> str:
        meaning = f" ({description.split(' Example:')[0]})" if description else ""
        return (
            f"Sentence: {example.text}\n"
            f'The relation between "{example.subject_text}" (e1) and "{example.object_text}" (e2) is '
            f"{example.label}{meaning}.\nExplain in one short sentence why, naming both."
        )

    def explain(
        self,
        examples: Sequence[RelationExample],
        descriptions: Mapping[str, str] | None = None,
        schema: Sequence[str] | None = None,
        min_words: int = 4,
    ) -> tuple[list[RelationExample], ValidationReport]:
        """Explanations for labelled examples; returns copies with `explanation` set (kept ones only)."""
        descriptions = SEMEVAL_RELATION_DESCRIPTIONS if descriptions is None else descriptions
        report = ValidationReport(total=len(examples))
        usable, prompts = [], []
        for e in examples:
            if schema is not None and e.label not in set(schema):
                report.drop("label_not_in_schema")
                continue
            usable.append(e)
            prompts.append(self.explanation_prompt(e, descriptions.get(e.label)))
        outputs = self.generate(prompts, None, report)
        kept = []
        for e, text in zip(usable, outputs):
            reason = self.check_explanation(e, text, min_words)
            if reason is not None:
                report.drop(reason)
                continue
            kept.append(RelationExample(**{**e.to_dict(), "explanation": " ".join(text.split())}))
        report.kept = len(kept)
        return kept, report

    @staticmethod
    def check_explanation(example: RelationExample, text: str, min_words: int = 4) -> str | None:
        """Why an explanation is unusable (`None` when it is fine)."""
        text = (text or "").strip()
        if not text:
            return "empty_output"
        if len(text.split()) < min_words:
            return "too_short"
        low = normalize_text(text)
        for entity in (example.subject_text, example.object_text):
            if normalize_text(entity) not in low:
                return "entity_not_mentioned"
        return None


__all__ = [
    "REASONS",
    "SEMEVAL_RELATION_DESCRIPTIONS",
    "KnowledgeGenerator",
    "ValidationReport",
    "normalize_text",
    "parse_synthetic",
]
