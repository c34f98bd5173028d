"""Distilled Sentence Embedding (Barkan et al. 2019): a cross-encoder teacher distilled into a siamese
sentence-pair scorer whose candidate embeddings are computed once.

- [`DistilledPairScorer`] + [`DSEConfig`]: the student (mean of the top 4 layers, concatenated;
  `[u; v; u*v; |u-v|]` -> FC 512 -> ReLU -> output), with `encode`, `score_pairs` and `score_candidates`.
- [`DSELoss`]: `(1 - a) * task_loss + a * sum (student - teacher)^2`, a = 0.5.
- Teacher logits computed once and cached on disk, keyed by the teacher, the data and the truncation length
  ([`cached_teacher_logits`]); a cache made for another key is refused ([`TeacherCacheMismatchError`]).
- [`DSETrainer`] + [`DSETrainingArguments`], and the recipe task `dse` (`hf_contrastive.embeddings.dse.recipes`).

Importing this package registers `DSEConfig` / `DistilledPairScorer` with `AutoConfig` / `AutoModel`.
"""

from hf_contrastive.core.configuration import register_auto_classes
from hf_contrastive.embeddings.dse.cache import (
    CACHE_FORMAT,
    TeacherCacheKey,
    TeacherCacheMismatchError,
    cached_teacher_logits,
    load_teacher_cache,
    save_teacher_cache,
    teacher_cache_key,
)
from hf_contrastive.embeddings.dse.configuration import DSE_TASKS, DSEConfig
from hf_contrastive.embeddings.dse.losses import DSELoss
from hf_contrastive.embeddings.dse.modeling import (
    DistilledPairScorer,
    DSEOutput,
    DSEPairHead,
    pair_features,
    top_layers_mean,
)
from hf_contrastive.embeddings.dse.teacher import (
    compute_teacher_logits,
    finetune_teacher,
    load_teacher,
    model_fingerprint,
    pairs_fingerprint,
)
from hf_contrastive.embeddings.dse.trainer import (
    DSECollator,
    DSETrainer,
    DSETrainingArguments,
    evaluate_pair_scores,
)

register_auto_classes(DSEConfig, DistilledPairScorer)

__all__ = [
    "CACHE_FORMAT",
    "DSECollator",
    "DSEConfig",
    "DSELoss",
    "DSEOutput",
    "DSEPairHead",
    "DSETrainer",
    "DSETrainingArguments",
    "DSE_TASKS",
    "DistilledPairScorer",
    "TeacherCacheKey",
    "TeacherCacheMismatchError",
    "cached_teacher_logits",
    "compute_teacher_logits",
    "evaluate_pair_scores",
    "finetune_teacher",
    "load_teacher",
    "load_teacher_cache",
    "model_fingerprint",
    "pair_features",
    "pairs_fingerprint",
    "save_teacher_cache",
    "teacher_cache_key",
    "top_layers_mean",
]
