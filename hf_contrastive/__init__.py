"""hf-contrastive: contrastive learning methods for the Hugging Face stack.

Public API is re-exported here; anything not listed may change between releases.
Importing the package registers the `SentenceEncoder` head with the transformers Auto classes
and restores `generate(penalty_alpha=..., top_k=...)` (contrastive search) as local code.
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from hf_contrastive.evaluation import STSEvaluator, evaluate_sts, load_sts_benchmark
from hf_contrastive.evaluation.decoding import coherence, diversity, isotropy, rep_n, repetition_and_diversity
from hf_contrastive.evaluation.retrieval import RetrievalEvaluator, evaluate_retrieval, load_beir
from hf_contrastive.generation import *  # noqa: F403
from hf_contrastive.hub import EvalEntry, ModelCardInfo, push_folder_to_hub, render_model_card
from hf_contrastive.losses import *  # noqa: F403
from hf_contrastive.modeling import (
    POOLING_MODES,
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
from hf_contrastive.trainers.simctg import SimCTGConfig, SimCTGTrainer

# -- relation extraction (TKRE) --
# isort: split
from hf_contrastive.data.relation import RelationExample, load_fewrel, load_semeval2010  # noqa: E402, F401
from hf_contrastive.evaluation.relation import relation_micro_f1, semeval2010_official_scores  # noqa: E402, F401
from hf_contrastive.modeling import RelationClassifier, RelationClassifierConfig  # noqa: E402, F401
from hf_contrastive.trainers.tkre import (  # noqa: E402, F401
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    TKREConfig,
    TKREPretrainer,
)

# -- faithful summarisation (span-level fine-tuning, task vectors) --
# isort: split
from hf_contrastive.arithmetic import LoraTaskVector, TaskVector  # noqa: E402, F401
from hf_contrastive.data.annotation import LLMJudgeAnnotator, PerturbationAnnotator  # noqa: E402, F401
from hf_contrastive.data.spans import SpanDataCollator, SpanFeatureBuilder  # noqa: E402, F401
from hf_contrastive.evaluation.faithfulness import evaluate_faithfulness, hallucination_rate  # noqa: E402, F401
from hf_contrastive.trainers.span_unlikelihood import (  # noqa: E402, F401
    SpanUnlikelihoodConfig,
    SpanUnlikelihoodTrainer,
)

# -- retrieval training (GradCache, momentum contrast, bi-encoder, pair builders) --
# isort: split
from hf_contrastive.data.augment import (  # noqa: E402, F401
    context_window_pairs,
    inverse_cloze_pairs,
    random_crop_pairs,
)
from hf_contrastive.modeling import BiEncoder, BiEncoderConfig  # noqa: E402, F401
from hf_contrastive.trainers.momentum import MomentumEncoder  # noqa: E402, F401
