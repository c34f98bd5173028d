"""Masked span language modelling (TKRE stage 1): masking rates that depend on where a token sits.

TKRE masks the tokens between the two entities most often (they carry the relation), the entity
tokens next, and the rest of the sentence least: p = 0.8 / 0.5 / 0.2 by default. Special tokens,
entity markers and padding are never masked.

A selected token is replaced as in BERT: with probability `mask_replace_prob` (0.8) by the mask token,
with `random_replace_prob` (0.1) by a random ordinary token (never a special token or a marker), and
otherwise (0.1) kept unchanged; its label is the original id. Unselected positions get label -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hf_contrastive.relation.data import RelationDataCollator
from hf_contrastive.relation.processing import RelationProcessor


def region_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, entity_positions: torch.Tensor
) -> torch.Tensor:
    """Per-token region of a collated batch: 0 = padding, 1 = between the two entities, 2 = inside an
    entity, 3 = everything else (markers and special tokens included; `MaskedSpanLMCollator` gives
    those probability 0).

    `entity_positions` `[B, 4]` = (subject start, subject end, object start, object end) marker
    positions; entity tokens lie strictly between their own start and end markers, and "between"
    means strictly between the first entity's end marker and the second entity's start marker.
    """
    b, n = input_ids.shape
    pos = torch.arange(n, device=input_ids.device).unsqueeze(0).expand(b, n)
    s0, s1, o0, o1 = (entity_positions[:, i : i + 1] for i in range(4))
    in_subject = (pos > s0) & (pos < s1)
    in_object = (pos > o0) & (pos < o1)
    first_end = torch.where(s0 < o0, s1, o1)
    second_start = torch.where(s0 < o0, o0, s0)
    between = (pos > first_end) & (pos < second_start)
    region = torch.full_like(input_ids, 3)
    region[between] = 1
    region[in_subject | in_object] = 2
    region[attention_mask == 0] = 0
    return region


class MaskedSpanLMCollator:
    """Mark, tokenize and mask relation examples for TKRE's masked span language modelling.

    Wraps a [`RelationDataCollator`] (or builds one from `tokenizer` and the marker settings, or from
    a [`RelationProcessor`]), whose processor does the marking, and adds `labels` (`[B, L]`, -100
    where nothing is predicted) to its batch, with `input_ids` masked. The batch keeps `entity_positions` (stage 2 needs them) and, for labelled examples,
    `relation_labels`.

    Args:
        tokenizer (`Any`): fast tokenizer with the marker tokens and a mask token.
        p_between (`float`, 0.8): masking probability of tokens between the two entities.
        p_entity (`float`, 0.5): of the entity tokens.
        p_other (`float`, 0.2): of the remaining ordinary tokens (including an explanation segment).
        mask_replace_prob (`float`, 0.8) / random_replace_prob (`float`, 0.1): BERT's 80/10/10 policy.
        protected_ids (`Sequence[int]`, *optional*, defaults to `()`): extra token ids never masked (the marker ids are protected automatically).
        seed (`int | None`, *optional*): seeds the collator's own generator, so a run's masks are reproducible.
        relation_collator (`RelationDataCollator | None`, *optional*): an existing [`RelationDataCollator`]; other keyword arguments build one.
        processor (`RelationProcessor | None`, *optional*): a [`RelationProcessor`] (over `tokenizer`) that the built collator marks with.
    """

    def __init__(
        self,
        tokenizer: Any,
        p_between: float = 0.8,
        p_entity: float = 0.5,
        p_other: float = 0.2,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        protected_ids: Sequence[int] = (),
        seed: int | None = None,
        relation_collator: RelationDataCollator | None = None,
        processor: RelationProcessor | None = None,
        **collator_kwargs: Any,
    ) -> None:
        for name, p in (
            ("p_between", p_between),
            ("p_entity", p_entity),
            ("p_other", p_other),
            ("mask_replace_prob", mask_replace_prob),
            ("random_replace_prob", random_replace_prob),
        ):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}.")
        if mask_replace_prob + random_replace_prob > 1.0 + 1e-9:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob must be <= 1, got {mask_replace_prob} + {random_replace_prob}."
            )
        if tokenizer.mask_token_id is None:
            raise ValueError("Masked span LM needs a tokenizer with a mask token.")
        self.tokenizer = tokenizer
        if relation_collator is not None and (processor is not None or collator_kwargs):
            raise ValueError(
                "Pass relation_collator or the settings to build one (processor, ...), not both."
            )
        # Masked span LM reads no relation labels: a batch of labelled and unlabelled text is fine here.
        collator_kwargs.setdefault("allow_partial_labels", True)
        self.relation_collator = relation_collator or RelationDataCollator(
            tokenizer, processor=processor, **collator_kwargs
        )
        self.p = (float(p_between), float(p_entity), float(p_other))
        self.mask_replace_prob = float(mask_replace_prob)
        self.random_replace_prob = float(random_replace_prob)
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        special.update(int(vocab[t]) for t in getattr(tokenizer, "added_tokens_encoder", {}) if t in vocab)
        special.update(int(i) for i in protected_ids)
        self.protected_ids = torch.tensor(sorted(special), dtype=torch.long)
        size = len(tokenizer)
        ordinary = torch.ones(size, dtype=torch.bool)
        ordinary[self.protected_ids[self.protected_ids < size]] = False
        self.ordinary_ids = ordinary.nonzero().flatten()
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()

    def probabilities(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """`[B, L]` masking probability of each token of a collated (unmasked) batch."""
        ids = batch["input_ids"]
        region = region_ids(ids, batch["attention_mask"], batch["entity_positions"])
        table = torch.tensor([0.0, *self.p])
        probs = table[region]
        protected = torch.isin(ids, self.protected_ids)
        # A punctuation marker scheme uses ordinary tokens as markers: protect the marker positions.
        rows = torch.arange(ids.shape[0]).unsqueeze(1)
        protected[rows, batch["entity_positions"]] = True
        probs[protected] = 0.0
        return probs

    def mask(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mask a collated batch in place of a copy; returns the batch with `labels`."""
        batch = dict(batch)
        ids = batch["input_ids"].clone()
        probs = self.probabilities(batch)
        selected = torch.bernoulli(probs, generator=self.generator).bool()
        labels = torch.full_like(ids, -100)
        labels[selected] = ids[selected]
        u = torch.rand(ids.shape, generator=self.generator)
        to_mask = selected & (u < self.mask_replace_prob)
        to_random = (
            selected & (u >= self.mask_replace_prob) & (u < self.mask_replace_prob + self.random_replace_prob)
        )
        ids[to_mask] = self.tokenizer.mask_token_id
        if to_random.any():
            pick = torch.randint(len(self.ordinary_ids), (int(to_random.sum()),), generator=self.generator)
            ids[to_random] = self.ordinary_ids[pick]
        batch["input_ids"] = ids
        batch["labels"] = labels
        return batch

    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        batch = self.relation_collator(examples)
        if "labels" in batch:
            batch["relation_labels"] = batch.pop("labels")
        return self.mask(batch)


__all__ = ["MaskedSpanLMCollator", "region_ids"]
