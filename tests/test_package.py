"""The package face: the public API of release 0.1 is still there, and every module path of 0.1 still
imports (as a deprecated alias that names the new home)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

import hf_contrastive
from hf_contrastive import _deprecated

# Every public name `import hf_contrastive` offered in release 0.1 (the README's API).
API_0_1 = [
    "BiEncoder", "BiEncoderConfig", "CoSENTLoss", "ContrastiveConfig", "ContrastiveLoss",
    "ContrastiveSearchLogitsProcessor", "ContrastiveTrainer", "CrossEncoderReranker",
    "EmbeddingRegressionLoss", "EvalEntry", "GradCache", "HUB_REPO_ID", "InfoNCELoss", "LLMJudgeAnnotator",
    "LLMYesNoReranker", "LoraTaskVector", "LossOutput", "ModelCardInfo", "MomentumContrastLoss",
    "MomentumEncoder", "MultiCSRLoss", "MultipleNegativesRankingLoss", "POOLING_MODES",
    "PerturbationAnnotator", "RelationClassificationTrainer", "RelationClassifier",
    "RelationClassifierConfig", "RelationExample", "RelationFinetuneConfig", "RerankerConfig",
    "RerankerTrainer", "RetrievalEvaluator", "STSEvaluator", "SentenceEncoder", "SentenceEncoderConfig",
    "SentenceEncoderOutput", "SimCTGConfig", "SimCTGTrainer", "SpanDataCollator", "SpanFeatureBuilder",
    "SpanUnlikelihoodConfig", "SpanUnlikelihoodTrainer", "SupervisedSimCSELoss", "TKREConfig",
    "TKREPretrainer", "TaskVector", "UnsupervisedSimCSELoss", "coherence", "context_window_pairs",
    "contrastive_search", "contrastive_search_enabled", "disable_contrastive_search", "diversity",
    "enable_contrastive_search", "evaluate_faithfulness", "evaluate_reranking", "evaluate_retrieval",
    "evaluate_sts", "hallucination_rate", "inverse_cloze_pairs", "isotropy", "load_beir", "load_fewrel",
    "load_semeval2010", "load_sts_benchmark", "mine_hard_negatives", "push_folder_to_hub",
    "random_crop_pairs", "relation_micro_f1", "render_model_card", "rep_n", "repetition_and_diversity",
    "semeval2010_official_scores", "split_views", "validate_contrastive_arguments",
]  # fmt: skip


@pytest.mark.parametrize("name", API_0_1)
def test_public_api_of_0_1_is_kept(name):
    assert hasattr(hf_contrastive, name), f"hf_contrastive.{name} was public in 0.1 and must stay"


def _fresh_import(module: str) -> tuple[object, list[warnings.WarningMessage]]:
    for key in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
        if key in _deprecated.MOVED or key in _deprecated.SPLIT:
            del sys.modules[key]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(module)
    return mod, [w for w in caught if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("old", sorted(_deprecated.MOVED))
def test_moved_module_alias_returns_the_new_module_and_warns(old):
    mod, caught = _fresh_import(old)
    new = importlib.import_module(_deprecated.MOVED[old])
    assert mod is new
    assert any(old in str(w.message) and _deprecated.MOVED[old] in str(w.message) for w in caught)


@pytest.mark.parametrize("old", sorted(_deprecated.SPLIT))
def test_split_package_alias_holds_the_public_names_of_its_new_homes(old):
    mod, caught = _fresh_import(old)
    assert caught, f"importing {old} must warn"
    for home in _deprecated.SPLIT[old]:
        new = importlib.import_module(home)
        names = getattr(new, "__all__", None) or [n for n in vars(new) if not n.startswith("_")]
        for name in names:
            ours, theirs = getattr(mod, name), getattr(new, name)
            # Computed constants (the registered loss names) are equal, not identical.
            assert ours is theirs or ours == theirs, f"{old}.{name} is not {home}.{name}"


def test_readme_module_paths_of_0_1_still_import():
    # The spellings users copied from the 0.1 README.
    from hf_contrastive.data.augment import random_crop_pairs  # noqa: F401
    from hf_contrastive.losses import InfoNCELoss
    from hf_contrastive.modeling import SentenceEncoder
    from hf_contrastive.rerankers import CrossEncoderReranker

    assert SentenceEncoder is hf_contrastive.SentenceEncoder
    assert InfoNCELoss is hf_contrastive.InfoNCELoss
    assert CrossEncoderReranker is hf_contrastive.CrossEncoderReranker
    assert hf_contrastive.losses.InfoNCELoss is InfoNCELoss  # attribute access, as in 0.1


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        hf_contrastive.not_a_module  # noqa: B018


def test_new_code_imports_no_alias():
    # Importing the whole package (every wing) must not go through a deprecated path.
    code = (
        "import warnings; warnings.simplefilter('error', FutureWarning); import hf_contrastive, "
        "hf_contrastive.recipes, hf_contrastive.cli, hf_contrastive.quickstart; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
