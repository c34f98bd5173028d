"""hf-contrastive: contrastive learning methods for the Hugging Face stack.

Public API is re-exported here; anything not listed may change between releases.

Layout: a shared core (`hf_contrastive.core`: the loss contract and generic losses, cross-device
helpers, GradCache, exact search, the save/push/card mixin, PEFT and recipe-section helpers,
benchmark loaders) and one wing per family of methods (`embeddings`, `retrieval`, `generation`,
`faithfulness`, `relation`, re-exported here; `vision`, `composition`, `continual`, `classification`, imported
by their own path); `hf_contrastive.recipes` maps a recipe's `task:` to its runner.

Importing the package has two side effects, both deliberate:

- it registers its heads (`SentenceEncoder`, `BiEncoder`, `RelationClassifier`, the rerankers)
  with the transformers `AutoConfig` / `AutoModel` classes;
- it restores `generate(penalty_alpha=..., top_k=...)` (contrastive search) as local code: see
  `hf_contrastive.generation.registration` for exactly what is patched (logged once at INFO);
  `HF_CONTRASTIVE_NO_REGISTER=1` skips it and `disable_contrastive_search()` undoes it.

The module paths of release 0.1 (`hf_contrastive.modeling`, `hf_contrastive.losses`, ...) still
import, with a `FutureWarning`, until release 0.3 (see `hf_contrastive._deprecated`).
"""

from __future__ import annotations

from hf_contrastive._version import __version__

# isort: split
from hf_contrastive import _deprecated

_deprecated.install()


def __getattr__(name: str):
    # `hf_contrastive.losses` etc. as attributes, as in release 0.1 (the alias warns once).
    return _deprecated.package_attribute(name)


# isort: split
from hf_contrastive.core.hub import EvalEntry, ModelCardInfo, push_folder_to_hub, render_model_card
from hf_contrastive.core.losses import *  # noqa: F403
from hf_contrastive.core.momentum import MomentumEncoder
from hf_contrastive.embeddings import (
    POOLING_MODES,
    ContrastiveConfig,
    ContrastiveTrainer,
    SentenceEncoder,
    SentenceEncoderConfig,
    SentenceEncoderOutput,
    STSEvaluator,
    evaluate_sts,
    load_sts_benchmark,
)
from hf_contrastive.faithfulness import (
    LLMJudgeAnnotator,
    LoraTaskVector,
    PerturbationAnnotator,
    SpanDataCollator,
    SpanFeatureBuilder,
    SpanUnlikelihoodConfig,
    SpanUnlikelihoodTrainer,
    TaskVector,
    evaluate_faithfulness,
    hallucination_rate,
)
from hf_contrastive.generation import *  # noqa: F403
from hf_contrastive.generation.metrics import coherence, diversity, isotropy, rep_n, repetition_and_diversity
from hf_contrastive.generation.simctg import SimCTGConfig, SimCTGTrainer
from hf_contrastive.relation import (
    RelationClassificationTrainer,
    RelationClassifier,
    RelationClassifierConfig,
    RelationExample,
    RelationFinetuneConfig,
    RelationProcessor,
    TKREConfig,
    TKREPretrainer,
    load_fewrel,
    load_semeval2010,
    relation_micro_f1,
    semeval2010_official_scores,
)
from hf_contrastive.retrieval import (
    BiEncoder,
    BiEncoderConfig,
    CrossEncoderReranker,
    LLMYesNoReranker,
    RerankerConfig,
    RerankerTrainer,
    RetrievalEvaluator,
    context_window_pairs,
    evaluate_reranking,
    evaluate_retrieval,
    inverse_cloze_pairs,
    load_beir,
    mine_hard_negatives,
    random_crop_pairs,
)
