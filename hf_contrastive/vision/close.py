"""CLOSE: a captioner trained from text only (Gu et al., "I Can't Believe There's No Images!", ICCV 2023).

A frozen text tower of an image-text dual encoder embeds each training caption; the embedding stands in for
the image. It is L2-normalised and, at training time only, perturbed with Gaussian noise and normalised again,
`x <- n(n(x) + eps)`, `eps ~ N(0, sigma^2 I)`; a linear map turns it into `prefix_length` tokens prepended to the
language model's input (a causal LM: before the caption; an encoder-decoder LM: as the encoder's input, the
caption being the decoder's target), trained with the LM's cross-entropy on the caption. At test time the
normalised *image* embedding of the same dual encoder is put in its place, without noise. The noise makes the
LM robust to the modality gap: text and image embeddings of a pair are close but not equal.

Variant (needs image statistics, paired or not): the mean shift adds `shift_scale * (mean image - mean text)`
to text inputs before the noise ([`fit_mean_shift`]), moving the training inputs to where the image embeddings
lie. Our reading of the released code (`allenai/close`, layer `mean-shift`): the shift applies to text inputs
only (training, and text inputs at test time), never to image inputs; the input is normalised again after the
shift (the code leaves a shifted test-time text input unnormalised; here every prefix input has norm 1).

- [`CLOSEConfig`], [`CLOSECaptioner`]: the head (LM + linear prefix map), registered with the Auto classes;
  `caption(image_embeddings)` writes captions;
- [`add_noise`], [`fit_mean_shift`], [`apply_mean_shift`]: the input transformations as plain functions;
- [`CLOSECollator`], [`CLOSETrainer`], [`CLOSETrainingArguments`]: training on rows `{embedding, text}` with
  `transformers.Trainer`, LoRA through `peft_config=` (the saved captioner has the LoRA merged into its LM).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.utils import ModelOutput

from hf_contrastive.core.boundary import corrupt_file_errors
from hf_contrastive.core.checkpoint import AtomicCheckpointMixin
from hf_contrastive.core.configuration import backbone_hidden_size, register_auto_classes
from hf_contrastive.core.data.checks import require_rows
from hf_contrastive.core.engines import EngineMixin
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.hub.mixin import HubMixin, adapter_details
from hf_contrastive.core.peft import apply_peft

logger = logging.getLogger(__name__)

__all__ = [
    "CLOSE_CITATION",
    "CLOSECaptioner",
    "CLOSECaptionerOutput",
    "CLOSECollator",
    "CLOSEConfig",
    "CLOSETrainer",
    "CLOSETrainingArguments",
    "add_noise",
    "apply_mean_shift",
    "fit_mean_shift",
]

CLOSE_CITATION = """@inproceedings{gu2023close,
  title     = {I Can't Believe There's No Images! Learning Visual Tasks Using only Language Supervision},
  author    = {Gu, Sophia and Clark, Christopher and Kembhavi, Aniruddha},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023}
}"""

MODALITIES = ("text", "image")


# -- the input transformations --------------------------------------------------------------------------------


def _check_std(std: Any, name: str = "noise_std") -> float:
    if isinstance(std, bool) or not isinstance(std, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(std).__name__}.")
    if not math.isfinite(float(std)) or float(std) < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (0 turns the noise off), got {std}.")
    return float(std)


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""CLOSE's training-time perturbation: `n(x + eps)`, `eps ~ N(0, std^2 I)`, `n` the L2 normalisation.

    The noise is drawn from torch's generator (`generator`, or the global one: `torch.manual_seed` replays it).
    With `std = 0` this is the normalisation alone (the identity on unit vectors). In `D` dimensions the noise
    norm is about `std * sqrt(D)`: CLOSE's captioning value 0.12 in CLIP ViT-L/14's 768 dimensions gives 3.3,
    three times the signal.

    Args:
        x (`torch.Tensor`): `[..., D]` embeddings (normally already L2-normalised).
        std (`float`): standard deviation of each noise coordinate, >= 0.
        generator (`torch.Generator`, *optional*): the random generator (on `x`'s device).
    """
    std = _check_std(std)
    if std == 0.0:
        return F.normalize(x, dim=-1)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return F.normalize(x + std * eps, dim=-1)


def _check_embeddings(name: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, D], got {type(x).__name__}.")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D tensor [N, D], got shape {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or inf values.")
    return x


def fit_mean_shift(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """The mean-shift vector `mean(n(image)) - mean(n(text))` (CLOSE's mean-shift variant).

    Only the two means are used, so the images and texts need not be pairs (their numbers may differ); paired
    statistics (the images of the training captions) estimate the same vector with less variance. Computed in
    float64, returned as float32 `[D]`.

    Args:
        image_embeddings (`torch.Tensor`): `[N, D]` image embeddings of the dual encoder.
        text_embeddings (`torch.Tensor`): `[M, D]` text embeddings of the same dual encoder.
    """
    image = _check_embeddings("image_embeddings", image_embeddings)
    text = _check_embeddings("text_embeddings", text_embeddings)
    if image.shape[1] != text.shape[1]:
        raise ValueError(f"Embedding sizes differ: images {image.shape[1]}, texts {text.shape[1]}.")
    image = F.normalize(image.double(), dim=-1)
    text = F.normalize(text.double(), dim=-1)
    return (image.mean(0) - text.mean(0)).float()


def apply_mean_shift(
    x: torch.Tensor, shift: torch.Tensor | Sequence[float], scale: float = 1.0, renormalize: bool = True
) -> torch.Tensor:
    """`n(n(x) + scale * shift)`: text embeddings moved towards the image embeddings (`renormalize=False`
    leaves out the outer normalisation, so that the mean of the shifted texts is exactly the images' mean when
    `scale = 1` and `shift` was fitted on them).

    Args:
        x (`torch.Tensor`): `[N, D]` text embeddings.
        shift (`torch.Tensor | Sequence[float]`): `[D]`, from [`fit_mean_shift`].
        scale (`float`, *optional*, defaults to `1.0`): multiple of the shift to add.
        renormalize (`bool`, *optional*, defaults to `True`): L2-normalise the result.
    """
    shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device)
    if shift.dim() != 1 or shift.shape[0] != x.shape[-1]:
        raise ValueError(f"shift must be a vector of size {x.shape[-1]}, got shape {tuple(shift.shape)}.")
    out = F.normalize(x, dim=-1) + float(scale) * shift
    return F.normalize(out, dim=-1) if renormalize else out


# -- configuration --------------------------------------------------------------------------------------------


def _lm_config(config: PretrainedConfig | dict[str, Any] | None) -> PretrainedConfig | None:
    if isinstance(config, dict):
        if "model_type" not in config:
            raise ValueError("lm_config as a dict needs a 'model_type' key (e.g. 'llama', 't5').")
        config = AutoConfig.for_model(**config)
    if config is not None and not isinstance(config, PretrainedConfig):
        raise TypeError(f"lm_config must be a PretrainedConfig or a dict, got {type(config).__name__}.")
    return config


class CLOSEConfig(PretrainedConfig):
    r"""Configuration of [`CLOSECaptioner`]: the language model and the prefix that carries the embedding.

    Args:
        lm_config (`PretrainedConfig | dict`, *optional*): configuration of the language model (any
            `AutoModelForCausalLM`, or an `AutoModelForSeq2SeqLM` such as T5 as in the paper). Required by the
            model; the weights are saved with the captioner.
        embedding_dim (`int`, *optional*, defaults to `768`): size of the dual encoder's embeddings (CLIP
            ViT-L/14: 768, the paper's).
        prefix_length (`int`, *optional*, defaults to `4`): prefix tokens made from one embedding (the paper's 4).
        noise_std (`float`, *optional*, defaults to `0.12`): standard deviation of the training noise (the
            paper's value for captioning; 0.04 for VQA, 0.08 for visual entailment). Must be >= 0.
        mean_shift (`list[float]`, *optional*): the vector `mean image - mean text` added to text inputs
            ([`fit_mean_shift`]); `None` for plain CLOSE.
        shift_scale (`float`, *optional*, defaults to `1.0`): multiple of `mean_shift` that is added.
        lm_is_encoder_decoder (`bool`, *optional*): whether the LM is an encoder-decoder; defaults to
            `lm_config.is_encoder_decoder`.
        max_target_length (`int`, *optional*, defaults to `32`): caption tokens kept for training (end token
            included), and the default number of new tokens at generation.
        prompt (`str`, *optional*): text placed after the prefix (causal LM) or as the encoder's text (encoder-
            decoder LM), e.g. `"A picture of"`; `None` for none.
        beam_size (`int`, *optional*, defaults to `5`): beams of `generate` when the call gives no `num_beams`
            (the paper decodes with beam search of 5).
        lm_name_or_path (`str`, *optional*): where the LM's weights came from (for the model card).
    """

    model_type = "close_captioner"
    sub_configs = {"lm_config": AutoConfig}

    def __init__(
        self,
        lm_config: PretrainedConfig | dict[str, Any] | None = None,
        embedding_dim: int = 768,
        prefix_length: int = 4,
        noise_std: float = 0.12,
        mean_shift: Sequence[float] | None = None,
        shift_scale: float = 1.0,
        lm_is_encoder_decoder: bool | None = None,
        max_target_length: int = 32,
        prompt: str | None = None,
        beam_size: int = 5,
        lm_name_or_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        for name, value, low in (
            ("embedding_dim", embedding_dim, 1),
            ("prefix_length", prefix_length, 1),
            ("max_target_length", max_target_length, 1),
            ("beam_size", beam_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        noise_std = _check_std(noise_std)
        if (
            isinstance(shift_scale, bool)
            or not isinstance(shift_scale, (int, float))
            or not math.isfinite(shift_scale)
        ):
            raise ValueError(f"shift_scale must be a finite number, got {shift_scale!r}.")
        if mean_shift is not None:
            if isinstance(mean_shift, torch.Tensor):
                mean_shift = mean_shift.detach().double().cpu().tolist()
            mean_shift = [float(v) for v in mean_shift]
            if len(mean_shift) != embedding_dim:
                raise ValueError(
                    f"mean_shift must have embedding_dim = {embedding_dim} values, got {len(mean_shift)}."
                )
            if not all(math.isfinite(v) for v in mean_shift):
                raise ValueError("mean_shift holds NaN or inf values.")
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string or None, got {type(prompt).__name__}.")
        self.lm_config = _lm_config(lm_config)
        if lm_is_encoder_decoder is None:
            lm_is_encoder_decoder = bool(getattr(self.lm_config, "is_encoder_decoder", False))
        self.lm_is_encoder_decoder = bool(lm_is_encoder_decoder)
        self.embedding_dim = int(embedding_dim)
        self.prefix_length = int(prefix_length)
        self.noise_std = noise_std
        self.mean_shift = mean_shift
        self.shift_scale = float(shift_scale)
        self.max_target_length = int(max_target_length)
        self.prompt = prompt or None
        self.beam_size = int(beam_size)
        self.lm_name_or_path = None if lm_name_or_path is None else str(lm_name_or_path)
        super().__init__(**kwargs)

    @property
    def lm_hidden_size(self) -> int:
        """Width of the LM's token embeddings (each prefix token's size)."""
        return backbone_hidden_size(self.lm_config, type(self).__name__)


# -- model ----------------------------------------------------------------------------------------------------


@dataclass
class CLOSECaptionerOutput(ModelOutput):
    """Output of [`CLOSECaptioner`]'s forward.

    Args:
        loss (`torch.Tensor`, *optional*): the LM's cross-entropy on the caption tokens (when `labels` are given).
        logits (`torch.Tensor`, *optional*): the LM's logits; for a causal LM `[B, prefix_length + L, V]` (the
            prefix positions included), for an encoder-decoder LM those of the decoder.
        prefix_inputs (`torch.Tensor`, *optional*): `[B, D]` the embeddings after normalisation, shift and noise.
        prefix_tokens (`torch.Tensor`, *optional*): `[B, prefix_length, d_model]` what was prepended.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    prefix_inputs: torch.Tensor | None = None
    prefix_tokens: torch.Tensor | None = None


class CLOSEPrefixProjection(nn.Module):
    """`Linear(embedding_dim -> prefix_length * d_model)`, reshaped to `[B, prefix_length, d_model]`."""

    def __init__(self, embedding_dim: int, prefix_length: int, hidden_size: int) -> None:
        super().__init__()
        self.prefix_length, self.hidden_size = prefix_length, hidden_size
        self.linear = nn.Linear(embedding_dim, prefix_length * hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(x.shape[0], self.prefix_length, self.hidden_size)


def _prompt_ids(tokenizer: Any, prompt: str | None, encoder_decoder: bool) -> list[int]:
    """Token ids of the prompt: plain tokens after a causal LM's prefix; an encoder-decoder's encoder input with
    its special tokens (T5's end token)."""
    if not prompt:
        return []
    if tokenizer is None:
        raise ValueError("The captioner has a prompt but no tokenizer: set model.tokenizer (or pass one).")
    return list(tokenizer(prompt, add_special_tokens=encoder_decoder)["input_ids"])


class CLOSECaptioner(HubMixin, PreTrainedModel):
    r"""CLOSE (Gu et al. 2023): a language model that reads a dual-encoder embedding as prefix tokens.

    Trained on text embeddings of captions (noised), it captions images from their embeddings: see the module
    docstring and [`CLOSEConfig`]. The LM's weights are part of the saved folder (a LoRA adapter trained with
    [`CLOSETrainer`] is merged into them), so `from_pretrained` / `AutoModel.from_pretrained` rebuild it whole.

    Args:
        config ([`CLOSEConfig`]): the settings; `lm_config` is required.
        lm (`PreTrainedModel`, *optional*): an already loaded LM (default: built from `config.lm_config`).
        tokenizer (`Any`, *optional*): the LM's tokenizer (saved with the model; needed by `caption` and
            prompts).
    """

    config_class = CLOSEConfig
    base_model_prefix = "lm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    card_template = "close_captioner.md"
    card_pipeline_tag = "image-to-text"
    card_tags = ("image-captioning", "close", "text-only-training")
    card_citations = (CLOSE_CITATION,)

    def __init__(self, config: CLOSEConfig, lm: PreTrainedModel | None = None, tokenizer: Any = None) -> None:
        super().__init__(config)
        if config.lm_config is None:
            raise ValueError(
                "CLOSEConfig.lm_config is required (use CLOSECaptioner.from_lm to start from an LM)."
            )
        if lm is None:
            auto = AutoModelForSeq2SeqLM if config.lm_is_encoder_decoder else AutoModelForCausalLM
            lm = auto.from_config(config.lm_config)
        elif bool(getattr(lm.config, "is_encoder_decoder", False)) != config.lm_is_encoder_decoder:
            raise ValueError(
                f"lm is {'an encoder-decoder' if lm.config.is_encoder_decoder else 'a causal'} LM but "
                f"config.lm_is_encoder_decoder is {config.lm_is_encoder_decoder}."
            )
        self.lm = lm
        if getattr(self.lm.config, "_attn_implementation", None) is None:
            self.lm.config._attn_implementation = (
                "sdpa" if getattr(self.lm, "_supports_sdpa", False) else "eager"
            )
        self.prefix_projection = CLOSEPrefixProjection(
            config.embedding_dim, config.prefix_length, config.lm_hidden_size
        )
        self.tokenizer = tokenizer
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only the prefix map is new; the LM initialises (or loads) itself.
        if isinstance(module, CLOSEPrefixProjection):
            std = getattr(self.config.lm_config, "initializer_range", None) or 0.02
            nn.init.normal_(module.linear.weight, mean=0.0, std=std)
            nn.init.zeros_(module.linear.bias)

    @classmethod
    def from_lm(
        cls,
        lm: str | os.PathLike | PreTrainedModel,
        tokenizer: Any = None,
        embedding_dim: int = 768,
        **config_kwargs: Any,
    ) -> CLOSECaptioner:
        """A new captioner on a pretrained LM (its folder or Hub id, or a loaded model with `tokenizer=`); the
        prefix map is freshly initialised.

        Args:
            lm (`str | os.PathLike | PreTrainedModel`): the language model (causal or encoder-decoder).
            tokenizer (`Any`, *optional*): its tokenizer (loaded from `lm`'s folder when `lm` is a path).
            embedding_dim (`int`, *optional*, defaults to `768`): the dual encoder's embedding size.
            config_kwargs (`Any`): other [`CLOSEConfig`] settings (`noise_std`, `prefix_length`, `prompt`...).
        """
        name = None
        if isinstance(lm, (str, os.PathLike)):
            name = os.fspath(lm)
            lm_cfg = AutoConfig.from_pretrained(name)
            auto = (
                AutoModelForSeq2SeqLM
                if getattr(lm_cfg, "is_encoder_decoder", False)
                else AutoModelForCausalLM
            )
            lm = auto.from_pretrained(name)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(name)
        elif not isinstance(lm, PreTrainedModel):
            raise TypeError(f"lm must be a path or a PreTrainedModel, got {type(lm).__name__}.")
        else:
            name = getattr(lm.config, "_name_or_path", None) or None
        config = CLOSEConfig(
            lm_config=lm.config.to_dict(),
            embedding_dim=embedding_dim,
            lm_is_encoder_decoder=bool(getattr(lm.config, "is_encoder_decoder", False)),
            lm_name_or_path=name,
            **config_kwargs,
        )
        model = cls(config, lm=lm, tokenizer=tokenizer)
        if name and not os.path.exists(name):
            model.card_info.base_model = name
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Load a saved captioner (with its tokenizer and card metadata when the folder has them).

        Args:
            pretrained_model_name_or_path (`str | os.PathLike`): a folder written by `save_pretrained`, or a Hub id.
            args (`Any`): passed to `PreTrainedModel.from_pretrained`.
            kwargs (`Any`): passed to `PreTrainedModel.from_pretrained` (`dtype`, `revision`, ...).
        """
        with corrupt_file_errors(pretrained_model_name_or_path):
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir():
            if (folder / "tokenizer_config.json").is_file():
                model.tokenizer = AutoTokenizer.from_pretrained(folder)
            model.card_info = ModelCardInfo.from_folder(folder)
        else:
            try:
                model.tokenizer = AutoTokenizer.from_pretrained(os.fspath(pretrained_model_name_or_path))
            except (OSError, ValueError) as err:
                logger.warning(
                    "No tokenizer loaded with %s (%s): set model.tokenizer.",
                    pretrained_model_name_or_path,
                    err,
                )
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.lm.set_input_embeddings(value)

    # -- the mean shift ---------------------------------------------------------------------------------------

    def set_mean_shift(
        self, shift: torch.Tensor | Sequence[float] | None, scale: float | None = None
    ) -> None:
        """Store the mean-shift vector (and scale) in the config; `None` removes it.

        Args:
            shift (`torch.Tensor | Sequence[float] | None`): `[embedding_dim]`, from [`fit_mean_shift`].
            scale (`float`, *optional*): new `shift_scale` (kept when not given).
        """
        values = None
        if shift is not None:
            values = torch.as_tensor(shift).detach().double().cpu().reshape(-1).tolist()
            if len(values) != self.config.embedding_dim:
                raise ValueError(
                    f"The mean shift must have embedding_dim = {self.config.embedding_dim} values, got {len(values)}."
                )
            if not all(math.isfinite(v) for v in values):
                raise ValueError("The mean shift holds NaN or inf values.")
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
                raise ValueError(f"shift_scale must be a finite number, got {scale!r}.")
            self.config.shift_scale = float(scale)
        self.config.mean_shift = values

    # -- inputs -------------------------------------------------------------------------------------------------

    def prefix_inputs(
        self,
        prefix_embeddings: torch.Tensor,
        modality: str = "text",
        noise: bool | None = None,
        noise_generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The embeddings as the prefix map reads them: `n(x)`, plus the mean shift for text inputs, plus the
        noise when training, normalised again (`[B, D]`, float32 or float64).

        Args:
            prefix_embeddings (`torch.Tensor`): `[B, embedding_dim]` dual-encoder embeddings.
            modality (`str`, *optional*, defaults to `"text"`): `"text"` (the mean shift applies) or `"image"`.
            noise (`bool`, *optional*): add the training noise; defaults to `self.training`.
            noise_generator (`torch.Generator`, *optional*): generator of the noise (default: torch's global one).
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be 'text' or 'image', got {modality!r}.")
        x = _check_embeddings("prefix_embeddings", prefix_embeddings)
        if x.shape[1] != self.config.embedding_dim:
            raise ValueError(
                f"prefix_embeddings have size {x.shape[1]}, the captioner expects embedding_dim = "
                f"{self.config.embedding_dim} (the dual encoder it was trained with)."
            )
        # at least float32 (half-precision embeddings are upcast), float64 kept
        x = F.normalize(x if x.dtype in (torch.float32, torch.float64) else x.float(), dim=-1)
        shifted = modality == "text" and self.config.mean_shift is not None
        if shifted:
            x = apply_mean_shift(x, self.config.mean_shift, self.config.shift_scale, renormalize=False)
        noise = self.training if noise is None else noise
        if noise and self.config.noise_std > 0:
            return add_noise(x, self.config.noise_std, generator=noise_generator)
        return F.normalize(x, dim=-1) if shifted else x

    def prefix_tokens(self, prefix_inputs: torch.Tensor) -> torch.Tensor:
        """`[B, prefix_length, d_model]` prefix tokens from prepared inputs ([`prefix_inputs`])."""
        weight = self.prefix_projection.linear.weight
        return self.prefix_projection(prefix_inputs.to(device=weight.device, dtype=weight.dtype))

    def forward(
        self,
        prefix_embeddings: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        modality: str = "text",
        noise_generator: torch.Generator | None = None,
    ) -> CLOSECaptionerOutput:
        """LM loss of captions given their prefix embeddings.

        Causal LM: `input_ids` `[B, L]` are the tokens after the prefix (prompt and caption) and `labels` `[B, L]`
        their targets (-100 on the prompt and padding); the prefix positions are never targets. Encoder-decoder
        LM: `input_ids` is the optional encoder text after the prefix (the prompt) and `labels` the caption.

        Args:
            prefix_embeddings (`torch.Tensor`): `[B, embedding_dim]` embeddings (text ones when training).
            input_ids (`torch.Tensor`, *optional*): token ids after the prefix (see above).
            attention_mask (`torch.Tensor`, *optional*): mask of `input_ids` (defaults to all ones).
            labels (`torch.Tensor`, *optional*): targets; with them the output holds the loss.
            decoder_attention_mask (`torch.Tensor`, *optional*): encoder-decoder LM: the decoder's mask.
            modality (`str`, *optional*, defaults to `"text"`): the embeddings' modality (the mean shift applies
                to text only).
            noise_generator (`torch.Generator`, *optional*): generator of the training noise.
        """
        x = self.prefix_inputs(prefix_embeddings, modality=modality, noise_generator=noise_generator)
        prefix = self.prefix_tokens(x)
        batch, plen = prefix.shape[0], prefix.shape[1]
        device = prefix.device
        ones = torch.ones(batch, plen, dtype=torch.long, device=device)
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.shape[0] != batch:
                raise ValueError(
                    f"input_ids must be [B, L] with B = {batch} (the number of embeddings), got {tuple(input_ids.shape)}."
                )
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            token_embeds = self.lm.get_input_embeddings()(input_ids)
            embeds = torch.cat([prefix.to(token_embeds.dtype), token_embeds], dim=1)
            mask = torch.cat([ones, attention_mask.to(device=device, dtype=torch.long)], dim=1)
        else:
            embeds, mask = prefix, ones
        if self.config.lm_is_encoder_decoder:
            out = self.lm(
                inputs_embeds=embeds,
                attention_mask=mask,
                labels=labels,
                decoder_attention_mask=decoder_attention_mask,
            )
        else:
            full_labels = None
            if labels is not None:
                if input_ids is None or labels.shape != input_ids.shape:
                    raise ValueError(
                        "A causal LM's labels must have the shape of input_ids (the tokens after the prefix); got "
                        f"labels {tuple(labels.shape)}, input_ids {None if input_ids is None else tuple(input_ids.shape)}."
                    )
                ignore = torch.full((batch, plen), -100, dtype=labels.dtype, device=labels.device)
                full_labels = torch.cat([ignore, labels], dim=1)
            out = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=full_labels)
        return CLOSECaptionerOutput(loss=out.loss, logits=out.logits, prefix_inputs=x, prefix_tokens=prefix)

    # -- generation -------------------------------------------------------------------------------------------

    def _special_ids(self) -> dict[str, Any]:
        tok, cfg = self.tokenizer, self.lm.config
        eos = getattr(tok, "eos_token_id", None) if tok is not None else None
        if eos is None:
            eos = getattr(cfg, "eos_token_id", None)
        pad = getattr(tok, "pad_token_id", None) if tok is not None else None
        if pad is None:
            pad = getattr(cfg, "pad_token_id", None)
        if pad is None:
            pad = eos[0] if isinstance(eos, list) else eos
        ids = {"eos_token_id": eos, "pad_token_id": pad}
        if self.config.lm_is_encoder_decoder:
            ids["decoder_start_token_id"] = getattr(cfg, "decoder_start_token_id", None)
        return ids

    @torch.no_grad()
    def generate(
        self,
        prefix_embeddings: torch.Tensor,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        modality: str = "image",
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Token ids of captions for `[B, embedding_dim]` embeddings (no noise; greedy or beam search).

        The LM's `generate` runs on the prefix (and prompt) embeddings; the settings come from a fresh
        `GenerationConfig` (deterministic: `do_sample=False`, the tokenizer's end and padding tokens), so a
        reloaded captioner generates the same tokens. `generate_kwargs` override them (`do_sample`,
        `repetition_penalty`, ...).

        Args:
            prefix_embeddings (`torch.Tensor`): `[B, embedding_dim]` (image embeddings at test time).
            max_new_tokens (`int`, *optional*): defaults to `config.max_target_length`.
            num_beams (`int`, *optional*): defaults to `config.beam_size`.
            modality (`str`, *optional*, defaults to `"image"`): `"text"` applies the mean shift (text inputs).
            generate_kwargs (`Any`): further arguments of the LM's `generate`.

        Returns:
            `torch.Tensor`: `[B, T]` new token ids (an encoder-decoder LM's start token included).
        """
        x = self.prefix_inputs(prefix_embeddings, modality=modality, noise=False)
        embeds = self.prefix_tokens(x)
        batch, device = embeds.shape[0], embeds.device
        prompt = _prompt_ids(self.tokenizer, self.config.prompt, self.config.lm_is_encoder_decoder)
        if prompt:
            ids = torch.tensor([prompt] * batch, dtype=torch.long, device=device)
            token_embeds = self.lm.get_input_embeddings()(ids)
            embeds = torch.cat([embeds.to(token_embeds.dtype), token_embeds], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=device)
        settings = {
            "max_new_tokens": int(max_new_tokens or self.config.max_target_length),
            "num_beams": int(num_beams or self.config.beam_size),
            "do_sample": False,
            **self._special_ids(),
        }
        settings.update(generate_kwargs)
        gen_config = GenerationConfig(**settings)
        was_training = self.lm.training
        self.lm.eval()
        try:
            return self.lm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=gen_config)
        finally:
            self.lm.train(was_training)

    def caption(
        self,
        prefix_embeddings: torch.Tensor,
        batch_size: int = 32,
        modality: str = "image",
        **generate_kwargs: Any,
    ) -> list[str]:
        """Captions (decoded, stripped) for `[N, embedding_dim]` embeddings, `batch_size` at a time.

        Args:
            prefix_embeddings (`torch.Tensor`): `[N, embedding_dim]` image embeddings (or text ones, with
                `modality="text"`).
            batch_size (`int`, *optional*, defaults to `32`): embeddings per `generate` call.
            modality (`str`, *optional*, defaults to `"image"`): the embeddings' modality.
            generate_kwargs (`Any`): `max_new_tokens`, `num_beams` and other arguments of [`generate`].
        """
        if self.tokenizer is None:
            raise ValueError(
                "caption() needs a tokenizer: set model.tokenizer or load a folder that has one."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        x = _check_embeddings("prefix_embeddings", prefix_embeddings)
        device = self.prefix_projection.linear.weight.device
        out: list[str] = []
        for start in range(0, x.shape[0], batch_size):
            ids = self.generate(
                x[start : start + batch_size].to(device), modality=modality, **generate_kwargs
            )
            out.extend(t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out

    # -- card ----------------------------------------------------------------------------------------------------

    def card_details(self) -> dict[str, Any]:
        config = self.config
        lm_type = getattr(config.lm_config, "model_type", None)
        shift = None
        if config.mean_shift is not None:
            norm = math.sqrt(sum(v * v for v in config.mean_shift))
            shift = f"{config.shift_scale:g} x (mean image - mean text), norm {norm:.4f}"
        return {
            "title": "CLOSE captioner",
            "description": (
                "An image captioner trained from text only with "
                "[hf-contrastive](https://github.com/hf-contrastive/hf-contrastive) (CLOSE, Gu et al. 2023): a "
                f"`{lm_type}` language model reads a dual encoder's embedding as {config.prefix_length} prefix "
                "tokens. It was trained on noised text embeddings of captions; give it the L2-normalised image "
                "embeddings of the same dual encoder."
            ),
            "backbone_type": lm_type,
            "lm_architecture": type(self.lm).__name__,
            "embedding_dim": config.embedding_dim,
            "prefix_length": config.prefix_length,
            "noise_std": config.noise_std,
            "mean_shift": shift,
            "prompt": config.prompt,
            "max_target_length": config.max_target_length,
            "beam_size": config.beam_size,
            "encoder_decoder": config.lm_is_encoder_decoder,
            "lm_source": config.lm_name_or_path,
        }


register_auto_classes(CLOSEConfig, CLOSECaptioner)


# -- training -------------------------------------------------------------------------------------------------


class CLOSECollator:
    r"""Rows `{embedding, text}` -> `prefix_embeddings`, `input_ids`, `attention_mask`, `labels`.

    `embedding` is the frozen text tower's embedding of a caption (a list of floats) and `text` the caption the
    LM learns to write. Causal LM: each row's tokens are `prompt + caption + end token`, right-padded; the labels
    are the caption and end tokens (-100 on the prompt and padding). The caption follows the prompt after one
    space unless the prompt ends in whitespace. Encoder-decoder LM: `input_ids` is the prompt (when there is
    one) and `labels` the caption with the tokenizer's special tokens.

    Args:
        tokenizer (`Any`): the LM's tokenizer (it needs an end token).
        embedding_dim (`int`): expected size of the embeddings.
        prompt (`str`, *optional*): the captioner's prompt.
        max_target_length (`int`, *optional*, defaults to `32`): caption tokens kept, the end token included.
        encoder_decoder (`bool`, *optional*, defaults to `False`): the LM is an encoder-decoder.
        embedding_column (`str`, *optional*, defaults to `"embedding"`): column of the embeddings.
        text_column (`str`, *optional*, defaults to `"text"`): column of the captions.
    """

    def __init__(
        self,
        tokenizer: Any,
        embedding_dim: int,
        prompt: str | None = None,
        max_target_length: int = 32,
        encoder_decoder: bool = False,
        embedding_column: str = "embedding",
        text_column: str = "text",
    ) -> None:
        if tokenizer is None:
            raise ValueError("CLOSECollator needs the LM's tokenizer.")
        if getattr(tokenizer, "eos_token_id", None) is None:
            raise ValueError("The tokenizer has no end token (eos_token_id): the captions could not end.")
        if max_target_length < 1:
            raise ValueError(f"max_target_length must be >= 1, got {max_target_length}.")
        self.tokenizer = tokenizer
        self.embedding_dim = int(embedding_dim)
        self.prompt = prompt or None
        self.max_target_length = int(max_target_length)
        self.encoder_decoder = bool(encoder_decoder)
        self.embedding_column, self.text_column = embedding_column, text_column
        self.prompt_ids = _prompt_ids(tokenizer, self.prompt, self.encoder_decoder)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any = None, **kwargs: Any) -> CLOSECollator:
        """The collator of a captioner (its prompt, target length, LM kind and tokenizer).

        Args:
            model (`Any`): a [`CLOSECaptioner`] (possibly wrapped by PEFT).
            tokenizer (`Any`, *optional*): defaults to `model.tokenizer`.
            kwargs (`Any`): `embedding_column`, `text_column`.
        """
        config = model.config
        return cls(
            tokenizer if tokenizer is not None else getattr(model, "tokenizer", None),
            embedding_dim=config.embedding_dim,
            prompt=config.prompt,
            max_target_length=config.max_target_length,
            encoder_decoder=config.lm_is_encoder_decoder,
            **kwargs,
        )

    def check_columns(self, column_names: Sequence[str]) -> None:
        """`ValueError` naming the missing embedding or text column."""
        missing = [c for c in (self.embedding_column, self.text_column) if c not in column_names]
        if missing:
            raise ValueError(
                f"CLOSE training rows need the columns {self.embedding_column!r} (the frozen text tower's "
                f"embedding of a caption) and {self.text_column!r} (the caption); missing {missing}, got "
                f"{list(column_names)}."
            )

    def _embedding(self, value: Any, i: int) -> torch.Tensor:
        x = torch.as_tensor(value, dtype=torch.float32)
        if x.dim() != 1 or x.shape[0] != self.embedding_dim:
            raise ValueError(
                f"Row {i}: the embedding must be a vector of {self.embedding_dim} floats (the captioner's "
                f"embedding_dim), got shape {tuple(x.shape)}."
            )
        return x

    def _caption(self, value: Any, i: int) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"Row {i}: the text must be a non-empty caption string, got {value!r:.80}.")
        text = value.strip()
        if self.prompt and not self.encoder_decoder and not self.prompt[-1].isspace():
            text = " " + text
        return text

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("CLOSECollator got an empty list of rows.")
        self.check_columns(list(rows[0]))
        embeddings = torch.stack([self._embedding(r[self.embedding_column], i) for i, r in enumerate(rows)])
        texts = [self._caption(r[self.text_column], i) for i, r in enumerate(rows)]
        batch: dict[str, torch.Tensor] = {"prefix_embeddings": embeddings}
        if self.encoder_decoder:
            eos = self.tokenizer.eos_token_id
            targets = []
            for t in self.tokenizer(texts, add_special_tokens=True)["input_ids"]:
                t = list(t)
                if not t or t[-1] != eos:  # a tokenizer that adds no end token (T5's does)
                    t.append(eos)
                targets.append(
                    t[: self.max_target_length - 1] + [eos] if len(t) > self.max_target_length else t
                )
            batch["labels"] = self._pad(targets, -100)
            if self.prompt_ids:
                ids = torch.tensor([self.prompt_ids] * len(rows), dtype=torch.long)
                batch["input_ids"], batch["attention_mask"] = ids, torch.ones_like(ids)
            return batch
        eos = self.tokenizer.eos_token_id
        caps = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        seqs, labels = [], []
        for cap in caps:
            target = list(cap[: self.max_target_length - 1]) + [eos]
            seqs.append(self.prompt_ids + target)
            labels.append([-100] * len(self.prompt_ids) + target)
        batch["input_ids"] = self._pad(seqs, self.pad_id)
        batch["attention_mask"] = self._pad([[1] * len(s) for s in seqs], 0)
        batch["labels"] = self._pad(labels, -100)
        return batch

    @staticmethod
    def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(r) for r in rows)
        return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


@dataclass
class CLOSETrainingArguments(TrainingArguments):
    r"""`TrainingArguments` of [`CLOSETrainer`] with the paper's optimiser defaults (AdamW, learning rate 3e-4,
    linear decay; the paper trains 8 epochs at batch 128).

    Args:
        noise_std (`float`, *optional*): replaces the captioner's `config.noise_std` for this run (and in the
            saved config); `None` keeps it.
        embedding_column (`str`, *optional*, defaults to `"embedding"`): column of the text embeddings.
        text_column (`str`, *optional*, defaults to `"text"`): column of the target captions.
    """

    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate (the paper's 3e-4)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the embedding and text columns for the collator."}
    )
    noise_std: float | None = field(default=None, metadata={"help": "Override of the captioner's noise_std."})
    embedding_column: str = field(default="embedding", metadata={"help": "Column of the text embeddings."})
    text_column: str = field(default="text", metadata={"help": "Column of the target captions."})

    def __post_init__(self) -> None:
        if self.noise_std is not None:
            _check_std(self.noise_std)
        super().__post_init__()


def _base_captioner(model: Any) -> Any:
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    return base


def _peft_for_captioner(peft_config: Any) -> Any:
    """The LoRA config with the prefix map trained in full (`modules_to_save`) and no task type (the captioner's
    forward is not a plain LM's)."""
    cfg = copy.deepcopy(peft_config)
    saved = list(getattr(cfg, "modules_to_save", None) or [])
    if "prefix_projection" not in saved:
        cfg.modules_to_save = [*saved, "prefix_projection"]
    if getattr(cfg, "task_type", None) is not None:
        logger.info(
            "CLOSETrainer: peft task_type %s is dropped (LoRA wraps the whole captioner).", cfg.task_type
        )
        cfg.task_type = None
    return cfg


class CLOSETrainer(AtomicCheckpointMixin, EngineMixin, Trainer):
    r"""`Trainer` for [`CLOSECaptioner`] on rows `{embedding, text}` (see [`CLOSECollator`]).

    The loss is the captioner's LM cross-entropy on noised text embeddings (the noise is on in training mode
    only, so evaluation losses are noise-free). With `peft_config` (a `LoraConfig` naming the LM's modules, e.g.
    `q_proj`/`v_proj`) the captioner is wrapped by [`hf_contrastive.core.peft.apply_peft`]; the prefix map is
    added to `modules_to_save` so it trains in full. Checkpoints then hold the adapter; [`save_captioner`] writes
    the standalone captioner with the LoRA merged into the LM.

    Args:
        model (`Any`): a [`CLOSECaptioner`], or the folder of a saved one.
        args ([`CLOSETrainingArguments`], *optional*): training arguments.
        train_dataset (`Any`, *optional*): a `datasets.Dataset` with the embedding and text columns.
        eval_dataset (`Any`, *optional*): the same layout, for `evaluate()` (noise-free LM loss).
        processing_class (`Any`, *optional*): the LM's tokenizer (default: `model.tokenizer`).
        peft_config (`Any`, *optional*): a `peft.LoraConfig`.
        kwargs (`Any`): other `Trainer` arguments (`callbacks`, `optimizers`, `data_collator`...).
    """

    def __init__(
        self,
        model: Any = None,
        args: CLOSETrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = CLOSETrainingArguments(output_dir="hf-contrastive-output")
        if not isinstance(args, CLOSETrainingArguments):
            raise TypeError(f"args must be CLOSETrainingArguments, got {type(args).__name__}.")
        if isinstance(model, (str, os.PathLike)):
            model = CLOSECaptioner.from_pretrained(model)
        base = _base_captioner(model)
        if not isinstance(base, CLOSECaptioner):
            raise TypeError(f"model must be a CLOSECaptioner, got {type(base).__name__}.")
        if processing_class is not None:
            base.tokenizer = processing_class
        if base.tokenizer is None:
            raise ValueError("The captioner has no tokenizer: pass processing_class= or set model.tokenizer.")
        if args.noise_std is not None:
            base.config.noise_std = float(args.noise_std)
        require_rows(train_dataset, name="train_dataset", owner=type(self).__name__)
        require_rows(eval_dataset, name="eval_dataset", owner=type(self).__name__)
        collator = kwargs.pop("data_collator", None) or CLOSECollator.from_model(
            base, embedding_column=args.embedding_column, text_column=args.text_column
        )
        for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            columns = getattr(data, "column_names", None)
            if isinstance(collator, CLOSECollator) and columns is not None:
                try:
                    collator.check_columns(columns)
                except ValueError as err:
                    raise ValueError(f"{name}: {err}") from None
                if len(data):
                    collator._embedding(data[0][collator.embedding_column], 0)
        if peft_config is not None:
            model = apply_peft(model, _peft_for_captioner(peft_config))
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=base.tokenizer,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**inputs)
        return (out.loss, out) if return_outputs else out.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None

    def captioner(self, merge_lora: bool = True) -> CLOSECaptioner:
        """The trained captioner: with LoRA, a merged copy (the training model is left as it is).

        Args:
            merge_lora (`bool`, *optional*, defaults to `True`): merge a LoRA adapter into a copy of the LM.
        """
        model = self.accelerator.unwrap_model(self.model)
        if merge_lora and callable(getattr(model, "merge_and_unload", None)):
            model = copy.deepcopy(model).merge_and_unload()
        return model

    def save_captioner(self, output_dir: str | os.PathLike, merge_lora: bool = True) -> CLOSECaptioner:
        """Save the standalone captioner (LoRA merged, tokenizer and card written) and return it.

        Args:
            output_dir (`str | os.PathLike`): the folder.
            merge_lora (`bool`, *optional*, defaults to `True`): merge the LoRA adapter first (a captioner
                still wrapped by PEFT cannot be saved as one).
        """
        model = self.captioner(merge_lora=merge_lora)
        if not isinstance(model, CLOSECaptioner):
            raise ValueError("Only a merged captioner can be saved as one: call with merge_lora=True.")
        model.tokenizer = model.tokenizer or self.processing_class
        info = model.card_info
        args = self.args
        training = {
            "objective": "LM cross-entropy of the caption given noised text-embedding prefix tokens (CLOSE)",
            "noise std": model.config.noise_std,
            "learning rate": args.learning_rate,
            "epochs": args.num_train_epochs,
            "batch size (all processes)": args.per_device_train_batch_size * max(args.world_size, 1),
            "optimizer steps": self.state.global_step,
            "seed": args.seed,
        }
        lora = adapter_details(self.accelerator.unwrap_model(self.model))["lora"]
        if lora:
            training["LoRA (merged)"] = ", ".join(f"{k}={v}" for k, v in lora.items())
        info.training = {**info.training, **training}
        if args.should_save:
            model.save_pretrained(output_dir)
        return model
