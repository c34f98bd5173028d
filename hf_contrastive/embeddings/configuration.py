"""Configuration of the sentence-encoder head."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

from hf_contrastive.core.configuration import backbone_hidden_size
from hf_contrastive.embeddings.whitening import DEFAULT_WHITENING_EPS, check_eps, check_group_size

POOLING_MODES = (
    "cls",
    "cls_before_pooler",
    "pooler",
    "mean",
    "mean_sqrt_len",
    "max",
    "avg_first_last",
    "avg_top2",
    "last_token",
    "weighted_mean",
)
"""Pooling strategies (SimCSE / sentence-transformers names in brackets).

- ``cls``: first token of the last layer, then the projection head if there is one (SimCSE ``cls``).
- ``cls_before_pooler``: first token of the last layer, never projected (SimCSE ``cls_before_pooler``).
- ``pooler``: the backbone's own ``pooler_output`` (BERT's Linear+Tanh pooler); this is how the
  converted SimCSE Hub checkpoints store their training MLP.
- ``mean`` (SimCSE ``avg``), ``mean_sqrt_len`` (sum / sqrt(length)), ``max``: over non-padding tokens.
- ``avg_first_last``: mean over tokens of the average of the first transformer layer and the last
  (``hidden_states[1]`` and ``hidden_states[-1]``, as SimCSE after its fix).
- ``avg_top2``: mean over tokens of the average of the last two layers.
- ``last_token``: the last non-padding token (decoder LLMs; left or right padding).
- ``weighted_mean``: position-weighted mean, weight i for the i-th real token (SGPT).
"""

PROJECTION_ACTIVATIONS = ("tanh", "relu", "gelu", "identity")


PROMPT_TEMPLATE_SLOT = "{text}"


def check_prompt_template(template: str | None) -> str | None:
    """Return `template` if it is `None` or a string with exactly one `{text}`; raise `ValueError` otherwise.

    Args:
        template (`str`, *optional*): the template to check.
    """
    if template is None:
        return None
    if not isinstance(template, str) or template.count(PROMPT_TEMPLATE_SLOT) != 1:
        raise ValueError(
            f"prompt_template must be a string with exactly one {PROMPT_TEMPLATE_SLOT!r} where the text goes "
            f'(e.g. \'This sentence : "{{text}}" means in one word:"\'), got {template!r}.'
        )
    return template


TEMPLATE_TOKEN_SLACK = 4
"""Tokens allowed on top of text + template: a text's first and last tokens may merge differently with the
template's characters (a quote, a space) than on their own."""


def truncate_texts(texts: list[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Cut each text after its first `max_tokens` tokens (no special tokens), in characters.

    Args:
        texts (`list[str]`): the texts.
        tokenizer (`Any`): the model's tokenizer (a fast one cuts at the character offset of the last kept
            token; a slow one decodes the kept tokens).
        max_tokens (`int`): tokens kept per text.
    """
    encoded = tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=False,
        return_offsets_mapping=bool(getattr(tokenizer, "is_fast", False)),
    )
    cut = []
    for i, text in enumerate(texts):
        ids = encoded["input_ids"][i]
        if len(ids) <= max_tokens:
            cut.append(text)
        elif "offset_mapping" in encoded:
            cut.append(text[: encoded["offset_mapping"][i][max_tokens - 1][1]])
        else:
            cut.append(tokenizer.decode(ids[:max_tokens]))
    return cut


def apply_prompt_template(
    template: str | None, texts: list[str], tokenizer: Any = None, max_text_tokens: int | None = None
) -> list[str]:
    """Put each text into `template` at its `{text}` (other braces are kept as they are).

    With `tokenizer` and `max_text_tokens`, each text is first cut to that many tokens, so a length limit of
    `max_text_tokens + prompt_template_tokens(...)` never cuts the template's end (the token last-token pooling
    reads).

    Args:
        template (`str`, *optional*): a template checked by `check_prompt_template`; `None` returns `texts`.
        texts (`list[str]`): the texts.
        tokenizer (`Any`, *optional*): the model's tokenizer, to cut texts to `max_text_tokens`.
        max_text_tokens (`int`, *optional*): tokens kept of each text (`None`: texts are not cut).
    """
    if not template:
        return list(texts)
    if tokenizer is not None and max_text_tokens is not None:
        texts = truncate_texts(texts, tokenizer, max_text_tokens)
    before, after = template.split(PROMPT_TEMPLATE_SLOT)
    return [before + t + after for t in texts]


def prompt_template_tokens(template: str | None, tokenizer: Any) -> int:
    """Tokens a template adds around a text, with `TEMPLATE_TOKEN_SLACK` for merges (0 without a template).

    Args:
        template (`str`, *optional*): the template.
        tokenizer (`Any`): the model's tokenizer.
    """
    if not template:
        return 0
    ids = tokenizer(template.replace(PROMPT_TEMPLATE_SLOT, ""), add_special_tokens=False)["input_ids"]
    return len(ids) + TEMPLATE_TOKEN_SLACK


class SentenceEncoderConfig(PretrainedConfig):
    r"""Configuration of [`SentenceEncoder`]: a backbone plus everything that turns its token states
    into a sentence embedding. Every head setting lives here so that `save_pretrained` /
    `from_pretrained` / `push_to_hub` round-trip exactly.

    Args:
        backbone_config (`PretrainedConfig` or `dict`):
            Configuration of the wrapped `AutoModel` backbone (BERT, RoBERTa, MiniLM, Llama, ...).
        pooling (`str`, defaults to `"mean"`):
            One of `POOLING_MODES` (see its docstring).
        projection_dim (`int`, *optional*):
            Output size of an optional projection layer after pooling (SimCSE's MLP uses the hidden
            size, a sentence-transformers `Dense` module any size). `None` means no projection.
        projection_activation (`str`, defaults to `"tanh"`):
            Activation after the projection: `tanh`, `relu`, `gelu` or `identity`.
        projection_bias (`bool`, defaults to `True`):
            Whether the projection layer has a bias.
        mlp_only_train (`bool`, defaults to `False`):
            SimCSE's switch: apply the projection only in training mode and drop it at inference
            (recommended for unsupervised SimCSE).
        normalize (`bool`, defaults to `False`):
            L2-normalise the output embeddings.
        max_seq_length (`int`, *optional*):
            Truncation length used by `encode` (defaults to the tokenizer's limit, capped at 512).
        do_lower_case (`bool`, defaults to `False`):
            Lower-case texts in `encode` before tokenisation (some sentence-transformers models).
        prompts (`dict[str, str]`, *optional*):
            Named prompts/prefixes (e.g. `{"query": "query: ", "document": "passage: "}`).
        default_prompt_name (`str`, *optional*):
            Prompt applied by `encode` when none is given.
        prompt_template (`str`, *optional*):
            A template that wraps every text, with one `{text}` where the text goes, e.g. PromptEOL's
            `'This sentence : "{text}" means in one word:"'` (Jiang et al. 2023) for `last_token` pooling of a
            causal LM: the last token then has to summarise the sentence. Applied by `encode` (after any prefix
            prompt) and by `ContrastiveTrainer` to every text column, so training and inference see the same
            input. `max_seq_length` then counts the text's tokens: texts are cut to it first and the
            template's own tokens come on top, so truncation never cuts the template's end. `None` (default): texts are used as they are.
        similarity_fn (`str`, defaults to `"cosine"`):
            Similarity the model was trained for: `cosine`, `dot`, `euclidean` or `manhattan`.
        whitening_group_size (`int`, *optional*):
            Shuffled group whitening (WhitenedCSE, Zhuo et al. 2023): channels per ZCA whitening group. It must
            divide the width of the training embeddings (`projection_dim` when the projection is used in
            training, else the hidden size), and the width at inference too when `whitening_at_inference` is
            set. In training the `whitenedcse` loss whitens each view with its own random grouping (see
            `hf_contrastive.embeddings.whitening`); `None` means no whitening.
        whitening_eps (`float`, *optional*, defaults to `1e-5`):
            Added to the eigenvalues of each group's covariance before the inverse square root (keeps small
            batches stable).
        whitening_at_inference (`bool`, *optional*, defaults to `False`):
            Also whiten in `forward` in eval mode (`encode`), in groups of consecutive channels (no shuffling).
            The whitening uses the statistics of each forward's batch, so an embedding depends on the other
            texts of its batch, and every batch needs more rows than `whitening_group_size`. Off: whitening is
            used in training only.
    """

    model_type = "contrastive_sentence_encoder"
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict[str, Any] | None = None,
        pooling: str = "mean",
        projection_dim: int | None = None,
        projection_activation: str = "tanh",
        projection_bias: bool = True,
        mlp_only_train: bool = False,
        normalize: bool = False,
        max_seq_length: int | None = None,
        do_lower_case: bool = False,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn: str = "cosine",
        prompt_template: str | None = None,
        whitening_group_size: int | None = None,
        whitening_eps: float = DEFAULT_WHITENING_EPS,
        whitening_at_inference: bool = False,
        **kwargs: Any,
    ) -> None:
        if isinstance(backbone_config, dict):
            if "model_type" not in backbone_config:
                raise ValueError("backbone_config dict needs a 'model_type' key (e.g. 'bert', 'llama').")
            backbone_config = AutoConfig.for_model(**backbone_config)
        if pooling not in POOLING_MODES:
            raise ValueError(f"Unknown pooling {pooling!r}; expected one of {', '.join(POOLING_MODES)}.")
        if projection_activation not in PROJECTION_ACTIVATIONS:
            raise ValueError(
                f"Unknown projection_activation {projection_activation!r}; expected one of {PROJECTION_ACTIVATIONS}."
            )
        if projection_dim is not None and int(projection_dim) <= 0:
            raise ValueError(f"projection_dim must be a positive integer or None, got {projection_dim!r}.")
        if similarity_fn not in ("cosine", "dot", "euclidean", "manhattan"):
            raise ValueError(
                f"Unknown similarity_fn {similarity_fn!r}; expected cosine, dot, euclidean or manhattan."
            )
        prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in prompts:
            raise ValueError(
                f"default_prompt_name {default_prompt_name!r} is not among the prompts {sorted(prompts)}."
            )
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.projection_activation = projection_activation
        self.projection_bias = projection_bias
        self.mlp_only_train = mlp_only_train
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.do_lower_case = do_lower_case
        self.prompts = prompts
        self.default_prompt_name = default_prompt_name
        self.similarity_fn = similarity_fn
        self.prompt_template = check_prompt_template(prompt_template)
        if whitening_group_size is not None:
            check_group_size(whitening_group_size, "whitening_group_size")
        self.whitening_group_size = whitening_group_size
        self.whitening_eps = check_eps(whitening_eps, "whitening_eps")
        if whitening_at_inference and whitening_group_size is None:
            raise ValueError("whitening_at_inference=True needs whitening_group_size (channels per group).")
        self.whitening_at_inference = bool(whitening_at_inference)
        super().__init__(**kwargs)
        if whitening_group_size is not None and backbone_config is not None:
            self._check_whitening_width()

    def _check_whitening_width(self) -> None:
        """The group size must divide every width that is whitened: in training and, if asked, at inference."""
        train_width = (
            self.projection_dim
            if self.projection_dim is not None and self.pooling != "cls_before_pooler"
            else self.hidden_size
        )
        widths = {"training embeddings": train_width}
        if self.whitening_at_inference:
            widths["inference embeddings"] = self.embedding_dim
        for what, width in widths.items():
            if width % self.whitening_group_size:
                divisors = [d for d in range(1, width + 1) if width % d == 0]
                raise ValueError(
                    f"whitening_group_size={self.whitening_group_size} does not divide the {width} channels of "
                    f"the {what}; choose a divisor of {width}: {', '.join(map(str, divisors))}."
                )

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's token states."""
        return backbone_hidden_size(self.backbone_config, type(self).__name__)

    @property
    def embedding_dim(self) -> int:
        """Size of the sentence embeddings this head returns at inference."""
        if (
            self.projection_dim is not None
            and not self.mlp_only_train
            and self.pooling != "cls_before_pooler"
        ):
            return self.projection_dim
        return self.hidden_size


__all__ = [
    "SentenceEncoderConfig",
    "POOLING_MODES",
    "apply_prompt_template",
    "check_prompt_template",
    "prompt_template_tokens",
    "truncate_texts",
]
