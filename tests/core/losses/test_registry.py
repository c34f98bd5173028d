"""The loss registry: names -> factories, layout checks, aliases, and losses registered from outside the core."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.core.data.columns import ColumnRoles
from hf_contrastive.core.losses import (
    ContrastiveLoss,
    CoSENTLoss,
    EmbeddingRegressionLoss,
    InfoNCELoss,
    LossOutput,
    MomentumContrastLoss,
    MultiCSRLoss,
    SupervisedSimCSELoss,
    UnsupervisedSimCSELoss,
    registry,
)
from hf_contrastive.embeddings import trainer as embeddings_trainer
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder

CORE = {
    "infonce": InfoNCELoss,
    "mnrl": InfoNCELoss,
    "simcse_unsup": UnsupervisedSimCSELoss,
    "simcse_sup": SupervisedSimCSELoss,
    "multicsr": MultiCSRLoss,
    "cosent": CoSENTLoss,
    "regression": EmbeddingRegressionLoss,
    "moco": MomentumContrastLoss,
}
ROLES = {
    "unsupervised": ColumnRoles("anchor"),
    "pairs": ColumnRoles("anchor", "positive"),
    "scored_pairs": ColumnRoles("anchor", "positive", score="score"),
}
DIM = 16


@pytest.fixture
def clean_registry():
    """Restore the registry after a test that registers or replaces losses."""
    names, aliases = dict(registry._REGISTRY), dict(registry._ALIASES)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(names)
    registry._ALIASES.clear()
    registry._ALIASES.update(aliases)


def config(tmp_path, **kw) -> ContrastiveConfig:
    base = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        queue_size=8,
        max_steps=3,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1e-3,
        seed=0,
    )
    base.update(kw)
    return ContrastiveConfig(**base)


def sentences(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


def encoder(tmp_path) -> SentenceEncoder:
    torch.manual_seed(0)
    tok = bert_tokenizer(tmp_path / "vocab")
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=bert_config(len(tok))))
    model.tokenizer = tok
    return model


# -- the core's registrations -------------------------------------------------------------------------
def test_every_core_loss_is_registered_in_order():
    assert registry.available_losses()[: len(CORE)] == tuple(CORE)
    assert embeddings_trainer.LOSSES[: len(CORE) + 1] == ("auto", *CORE)
    assert registry.available_losses("scored_pairs")[:2] == ("cosent", "regression")
    assert "simcse_unsup" not in registry.available_losses("pairs")


@pytest.mark.parametrize("name", list(CORE))
def test_every_registered_name_builds_on_its_layouts(tmp_path, name):
    spec = registry.get_loss_spec(name)
    assert spec.layouts, f"{name} accepts any layout: the trainer could not feed it"
    args = config(tmp_path, temperature=0.1, false_negative_threshold=0.9)
    for layout in spec.layouts:
        loss = registry.build_loss(name, args, ROLES[layout], SimpleNamespace(embedding_dim=DIM))
        assert type(loss) is CORE[name]
        assert isinstance(loss, ContrastiveLoss) and loss.citation.lstrip().startswith("@")
        cfg = loss.config_dict()
        if "temperature" in cfg:  # the config's temperature reaches the loss
            assert cfg["temperature"] == pytest.approx(0.1, rel=1e-12)
        if name == "cosent":
            assert loss.scale == pytest.approx(10.0, rel=1e-12)
        if name == "multicsr":
            assert loss.phi == 0.9
        if name == "moco":
            assert loss.dim == DIM and loss.queue_size == 8 and loss.uses_momentum_encoder
        else:
            assert not loss.uses_momentum_encoder


def test_defaults_without_a_config():
    loss = registry.build_loss("infonce")
    assert loss.config_dict()["temperature"] == pytest.approx(0.05, rel=1e-12)
    assert loss.gather_across_devices is None  # auto: gather only when distributed
    assert registry.build_loss("multicsr").phi == 0.95
    moco = registry.build_loss("moco", None, "pairs", SimpleNamespace(embedding_dim=DIM))
    assert moco.queue_size == 65536 and moco.num_queues == 1


@pytest.mark.parametrize("name", list(CORE))
def test_wrong_layout_is_refused_with_a_message(tmp_path, name):
    spec = registry.get_loss_spec(name)
    wrong = [layout for layout in ROLES if layout not in spec.layouts]
    assert wrong
    for layout in wrong:
        with pytest.raises(
            ValueError, match=rf"loss='{name}' needs a .*dataset, but the columns give {layout} \("
        ):
            registry.build_loss(name, None, ROLES[layout], SimpleNamespace(embedding_dim=DIM))
        with pytest.raises(ValueError, match=rf"but the columns give the layout '{layout}'"):
            registry.build_loss(name, None, layout, SimpleNamespace(embedding_dim=DIM))


def test_unknown_name_is_refused_listing_the_known_ones(tmp_path):
    with pytest.raises(ValueError) as err:
        registry.build_loss("triplet")
    message = str(err.value)
    assert "Unknown loss 'triplet'" in message
    assert all(repr(name) in message for name in registry.available_losses())
    with pytest.raises(ValueError) as err:
        config(tmp_path, loss="triplet")
    assert "loss must be one of" in str(err.value)
    assert all(repr(name) in str(err.value) for name in ("auto", *registry.available_losses()))
    assert not registry.is_registered("triplet") and not registry.is_registered(None)


def test_moco_needs_pairs_without_negatives_and_an_embedding_size():
    triples = ColumnRoles("anchor", "positive", negatives=["negative"])
    with pytest.raises(ValueError, match="takes its negatives from the queue"):
        registry.build_loss("moco", None, triples, SimpleNamespace(embedding_dim=DIM))
    with pytest.raises(ValueError, match="needs a model with an `embedding_dim`"):
        registry.build_loss("moco", None, ROLES["pairs"], None)
    # Wrapped models (DDP's .module, PEFT's get_base_model()) are looked through.
    peft_like = SimpleNamespace(get_base_model=lambda: SimpleNamespace(embedding_dim=12))
    assert registry.build_loss("moco", None, "pairs", SimpleNamespace(module=peft_like)).dim == 12
    with_config = SimpleNamespace(config=SimpleNamespace(hidden_size=20))
    assert registry.build_loss("moco", None, "pairs", with_config).dim == 20


def test_aliases_resolve_to_the_canonical_name(tmp_path):
    assert registry.resolve_loss_name("momentum_contrast") == "moco"
    assert registry.get_loss_spec("multiple_negatives_ranking").name == "mnrl"
    assert "momentum_contrast" not in registry.available_losses()
    assert config(tmp_path, loss="multiple_negatives_ranking").loss == "mnrl"
    loss = registry.build_loss("momentum_contrast", None, "pairs", SimpleNamespace(embedding_dim=DIM))
    assert type(loss) is MomentumContrastLoss


# -- registering ------------------------------------------------------------------------------------
class _AlignmentLoss(ContrastiveLoss):
    """Mean ``1 - cos(anchor, positive)`` (alignment; Wang & Isola 2020), a loss from outside the core."""

    citation = """@inproceedings{wang2020understanding,
  title     = {Understanding Contrastive Representation Learning through Alignment and Uniformity on the
               Hypersphere},
  author    = {Wang, Tongzhou and Isola, Phillip},
  booktitle = {ICML},
  year      = {2020}
}"""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def config_dict(self) -> dict[str, Any]:
        return {"weight": self.weight}

    def forward(self, anchor, positive, negatives=None, **_: Any) -> LossOutput:
        align = (1.0 - F.cosine_similarity(anchor, positive, dim=-1)).mean()
        return LossOutput(loss=self.weight * align, components={"align": align.detach()})


def test_registration_rules(clean_registry):
    def factory(config, roles, model):
        """A test loss."""
        return _AlignmentLoss()

    registry.register_loss("test_align", layouts="pairs", aliases=("test_alignment",))(factory)
    spec = registry.get_loss_spec("test_alignment")
    assert spec.name == "test_align" and spec.layouts == ("pairs",) and spec.description == "A test loss."
    with pytest.raises(ValueError, match="already registered"):
        registry.register_loss("test_align")(factory)
    with pytest.raises(ValueError, match="its alias 'moco' already names loss 'moco'"):
        registry.register_loss("test_other", aliases=("moco",))(factory)
    with pytest.raises(ValueError, match="it is an alias of loss 'test_align'"):
        registry.register_loss("test_alignment")(factory)
    with pytest.raises(ValueError, match="reserved"):
        registry.register_loss("auto")
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register_loss(" padded ")
    # replace=True swaps the factory and drops the old aliases
    registry.register_loss("test_align", layouts=("scored_pairs",), replace=True)(
        lambda c, r, m: _AlignmentLoss(2.0)
    )
    assert not registry.is_registered("test_alignment")
    assert registry.build_loss("test_align", None, "scored_pairs").weight == 2.0
    registry.register_loss("test_bad")(lambda c, r, m: "not a module")
    with pytest.raises(TypeError, match="returned a str, not an nn.Module"):
        registry.build_loss("test_bad")
    registry.unregister_loss("test_align")
    assert "test_align" not in registry.available_losses()


def test_a_loss_registered_outside_the_core_trains_through_contrastive_config(tmp_path, clean_registry):
    @registry.register_loss("test_align", layouts=("pairs",))
    def build(config, roles, model):
        return _AlignmentLoss(weight=float(config.temperature) * 20)

    assert "test_align" in embeddings_trainer.LOSSES  # computed on access
    args = config(tmp_path, loss="test_align")
    ds = Dataset.from_dict({"anchor": sentences(12, 1), "positive": sentences(12, 2)})
    model = encoder(tmp_path)
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=ds)
    assert type(trainer.loss_fn) is _AlignmentLoss and trainer.loss_fn.weight == pytest.approx(1.0)
    assert trainer.key_encoder is None
    batch = trainer._prepare_inputs(trainer.data_collator([ds[i] for i in range(4)]))
    model.eval()
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    emb = outputs["embeddings"].detach().double()
    want = (1.0 - F.cosine_similarity(emb[:4], emb[4:], dim=-1)).mean()
    # fp32 cosines of O(1) values over a small hidden size: within ~100 float32 ulps of the float64 value
    assert float(loss.detach()) == pytest.approx(float(want), abs=100 * torch.finfo(torch.float32).eps)
    model.train()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "align" in h]
    assert len(logs) == 3 and all(0.0 <= h["align"] <= 2.0 for h in logs)


class _QueueLoss(ContrastiveLoss):
    """A momentum-encoder loss that is not a MomentumContrastLoss (it wraps one)."""

    citation = MomentumContrastLoss.citation
    uses_momentum_encoder = True

    def __init__(self, dim: int, queue_size: int) -> None:
        super().__init__()
        self.inner = MomentumContrastLoss(dim, queue_size=queue_size)

    def config_dict(self) -> dict[str, Any]:
        return self.inner.config_dict()

    def forward(self, query, key, queue_ids=None) -> LossOutput:
        return self.inner(query, key, queue_ids)

    def enqueue(self, keys, queue_ids=None) -> None:
        self.inner.enqueue(keys, queue_ids)


def test_momentum_encoder_is_keyed_on_the_loss_property(tmp_path, clean_registry):
    @registry.register_loss("test_queue", layouts=("pairs",))
    def build(config, roles, model):
        return _QueueLoss(model.embedding_dim, queue_size=int(config.queue_size))

    ds = Dataset.from_dict({"anchor": sentences(12, 3), "positive": sentences(12, 4)})
    model = encoder(tmp_path)
    trainer = ContrastiveTrainer(model=model, args=config(tmp_path, loss="test_queue"), train_dataset=ds)
    assert not isinstance(trainer.loss_fn, MomentumContrastLoss) and trainer.key_encoder is not None
    before = trainer.loss_fn.inner.queue.clone()
    trainer.train()
    assert int(trainer.loss_fn.inner.queue_ptr[0]) == (3 * 4) % 8
    assert not torch.equal(trainer.loss_fn.inner.queue, before)
    assert len([h for h in trainer.state.log_history if "moco" in h]) == 3


def test_contrastive_config_moco_trains_through_the_registry(tmp_path, clean_registry):
    original = registry.get_loss_spec("moco")
    calls = []

    def spy(config, roles, model):
        calls.append((config.loss, roles.layout, model.embedding_dim))
        return original.factory(config, roles, model)

    registry.register_loss("moco", layouts=original.layouts, aliases=original.aliases, replace=True)(spy)
    assert not hasattr(ContrastiveTrainer, "_build_moco")
    ds = Dataset.from_dict({"anchor": sentences(12, 5), "positive": sentences(12, 6)})
    model = encoder(tmp_path)
    trainer = ContrastiveTrainer(
        model=model, args=config(tmp_path, loss="momentum_contrast"), train_dataset=ds
    )
    assert calls == [("moco", "pairs", model.embedding_dim)]
    assert type(trainer.loss_fn) is MomentumContrastLoss and trainer.loss_fn.dim == model.embedding_dim
    assert trainer.loss_fn.config_dict()["temperature"] == pytest.approx(0.05, rel=1e-12)
    before = trainer.loss_fn.queue.clone()
    trainer.train()
    assert int(trainer.key_encoder.num_updates) == 2  # before steps 2 and 3
    assert not torch.equal(trainer.loss_fn.queue, before)
    logs = [h for h in trainer.state.log_history if "moco" in h]
    # InfoNCE against K = 8 queue keys and 1 positive: the loss lies in (0, log 9 + 2 / tau].
    assert len(logs) == 3 and all(0.0 < h["moco"] < math.log(9) + 2 / 0.05 for h in logs)


def test_embeddings_build_loss_keeps_auto_and_its_layout_rule(tmp_path):
    args = config(tmp_path)
    assert args.loss == "auto"
    want = {"unsupervised": UnsupervisedSimCSELoss, "pairs": InfoNCELoss, "scored_pairs": CoSENTLoss}
    for layout, roles in ROLES.items():
        assert type(embeddings_trainer.build_loss(args, roles)) is want[layout]
    with pytest.raises(ValueError, match="needs a scored_pairs dataset"):
        embeddings_trainer.build_loss(config(tmp_path, loss="cosent"), ROLES["pairs"])
