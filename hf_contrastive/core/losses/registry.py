"""One registry from loss names to loss factories.

`ContrastiveConfig(loss="...")` is validated against this registry and the trainer builds its loss
through [`build_loss`]. Every in-batch loss of `hf_contrastive.core.losses` is registered here; a wing
(or user code) adds its own with the [`register_loss`] decorator:

```python
from hf_contrastive.core.losses.registry import register_loss


@register_loss("my_loss", layouts=("pairs",), aliases=("mine",))
def build_my_loss(config, roles, model):
    return MyLoss(temperature=config.temperature)
```

A factory takes `(config, roles, model)`: the training arguments (read with `getattr`, so any object
with the needed attributes works, `None` for defaults), the dataset's column roles (an object with a
`layout` attribute, as `hf_contrastive.core.data.columns.ColumnRoles`; may be `None`) and the model
being trained (for losses that need its embedding size; may be `None`). It returns an `nn.Module` whose
`forward` returns a [`LossOutput`].

This module imports only core modules: the registry knows nothing of the wings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from hf_contrastive.core.losses.cosent import CoSENTLoss
from hf_contrastive.core.losses.infonce import InfoNCELoss
from hf_contrastive.core.losses.moco import MomentumContrastLoss
from hf_contrastive.core.losses.multicsr import MultiCSRLoss
from hf_contrastive.core.losses.regression import EmbeddingRegressionLoss
from hf_contrastive.core.losses.simcse import SupervisedSimCSELoss, UnsupervisedSimCSELoss

__all__ = [
    "LossFactory",
    "LossSpec",
    "available_losses",
    "build_loss",
    "get_loss_spec",
    "is_registered",
    "register_loss",
    "resolve_loss_name",
    "unregister_loss",
]

LossFactory = Callable[[Any, Any, Any], nn.Module]
F = TypeVar("F", bound=Callable[..., nn.Module])

# Names a loss may not take: `auto` means "pick from the data layout" in ContrastiveConfig.
RESERVED_NAMES = frozenset({"auto"})


@dataclass(frozen=True)
class LossSpec:
    """One registered loss.

    Args:
        name (`str`):
            The canonical name (what `available_losses()` lists).
        factory (`Callable[[config, roles, model], nn.Module]`):
            Builds the loss module.
        layouts (`tuple[str, ...]`):
            Data layouts the loss trains on (`"unsupervised"`, `"pairs"`, `"scored_pairs"`, or a layout
            of a wing); empty means any layout.
        aliases (`tuple[str, ...]`):
            Other names that resolve to this loss.
        description (`str`):
            One line for listings (the factory's docstring's first line by default).
    """

    name: str
    factory: LossFactory
    layouts: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""

    def accepts(self, layout: str | None) -> bool:
        """Whether the loss trains on data of `layout` (`None`: unknown, accepted)."""
        return layout is None or not self.layouts or layout in self.layouts


_REGISTRY: dict[str, LossSpec] = {}
_ALIASES: dict[str, str] = {}


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(
            f"A loss {what} must be a non-empty string without surrounding spaces, got {name!r}."
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved (ContrastiveConfig uses it) and cannot name a loss.")
    return name


def register_loss(
    name: str,
    *,
    layouts: Sequence[str] = (),
    aliases: Sequence[str] = (),
    description: str | None = None,
    replace: bool = False,
) -> Callable[[F], F]:
    """Decorator that registers a loss factory under `name`.

    Args:
        name (`str`):
            The loss's name, as given to `ContrastiveConfig(loss=name)`.
        layouts (`Sequence[str]`, *optional*, defaults to `()`):
            Data layouts the loss accepts; [`build_loss`] refuses any other with a message. Empty: any.
        aliases (`Sequence[str]`, *optional*, defaults to `()`):
            Other names for the same loss.
        description (`str`, *optional*):
            One line for listings; defaults to the first line of the factory's docstring.
        replace (`bool`, *optional*, defaults to `False`):
            Replace an existing registration of `name` (its old aliases are dropped) instead of raising. An
            alias that names another loss is refused either way.

    Returns:
        The decorator; it returns the factory unchanged.

    Raises:
        `ValueError`: the name or an alias is taken (and `replace` is off), reserved (`"auto"`) or empty.
    """
    _check_name(name, "name")
    if isinstance(aliases, str):
        aliases = (aliases,)
    alias_tuple = tuple(_check_name(a, "alias") for a in aliases)
    if isinstance(layouts, str):
        layouts = (layouts,)
    layout_tuple = tuple(layouts)
    if not all(isinstance(layout, str) and layout for layout in layout_tuple):
        raise ValueError(f"layouts must be non-empty strings, got {layouts!r}.")
    if name in alias_tuple or len(set(alias_tuple)) != len(alias_tuple):
        raise ValueError(
            f"Aliases of {name!r} must be distinct from each other and from the name: {aliases!r}."
        )

    def decorator(factory: F) -> F:
        if not callable(factory):
            raise TypeError(f"register_loss({name!r}) decorates a callable, got {type(factory).__name__}.")
        if name in _ALIASES:
            raise ValueError(f"Cannot register loss {name!r}: it is an alias of loss {_ALIASES[name]!r}.")
        if name in _REGISTRY and not replace:
            raise ValueError(f"A loss named {name!r} is already registered (pass replace=True to override).")
        for alias in alias_tuple:
            owner = alias if alias in _REGISTRY else _ALIASES.get(alias)
            if owner is not None and owner != name:
                raise ValueError(
                    f"Cannot register loss {name!r}: its alias {alias!r} already names loss {owner!r}."
                )
        if name in _REGISTRY:
            unregister_loss(name)
        doc = (factory.__doc__ or "").strip().splitlines()
        spec = LossSpec(
            name=name,
            factory=factory,
            layouts=layout_tuple,
            aliases=alias_tuple,
            description=description if description is not None else (doc[0] if doc else ""),
        )
        _REGISTRY[name] = spec
        for alias in alias_tuple:
            _ALIASES[alias] = name
        return factory

    return decorator


def unregister_loss(name: str) -> None:
    """Remove the loss `name` (or the loss an alias `name` points to) and all its aliases."""
    spec = get_loss_spec(name)
    del _REGISTRY[spec.name]
    for alias in spec.aliases:
        _ALIASES.pop(alias, None)


def is_registered(name: str) -> bool:
    """Whether `name` is a registered loss name or alias."""
    return isinstance(name, str) and (name in _REGISTRY or name in _ALIASES)


def available_losses(layout: str | None = None) -> tuple[str, ...]:
    """Canonical names of the registered losses, in registration order.

    Args:
        layout (`str`, *optional*):
            Only the losses that train on this data layout (`"unsupervised"`, `"pairs"`, `"scored_pairs"`...).
    """
    return tuple(n for n, spec in _REGISTRY.items() if layout is None or spec.accepts(layout))


def resolve_loss_name(name: str) -> str:
    """The canonical name of `name` (itself, or the loss an alias points to).

    Raises:
        `ValueError`: `name` is not registered; the message lists the registered names.
    """
    if isinstance(name, str):
        if name in _REGISTRY:
            return name
        if name in _ALIASES:
            return _ALIASES[name]
    aliases = f"; aliases: {tuple(_ALIASES)}" if _ALIASES else ""
    raise ValueError(f"Unknown loss {name!r}. Registered losses: {available_losses()}{aliases}.")


def get_loss_spec(name: str) -> LossSpec:
    """The [`LossSpec`] registered under `name` (a name or an alias)."""
    return _REGISTRY[resolve_loss_name(name)]


def build_loss(name: str, config: Any = None, roles: Any = None, model: Any = None) -> nn.Module:
    """Build the loss registered under `name`.

    Args:
        name (`str`):
            A registered name or alias (not `"auto"`: resolve it from the layout first).
        config (*optional*):
            The training arguments (for example a `ContrastiveConfig`); `None` builds with the defaults.
        roles (*optional*):
            The dataset's column roles (an object with `layout` and `describe()`, as `ColumnRoles`) or a
            layout string; checked against the loss's layouts. `None` skips the check.
        model (*optional*):
            The model being trained, for losses that need it (MoCo reads its embedding size).

    Returns:
        The loss `nn.Module`.

    Raises:
        `ValueError`: unknown name (listing the registered ones), or a data layout the loss does not take.
        `TypeError`: the factory did not return an `nn.Module`.
    """
    spec = get_loss_spec(name)
    layout = roles if isinstance(roles, str) or roles is None else getattr(roles, "layout", None)
    if not spec.accepts(layout):
        given = roles.describe() if hasattr(roles, "describe") else f"the layout {layout!r}"
        raise ValueError(
            f"loss={spec.name!r} needs a {' or '.join(spec.layouts)} dataset, but the columns give {given}."
        )
    loss = spec.factory(config, roles, model)
    if not isinstance(loss, nn.Module):
        raise TypeError(
            f"The factory of loss {spec.name!r} returned a {type(loss).__name__}, not an nn.Module."
        )
    return loss


# -- the core's in-batch losses ------------------------------------------------------------------------
def _get(config: Any, name: str, default: Any) -> Any:
    value = getattr(config, name, None) if config is not None else None
    return default if value is None else value


def _common(config: Any) -> dict[str, Any]:
    # (None: gather whenever training runs on more than one process)
    return {"gather_across_devices": getattr(config, "gather_across_devices", None)}


def _embedding_dim(model: Any) -> int | None:
    """The embedding size of `model` under DDP (`.module`) and PEFT (`get_base_model()`) wrappers:
    its `embedding_dim`, else its config's `hidden_size`; `None` if neither is an integer."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    dim = getattr(model, "embedding_dim", None) or getattr(
        getattr(model, "config", None), "hidden_size", None
    )
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


@register_loss("infonce", layouts=("pairs",))
def _build_infonce(config: Any, roles: Any, model: Any) -> nn.Module:
    """InfoNCE over in-batch (and hard) negatives."""
    return InfoNCELoss(
        temperature=_get(config, "temperature", 0.05),
        learnable_scale=bool(_get(config, "learnable_temperature", False)),
        hard_negative_weight=_get(config, "hard_negative_weight", 0.0),
        symmetric=bool(_get(config, "symmetric", False)),
        false_negative_threshold=getattr(config, "false_negative_threshold", None),
        **_common(config),
    )


@register_loss("mnrl", layouts=("pairs",), aliases=("multiple_negatives_ranking",))
def _build_mnrl(config: Any, roles: Any, model: Any) -> nn.Module:
    """Multiple-negatives ranking loss: InfoNCE, scale 20 (temperature 0.05) by default."""
    return _build_infonce(config, roles, model)


@register_loss("simcse_unsup", layouts=("unsupervised",))
def _build_simcse_unsup(config: Any, roles: Any, model: Any) -> nn.Module:
    """Unsupervised SimCSE: two dropout views of each sentence."""
    return UnsupervisedSimCSELoss(
        temperature=_get(config, "temperature", 0.05),
        learnable_scale=bool(_get(config, "learnable_temperature", False)),
        **_common(config),
    )


@register_loss("simcse_sup", layouts=("pairs",))
def _build_simcse_sup(config: Any, roles: Any, model: Any) -> nn.Module:
    """Supervised SimCSE on NLI pairs or triples."""
    return SupervisedSimCSELoss(
        temperature=_get(config, "temperature", 0.05),
        hard_negative_weight=_get(config, "hard_negative_weight", 0.0),
        symmetric=bool(_get(config, "symmetric", False)),
        **_common(config),
    )


@register_loss("multicsr", layouts=("pairs",))
def _build_multicsr(config: Any, roles: Any, model: Any) -> nn.Module:
    """MultiCSR: supervised SimCSE without the false negatives a frozen encoder flags."""
    return MultiCSRLoss(
        phi=_get(config, "false_negative_threshold", 0.95),
        temperature=_get(config, "temperature", 0.05),
        hard_negative_weight=_get(config, "hard_negative_weight", 0.0),
        **_common(config),
    )


@register_loss("cosent", layouts=("scored_pairs",))
def _build_cosent(config: Any, roles: Any, model: Any) -> nn.Module:
    """CoSENT ranking loss on the cosines of scored pairs."""
    return CoSENTLoss(temperature=_get(config, "temperature", 0.05), **_common(config))


@register_loss("regression", layouts=("scored_pairs",))
def _build_regression(config: Any, roles: Any, model: Any) -> nn.Module:
    """Mean squared error of the pair cosine against the score rescaled to [0, 1]."""
    return EmbeddingRegressionLoss(objective="mse", similarity="cosine")


@register_loss("moco", layouts=("pairs",), aliases=("momentum_contrast",))
def _build_moco(config: Any, roles: Any, model: Any) -> nn.Module:
    """Momentum contrast (MoCo / Contriever; CCP with per-language queues): negatives from a queue."""
    if roles is not None and getattr(roles, "negatives", None):
        raise ValueError(
            "loss='moco' needs (anchor, positive) pairs and takes its negatives from the queue; got "
            f"{roles.describe()}."
        )
    dim = _embedding_dim(model)
    if dim is None:
        raise ValueError("loss='moco' needs a model with an `embedding_dim` (a SentenceEncoder).")
    languages = getattr(config, "languages", None)
    return MomentumContrastLoss(
        dim,
        queue_size=int(_get(config, "queue_size", 65536)),
        temperature=_get(config, "temperature", 0.05),
        num_queues=len(languages) if languages else 1,
        query_batch_norm=bool(_get(config, "query_batch_norm", False)),
        seed=int(_get(config, "seed", 0)),
    )
