"""One interface over the generators MultiCSR's pipeline accepts: a decoder-only `transformers` model with its
tokenizer, a `text-generation` pipeline, or a plain callable `list[str] -> list[str]`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextGenerationPipeline

__all__ = ["GenerationSettings", "TextGenerator", "model_fingerprint"]

_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "_commit_hash", "torch_dtype", "dtype")


@dataclass(frozen=True)
class GenerationSettings:
    r"""How answers are decoded; every field is part of the cache key.

    Args:
        max_new_tokens (`int`, *optional*, defaults to `48`):
            Most tokens an answer may have (after its answer start).
        temperature (`float`, *optional*, defaults to `0.0`):
            `0` decodes greedily; above `0` samples at this temperature.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling mass (sampling only).
        seed (`int`, *optional*, defaults to `0`):
            Sampling seed; each batch is seeded from it and the keys of its prompts, so the same prompts in
            the same batches give the same answers.
        stop_at_newline (`bool`, *optional*, defaults to `True`):
            Stop an answer at its first newline (a model only; the parsers read the first line anyway).
    """

    max_new_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_at_newline: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or int(self.max_new_tokens) != self.max_new_tokens:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(
                f"temperature must be a finite number >= 0 (0: greedy), got {self.temperature!r}."
            )
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}.")

    @property
    def greedy(self) -> bool:
        """Whether decoding is greedy (`temperature == 0`)."""
        return self.temperature == 0

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for keys and records)."""
        return asdict(self)


def model_fingerprint(model: Any) -> str:
    """A short hash of a model's configuration and of a strided sample of every one of its weights.

    Two checkpoints of one architecture (another seed, a fine-tuned copy) get different fingerprints; hashing
    a sample of each tensor instead of all its bytes keeps this fast for large models.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        cfg = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode("utf-8"))
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode("utf-8"))
            h.update(str(tuple(tensor.shape)).encode("utf-8"))
            if tensor.device.type == "meta" or tensor.numel() == 0:
                continue
            flat = tensor.detach().reshape(-1)
            k = min(flat.numel(), 64)
            idx = (
                torch.arange(k, dtype=torch.int64) * (flat.numel() - 1) // max(k - 1, 1)
            )  # evenly spaced, exact
            h.update(flat[idx.to(flat.device)].to(torch.float64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256()
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode("utf-8"))
    h.update(str(len(tokenizer)).encode("utf-8"))
    h.update(str(getattr(tokenizer, "chat_template", None) or "").encode("utf-8"))
    return h.hexdigest()[:8]


class _NewlineStop(StoppingCriteria):
    """Ends each row once its newest token holds a newline (works with any tokenizer, unlike `stop_strings`,
    which needs a byte-level vocabulary)."""

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self._newline: dict[int, bool] = {}

    def _has_newline(self, token_id: int) -> bool:
        if token_id not in self._newline:
            self._newline[token_id] = "\n" in self.tokenizer.decode([token_id], skip_special_tokens=True)
        return self._newline[token_id]

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        if input_ids.shape[1] <= self.prompt_length:
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        return torch.tensor([self._has_newline(t) for t in last], dtype=torch.bool, device=input_ids.device)


class TextGenerator:
    r"""Answers for prompts, from a model, a pipeline or a callable.

    Args:
        generator (`Any`):
            One of: a `(model, tokenizer)` pair; a decoder-only `transformers` model (pass `tokenizer`); a
            `text-generation` pipeline (its model and tokenizer are used, so decoding is the same as for the
            pair); or a callable taking a list of prompt strings and returning one answer string per prompt.
        tokenizer (`Any`, *optional*):
            The model's tokenizer, when `generator` is a model.
        name (`str`, *optional*):
            Identity of the generator in cache keys. Defaults to the model's name plus a fingerprint of its
            configuration, weights and tokenizer; for a callable, its module and qualified name (give a name
            to a lambda or a local function, so that cached answers are never mixed up with another
            function's).
        system_prompt (`str`, *optional*):
            A system message put before each prompt (chat template only); `None` keeps the template's default.

    A model's prompt is its tokenizer's chat template applied to the user message (or the message and a
    newline without a template), followed by the answer start; batches are left-padded. A callable receives
    the message, a newline and the answer start (just the message when the answer start is empty), and returns
    the continuation.
    """

    def __init__(
        self,
        generator: Any,
        tokenizer: Any = None,
        name: str | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.fn: Callable[[list[str]], list[str]] | None = None
        self.system_prompt = system_prompt
        if isinstance(generator, (tuple, list)):
            if len(generator) != 2:
                raise ValueError(
                    f"Expected a (model, tokenizer) pair, got a sequence of {len(generator)} items."
                )
            generator, tokenizer = generator
        if isinstance(generator, TextGenerationPipeline):
            self._set_model(generator.model, generator.tokenizer)
        elif hasattr(generator, "generate") and hasattr(generator, "config"):
            if tokenizer is None:
                raise ValueError(
                    "A model generator needs its tokenizer: pass (model, tokenizer) or tokenizer=."
                )
            self._set_model(generator, tokenizer)
        elif callable(generator):
            self.fn = generator
        else:
            raise TypeError(
                "generator must be a (model, tokenizer) pair, a transformers causal LM, a text-generation "
                f"pipeline or a callable list[str] -> list[str]; got {type(generator).__name__}."
            )
        if self.fn is not None:
            qualname = getattr(generator, "__qualname__", type(generator).__qualname__)
            module = getattr(generator, "__module__", type(generator).__module__)
            self.unique_name = name is not None or not ("<lambda>" in qualname or "<locals>" in qualname)
            self.identity = name or f"{module}.{qualname}"
        else:
            self.unique_name = True
            base = name or str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__)
            self.identity = (
                name
                if name is not None
                else f"{base}@{model_fingerprint(self.model)}-{_tokenizer_fingerprint(self.tokenizer)}"
            )

    def _set_model(self, model: Any, tokenizer: Any) -> None:
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(
                f"Expected a decoder-only causal LM, got the encoder-decoder {type(model).__name__}; wrap it "
                "in a callable list[str] -> list[str] instead."
            )
        if tokenizer is None or not callable(tokenizer):
            raise ValueError(f"Expected the model's tokenizer, got {tokenizer!r}.")
        self.model = model
        self.tokenizer = tokenizer

    @property
    def uses_chat_template(self) -> bool:
        """Whether prompts go through the tokenizer's chat template."""
        return self.tokenizer is not None and bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, message: str, answer_start: str = "") -> str:
        """The exact text the generator receives for one user message."""
        if self.fn is not None:
            return f"{message}\n{answer_start}" if answer_start else message
        if self.uses_chat_template:
            turns = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            turns.append({"role": "user", "content": message})
            text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
            return text + answer_start
        return f"{message}\n{answer_start}"

    def __call__(
        self,
        messages: Sequence[str],
        answer_starts: Sequence[str],
        settings: GenerationSettings,
        seed: int = 0,
    ) -> list[str]:
        """The continuations of one batch of prompts (without their answer starts).

        Args:
            messages (`Sequence[str]`):
                The user messages.
            answer_starts (`Sequence[str]`):
                How each answer starts (see the class docstring).
            settings (`GenerationSettings`):
                Decoding settings.
            seed (`int`, *optional*, defaults to `0`):
                Seed of this batch (sampling only).
        """
        texts = [self.render(m, s) for m, s in zip(messages, answer_starts)]
        if self.fn is not None:
            answers = self.fn(list(texts))
            if isinstance(answers, str) or not isinstance(answers, Sequence):
                raise TypeError(
                    f"The generator callable must return a list of strings, got {type(answers).__name__}."
                )
            answers = list(answers)
            if len(answers) != len(texts):
                raise ValueError(
                    f"The generator callable returned {len(answers)} answers for {len(texts)} prompts; "
                    "expected one answer per prompt."
                )
            for i, a in enumerate(answers):
                if not isinstance(a, str):
                    raise TypeError(
                        f"The generator callable's answer {i} is a {type(a).__name__}, expected a string."
                    )
            return answers
        return self._generate(texts, settings, seed)

    @contextlib.contextmanager
    def _left_padding(self) -> Iterator[int]:
        tok = self.tokenizer
        side, pad = tok.padding_side, tok.pad_token
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ValueError(
                    "The tokenizer has neither a pad token nor an eos token to pad batches with."
                )
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # decoder-only batches: every prompt ends where generation starts
        try:
            yield tok.pad_token_id
        finally:
            tok.padding_side = side
            if pad is None:
                tok.pad_token = None

    def _generate(self, texts: list[str], settings: GenerationSettings, seed: int) -> list[str]:
        tok, model = self.tokenizer, self.model
        with self._left_padding() as pad_id:
            enc = tok(
                texts, return_tensors="pt", padding=True, add_special_tokens=not self.uses_chat_template
            )
        device = getattr(model, "device", torch.device("cpu"))
        enc = {k: v.to(device) for k, v in enc.items()}
        kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": pad_id}
        if settings.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=None)
        if settings.stop_at_newline:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_NewlineStop(tok, enc["input_ids"].shape[1])])
        devices = [device] if getattr(device, "type", "cpu") == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(**enc, **kwargs)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
