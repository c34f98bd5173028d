"""MultiCSR's LLM data pipeline (Wang et al. 2023): a language model writes an entailment and a contradiction
for each premise and rates each (premise, hypothesis) pair from 0 to 5; pairs are filtered by the paper's
thresholds (entailment >= 3, contradiction <= 3, different ratings), invalid answers are dropped with counted
reasons, answers are cached on disk, and the result is an (anchor, positive, negative) `datasets.Dataset` that
`ContrastiveTrainer(loss="multicsr", reference_model=...)` trains on as is.

[`MultiCSRDataBuilder`] runs the pipeline; the recipe task `multicsr-data` ([`RECIPE_TASK`]) generates and
trains.
"""

from hf_contrastive.embeddings.synthesis.builder import (
    CACHE_FILE_NAME,
    STAGES,
    MultiCSRData,
    MultiCSRDataBuilder,
    SynthesisReport,
)
from hf_contrastive.embeddings.synthesis.cache import AnswerCache
from hf_contrastive.embeddings.synthesis.generators import (
    GenerationSettings,
    TextGenerator,
    model_fingerprint,
)
from hf_contrastive.embeddings.synthesis.parsing import (
    DEFAULT_CONTRADICTION_PROMPT,
    DEFAULT_ENTAILMENT_PROMPT,
    DEFAULT_SCORE_ANSWER_START,
    DEFAULT_SCORE_PROMPT,
    DROP_REASONS,
    PromptTemplate,
    normalize_text,
    parse_hypothesis,
    parse_score,
    threshold_reason,
)
from hf_contrastive.embeddings.synthesis.recipes import (
    RECIPE_TASK,
    MultiCSRMethod,
    default_multicsr_dir,
    load_generator,
    run_multicsr_data_recipe,
)

__all__ = [
    "CACHE_FILE_NAME",
    "DEFAULT_CONTRADICTION_PROMPT",
    "DEFAULT_ENTAILMENT_PROMPT",
    "DEFAULT_SCORE_ANSWER_START",
    "DEFAULT_SCORE_PROMPT",
    "DROP_REASONS",
    "RECIPE_TASK",
    "STAGES",
    "AnswerCache",
    "GenerationSettings",
    "MultiCSRData",
    "MultiCSRDataBuilder",
    "MultiCSRMethod",
    "PromptTemplate",
    "SynthesisReport",
    "TextGenerator",
    "default_multicsr_dir",
    "load_generator",
    "model_fingerprint",
    "normalize_text",
    "parse_hypothesis",
    "parse_score",
    "run_multicsr_data_recipe",
    "threshold_reason",
]
