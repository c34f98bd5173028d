"""Loading sentence encoders from the checkpoint formats found in the wild.

Supported sources, detected from the folder's files:

1. A folder saved by [`SentenceEncoder.save_pretrained`] (`config.json` with
   `model_type == "contrastive_sentence_encoder"`).
2. A sentence-transformers folder (`modules.json`) made of `Transformer`, `Pooling`, at most
   one `Dense` and `Normalize` modules, such as `all-MiniLM-L6-v2`.
3. A SimCSE training checkpoint: a BERT/RoBERTa `config.json` whose weights carry the backbone
   under its prefix (`bert.`/`roberta.`) and the projection MLP under `mlp.dense.`.
4. Any other transformers backbone (folder or Hub id); pass `pooling=...`.

Hub ids are resolved with `huggingface_hub.snapshot_download` (which honours
`HF_HUB_OFFLINE`). Remote code is never executed; `.bin` weights are read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

from hf_contrastive.core.boundary import corrupt_file_errors
from hf_contrastive.core.configuration import registered_model_types
from hf_contrastive.core.hub.card import ModelCardInfo
from hf_contrastive.core.saving import describe_folder
from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig

_HEAD_KEYS = tuple(
    name
    for name in inspect.signature(SentenceEncoderConfig.__init__).parameters
    if name not in ("self", "backbone_config", "kwargs")
)
_ST_POOLING = {
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weighted_mean",
    "lasttoken": "last_token",
}
_ST_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_ST_ACTIVATIONS = {
    "Tanh": "tanh",
    "ReLU": "relu",
    "GELU": "gelu",
    "Identity": "identity",
}
_SUPPORTED_ST_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
_SIMCSE_PREFIXES = ("bert.", "roberta.", "model.", "encoder.")
_SIMCSE_MLP_KEYS = ("mlp.dense.weight", "mlp.dense.bias")

# Folders whose Hub id is known although they were installed from elsewhere (model cards then
# name the right base model).
KNOWN_SOURCES: dict[str, str] = {}


def _register_known_sources() -> None:

    p = packaged_minilm_path()
    if p is not None:
        KNOWN_SOURCES[str(Path(p).resolve())] = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_folder(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """A local folder for `name_or_path`: the path itself, or a Hub snapshot (offline-aware).

    Raises `ValueError` when the folder claims two formats (see [`check_single_format`]).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        check_single_format(path)
        return path
    text = str(name_or_path)
    # A Hub id is "name" or "org/name"; anything else names a local folder.
    if (
        path.exists()
        or text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    ):
        raise ValueError(
            f"Expected a model folder or a Hub id ('org/name'); the folder {str(path)!r} does not exist."
        )

    try:
        folder = Path(snapshot_download(text, **hub_kwargs))
    except Exception as err:  # offline, missing repo, auth: say what was tried
        raise ValueError(
            f"Could not find {text!r} as a local folder, and fetching it from the Hub failed: {err}"
        ) from err
    check_single_format(folder)
    return folder


def check_single_format(folder: str | os.PathLike) -> None:
    """Raise when `folder` is both a sentence-transformers folder and a saved hf-contrastive head.

    Such a folder (a `modules.json` next to the `config.json` of one of our heads) is what an older,
    merging save left when a head was saved over a sentence-transformers folder. Read as
    sentence-transformers, its `Transformer` module is the head itself, whose loader reads the folder as
    sentence-transformers again: it is refused instead of loaded.

    Args:
        folder (`str | os.PathLike`): a model folder.

    Raises:
        `ValueError`: naming both formats and how to keep one.
    """
    folder = Path(folder)
    if not (folder / "modules.json").is_file() or not (folder / "config.json").is_file():
        return
    content = describe_folder(folder)
    if content.model_type in registered_model_types():
        raise ValueError(
            f"{folder} claims two formats: a sentence-transformers model (modules.json) and a saved "
            f"hf-contrastive head (config.json with model_type {content.model_type!r}). It is most likely a "
            "head saved over a sentence-transformers folder whose old files stayed. Keep one: delete "
            "modules.json, config_sentence_transformers.json and the numbered module folders (1_Pooling, "
            "...) to load the head, or restore the sentence-transformers files from their source."
        )


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("hf-contrastive never executes remote code: trust_remote_code=True is not accepted.")
    head = {k: kwargs.pop(k) for k in list(kwargs) if k in _HEAD_KEYS}
    hub = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
    return head, hub, kwargs


def _naming_corrupt_files(load: Callable[..., Any]) -> Callable[..., Any]:
    """Make `load` re-raise unreadable JSON / safetensors files as a `CorruptFileError` naming the file."""

    @functools.wraps(load)
    def wrapper(cls, name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        try:
            return load(cls, name_or_path, *model_args, **kwargs)
        except (json.JSONDecodeError, SafetensorError):
            folder = Path(name_or_path).expanduser()
            if not folder.exists():
                try:  # a Hub id: the snapshot already downloaded holds the file
                    folder = Path(snapshot_download(str(name_or_path), local_files_only=True))
                except Exception:  # noqa: BLE001 - only used to name the file
                    pass
            with corrupt_file_errors(folder):
                raise

    return wrapper


@_naming_corrupt_files
def load_sentence_encoder(cls, name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
    """Implementation of [`SentenceEncoder.from_pretrained`]; see the module docstring."""
    head, hub, backbone_kwargs = _split_kwargs(dict(kwargs))
    folder = resolve_folder(name_or_path, **{k: v for k, v in hub.items() if k != "local_files_only"})
    own = False
    if (folder / "modules.json").is_file():
        model = _load_sentence_transformers(cls, folder, head, backbone_kwargs)
    elif (folder / "config.json").is_file():
        with open(folder / "config.json", encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
        if model_type == SentenceEncoderConfig.model_type:
            own = True
            config = backbone_kwargs.pop("config", None) or SentenceEncoderConfig.from_pretrained(folder)
            for key, value in head.items():
                setattr(config, key, value)
            _validate(config)
            model = cls._from_own_folder(folder, *model_args, config=config, **backbone_kwargs)
            model.tokenizer = load_tokenizer(folder)
        elif _simcse_mlp_state(folder) is not None:
            model = _load_simcse(cls, folder, head, backbone_kwargs)
        else:
            model = _load_backbone_folder(cls, folder, head, backbone_kwargs)
    else:
        raise ValueError(
            f"{folder} is not a model folder: expected a config.json (transformers / hf-contrastive) or a "
            "modules.json (sentence-transformers)."
        )

    model.card_info = ModelCardInfo.from_folder(folder) if own else ModelCardInfo()
    if not own:
        if not KNOWN_SOURCES:
            _register_known_sources()
        model.card_info.base_model = KNOWN_SOURCES.get(str(folder.resolve())) or _hub_id_or_none(name_or_path)
    model.eval()
    return model


def _hub_id_or_none(name_or_path: str | os.PathLike) -> str | None:
    text = str(name_or_path)
    if Path(text).expanduser().exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        return None
    return text


def _validate(config: SentenceEncoderConfig) -> None:
    # Re-run the constructor checks on a config whose fields were overridden.
    SentenceEncoderConfig(
        backbone_config=config.backbone_config, **{k: getattr(config, k) for k in _HEAD_KEYS}
    )


def _build(cls, backbone, head: dict[str, Any], tokenizer) -> Any:
    attn = backbone.config._attn_implementation
    config = SentenceEncoderConfig(backbone_config=backbone.config, **head)
    if attn is not None:
        backbone.config._attn_implementation = attn  # the composite config reset it
    model = cls(config, backbone=backbone)
    model.tokenizer = tokenizer
    return model


def load_tokenizer(folder: Path):
    """The tokenizer saved in `folder` (never remote code), or `None` when the folder has none."""
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        return None


def _load_backbone(folder: Path, backbone_kwargs: dict[str, Any]):
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    if config.model_type in registered_model_types():
        # AutoModel would build the head itself, whose loader may come back here: never a backbone.
        raise ValueError(
            f"{folder} holds a saved hf-contrastive head (model_type {config.model_type!r}), not a backbone "
            "model: load it with its own class's from_pretrained."
        )
    if getattr(config, "is_encoder_decoder", False):
        if config.model_type in ("t5", "mt5", "umt5"):
            return T5EncoderModel.from_pretrained(folder, **backbone_kwargs)
        raise ValueError(
            f"{folder} holds an encoder-decoder model ({config.model_type}); only its encoder can serve as a "
            "sentence encoder, and this model type has no encoder-only class."
        )
    return AutoModel.from_pretrained(folder, trust_remote_code=False, **backbone_kwargs)


def _load_backbone_folder(cls, folder: Path, head: dict[str, Any], backbone_kwargs: dict[str, Any]):
    backbone = _load_backbone(folder, backbone_kwargs)
    return _build(cls, backbone, head, load_tokenizer(folder))


# -- sentence-transformers ------------------------------------------------------------------


def _load_sentence_transformers(cls, folder: Path, head: dict[str, Any], backbone_kwargs: dict[str, Any]):
    with open(folder / "modules.json", encoding="utf-8") as f:
        modules = sorted(json.load(f), key=lambda m: m.get("idx", 0))
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unsupported = [m["type"] for m, k in zip(modules, kinds) if k not in _SUPPORTED_ST_MODULES]
    if unsupported:
        raise ValueError(
            f"Unsupported sentence-transformers modules in {folder}: {unsupported}. Supported: "
            f"{', '.join(_SUPPORTED_ST_MODULES)} (in the order Transformer, Pooling, [Dense], [Normalize])."
        )
    expected_order = [k for k in _SUPPORTED_ST_MODULES if k in kinds]
    if kinds != expected_order or kinds[:2] != ["Transformer", "Pooling"]:
        raise ValueError(
            f"Unsupported sentence-transformers module layout in {folder}: {kinds}. Expected Transformer, "
            "Pooling, then optionally one Dense and a Normalize."
        )
    paths = {k: folder / m.get("path", "") for m, k in zip(modules, kinds)}
    derived: dict[str, Any] = {}

    st_cfg_path = paths["Transformer"] / "sentence_bert_config.json"
    if st_cfg_path.is_file():
        st_cfg = json.loads(st_cfg_path.read_text(encoding="utf-8"))
        if st_cfg.get("max_seq_length") is not None:
            derived["max_seq_length"] = int(st_cfg["max_seq_length"])
        derived["do_lower_case"] = bool(st_cfg.get("do_lower_case", False))

    derived["pooling"] = _st_pooling(paths["Pooling"] / "config.json")

    if "Dense" in kinds:
        dense_cfg = json.loads((paths["Dense"] / "config.json").read_text(encoding="utf-8"))
        act_name = str(dense_cfg.get("activation_function", "torch.nn.modules.activation.Tanh")).rsplit(
            ".", 1
        )[-1]
        if act_name not in _ST_ACTIVATIONS:
            raise ValueError(
                f"Unsupported Dense activation {dense_cfg.get('activation_function')!r} in {paths['Dense']}; "
                f"supported: {sorted(_ST_ACTIVATIONS)}."
            )
        derived["projection_dim"] = int(dense_cfg["out_features"])
        derived["projection_activation"] = _ST_ACTIVATIONS[act_name]
        derived["projection_bias"] = bool(dense_cfg.get("bias", True))
    derived["normalize"] = "Normalize" in kinds

    extra_path = folder / "config_sentence_transformers.json"
    if extra_path.is_file():
        extra = json.loads(extra_path.read_text(encoding="utf-8"))
        if extra.get("prompts"):
            derived["prompts"] = dict(extra["prompts"])
        if extra.get("default_prompt_name"):
            derived["default_prompt_name"] = extra["default_prompt_name"]
        sim = extra.get("similarity_fn_name")
        if sim in ("cosine", "dot", "euclidean", "manhattan"):
            derived["similarity_fn"] = sim
        elif sim == "dot_product":
            derived["similarity_fn"] = "dot"

    tokenizer = load_tokenizer(paths["Transformer"])
    if "max_seq_length" not in derived and tokenizer is not None:
        # Newer sentence-transformers folders keep the limit as the tokenizer's model_max_length.
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:
            derived["max_seq_length"] = limit
    derived.update(head)
    backbone = _load_backbone(paths["Transformer"], backbone_kwargs)
    model = _build(cls, backbone, derived, tokenizer)
    if "Dense" in kinds:
        state = _read_state_dict(paths["Dense"])
        mapped = {"dense.weight": state["linear.weight"]}
        if "linear.bias" in state:
            mapped["dense.bias"] = state["linear.bias"]
        if model.projection is None:
            raise ValueError("A Dense module was found but projection_dim was overridden to None.")
        model.projection.load_state_dict(mapped, strict=True)
    return model


def _st_pooling(config_path: Path) -> str:
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    if "pooling_mode" in cfg:
        modes = cfg["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
    else:
        modes = [mode for key, mode in _ST_LEGACY_POOLING_KEYS.items() if cfg.get(key)]
    if len(modes) != 1 or modes[0] not in _ST_POOLING:
        raise ValueError(
            f"Unsupported sentence-transformers pooling {modes} in {config_path}: exactly one of "
            f"{sorted(_ST_POOLING)} is supported."
        )
    if cfg.get("include_prompt", True) is False:
        raise ValueError(
            f"{config_path}: include_prompt=False (prompt tokens excluded from pooling) is not supported."
        )
    return _ST_POOLING[modes[0]]


# -- SimCSE ------------------------------------------------------------------------------------


def _weight_keys(folder: Path) -> list[str] | None:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
    single = folder / "model.safetensors"
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return list(f.keys())
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        return list(torch.load(binary, map_location="cpu", weights_only=True, mmap=True).keys())
    return None


def _read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    st = folder / "model.safetensors"
    if st.is_file():
        return load_file(str(st))
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise ValueError(f"No model.safetensors or pytorch_model.bin in {folder}.")


def _simcse_mlp_state(folder: Path) -> dict[str, torch.Tensor] | None:
    keys = _weight_keys(folder)
    if not keys or not all(k in keys for k in _SIMCSE_MLP_KEYS):
        return None
    if not any(k.startswith(_SIMCSE_PREFIXES) for k in keys):
        return None
    state = _read_state_dict(folder)
    return {k.removeprefix("mlp."): state[k] for k in _SIMCSE_MLP_KEYS}


def _load_simcse(cls, folder: Path, head: dict[str, Any], backbone_kwargs: dict[str, Any]):
    mlp = _simcse_mlp_state(folder)
    assert mlp is not None
    width = mlp["dense.weight"].shape[0]
    settings = {"pooling": "cls", "projection_dim": width, "projection_activation": "tanh"}
    settings.update(head)
    backbone = _load_backbone(folder, backbone_kwargs)
    model = _build(cls, backbone, settings, load_tokenizer(folder))
    if model.projection is not None:
        model.projection.load_state_dict(mlp, strict=True)
    return model


__all__ = [
    "check_single_format",
    "load_sentence_encoder",
    "load_tokenizer",
    "resolve_folder",
    "KNOWN_SOURCES",
]
