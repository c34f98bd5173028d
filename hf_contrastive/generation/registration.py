"""Make plain `model.generate(penalty_alpha=..., top_k=...)` run the local contrastive search.

transformers v5 maps `GenerationMode.CONTRASTIVE_SEARCH` to the Hub repository
`transformers-community/contrastive-search` (remote code: it needs `trust_remote_code=True` and the network,
and without them `generate(penalty_alpha=...)` raises). Importing `hf_contrastive` calls [`enable`],
which changes exactly five objects of transformers, in memory only (no file of transformers is modified):

1. `transformers.generation.utils.GENERATION_MODES_MAPPING[GenerationMode.CONTRASTIVE_SEARCH]`: the Hub
   repository id is replaced by `"_contrastive_search"`, so `generate` dispatches that mode to a method.
2. `transformers.GenerationMixin._contrastive_search`: that method is added (transformers v5 has none); it
   calls [`hf_contrastive.generation.contrastive_search`].
3. `transformers.GenerationMixin.load_custom_generate`: wrapped. For
   `custom_generate="transformers-community/contrastive-search"` (any `@revision`) it returns the local
   code instead of downloading the repository; every other value goes to the original method unchanged.
4. `transformers.pipelines.base.Pipeline._prepare_generate_kwargs`: wrapped. Generation pipelines default to
   sampling in transformers v5; a call that sets `penalty_alpha > 0` and leaves `do_sample` unset gets
   `do_sample=False` and none of the pipeline's default sampling settings (as in transformers <= 4.55).
   Every other call is left as the original method returns it.
5. `transformers.GenerationMixin._validate_generation_mode`: wrapped. transformers picks contrastive search only
   for `penalty_alpha > 0` and `top_k > 1` and silently decodes greedily otherwise; the wrapper first refuses
   values that cannot mean anything (`penalty_alpha` negative, above 1, NaN or not a number; with greedy
   decoding, `top_k` < 1), as [`hf_contrastive.contrastive_search`] does. `penalty_alpha=None` or `0` still
   means "not contrastive search", as transformers defines it, and is never checked.

The first [`enable`] of a process logs this list once at INFO (logger
`hf_contrastive.generation.registration`). To undo it, call [`disable`] (also exported as
`hf_contrastive.disable_contrastive_search()`): it puts back the original mapping value and methods and deletes
the added one. To never apply it, set `HF_CONTRASTIVE_NO_REGISTER=1` before importing `hf_contrastive`.
[`enable`] and [`disable`] are idempotent; [`is_enabled`] says which state is current.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from transformers.generation import utils as _gen_utils
from transformers.generation.configuration_utils import GenerationMode
from transformers.generation.utils import GenerationMixin

from hf_contrastive.generation.contrastive_search import contrastive_search, validate_contrastive_arguments

__all__ = ["enable", "disable", "is_enabled", "check_contrastive_request", "HUB_REPO_ID"]

HUB_REPO_ID = "transformers-community/contrastive-search"
_METHOD_NAME = "_contrastive_search"
_MODE = GenerationMode.CONTRASTIVE_SEARCH

logger = logging.getLogger(__name__)

# What was there before `enable` (restored by `disable`); None while disabled.
_saved: dict[str, Any] | None = None
# Whether this process already logged what `enable` patches (logged on the first enable only).
_announced = False

PATCHED = (
    f"transformers.generation.utils.GENERATION_MODES_MAPPING[{_MODE!s}] -> {_METHOD_NAME!r}",
    f"transformers.GenerationMixin.{_METHOD_NAME} (added)",
    f"transformers.GenerationMixin.load_custom_generate (wrapped: {HUB_REPO_ID!r} resolves to local code)",
    "transformers.pipelines.base.Pipeline._prepare_generate_kwargs (wrapped: penalty_alpha without do_sample "
    "turns off the pipeline's sampling defaults)",
    "transformers.GenerationMixin._validate_generation_mode (wrapped: invalid penalty_alpha / top_k are refused "
    "instead of silently decoding greedily)",
)


def check_contrastive_request(generation_config: Any) -> None:
    """Refuse `penalty_alpha` / `top_k` values that transformers would silently turn into another decoding mode.

    transformers runs contrastive search only for `penalty_alpha > 0` and `top_k > 1`; anything else decodes
    greedily without a word, so `penalty_alpha=-0.1`, `penalty_alpha=float("nan")` or `top_k=0` looked like
    contrastive search and was not. `penalty_alpha=None` or `0` means "not contrastive search" and passes.

    Args:
        generation_config (`GenerationConfig`): the resolved configuration of one `generate` call.

    Raises:
        `ValueError` / `TypeError`: as [`validate_contrastive_arguments`], naming the value given.
    """
    alpha = getattr(generation_config, "penalty_alpha", None)
    if alpha is None or (isinstance(alpha, (int, float)) and alpha == 0):
        return
    sampling = getattr(generation_config, "do_sample", None) is True
    beams = (getattr(generation_config, "num_beams", None) or 1) > 1
    if sampling or beams:
        # Sampling and beam search ignore penalty_alpha, but an impossible value is still a mistake.
        validate_contrastive_arguments(alpha, 1)
        return
    validate_contrastive_arguments(alpha, getattr(generation_config, "top_k", None))


def _contrastive_search_method(
    self: Any,
    input_ids: Any,
    logits_processor: Any,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool = False,
    streamer: Any = None,
    **model_kwargs: Any,
) -> Any:
    """`GenerationMixin._contrastive_search`: the decoding method `generate` dispatches to for this mode."""
    for key in ("tokenizer", "assistant_tokenizer", "assistant_model"):
        model_kwargs.pop(key, None)
    return contrastive_search(
        self,
        input_ids,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
        generation_config=generation_config,
        synced_gpus=synced_gpus,
        streamer=streamer,
        **model_kwargs,
    )


def _local_hub_generate(model: Any, **generate_arguments: Any) -> Any:
    """Stand-in for the Hub repository's `custom_generate/generate.py`: plain `generate`, routed locally."""
    generate_arguments.pop("custom_generate", None)
    generate_arguments.pop("trust_remote_code", None)
    return GenerationMixin.generate(model, **generate_arguments)


def _is_contrastive_repo(name: Any) -> bool:
    return isinstance(name, str) and name.split("@")[0].rstrip("/") == HUB_REPO_ID


def _make_loader(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def load_custom_generate(self: Any, pretrained_model_name_or_path: Any = None, *args: Any, **kwargs: Any):
        if _is_contrastive_repo(pretrained_model_name_or_path):
            return _local_hub_generate
        return original(self, pretrained_model_name_or_path, *args, **kwargs)

    load_custom_generate.__hf_contrastive__ = True  # type: ignore[attr-defined]
    return load_custom_generate


_SAMPLING_DEFAULTS = ("temperature", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")


def _make_pipeline_kwargs(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _prepare_generate_kwargs(self: Any, generate_kwargs: dict, **overrides: Any) -> dict:
        out = original(self, generate_kwargs, **overrides)
        merged = (
            generate_kwargs
            if "generation_config" in generate_kwargs
            else {**self._generate_kwargs, **generate_kwargs}
        )
        user = self._get_set_generation_params(merged)
        alpha = user.get("penalty_alpha")
        if not alpha or "do_sample" in user:
            return out
        # The pipeline turned sampling on by default; the caller asked for contrastive search.
        cfg = out.get("generation_config")
        if cfg is not None:
            cfg.do_sample = False
            for key in _SAMPLING_DEFAULTS:
                if key not in user and hasattr(cfg, key):
                    setattr(cfg, key, None)
        else:
            out["do_sample"] = False
            for key in _SAMPLING_DEFAULTS:
                if key not in user:
                    out.pop(key, None)
        return out

    _prepare_generate_kwargs.__hf_contrastive__ = True  # type: ignore[attr-defined]
    return _prepare_generate_kwargs


def _make_mode_check(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _validate_generation_mode(
        self: Any, generation_mode: Any, generation_config: Any, *args: Any, **kwargs: Any
    ) -> Any:
        check_contrastive_request(generation_config)
        return original(self, generation_mode, generation_config, *args, **kwargs)

    _validate_generation_mode.__hf_contrastive__ = True  # type: ignore[attr-defined]
    return _validate_generation_mode


def _pipeline_class() -> Any:
    try:
        from transformers.pipelines.base import Pipeline
    except ImportError:  # pragma: no cover - pipelines need optional deps in some installs
        return None
    return Pipeline if "_prepare_generate_kwargs" in Pipeline.__dict__ else None


def enable() -> None:
    """Route `generate(penalty_alpha=..., top_k=...)` and the Hub repo id to the local implementation.

    Idempotent: a second call does nothing.
    """
    global _saved, _announced
    if _saved is not None:
        return
    _saved = {
        "mapping": _gen_utils.GENERATION_MODES_MAPPING.get(_MODE),
        "had_method": _METHOD_NAME in GenerationMixin.__dict__,
        "method": GenerationMixin.__dict__.get(_METHOD_NAME),
        "loader": GenerationMixin.__dict__.get("load_custom_generate"),
        "mode_check": GenerationMixin.__dict__.get("_validate_generation_mode"),
        "pipeline": None,
    }
    pipeline_cls = _pipeline_class()
    if pipeline_cls is not None:
        _saved["pipeline"] = pipeline_cls.__dict__["_prepare_generate_kwargs"]
        pipeline_cls._prepare_generate_kwargs = _make_pipeline_kwargs(_saved["pipeline"])
    setattr(GenerationMixin, _METHOD_NAME, _contrastive_search_method)
    _gen_utils.GENERATION_MODES_MAPPING[_MODE] = _METHOD_NAME
    if _saved["loader"] is not None:
        GenerationMixin.load_custom_generate = _make_loader(_saved["loader"])
    if _saved["mode_check"] is not None:
        GenerationMixin._validate_generation_mode = _make_mode_check(_saved["mode_check"])
    if not _announced:
        _announced = True
        logger.info(
            "hf_contrastive: local contrastive search registered for generate(penalty_alpha=...). Patched: %s. "
            "Undo with hf_contrastive.disable_contrastive_search(); skip with HF_CONTRASTIVE_NO_REGISTER=1.",
            "; ".join(PATCHED),
        )


def disable() -> None:
    """Undo [`enable`]: transformers again asks for the Hub repository. Idempotent."""
    global _saved
    if _saved is None:
        return
    if _saved["mapping"] is None:
        _gen_utils.GENERATION_MODES_MAPPING.pop(_MODE, None)
    else:
        _gen_utils.GENERATION_MODES_MAPPING[_MODE] = _saved["mapping"]
    if _saved["had_method"]:
        setattr(GenerationMixin, _METHOD_NAME, _saved["method"])
    elif _METHOD_NAME in GenerationMixin.__dict__:
        delattr(GenerationMixin, _METHOD_NAME)
    if _saved["loader"] is not None:
        GenerationMixin.load_custom_generate = _saved["loader"]
    if _saved["mode_check"] is not None:
        GenerationMixin._validate_generation_mode = _saved["mode_check"]
    if _saved["pipeline"] is not None:
        _pipeline_class()._prepare_generate_kwargs = _saved["pipeline"]
    _saved = None


def is_enabled() -> bool:
    """Whether plain `generate(penalty_alpha=...)` currently runs the local contrastive search."""
    return _saved is not None and _gen_utils.GENERATION_MODES_MAPPING.get(_MODE) == _METHOD_NAME
