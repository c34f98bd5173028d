"""One save-and-card path for every head and every trained artefact.

- [`HubMixin`]: put it before `PreTrainedModel` in a head's bases. `save_pretrained` writes weights,
  config, tokenizer / processor and a `README.md` card into a temporary folder that replaces the target
  only once complete; `push_to_hub` saves into a temporary folder and uploads the model's files in one
  commit. The head describes itself through a few hooks: `card_template`, `card_pipeline_tag`,
  `card_tags`, `card_citations`, `card_info` and `card_details()`.
- [`save_with_card`] / [`push_with_card`]: the same for models that are not such heads (PEFT adapters of a
  causal LM, a plain transformers encoder), with the card described by arguments.
- [`CardTrainerMixin`]: makes a `Trainer`'s `save_model` / `push_to_hub` go through [`save_with_card`]
  and upload only the model's files.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelCard
from transformers.trainer import TRAINING_ARGS_NAME

from hf_contrastive.core.hub import push as _push
from hf_contrastive.core.hub.card import ModelCardInfo, render_card
from hf_contrastive.core.saving import check_replaceable, process_umask
from hf_contrastive.core.utils import atomic_save

__all__ = [
    "CardTrainerMixin",
    "HubMixin",
    "adapter_details",
    "push_with_card",
    "save_with_card",
]

_PROCESSOR_ATTRIBUTES = ("tokenizer", "processor")
ExtraFiles = Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike] | None


def _check_folder(save_directory: str | os.PathLike) -> None:
    if os.path.isfile(save_directory):
        raise ValueError(
            f"save_directory should be a folder, got an existing file: {os.fspath(save_directory)}"
        )


def _save_processors(processors: Sequence[Any], folder: Path) -> None:
    seen = set()
    for proc in processors:
        if proc is None or id(proc) in seen or not callable(getattr(proc, "save_pretrained", None)):
            continue
        seen.add(id(proc))
        proc.save_pretrained(folder)


class _CardInfoHolder:
    """The `card_info` attribute of heads and trainers: a [`ModelCardInfo`] created empty on first use."""

    @property
    def card_info(self) -> ModelCardInfo:
        """Provenance, data, training and results for the card (created empty on first use)."""
        info = self.__dict__.get("_card_info")
        if info is None:
            info = ModelCardInfo()
            self.__dict__["_card_info"] = info
        return info

    @card_info.setter
    def card_info(self, value: ModelCardInfo) -> None:
        if not isinstance(value, ModelCardInfo):
            raise TypeError(f"card_info must be a ModelCardInfo, got {type(value).__name__}.")
        self.__dict__["_card_info"] = value


class HubMixin(_CardInfoHolder):
    """Atomic `save_pretrained` with a model card, and a one-commit `push_to_hub`, for a head.

    Subclasses set:

    - `card_template` (`str`): file name of the family template in `model_cards/`;
    - `card_pipeline_tag` (`str`, *optional*) and `card_tags` (`tuple[str]`): Hub metadata of the family;
    - `card_citations` (`tuple[str]`): BibTeX of the head's method;
    - `card_details()` (`dict`): the template variables of this head (its settings, the default title
      and description, inputs of the usage snippet).

    `card_info` ([`ModelCardInfo`]) holds what the config does not: base model, datasets, license, tags,
    training details, results. Loaders and trainers fill it; it is created empty on first use.
    """

    card_template: ClassVar[str] = ""
    card_pipeline_tag: ClassVar[str | None] = None
    card_tags: ClassVar[tuple[str, ...]] = ()
    card_citations: ClassVar[tuple[str, ...]] = ()

    # -- hooks -----------------------------------------------------------------------------------

    def card_details(self) -> dict[str, Any]:
        """Template variables of this head; `title` and `description` are defaults for the card's."""
        return {}

    def card_processors(self) -> list[Any]:
        """Tokenizer / processor objects saved next to the weights (those set on the head)."""
        return [getattr(self, name, None) for name in _PROCESSOR_ATTRIBUTES]

    def model_card(self, repo_id: str | None = None, load_path: str | os.PathLike | None = None) -> ModelCard:
        """The rendered card; its snippets load `repo_id` (or `load_path` when there is none)."""
        if not self.card_template:
            raise ValueError(f"{type(self).__name__} sets no card_template.")
        details = dict(self.card_details())
        backbone_type = details.get("backbone_type")
        return render_card(
            self.card_template,
            self.card_info,
            details=details,
            pipeline_tag=self.card_pipeline_tag,
            tags=[*self.card_tags, *([backbone_type] if backbone_type else [])],
            citations=self.card_citations,
            repo_id=repo_id,
            load_path=load_path,
            title=details.pop("title", None),
            description=details.pop("description", None),
        )

    # -- saving ----------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *args: Any,
        push_to_hub: bool = False,
        write_card: bool = True,
        repo_id: str | None = None,
        overwrite: bool = False,
        **kwargs: Any,
    ) -> None:
        """Save weights (safetensors), config, tokenizer / processor and the model card `README.md`.

        Everything is written to a temporary folder next to `save_directory`, which then replaces the folder
        whole in one step: a failure or a kill leaves exactly the old folder or exactly the new one, and no
        file of an earlier save survives. Saving again over this head's own earlier save is allowed; a folder
        holding anything else (another model, a sentence-transformers or plain transformers folder, files
        that are not part of a saved model) is refused unless `overwrite=True`. Entries that belong to the
        folder rather than the model (a Trainer's `checkpoint-*` and `runs/`, `.git`) are kept.

        Args:
            save_directory (`str | os.PathLike`): the target folder.
            push_to_hub (`bool`): upload the folder afterwards (to `repo_id`, default: the folder name);
                Hub arguments (`commit_message`, `private`, `token`, `revision`, `create_pr`,
                `extra_files`) are taken from `kwargs`.
            write_card (`bool`): write `README.md`.
            repo_id (`str`, *optional*): the repository the card is for; its snippets load it.
            overwrite (`bool`, *optional*, defaults to `False`): replace a folder that holds something other than
                an earlier save of this kind of head.
            kwargs (`Any`): the rest goes to `PreTrainedModel.save_pretrained` (`max_shard_size`, `state_dict`...).

        Raises:
            `ValueError`: when `save_directory` is a file, or holds something else and `overwrite` is `False`.
        """

        hub_kwargs = {k: kwargs.pop(k) for k in _push._HUB_KWARGS if k in kwargs}
        extra_files = kwargs.pop("extra_files", None)
        if kwargs.get("is_main_process", True) is False:
            # A non-writing process of a distributed save only takes part in the gathers.
            super().save_pretrained(save_directory, *args, **kwargs)  # type: ignore[misc]
            return
        _check_folder(save_directory)
        with atomic_save(save_directory, check=None if overwrite else check_replaceable) as tmp:
            super().save_pretrained(tmp, *args, **kwargs)  # type: ignore[misc]
            _save_processors(self.card_processors(), tmp)
            if write_card:
                load_path = os.fspath(Path(save_directory).resolve())
                self.model_card(repo_id=repo_id, load_path=load_path).save(tmp / "README.md")
        if push_to_hub:
            _push.push_folder_to_hub(
                save_directory, repo_id or Path(save_directory).name, extra_files=extra_files, **hub_kwargs
            )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        extra_files: ExtraFiles = None,
        **save_kwargs: Any,
    ) -> Any:
        """Upload weights, config, tokenizer / processor and the rendered card to `repo_id` in one commit.

        The model is saved to a temporary folder first, so only its own files go up; `extra_files` (local
        paths, or `{path_in_repo: local path}`) adds others.
        """

        return _push.push_to_hub(
            self,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            max_shard_size=max_shard_size,
            extra_files=extra_files,
            **save_kwargs,
        )


# -- function form -------------------------------------------------------------------------------


def _peft_config(model: Any, adapter_name: str | None) -> Any:
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping) or not configs:
        return None
    name = adapter_name or getattr(model, "active_adapter", None)
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return configs.get(name) if name in configs else next(iter(configs.values()))


def _is_local(path: str | None) -> bool:
    return bool(path) and (os.path.isabs(path) or os.path.exists(path))


def adapter_details(model: Any, adapter_name: str | None = None) -> dict[str, Any]:
    """Template variables describing a causal LM or a PEFT model: `is_adapter`, `lora`, the base model.

    `base_model_source` is where the weights came from (a Hub id or a local folder), `architecture`
    and `backbone_type` the base model's class and `model_type`.
    """

    peft_config = _peft_config(model, adapter_name)
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    config = getattr(base, "config", None)
    details: dict[str, Any] = {
        "is_adapter": peft_config is not None,
        "architecture": type(base).__name__,
        "backbone_type": getattr(config, "model_type", None),
        "base_model_source": (getattr(peft_config, "base_model_name_or_path", None) if peft_config else None)
        or getattr(config, "_name_or_path", None)
        or None,
        "lora": {},
    }
    if peft_config is not None:
        targets = getattr(peft_config, "target_modules", None)
        if isinstance(targets, (set, frozenset, list, tuple)):
            targets = sorted(targets)
        details["lora"] = {
            "type": str(getattr(peft_config, "peft_type", "LORA")).split(".")[-1],
            "r": getattr(peft_config, "r", None),
            "alpha": getattr(peft_config, "lora_alpha", None),
            "dropout": getattr(peft_config, "lora_dropout", None),
            "target modules": targets,
        }
        details["lora"] = {k: v for k, v in details["lora"].items() if v is not None}
    return details


def _flatten_adapter(folder: Path, adapter_name: str) -> None:
    # PEFT writes an adapter other than "default" into a subfolder named after it; the card's snippet
    # loads the folder itself, so the adapter files move to the top.
    sub = folder / adapter_name
    if not (sub / "adapter_config.json").is_file():
        return
    for item in list(sub.iterdir()):
        os.replace(item, folder / item.name)
    shutil.rmtree(sub)


def save_with_card(
    model: Any,
    save_directory: str | os.PathLike,
    card_info: ModelCardInfo | None = None,
    template: str = "causal_lm_adapter.md",
    *,
    tokenizer: Any = None,
    details: Mapping[str, Any] | None = None,
    adapter_name: str | None = None,
    pipeline_tag: str | None = None,
    tags: Sequence[str] = (),
    citations: Sequence[str] = (),
    repo_id: str | None = None,
    overwrite: bool = False,
    **save_kwargs: Any,
) -> Path:
    """Save a model that is not a [`HubMixin`] head (a PEFT adapter, a causal LM, a plain encoder) with a card.

    Weights (adapter files for a PEFT model), config, generation config, `tokenizer` and the rendered
    `template` are written to a temporary folder that then replaces `save_directory` whole, in one step (see
    [`HubMixin.save_pretrained`]): no file of the folder's earlier content survives, and a folder holding
    anything other than an earlier hf-contrastive save of the same kind of model is refused unless
    `overwrite=True`.

    Args:
        model (`Any`): a `PreTrainedModel` or a `peft.PeftModel`. A [`HubMixin`] head is saved by its own
            `save_pretrained` (with `card_info` as its card info when given).
        save_directory (`str | os.PathLike`): the target folder.
        card_info ([`ModelCardInfo`], *optional*): what the card says about provenance, data, training and
            results. `base_model` defaults to the Hub id the base weights came from.
        template (`str`): file name of the template in `model_cards/`.
        tokenizer (`Any`, *optional*): tokenizer or processor saved next to the weights.
        details (`Mapping`, *optional*): the template's own variables (`objective`, `title`...), on top
            of [`adapter_details`].
        adapter_name (`str`, *optional*): the PEFT adapter to save (default: all of them); a named adapter
            is written at the top of the folder, as `PeftModel.from_pretrained(base, folder)` expects.
        pipeline_tag / tags / citations: Hub metadata and BibTeX of the method.
        repo_id (`str`, *optional*): the repository the card is for (its snippets load it).
        overwrite (`bool`, *optional*, defaults to `False`): replace a folder that holds something else (another
            model, a plain transformers or sentence-transformers folder, files that are not model files).
        save_kwargs (`Any`): passed to the model's `save_pretrained` (`state_dict`, `max_shard_size`...).

    Returns:
        `Path`: `save_directory`.
    """

    if isinstance(model, HubMixin):
        if card_info is not None:
            model.card_info = card_info
        model.save_pretrained(save_directory, repo_id=repo_id, overwrite=overwrite, **save_kwargs)
        return Path(save_directory)
    if not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(f"save_with_card needs a model with save_pretrained, got {type(model).__name__}.")
    _check_folder(save_directory)
    info = copy.deepcopy(card_info) if card_info is not None else ModelCardInfo()
    context = {**adapter_details(model, adapter_name), **dict(details or {})}
    source = context.get("base_model_source")
    if info.base_model is None and source and not _is_local(source):
        info.base_model = source
    if context["is_adapter"]:
        info.tags = list(dict.fromkeys([*info.tags, "peft", "lora"]))
    with atomic_save(save_directory, check=None if overwrite else check_replaceable) as tmp:
        if context["is_adapter"] and adapter_name is not None:
            model.save_pretrained(tmp, selected_adapters=[adapter_name], **save_kwargs)
            if adapter_name != "default":
                _flatten_adapter(tmp, adapter_name)
        else:
            model.save_pretrained(tmp, **save_kwargs)
        _save_processors([tokenizer], tmp)
        card = render_card(
            template,
            info,
            details=context,
            pipeline_tag=pipeline_tag,
            tags=[*tags, *([context["backbone_type"]] if context.get("backbone_type") else [])],
            citations=citations,
            repo_id=repo_id,
            load_path=os.fspath(Path(save_directory).resolve()),
            title=context.pop("title", None),
            description=context.pop("description", None),
        )
        card.save(tmp / "README.md")
    return Path(save_directory)


def push_with_card(
    model: Any,
    repo_id: str,
    card_info: ModelCardInfo | None = None,
    template: str = "causal_lm_adapter.md",
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    extra_files: ExtraFiles = None,
    **save_kwargs: Any,
) -> Any:
    """[`save_with_card`] into a temporary folder, then upload the model's files to `repo_id` in one commit.

    `save_kwargs` go to [`save_with_card`] (`tokenizer`, `details`, `adapter_name`, `tags`...);
    `extra_files` (local paths, or `{path_in_repo: local path}`) are uploaded too.
    """

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string like 'user/model', got {repo_id!r}.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        save_with_card(model, folder, card_info, template, repo_id=repo_id, **save_kwargs)
        names = _push.copy_extra_files(extra_files, folder)
        return _push.push_folder_to_hub(
            folder,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            extra_files=names,
        )


# -- trainers ------------------------------------------------------------------------------------


class CardTrainerMixin(_CardInfoHolder):
    """`save_model` / `push_to_hub` of a `transformers.Trainer` (or TRL trainer) through [`save_with_card`].

    Put it before the Trainer class in the bases. The trainer sets `card_template` (and
    `card_pipeline_tag`, `card_tags`, `card_citations`) and implements `card_training()` (the
    objective and hyper-parameters for the card's training section) and `card_details()` (template
    variables such as the objective's name). The citation of `self.loss_fn` is added when there is one. `trainer.card_info` ([`ModelCardInfo`]) takes what the
    trainer cannot know: datasets, license, results, the base model's Hub id.

    The final folder holds the model's files, the card and `training_args.bin`; `push_to_hub` uploads
    the model's files and card only (`extra_files=["training_args.bin"]` to add it).
    """

    card_template: ClassVar[str] = "causal_lm_adapter.md"
    card_pipeline_tag: ClassVar[str | None] = "text-generation"
    card_tags: ClassVar[tuple[str, ...]] = ()
    card_citations: ClassVar[tuple[str, ...]] = ()

    def card_training(self) -> dict[str, Any]:
        """The training section: objective (with its citation key) and hyper-parameters."""
        return {}

    def card_details(self) -> dict[str, Any]:
        """Template variables of this trainer's artefact (`objective`, `title`, `description`...)."""
        return {}

    def _card_model(self) -> Any:
        return self.accelerator.unwrap_model(self.model)  # type: ignore[attr-defined]

    def _filled_card_info(self) -> ModelCardInfo:
        info = copy.deepcopy(self.card_info)
        args = self.args  # type: ignore[attr-defined]
        training = {
            **self.card_training(),
            "learning rate": args.learning_rate,
            "epochs": args.num_train_epochs,
            "batch size (all processes)": args.per_device_train_batch_size * max(args.world_size, 1),
            "gradient accumulation steps": args.gradient_accumulation_steps,
            "optimizer steps": getattr(getattr(self, "state", None), "global_step", None),
            "seed": args.seed,
        }
        lora = adapter_details(self._card_model())["lora"]
        if lora:
            training["LoRA"] = ", ".join(f"{k}={v}" for k, v in lora.items())
        info.training = {**{k: v for k, v in training.items() if v is not None}, **info.training}
        return info

    def _card_citations(self) -> list[str]:
        # The trainer's loss carries the citation of its objective.
        loss_citation = getattr(getattr(self, "loss_fn", None), "citation", None)
        return [*self.card_citations, *([loss_citation] if loss_citation else [])]

    def _card_kwargs(self) -> dict[str, Any]:
        return {
            "details": self.card_details(),
            "pipeline_tag": self.card_pipeline_tag,
            "tags": self.card_tags,
            "citations": self._card_citations(),
        }

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        args = self.args  # type: ignore[attr-defined]
        output_dir = output_dir if output_dir is not None else args.output_dir
        if not args.should_save:
            super()._save(output_dir, state_dict)  # type: ignore[misc]
            return
        model = self._card_model()
        if not callable(getattr(model, "save_pretrained", None)):
            super()._save(output_dir, state_dict)  # type: ignore[misc]
            return
        processing_class = getattr(self, "processing_class", None)
        save_with_card(
            model,
            output_dir,
            self._filled_card_info(),
            self.card_template,
            tokenizer=processing_class,
            state_dict=state_dict,
            repo_id=self.__dict__.get("_card_repo_id"),
            **self._card_kwargs(),
        )
        torch.save(args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """Write this trainer's card (not the generic one) to `args.output_dir/README.md`."""
        if not self.is_world_process_zero():  # type: ignore[attr-defined]
            return
        output_dir = Path(self.args.output_dir)  # type: ignore[attr-defined]
        output_dir.mkdir(parents=True, exist_ok=True)
        details = {**adapter_details(self._card_model()), **self.card_details()}
        info = self._filled_card_info()
        source = details.get("base_model_source")
        if info.base_model is None and source and not _is_local(source):
            info.base_model = source
        card = render_card(
            self.card_template,
            info,
            details=details,
            pipeline_tag=self.card_pipeline_tag,
            tags=[*self.card_tags, *([details["backbone_type"]] if details.get("backbone_type") else [])],
            citations=self._card_citations(),
            load_path=os.fspath(output_dir.resolve()),
            title=details.pop("title", None),
            description=details.pop("description", None),
        )
        fd, tmp = tempfile.mkstemp(prefix=".README.", suffix=".md", dir=output_dir)
        os.close(fd)
        try:
            card.save(tmp)
            os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp's 0o600 would make the card private
            os.replace(tmp, output_dir / "README.md")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        *,
        repo_id: str | None = None,
        extra_files: Sequence[str] | None = None,
        allow_patterns: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Save the model with its card to `args.output_dir` and upload its files in one commit.

        Args:
            commit_message / token / revision / private: as `Trainer.push_to_hub` (defaults from `args`).
            repo_id (`str`, *optional*): defaults to `args.hub_model_id`, else the output folder's name.
            extra_files (`Sequence[str]`, *optional*): further files of the output folder to upload (paths
                relative to it, e.g. `["training_args.bin"]`).
            allow_patterns (`Sequence[str]`, *optional*): replaces the list of model file patterns.
        """

        args = self.args  # type: ignore[attr-defined]
        repo_id = repo_id or args.hub_model_id or Path(os.path.abspath(args.output_dir)).name
        self.callback_handler.on_push_begin(args, self.state, self.control)  # type: ignore[attr-defined]
        # The card written by this save is the one uploaded: its snippets load the repository.
        self.__dict__["_card_repo_id"] = repo_id
        try:
            self.save_model(_internal_call=True)  # type: ignore[attr-defined]
        finally:
            self.__dict__.pop("_card_repo_id", None)
        if not self.is_world_process_zero():  # type: ignore[attr-defined]
            return None
        return _push.push_folder_to_hub(
            args.output_dir,
            repo_id,
            commit_message=commit_message,
            token=token if token is not None else args.hub_token,
            revision=revision if revision is not None else args.hub_revision,
            private=private if private is not None else args.hub_private_repo,
            extra_files=extra_files,
            allow_patterns=allow_patterns,
        )
