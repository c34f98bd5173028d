"""hf-contrastive: contrastive learning methods for the Hugging Face stack.

Public API is re-exported here; anything not listed may change between releases.
Importing the package registers its heads (`SentenceEncoder`, `BiEncoder`, `RelationClassifier`,
the rerankers) with the transformers Auto classes and restores
`generate(penalty_alpha=..., top_k=...)` (contrastive search) as local code.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from hf_contrastive.arithmetic import LoraTaskVector, TaskVector
from hf_contrastive.data.annotation import LLMJudgeAnnotator, PerturbationAnnotator
from hf_contrastive.data.augment import context_window_pairs, inverse_cloze_pairs, random_crop_pairs
from hf_contrastive.data.mining import mine_hard_negatives
from hf_contrastive.data.relation import RelationExample, load_fewrel, load_semeval2010
from hf_contrastive.data.spans import SpanDataCollator, SpanFeatureBuilder
from hf_contrastive.evaluation import STSEvaluator, evaluate_sts, load_sts_benchmark
from hf_contrastive.evaluation.decoding import coherence, diversity, isotropy, rep_n, repetition_and_diversity
from hf_contrastive.evaluation.faithfulness import evaluate_faithfulness, hallucination_rate
from hf_contrastive.evaluation.relation import relation_micro_f1, semeval2010_official_scores
from hf_contrastive.evaluation.retrieval import RetrievalEvaluator, evaluate_retrieval, load_beir
from hf_contrastive.generation import *  # noqa: F403
from hf_contrastive.hub import EvalEntry, ModelCardInfo, push_folder_to_hub, render_model_card
from hf_contrastive.losses import *  # noqa: F403
from hf_contrastive.modeling import (
    POOLING_MODES,
    BiEncoder,
    BiEncoderConfig,
    RelationClassifier,
    RelationClassifierConfig,
    SentenceEncoder,
    SentenceEncoderConfig,
    SentenceEncoderOutput,
)
from hf_contrastive.rerankers import (
    CrossEncoderReranker,
    LLMYesNoReranker,
    RerankerConfig,
    RerankerTrainer,
    evaluate_reranking,
)
from hf_contrastive.trainers import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.trainers.momentum import MomentumEncoder
from hf_contrastive.trainers.simctg import SimCTGConfig, SimCTGTrainer
from hf_contrastive.trainers.span_unlikelihood import SpanUnlikelihoodConfig, SpanUnlikelihoodTrainer
from hf_contrastive.trainers.tkre import (
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    TKREConfig,
    TKREPretrainer,
)
