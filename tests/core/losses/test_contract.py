"""Every loss class of the package, core and wings, keeps the loss contract.

The package is walked module by module; every ``nn.Module`` subclass named ``*Loss`` and every
``ContrastiveLoss`` subclass must have an input recipe below (so a new loss cannot skip this test),
and each must return a ``LossOutput`` with a finite scalar loss that back-propagates, detached scalar
components, a BibTeX citation and a JSON-serialisable ``config_dict()``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
import re
import sys
from collections.abc import Callable

import pytest
import torch
from torch import nn

import hf_contrastive
from hf_contrastive.continual.losses import InputLabelContrastiveLoss, NSPTLoss
from hf_contrastive.core.losses import (
    ContrastiveLoss,
    CoSENTLoss,
    EmbeddingRegressionLoss,
    GradCache,
    InfoNCELoss,
    LossOutput,
    MomentumContrastLoss,
    MultiCSRLoss,
    MultipleNegativesRankingLoss,
    SupervisedSimCSELoss,
    UnsupervisedSimCSELoss,
)
from hf_contrastive.embeddings.dse.losses import DSELoss
from hf_contrastive.embeddings.text2token.losses import Text2TokenLoss
from hf_contrastive.embeddings.whitening import WhitenedCSELoss
from hf_contrastive.faithfulness.losses import SpanUnlikelihoodLoss
from hf_contrastive.generation.losses import SimCTGLoss
from hf_contrastive.relation.losses import SpanContrastiveLoss
from hf_contrastive.retrieval.rerankers.losses import ListwiseInfoNCELoss, PointwiseBCELoss, YesNoSFTLoss
from hf_contrastive.vision.cosmo import CosmoContrastiveLoss
from hf_contrastive.vision.dense.dito import DITOLoss
from hf_contrastive.vision.dense.pixpro import PixProLoss
from hf_contrastive.vision.hydra import HydraLoss
from hf_contrastive.vision.improved import (
    BarlowTwinsLoss,
    ImprovedCLIPLoss,
    SiamLIPLoss,
    SimCLRImageLoss,
    SwALIPLoss,
)
from hf_contrastive.vision.losses import CLIPLoss, SigLIPLoss

B, D = 4, 8


def _loss_classes() -> set[type]:
    """Loss classes defined anywhere in the package (every module imported)."""
    for info in pkgutil.walk_packages(hf_contrastive.__path__, "hf_contrastive."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("hf_contrastive") or module is None:
            continue
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and obj.__module__.startswith("hf_contrastive")
                and issubclass(obj, nn.Module)
                and (issubclass(obj, ContrastiveLoss) or obj.__name__.endswith("Loss"))
                and obj is not ContrastiveLoss
                and not obj.__name__.startswith("_")  # private bases (shared input handling) are not losses
            ):
                found.add(obj)
    return found


def _fixed(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _leaf(*shape: int, seed: int) -> torch.Tensor:
    return _fixed(*shape, seed=seed).requires_grad_(True)


def _log_probs(seed: int) -> torch.Tensor:
    """``[B, T]`` log-probabilities in (-inf, 0), with gradient."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.logsigmoid(torch.randn(2, 6, generator=g) + 1.0).detach().requires_grad_(True)


def _span_case(objective: str) -> Callable[[], tuple[nn.Module, tuple, dict]]:
    def case() -> tuple[nn.Module, tuple, dict]:
        mask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
        span = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]])
        return SpanUnlikelihoodLoss(objective=objective, eps=0.5), (_log_probs(1), mask, span), {}

    return case


# Each recipe returns (loss module, positional inputs, keyword inputs); the first input has gradient.
CASES: dict[type, list[Callable[[], tuple[nn.Module, tuple, dict]]]] = {
    InfoNCELoss: [lambda: (InfoNCELoss(), (_leaf(B, D, seed=0), _leaf(B, D, seed=1)), {})],
    MultipleNegativesRankingLoss: [
        lambda: (MultipleNegativesRankingLoss(), (_leaf(B, D, seed=0), _leaf(B, D, seed=1)), {})
    ],
    UnsupervisedSimCSELoss: [
        lambda: (UnsupervisedSimCSELoss(), (_leaf(B, D, seed=0), _leaf(B, D, seed=1)), {})
    ],
    SupervisedSimCSELoss: [
        lambda: (
            SupervisedSimCSELoss(hard_negative_weight=0.5),
            (_leaf(B, D, seed=0), _leaf(B, D, seed=1), _leaf(B, 1, D, seed=2)),
            {},
        )
    ],
    MultiCSRLoss: [
        lambda: (
            MultiCSRLoss(),
            (_leaf(B, D, seed=0), _leaf(B, D, seed=1)),
            {"reference_anchor": _fixed(B, 5, seed=3), "reference_positive": _fixed(B, 5, seed=4)},
        )
    ],
    CoSENTLoss: [
        lambda: (
            CoSENTLoss(),
            (_leaf(B, D, seed=0), _leaf(B, D, seed=1), torch.tensor([0.0, 1.0, 3.0, 5.0])),
            {},
        )
    ],
    EmbeddingRegressionLoss: [
        lambda: (
            EmbeddingRegressionLoss(),
            (_leaf(B, D, seed=0),),
            {"target_embeddings": _fixed(B, D, seed=5)},
        ),
        lambda: (
            EmbeddingRegressionLoss(),
            (_leaf(B, D, seed=0), _leaf(B, D, seed=1)),
            {"scores": torch.tensor([0.0, 0.2, 0.6, 1.0])},
        ),
    ],
    MomentumContrastLoss: [
        lambda: (MomentumContrastLoss(D, queue_size=6), (_leaf(B, D, seed=0), _fixed(B, D, seed=6)), {}),
    ],
    GradCache: [
        lambda: (GradCache(InfoNCELoss(), mini_batch_size=2), (_leaf(B, D, seed=0), _leaf(B, D, seed=1)), {})
    ],
    PointwiseBCELoss: [
        lambda: (PointwiseBCELoss(pos_weight=2.0), (_leaf(6, seed=0), torch.tensor([1.0, 0, 0, 1, 0, 0])), {})
    ],
    ListwiseInfoNCELoss: [lambda: (ListwiseInfoNCELoss(temperature=0.5), (_leaf(3, 4, seed=0),), {})],
    YesNoSFTLoss: [lambda: (YesNoSFTLoss(), (_leaf(5, 2, seed=0), torch.tensor([1, 0, 0, 1, 0])), {})],
    NSPTLoss: [
        lambda: (NSPTLoss(), (_leaf(B, D, seed=0), _leaf(B, D, seed=1), torch.tensor([0, 1, 0, 2])), {}),
    ],
    InputLabelContrastiveLoss: [
        lambda: (
            InputLabelContrastiveLoss(temperature=0.2),
            (_leaf(B, D, seed=0), _leaf(3, D, seed=1), torch.tensor([0, 2, 1, 2])),
            {},
        )
    ],
    SpanContrastiveLoss: [
        lambda: (
            SpanContrastiveLoss(anchor_negatives=True),
            (_leaf(3, D, seed=0), _leaf(B, D, seed=1), _leaf(B, D, seed=2), torch.tensor([0, 2, 1, 2])),
            {},
        )
    ],
    SpanUnlikelihoodLoss: [_span_case(o) for o in ("unlikelihood", "gradient_ascent", "nll")],
    SimCTGLoss: [
        lambda: (
            SimCTGLoss(),
            (_leaf(2, 5, D, seed=0), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])),
            {"lm_loss": torch.tensor(2.5, requires_grad=True)},
        ),
        lambda: (SimCTGLoss(contrastive_weight=0.5), (_leaf(2, 5, D, seed=0),), {}),
    ],
    WhitenedCSELoss: [
        lambda: (
            WhitenedCSELoss(group_size=2, num_views=3),
            (_leaf(B, D, seed=0), _leaf(B, D, seed=1), _leaf(B, D, seed=2)),
            {},
        )
    ],
    DSELoss: [
        lambda: (DSELoss(distill_weight=0.5), (_leaf(B, seed=0), _fixed(B, seed=1), _fixed(B, seed=2)), {}),
        lambda: (
            DSELoss(distill_weight=0.3, task="classification"),
            (_leaf(B, 3, seed=0), _fixed(B, 3, seed=1), torch.tensor([0, 2, 1, 0])),
            {},
        ),
    ],
    Text2TokenLoss: [
        lambda: (
            Text2TokenLoss(temperature=0.5),
            (_leaf(B, D, seed=0), _fixed(10, D, seed=1), torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]])),
            {"target_weights": torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0], [0.9, 0.1]])},
        )
    ],
    CLIPLoss: [
        lambda: (CLIPLoss(), (_leaf(B, D, seed=0), _fixed(B, D, seed=1), torch.tensor(10.0)), {}),
        lambda: (CLIPLoss(label_smoothing=0.1), (_leaf(B, D, seed=0), _fixed(B, D, seed=1), 5.0), {}),
    ],
    SigLIPLoss: [
        lambda: (SigLIPLoss(), (_leaf(B, D, seed=0), _fixed(B, D, seed=1), 10.0, -3.0), {}),
        lambda: (SigLIPLoss(bias_init=-10.0), (_leaf(B, D, seed=0), _fixed(B, D, seed=1), 10.0), {}),
    ],
    ImprovedCLIPLoss: [
        lambda: (
            ImprovedCLIPLoss(
                6,
                5,
                projection_dim=4,
                projector_hidden_size=8,
                use_siamlip=True,
                siamlip_hidden_size=8,
                siamlip_dim=4,
            ),
            (
                _leaf(B, D, seed=0),
                _fixed(B, D, seed=1),
                10.0,
                [_fixed(B, 6, seed=2), _fixed(B, 6, seed=3)],
                [_fixed(B, 5, seed=4), _fixed(B, 5, seed=5)],
            ),
            {},
        )
    ],
    SimCLRImageLoss: [
        lambda: (
            SimCLRImageLoss(6, hidden_size=8, out_dim=4),
            ([_leaf(B, 6, seed=0), _fixed(B, 6, seed=1)],),
            {},
        )
    ],
    BarlowTwinsLoss: [
        lambda: (
            BarlowTwinsLoss(6, 5, hidden_size=8, out_dim=4),
            ([_leaf(B, 6, seed=0)], [_fixed(B, 5, seed=1)]),
            {},
        )
    ],
    SiamLIPLoss: [
        lambda: (
            SiamLIPLoss(6, 5, hidden_size=8, out_dim=4),
            ([_leaf(B, 6, seed=0)], [_fixed(B, 5, seed=1)]),
            {},
        ),
        lambda: (
            SiamLIPLoss(6, 5, hidden_size=8, out_dim=4, momentum=0.99),
            ([_leaf(B, 6, seed=0)], [_fixed(B, 5, seed=1)]),
            {},
        ),
    ],
    SwALIPLoss: [
        lambda: (
            SwALIPLoss(6, 5, hidden_size=8, out_dim=4, num_prototypes=5),
            ([_leaf(B, 6, seed=0)], [_fixed(B, 5, seed=1)]),
            {},
        )
    ],
    CosmoContrastiveLoss: [
        lambda: (
            CosmoContrastiveLoss(),
            (_leaf(B, D, seed=0), _fixed(B, D, seed=1), torch.tensor(0.2)),
            {},
        )
    ],
    DITOLoss: [
        lambda: (
            DITOLoss(),
            (_leaf(B, D, seed=0), _fixed(B, D, seed=1), torch.tensor(10.0)),
            {"region_embeds": _fixed(B, 3, D, seed=2)},
        ),
        lambda: (
            DITOLoss(image_loss_weight=0.5, region_loss_weight=0.0),
            (_leaf(B, D, seed=0), _fixed(B, D, seed=1), 5.0),
            {},
        ),
    ],
    PixProLoss: [
        lambda: (
            PixProLoss(pixcontrast_weight=0.5, instance_weight=0.5),
            (
                _leaf(B, 3, D, seed=0),
                _fixed(B, 3, D, seed=1),
                _fixed(B, 3, D, seed=2),
                _fixed(B, 3, D, seed=3),
                torch.eye(3, dtype=torch.bool).expand(B, 3, 3).clone(),
            ),
            {
                "projected_a": _fixed(B, 3, D, seed=4),
                "projected_b": _fixed(B, 3, D, seed=5),
                "instance_pred_a": _fixed(B, D, seed=6),
                "instance_pred_b": _fixed(B, D, seed=7),
                "instance_target_a": _fixed(B, D, seed=8),
                "instance_target_b": _fixed(B, D, seed=9),
            },
        )
    ],
    HydraLoss: [
        lambda: (
            HydraLoss(num_labels=3),
            (
                _leaf(B, D, seed=0),
                torch.sigmoid(_fixed(B, D, seed=1)),
                torch.tensor([0, 0, 1, 1]),
                torch.tensor([0, 1, 1, 0]),
            ),
            {},
        )
    ],
}


def test_every_loss_class_in_the_package_has_a_contract_case():
    found = _loss_classes()
    not_contract = sorted(c.__qualname__ for c in found if not issubclass(c, ContrastiveLoss))
    assert not not_contract, f"losses outside the ContrastiveLoss contract: {not_contract}"
    missing = sorted(f"{c.__module__}.{c.__qualname__}" for c in found - set(CASES))
    assert not missing, f"add a contract case for {missing}"
    # The wings' losses are found too (the walk reaches beyond the core).
    assert {PointwiseBCELoss, SpanContrastiveLoss, SpanUnlikelihoodLoss, SimCTGLoss} <= found


def _bibtex_ok(citation: str) -> bool:
    entries = re.findall(r"@\w+\{[^,\s]+,", citation)
    return (
        citation.lstrip().startswith("@")
        and citation.count("{") == citation.count("}")
        and len(entries) >= 1
        and all(key in citation for key in ("title", "author", "year"))
    )


@pytest.mark.parametrize(
    "cls, index",
    [(cls, i) for cls, cases in CASES.items() for i in range(len(cases))],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_contract(cls, index):
    loss, args, kwargs = CASES[cls][index]()
    assert type(loss) is cls and isinstance(loss, ContrastiveLoss)
    assert _bibtex_ok(loss.citation), loss.citation
    config = loss.config_dict()
    assert isinstance(config, dict) and config
    assert json.loads(json.dumps(config)) == config
    assert repr(loss)  # extra_repr reads config_dict
    out = loss(*args, **kwargs)
    assert isinstance(out, LossOutput)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.loss.requires_grad
    assert out.components
    for name, value in out.components.items():
        assert isinstance(name, str) and value.dim() == 0 and not value.requires_grad, name
    logged = out.log_dict("train/")
    assert set(logged) == {f"train/{k}" for k in out.components}
    assert all(isinstance(v, float) and math.isfinite(v) for v in logged.values())
    out.loss.backward()
    leaf = args[0][0] if isinstance(args[0], list) else args[0]  # (the add-ons take lists of views)
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_citation_text_is_the_papers():
    assert "Su, Yixuan" in SimCTGLoss.citation and "Contrastive Framework for Neural Text Generation" in (
        SimCTGLoss.citation
    )
    assert "Two-Stage Knowledge-Guided" in SpanContrastiveLoss.citation
    assert (
        "Span-Level Fine-Tuning" in SpanUnlikelihoodLoss.citation
        and "Unlikelihood" in SpanUnlikelihoodLoss.citation
    )
    assert "Passage Re-ranking with {BERT}" in PointwiseBCELoss.citation
    assert (
        "Contrastive Learning?" in YesNoSFTLoss.citation
        and "Contrastive Learning?" in ListwiseInfoNCELoss.citation
    )


def test_only_momentum_losses_ask_for_a_key_encoder():
    flags = {cls: cls.uses_momentum_encoder for cls in CASES}
    assert {cls for cls, flag in flags.items() if flag} == {MomentumContrastLoss}
