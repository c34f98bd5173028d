"""Replaced-token-detection pretraining (ELECTRA; Vega v1's phase 1) with an optional SimCSE-style sentence term
(Vega v1's phase 2).

A small masked-LM *generator* fills the masked positions with sampled tokens; the *discriminator* (the encoder that
is kept) tells, for every token of the corrupted sentence, whether it was replaced. The two share their embeddings.
With `sentence_contrast_weight > 0` the discriminator also embeds each uncorrupted sentence twice with dropout and
contrasts the two views against the batch (unsupervised SimCSE), Vega v1's second pretraining phase.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from hf_contrastive.core.losses import UnsupervisedSimCSELoss
from hf_contrastive.embeddings.pooling import mean_pool

__all__ = ["RTDCollator", "RTDConfig", "RTDForPreTraining", "RTDOutput"]

ELECTRA_CITATION = """@inproceedings{clark2020electra,
  title     = {{ELECTRA}: Pre-training Text Encoders as Discriminators Rather Than Generators},
  author    = {Clark, Kevin and Luong, Minh-Thang and Le, Quoc V. and Manning, Christopher D.},
  booktitle = {International Conference on Learning Representations},
  year      = {2020}
}"""

POOLINGS = ("cls", "mean")


def _as_config(value: Any, name: str) -> PretrainedConfig | None:
    if isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(f"{name} dict needs a 'model_type' key (e.g. 'bert').")
        return AutoConfig.for_model(**value)
    return value


class RTDConfig(PretrainedConfig):
    r"""Configuration of [`RTDForPreTraining`].

    Args:
        generator_config (`PretrainedConfig | dict`): the masked-LM generator (`AutoModelForMaskedLM`); ELECTRA uses
            one a quarter to a half of the discriminator's width. Its embedding size must equal the discriminator's
            (the embeddings are shared).
        discriminator_config (`PretrainedConfig | dict`): the encoder that is kept (`AutoModel`).
        mask_probability (`float`, defaults to 0.15): share of (non-special) tokens masked for the generator.
        discriminator_weight (`float`, defaults to 50.0): :math:`\lambda` in
            :math:`L = L_{MLM} + \lambda L_{RTD}` (ELECTRA).
        sampling_temperature (`float`, defaults to 1.0): temperature of the generator's samples.
        sentence_contrast_weight (`float`, defaults to 0.0): weight of the SimCSE-style term on the discriminator
            (Vega v1's phase 2; 0 is phase 1).
        sentence_contrast_temperature (`float`, defaults to 0.05): its temperature.
        sentence_pooling (`str`, defaults to `"cls"`): `cls` or `mean`, the sentence vector of that term.
    """

    model_type = "contrastive_rtd_pretraining"
    sub_configs = {"generator_config": AutoConfig, "discriminator_config": AutoConfig}

    def __init__(
        self,
        generator_config: PretrainedConfig | dict[str, Any] | None = None,
        discriminator_config: PretrainedConfig | dict[str, Any] | None = None,
        mask_probability: float = 0.15,
        discriminator_weight: float = 50.0,
        sampling_temperature: float = 1.0,
        sentence_contrast_weight: float = 0.0,
        sentence_contrast_temperature: float = 0.05,
        sentence_pooling: str = "cls",
        **kwargs: Any,
    ) -> None:
        if not 0.0 < float(mask_probability) < 1.0:
            raise ValueError(f"mask_probability must be in (0, 1), got {mask_probability!r}.")
        if float(discriminator_weight) < 0 or float(sentence_contrast_weight) < 0:
            raise ValueError("discriminator_weight and sentence_contrast_weight must be >= 0.")
        if float(sampling_temperature) <= 0 or float(sentence_contrast_temperature) <= 0:
            raise ValueError("sampling_temperature and sentence_contrast_temperature must be > 0.")
        if sentence_pooling not in POOLINGS:
            raise ValueError(f"sentence_pooling must be one of {POOLINGS}, got {sentence_pooling!r}.")
        self.generator_config = _as_config(generator_config, "generator_config")
        self.discriminator_config = _as_config(discriminator_config, "discriminator_config")
        self.mask_probability = float(mask_probability)
        self.discriminator_weight = float(discriminator_weight)
        self.sampling_temperature = float(sampling_temperature)
        self.sentence_contrast_weight = float(sentence_contrast_weight)
        self.sentence_contrast_temperature = float(sentence_contrast_temperature)
        self.sentence_pooling = sentence_pooling
        super().__init__(**kwargs)


@dataclass
class RTDOutput(ModelOutput):
    """Output of [`RTDForPreTraining`].

    Args:
        loss (`torch.FloatTensor`, *optional*): the total loss (when `labels` are given).
        mlm_loss / rtd_loss / sentence_contrast_loss (`torch.FloatTensor`, *optional*): its terms.
        rtd_accuracy (`torch.FloatTensor`, *optional*): share of real tokens the discriminator labels right.
        replaced (`torch.BoolTensor` of shape `(batch, seq)`, *optional*): which tokens the generator replaced.
        discriminator_logits (`torch.FloatTensor` of shape `(batch, seq)`): replaced-token scores.
    """

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    rtd_loss: torch.FloatTensor | None = None
    sentence_contrast_loss: torch.FloatTensor | None = None
    rtd_accuracy: torch.FloatTensor | None = None
    replaced: torch.BoolTensor | None = None
    discriminator_logits: torch.FloatTensor | None = None


def _parameter_count(module: nn.Module, skip: nn.Module) -> int:
    shared = {id(p) for p in skip.parameters()}
    return sum(p.numel() for p in module.parameters() if id(p) not in shared)


class RTDForPreTraining(PreTrainedModel):
    r"""ELECTRA-style replaced-token detection: a masked-LM generator and a discriminator sharing their embeddings,
    with Vega v1's optional sentence contrast on the discriminator.

    The word embeddings are shared always (`set_input_embeddings`, and the generator's tied decoder follows them);
    when both towers keep their embeddings in an `embeddings` module of the same class (BERT-family), the whole
    module is shared, position and token-type embeddings included, as in ELECTRA. A generator with more
    (non-embedding) parameters than the discriminator is allowed with a warning: replaced-token detection expects a
    smaller generator, otherwise its samples are too hard for the discriminator to learn from.

    Example::

        >>> model = RTDForPreTraining.from_encoders(generator_config, "sentence-transformers/all-MiniLM-L6-v2")
        >>> batch = RTDCollator(tokenizer)(["a sentence", "another one"])
        >>> model(**batch).loss.backward()
        >>> model.discriminator.save_pretrained("encoder")   # the encoder to fine-tune
    """

    config_class = RTDConfig
    base_model_prefix = "discriminator"
    main_input_name = "input_ids"
    citation = ELECTRA_CITATION

    def __init__(
        self,
        config: RTDConfig,
        generator: PreTrainedModel | None = None,
        discriminator: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        if config.generator_config is None or config.discriminator_config is None:
            raise ValueError("RTDConfig needs generator_config and discriminator_config.")
        self.generator = (
            generator if generator is not None else AutoModelForMaskedLM.from_config(config.generator_config)
        )
        self.discriminator = (
            discriminator if discriminator is not None else AutoModel.from_config(config.discriminator_config)
        )
        hidden = self.discriminator.config.hidden_size
        self.discriminator_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self._share_embeddings()
        self.sentence_loss = UnsupervisedSimCSELoss(temperature=config.sentence_contrast_temperature)
        self.post_init()

    def _share_embeddings(self) -> None:
        shared = self.discriminator.get_input_embeddings()
        theirs = self.generator.get_input_embeddings()
        if shared.weight.shape != theirs.weight.shape:
            raise ValueError(
                f"the generator's word embeddings {tuple(theirs.weight.shape)} differ from the discriminator's "
                f"{tuple(shared.weight.shape)}: the two share them, so the vocabulary and embedding size must match."
            )
        gen_base = self.generator.base_model
        disc_embeddings = getattr(self.discriminator, "embeddings", None)
        gen_embeddings = getattr(gen_base, "embeddings", None)
        if disc_embeddings is not None and type(disc_embeddings) is type(gen_embeddings):
            gen_base.embeddings = disc_embeddings
        else:
            self.generator.set_input_embeddings(shared)
        output = self.generator.get_output_embeddings()
        if output is not None and getattr(self.generator.config, "tie_word_embeddings", True):
            output.weight = shared.weight
        # Declared to transformers as tied weights: saved once (under the discriminator), re-tied on loading.
        owner = {
            id(p): f"discriminator.{n}"
            for n, p in self.discriminator.named_parameters(remove_duplicate=False)
        }
        self._tied_weights_keys = {
            f"generator.{n}": owner[id(p)]
            for n, p in self.generator.named_parameters(remove_duplicate=False)
            if id(p) in owner
        }
        generator_size = _parameter_count(self.generator, shared)
        discriminator_size = _parameter_count(self.discriminator, shared)
        if generator_size > discriminator_size:
            warnings.warn(
                f"The generator has more parameters ({generator_size:,}) than the discriminator "
                f"({discriminator_size:,}, embeddings not counted); replaced-token detection expects a smaller "
                "generator (ELECTRA: 1/4 to 1/2 of the discriminator's width), else its replacements are too hard "
                "to detect and the discriminator learns little.",
                UserWarning,
                stacklevel=3,
            )

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "discriminator_head", None):
            std = getattr(self.config.discriminator_config, "initializer_range", 0.02)
            for layer in (module[0], module[2]):
                nn.init.normal_(layer.weight, mean=0.0, std=std)
                nn.init.zeros_(layer.bias)

    @classmethod
    def from_encoders(
        cls,
        generator: PreTrainedModel | PretrainedConfig | str,
        discriminator: PreTrainedModel | str,
        **config_kwargs: Any,
    ) -> RTDForPreTraining:
        """Build from a generator (a masked-LM model, a config to build one from, or a folder) and a discriminator
        (an encoder or a folder: a pretrained encoder continues its pretraining, e.g. MiniLM).

        Args:
            generator (`PreTrainedModel | PretrainedConfig | str`): the masked-LM generator.
            discriminator (`PreTrainedModel | str`): the encoder.
            config_kwargs (`Any`): other [`RTDConfig`] fields.
        """
        if isinstance(discriminator, str):
            discriminator = AutoModel.from_pretrained(discriminator)
        if isinstance(generator, PretrainedConfig):
            generator = AutoModelForMaskedLM.from_config(generator)
        elif isinstance(generator, str):
            generator = AutoModelForMaskedLM.from_pretrained(generator)
        config = RTDConfig(generator.config.to_dict(), discriminator.config.to_dict(), **config_kwargs)
        return cls(config, generator=generator, discriminator=discriminator)

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self.config.sentence_pooling == "cls":
            return hidden[:, 0]
        return hidden.mean(1) if attention_mask is None else mean_pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        original_input_ids: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> RTDOutput:
        r"""One replaced-token-detection step.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq)`): the masked sentences ([`RTDCollator`]).
            attention_mask (`torch.Tensor`, *optional*): padding mask.
            token_type_ids (`torch.LongTensor`, *optional*): segment ids.
            labels (`torch.LongTensor`, *optional*): original ids at the masked positions, -100 elsewhere.
            original_input_ids (`torch.LongTensor`, *optional*): the unmasked sentences (default: `input_ids` with
                the labels put back).

        Returns:
            [`RTDOutput`].
        """
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if labels is None:
            hidden = self.discriminator(
                input_ids=input_ids, attention_mask=attention_mask, **extra
            ).last_hidden_state
            return RTDOutput(discriminator_logits=self.discriminator_head(hidden).squeeze(-1))
        masked = labels != -100
        original = (
            original_input_ids if original_input_ids is not None else torch.where(masked, labels, input_ids)
        )
        generated = self.generator(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **extra)
        with torch.no_grad():
            logits = generated.logits[masked].float() / self.config.sampling_temperature
            sampled = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)
        corrupted = original.clone()
        corrupted[masked] = sampled
        real = (
            attention_mask.bool()
            if attention_mask is not None
            else torch.ones_like(original, dtype=torch.bool)
        )
        replaced = (corrupted != original) & real
        hidden = self.discriminator(
            input_ids=corrupted, attention_mask=attention_mask, **extra
        ).last_hidden_state
        scores = self.discriminator_head(hidden).squeeze(-1)
        rtd_loss = F.binary_cross_entropy_with_logits(scores[real].float(), replaced[real].float())
        loss = generated.loss + self.config.discriminator_weight * rtd_loss
        accuracy = ((scores[real] > 0) == replaced[real]).float().mean().detach()
        sentence_loss = None
        if self.config.sentence_contrast_weight > 0:
            views = self.discriminator(
                input_ids=torch.cat([original, original]),
                attention_mask=None
                if attention_mask is None
                else torch.cat([attention_mask, attention_mask]),
                **(
                    {}
                    if token_type_ids is None
                    else {"token_type_ids": torch.cat([token_type_ids, token_type_ids])}
                ),
            ).last_hidden_state
            mask2 = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
            pooled = self._pool(views, mask2)
            sentence_loss = self.sentence_loss(*pooled.chunk(2)).loss
            loss = loss + self.config.sentence_contrast_weight * sentence_loss
        return RTDOutput(
            loss=loss,
            mlm_loss=generated.loss.detach(),
            rtd_loss=rtd_loss.detach(),
            sentence_contrast_loss=None if sentence_loss is None else sentence_loss.detach(),
            rtd_accuracy=accuracy,
            replaced=replaced,
            discriminator_logits=scores,
        )


class RTDCollator:
    """Tokenise texts (or pad tokenised rows) and mask them for the generator.

    A share `mask_probability` of the real, non-special tokens is chosen at random (at least one per sentence);
    those positions become `[MASK]` in `input_ids` (ELECTRA masks with `[MASK]` only), `labels` holds their
    original ids (-100 elsewhere) and `original_input_ids` the unmasked sentence.

    Args:
        tokenizer (`Any`): a tokenizer with a mask token.
        mask_probability (`float`, *optional*, defaults to 0.15): share of tokens masked.
        max_length (`int`, *optional*, defaults to 128): truncation length.
        generator (`torch.Generator`, *optional*): the random source of the masks (default: torch's global one).
    """

    def __init__(
        self,
        tokenizer: Any,
        mask_probability: float = 0.15,
        max_length: int = 128,
        generator: torch.Generator | None = None,
    ) -> None:
        if tokenizer.mask_token_id is None:
            raise ValueError("replaced-token detection needs a tokenizer with a mask token.")
        if not 0.0 < mask_probability < 1.0:
            raise ValueError(f"mask_probability must be in (0, 1), got {mask_probability!r}.")
        self.tokenizer, self.mask_probability, self.max_length = tokenizer, mask_probability, max_length
        self.generator = generator

    def __call__(self, rows: list[Any]) -> dict[str, torch.Tensor]:
        texts = [r["text"] if isinstance(r, dict) else r for r in rows]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("RTDCollator takes strings or rows with a 'text' string.")
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
            return_special_tokens_mask=True,
        )  # fmt: skip
        special = batch.pop("special_tokens_mask").bool() | ~batch["attention_mask"].bool()
        original = batch["input_ids"]
        draw = torch.rand(original.shape, generator=self.generator)
        draw = draw.masked_fill(special, 2.0)
        chosen = (draw < self.mask_probability) & ~special
        # At least one masked token in every sentence that has one.
        first = draw.argmin(dim=1)
        has_token = (~special).any(dim=1)
        chosen[torch.arange(len(texts))[has_token], first[has_token]] = True
        labels = torch.where(chosen, original, torch.full_like(original, -100))
        masked = original.masked_fill(chosen, self.tokenizer.mask_token_id)
        return {**batch, "input_ids": masked, "labels": labels, "original_input_ids": original}
