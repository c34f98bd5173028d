"""Decoding-quality metrics for open-ended generation (Su et al. 2022; Su & Collier 2022).

* `rep-n = 100 * (1 - unique n-grams / total n-grams)` over a corpus of generations (whitespace tokens; unique
  n-grams are counted per text and summed, as in the SimCTG evaluation code);
* `diversity = prod_{n=2..4} (1 - rep-n / 100)`, reported in percent (greedy GPT-2 large: 5.4; contrastive
  search: 92.5; nucleus: 93.6 on WebText);
* `coherence`: mean cosine between embeddings of each prefix and its continuation, with any sentence encoder
  (an object with `encode(list[str])` such as [`hf_contrastive.SentenceEncoder`] or a sentence-transformers
  model, or a plain callable `texts -> [N, D]`);
* `isotropy = 1 - mean pairwise cosine` of a model's last-layer token states (gpt2: 0.10, gpt2-large: 0.70);
* MAUVE, when the optional `mauve-text` package is installed.

Usable as plain functions and as `evaluate` modules ([`DecodingDiversity`], [`DecodingCoherence`]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import torch

__all__ = [
    "rep_n",
    "diversity",
    "repetition_and_diversity",
    "coherence",
    "isotropy",
    "model_isotropy",
    "mauve_score",
    "DecodingDiversity",
    "DecodingCoherence",
]


def _check_texts(texts: Any, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"`{name}` must be a list of strings, got a single string.")
    texts = list(texts)
    if not texts:
        raise ValueError(f"`{name}` is empty; expected at least one text.")
    bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"`{name}` must contain strings only, got {bad[0]}.")
    return texts


def _ngram_counts(texts: list[str], n: int) -> tuple[int, int]:
    unique = total = 0
    for text in texts:
        tokens = text.split()
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        unique += len(set(grams))
        total += len(grams)
    return unique, total


def rep_n(texts: Sequence[str], n: int) -> float:
    """Corpus rep-n in percent: `100 * (1 - unique n-grams / total n-grams)`; 0 when no text has n tokens."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an int >= 1, got {n!r}.")
    unique, total = _ngram_counts(_check_texts(texts), n)
    return 0.0 if total == 0 else 100.0 * (1.0 - unique / total)


def diversity(texts: Sequence[str], ngrams: Sequence[int] = (2, 3, 4)) -> float:
    """Diversity in percent: `100 * prod_n (1 - rep-n / 100)` over `ngrams` (default 2, 3, 4)."""
    texts = _check_texts(texts)
    value = 1.0
    for n in ngrams:
        value *= 1.0 - rep_n(texts, n) / 100.0
    return 100.0 * value


def repetition_and_diversity(texts: Sequence[str]) -> dict[str, float]:
    """`{"rep-2", "rep-3", "rep-4", "diversity"}`, all in percent."""
    texts = _check_texts(texts)
    out = {f"rep-{n}": rep_n(texts, n) for n in (2, 3, 4)}
    out["diversity"] = diversity(texts)
    return out


def _embed(encoder: Any, texts: list[str], batch_size: int) -> torch.Tensor:
    if hasattr(encoder, "encode"):
        try:
            emb = encoder.encode(texts, batch_size=batch_size)
        except TypeError:
            emb = encoder.encode(texts)
    elif callable(encoder):
        emb = encoder(texts)
    else:
        raise TypeError(
            f"`encoder` must have an `encode(list[str])` method or be a callable texts -> [N, D]; got "
            f"{type(encoder).__name__}."
        )
    emb = torch.as_tensor(np.asarray(emb) if not isinstance(emb, torch.Tensor) else emb)
    if emb.ndim != 2 or emb.shape[0] != len(texts):
        raise ValueError(f"The encoder returned shape {tuple(emb.shape)}; expected [{len(texts)}, dim].")
    return emb.float().cpu()


def coherence(
    prefixes: Sequence[str],
    continuations: Sequence[str],
    encoder: Any | Callable[[list[str]], Any],
    batch_size: int = 32,
    return_all: bool = False,
) -> float | tuple[float, list[float]]:
    """Mean cosine similarity of `encoder(prefix_i)` and `encoder(continuation_i)` (Su et al. 2022).

    The papers use SimCSE embeddings; any sentence encoder of this library or sentence-transformers works.
    Returns the mean (and the per-pair values with `return_all=True`).
    """
    prefixes = _check_texts(prefixes, "prefixes")
    continuations = _check_texts(continuations, "continuations")
    if len(prefixes) != len(continuations):
        raise ValueError(
            f"Got {len(prefixes)} prefixes but {len(continuations)} continuations; expected equal counts."
        )
    a = _embed(encoder, prefixes, batch_size)
    b = _embed(encoder, continuations, batch_size)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    mean = float(cos.mean())
    return (mean, cos.tolist()) if return_all else mean


def isotropy(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> float:
    """`1 - mean pairwise cosine` of token states, averaged over sequences.

    Args:
        hidden_states (`torch.Tensor`): [T, D] or [B, T, D] token representations (any float dtype; computed in float32).
        attention_mask (`torch.Tensor | None`, *optional*): [B, T] (or [T]) with 1 for real tokens; padding is ignored. Pairs i != j only.
    """
    h = hidden_states.float()
    if h.ndim == 2:
        h = h[None]
        if attention_mask is not None:
            attention_mask = attention_mask[None]
    if h.ndim != 3:
        raise ValueError(
            f"`hidden_states` must be [T, D] or [B, T, D], got shape {tuple(hidden_states.shape)}."
        )
    mask = (
        torch.ones(h.shape[:2], dtype=torch.bool) if attention_mask is None else attention_mask.bool().cpu()
    )
    values = []
    for seq, m in zip(h.cpu(), mask):
        x = torch.nn.functional.normalize(seq[m], dim=-1)
        t = x.shape[0]
        if t < 2:
            continue
        sim = x @ x.T
        mean = (sim.sum() - sim.diagonal().sum()) / (t * (t - 1))
        values.append(float(mean))
    if not values:
        raise ValueError("Isotropy needs at least one sequence with two or more tokens.")
    return 1.0 - float(np.mean(values))


@torch.no_grad()
def model_isotropy(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 8, max_length: int = 256
) -> float:
    """Isotropy of `model`'s last-layer token states on `texts` (padding excluded)."""
    texts = _check_texts(texts)
    device = next(model.parameters()).device
    values, weights = [], []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[i : i + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_length,
        )
        enc = {k: v.to(device) for k, v in enc.items()}
        out = model(**enc, output_hidden_states=True, return_dict=True)
        hs = (
            out.hidden_states[-1]
            if getattr(out, "hidden_states", None) is not None
            else out.last_hidden_state
        )
        values.append(isotropy(hs, enc["attention_mask"]))
        weights.append(hs.shape[0])
    return float(np.average(values, weights=weights))


def mauve_score(p_texts: Sequence[str], q_texts: Sequence[str], **kwargs: Any) -> float:
    """MAUVE (Pillutla et al. 2021) of generations `p_texts` against references `q_texts`.

    Needs the optional `mauve-text` package (`pip install mauve-text`); its default featuriser downloads
    gpt2-large, so offline pass `p_features`/`q_features` or `featurize_model_name` of a local model.
    """
    try:
        import mauve
    except ImportError as err:
        raise ImportError("MAUVE needs the optional package `mauve-text` (pip install mauve-text).") from err
    if "p_features" not in kwargs:
        kwargs["p_text"] = _check_texts(p_texts, "p_texts")
    if "q_features" not in kwargs:
        kwargs["q_text"] = _check_texts(q_texts, "q_texts")
    return float(mauve.compute_mauve(**kwargs).mauve)


# --- evaluate modules -------------------------------------------------------------------------------------------

_CITATION = """@inproceedings{su2022contrastive,
  title={A Contrastive Framework for Neural Text Generation},
  author={Su, Yixuan and Lan, Tian and Wang, Yan and Yogatama, Dani and Kong, Lingpeng and Collier, Nigel},
  booktitle={NeurIPS}, year={2022}}"""


def _evaluate_base() -> type:
    import evaluate

    return evaluate.Metric


class _LazyMetricMeta(type):
    """Builds the `evaluate.Metric` subclass on first use, so importing this module stays light."""

    _built: dict[str, type] = {}

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        real = _LazyMetricMeta._built.get(cls.__name__)
        if real is None:
            real = cls._build()
            _LazyMetricMeta._built[cls.__name__] = real
        return real(*args, **kwargs)


class DecodingDiversity(metaclass=_LazyMetricMeta):
    """`evaluate` module: `DecodingDiversity().compute(predictions=[...])` -> rep-2/3/4 and diversity (%)."""

    @staticmethod
    def _build() -> type:
        import evaluate

        class DecodingDiversity(_evaluate_base()):
            def _info(self) -> Any:
                return evaluate.MetricInfo(
                    description="rep-n (n=2,3,4) and diversity of generated texts, in percent.",
                    citation=_CITATION,
                    inputs_description="predictions: list of generated texts.",
                    features=datasets.Features({"predictions": datasets.Value("string")}),
                )

            def _compute(self, predictions: list[str]) -> dict[str, float]:
                return repetition_and_diversity(predictions)

        return DecodingDiversity


class DecodingCoherence(metaclass=_LazyMetricMeta):
    """`evaluate` module: `DecodingCoherence().compute(predictions=conts, references=prefixes, encoder=enc)`."""

    @staticmethod
    def _build() -> type:
        import evaluate

        class DecodingCoherence(_evaluate_base()):
            def _info(self) -> Any:
                return evaluate.MetricInfo(
                    description="Mean cosine of sentence embeddings of prefixes (references) and continuations.",
                    citation=_CITATION,
                    inputs_description="predictions: continuations; references: prefixes; encoder: sentence encoder.",
                    features=datasets.Features(
                        {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                    ),
                )

            def _compute(
                self, predictions: list[str], references: list[str], encoder: Any = None
            ) -> dict[str, float]:
                if encoder is None:
                    raise ValueError("DecodingCoherence needs `encoder=` (a sentence encoder or a callable).")
                return {"coherence": coherence(references, predictions, encoder)}

        return DecodingCoherence
