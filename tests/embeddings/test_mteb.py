"""mteb's encoder protocol on SentenceEncoder and BiEncoder, and the local-file mteb tasks, checked against
the library's own evaluators (STS-B test: Spearman of cosine 0.8203 for all-MiniLM-L6-v2; SciFact nDCG@10).

mteb runs offline here: the tasks read the benchmark data folder, nothing comes from the Hub, and results go
to no cache (`cache=None`). The full SciFact comparison (5183 documents) is `benchmarks/mteb_parity.py`; the
test below uses a subset of the corpus to stay short.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny_models import WORDS, bert_config, bert_tokenizer
from torch.utils.data import DataLoader

from hf_contrastive import SentenceEncoder, SentenceEncoderConfig
from hf_contrastive.core.data.benchmarks import load_beir, load_sts_benchmark
from hf_contrastive.core.mteb_protocol import model_name_for_mteb, task_prompt_name
from hf_contrastive.embeddings import evaluate_sts
from hf_contrastive.retrieval import BiEncoder, evaluate_retrieval

try:
    import mteb
    from mteb.models.model_meta import ModelMeta, ScoringFunction
    from mteb.models.models_protocols import CrossEncoderProtocol, EncoderProtocol, SearchProtocol
    from mteb.types import PromptType

    from hf_contrastive.embeddings.mteb_tasks import LocalSTSBenchmark
    from hf_contrastive.retrieval.mteb_tasks import LocalBEIRTriple, LocalSciFact
except ImportError:  # the check below skips locally and fails under CI=true
    mteb = None


@pytest.fixture(autouse=True)
def _mteb_installed(require_resource):
    if mteb is None:
        if sys.version_info < (3, 11):  # mteb 2.26 needs Python >= 3.11; the extras install it only there
            pytest.skip("mteb 2.26 needs Python >= 3.11")
        require_resource("the mteb package is not installed", "pip install -e '.[mteb]'")


def batches(texts, batch_size=3, column="text"):
    """What mteb hands to `encode`: a DataLoader over a dataset with a `text` column."""
    return DataLoader(Dataset.from_dict({column: list(texts)}), batch_size=batch_size)


def run_mteb(model, task):
    kwargs = {"batch_size": 32, "show_progress_bar": False}
    result = mteb.evaluate(model, task, cache=None, show_progress_bar=False, encode_kwargs=kwargs)
    return result.task_results[0].scores["test"][0]


TEXTS = [
    "a man is eating food",
    "the woman plays guitar",
    "dog runs in park",
    "cat sleeps on sofa",
    "it rains",
]


def tiny(tmp_path, seed=0, **head):
    tok = bert_tokenizer(tmp_path / f"vocab{seed}")
    torch.manual_seed(seed)
    model = SentenceEncoder(
        SentenceEncoderConfig(backbone_config=bert_config(len(tok)), normalize=True, **head)
    )
    model.tokenizer = tok
    return model.eval()


# -- the protocol -------------------------------------------------------------------------------------------
def test_encoders_satisfy_the_mteb_encoder_protocol(tiny_encoder):
    bi = BiEncoder.from_encoders(tiny_encoder)
    for model in (tiny_encoder, bi):
        assert isinstance(model, EncoderProtocol)
        # Neither a search index nor a cross-encoder: mteb wraps them in its own exact search.
        assert not isinstance(model, SearchProtocol)
        assert not isinstance(model, CrossEncoderProtocol)


def test_dataloader_encode_equals_the_text_api_for_each_prompt_type(tmp_path):
    model = tiny(tmp_path, prompts={"query": "a man ", "passage": "the dog "})
    meta = LocalSciFact.metadata
    calls = {
        None: model.encode(TEXTS, batch_size=2),
        "query": model.encode_queries(TEXTS, batch_size=2),
        "document": model.encode_documents(TEXTS, batch_size=2),
    }
    for prompt_type, expected in calls.items():
        out = model.encode(
            batches(TEXTS),
            task_metadata=meta,
            hf_split="test",
            hf_subset="default",
            prompt_type=prompt_type,
            batch_size=2,
            show_progress_bar=False,
        )
        assert (
            isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (5, model.embedding_dim)
        )
        # Same texts, same batches, same prompt: the same computation, bit for bit.
        np.testing.assert_array_equal(out, expected.numpy())
    # The prompts did reach the encoder (query and document embeddings differ from the plain ones).
    assert not np.allclose(calls["query"].numpy(), calls[None].numpy())
    assert not np.allclose(calls["document"].numpy(), calls["query"].numpy())
    # mteb's PromptType enum works as its value does.
    out = model.encode(
        batches(TEXTS),
        task_metadata=meta,
        hf_split="test",
        hf_subset="default",
        prompt_type=PromptType.query,
        batch_size=2,
    )
    np.testing.assert_array_equal(out, calls["query"].numpy())


def test_task_prompts_take_precedence_in_mteb_order(tmp_path):
    prompts = {
        "LocalSciFact-query": "a man ",
        "LocalSciFact": "the dog ",
        "Retrieval-query": "cat ",
        "Retrieval": "red car ",
        "query": "blue house ",
    }
    meta = LocalSciFact.metadata
    order = ["LocalSciFact-query", "LocalSciFact", "Retrieval-query", "Retrieval"]
    for i, name in enumerate(order):
        remaining = {k: v for k, v in prompts.items() if k not in order[:i]}
        assert task_prompt_name(remaining, meta, "query") == name
    # Documents never take a "-query" prompt; symmetric tasks take the task name or type alone.
    assert task_prompt_name(prompts, meta, "document") == "LocalSciFact"
    assert task_prompt_name({"STS": "x", "query": "y"}, LocalSTSBenchmark.metadata, None) == "STS"
    assert task_prompt_name({"query": "y"}, meta, "query") is None  # left to encode_queries
    # End to end: the task's own prompt is the one applied.
    model = tiny(tmp_path, prompts=prompts)
    out = model.encode(
        batches(TEXTS),
        task_metadata=meta,
        hf_split="test",
        hf_subset="default",
        prompt_type="query",
        batch_size=2,
    )
    np.testing.assert_array_equal(out, model.encode(TEXTS, prompt="a man ", batch_size=2).numpy())


def test_bi_encoder_routes_queries_and_documents_to_their_towers_and_prompts(tmp_path):
    query_tower, document_tower = tiny(tmp_path, seed=1), tiny(tmp_path, seed=2)
    bi = BiEncoder.from_encoders(
        query_tower, document_tower, query_prompt="a man ", document_prompt="the dog "
    )
    bi.eval()
    meta = LocalSciFact.metadata

    def mteb_encode(prompt_type):
        return bi.encode(
            batches(TEXTS),
            task_metadata=meta,
            hf_split="test",
            hf_subset="default",
            prompt_type=prompt_type,
            batch_size=2,
        )

    np.testing.assert_array_equal(
        mteb_encode("query"), query_tower.encode(TEXTS, prompt="a man ", batch_size=2).numpy()
    )
    np.testing.assert_array_equal(
        mteb_encode("document"), document_tower.encode(TEXTS, prompt="the dog ", batch_size=2).numpy()
    )
    # Symmetric tasks (STS): the query tower without prompt, as BiEncoder.encode on texts.
    np.testing.assert_array_equal(mteb_encode(None), query_tower.encode(TEXTS, batch_size=2).numpy())


def test_text_encode_is_unchanged_and_bad_mteb_calls_are_refused(tiny_encoder):
    one = tiny_encoder.encode("a man is eating food")
    assert isinstance(one, torch.Tensor) and one.shape == (tiny_encoder.embedding_dim,)
    meta = LocalSTSBenchmark.metadata
    with pytest.raises(TypeError, match="prompt_type"):
        tiny_encoder.encode(TEXTS, prompt_type="query")  # mteb's keywords only come with mteb's DataLoader
    with pytest.raises(ValueError, match="takes no \\['prompt'\\]"):
        tiny_encoder.encode(batches(TEXTS), task_metadata=meta, prompt="a ")
    with pytest.raises(ValueError, match="precision='int8'"):
        tiny_encoder.encode(batches(TEXTS), task_metadata=meta, precision="int8")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        tiny_encoder.encode(batches(TEXTS), task_metadata=meta, pooling="cls")
    with pytest.raises(ValueError, match="no 'text' entry"):
        tiny_encoder.encode(batches(TEXTS, column="image"), task_metadata=meta)
    with pytest.raises(ValueError, match="prompt_type must be"):
        tiny_encoder.encode(batches(TEXTS), task_metadata=meta, prompt_type="passage")
    bi = BiEncoder.from_encoders(tiny_encoder)
    with pytest.raises(ValueError, match="takes no \\['prompt_name'\\]"):
        bi.encode(batches(TEXTS), task_metadata=meta, prompt_name="query")
    assert isinstance(bi.encode(TEXTS), torch.Tensor)  # texts: unchanged


@pytest.mark.parametrize("fn", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_pairwise_follows_the_configured_function(tmp_path, fn):
    model = tiny(tmp_path, similarity_fn=fn)
    g = np.random.default_rng(0)
    a, b = g.normal(size=(6, 8)).astype(np.float32), g.normal(size=(6, 8)).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expected = {
        "cosine": (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1),
        "dot": (a64 * b64).sum(1),
        "euclidean": -np.linalg.norm(a64 - b64, axis=1),
        "manhattan": -np.abs(a64 - b64).sum(1),
    }[fn]
    for m in (model, BiEncoder.from_encoders(model)):
        out = m.similarity_pairwise(a, torch.from_numpy(b))
        assert out.dtype == torch.float64 and out.shape == (6,)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    # The diagonal of the (float32) similarity matrix: equal up to float32 rounding of D=8 products.
    scale = np.abs(expected).max() + 1
    np.testing.assert_allclose(np.diag(model.similarity(a, b).numpy()), expected, atol=8 * 8 * 2**-23 * scale)
    with pytest.raises(ValueError, match="same shape"):
        model.similarity_pairwise(a, b[:3])


def test_model_meta(tmp_path, tiny_encoder):
    meta = tiny_encoder.mteb_model_meta
    assert isinstance(meta, ModelMeta)
    assert meta.name == "hf-contrastive/bert"  # built in memory: no source to name it after
    assert meta.embed_dim == 32 and meta.max_tokens == 64  # max_position_embeddings of the tiny config
    assert meta.similarity_fn_name is ScoringFunction.COSINE
    assert meta.n_parameters == sum(p.numel() for p in tiny_encoder.parameters())
    assert meta.framework == ["PyTorch"] and meta.modalities == ["text"] and meta.use_instructions is False
    tiny_encoder.save_pretrained(tmp_path / "my-encoder")
    loaded = SentenceEncoder.from_pretrained(tmp_path / "my-encoder", similarity_fn="dot", max_seq_length=16)
    meta = loaded.mteb_model_meta
    assert meta.name == "local/my-encoder"
    assert meta.similarity_fn_name is ScoringFunction.DOT_PRODUCT and meta.max_tokens == 16
    assert model_name_for_mteb("sentence-transformers/all-MiniLM-L6-v2", "bert") == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    bi = BiEncoder.from_encoders(
        tiny(tmp_path, similarity_fn="euclidean"), query_prompt="a ", query_max_length=20
    )
    assert bi.mteb_model_meta.similarity_fn_name is ScoringFunction.EUCLIDEAN
    # Queries stop at 20 tokens, documents read up to the 64 positions: the model reads up to 64.
    assert bi.mteb_model_meta.use_instructions is True and bi.mteb_model_meta.max_tokens == 64
    bi.config.document_max_length = 30
    assert bi.mteb_model_meta.max_tokens == 30
    # A name of one's own: assign a ModelMeta.
    mine = ModelMeta.create_empty({"name": "my-org/my-encoder"})
    loaded.mteb_model_meta = mine
    assert loaded.mteb_model_meta is mine


def near_ties(values, delta):
    """How many neighbours of the sorted `values` are closer than `delta` (pairs whose order rounding may flip)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    return int((np.diff(v) < delta).sum())


def retrieval_tolerance(results, n_queries, delta=1e-5):
    """mteb rounds retrieval figures to 5 decimals (5e-6); a query whose top-11 scores hold a near tie may
    rank differently in float32 (nDCG@10 of that query moves by at most 1, the mean by 1/n)."""
    flips = sum(near_ties([s for _, s in hits[:11]], delta) > 0 for hits in results.values())
    return 5e-6 + 1e-9 + flips / n_queries


def test_mteb_evaluate_on_a_tiny_retrieval_task_equals_evaluate_retrieval(tmp_path):
    model = tiny(tmp_path, seed=3, prompts={"query": "a ", "document": "the "})
    g = np.random.default_rng(4)
    docs = {f"d{i}": {"title": "", "text": " ".join(g.choice(WORDS, size=6))} for i in range(30)}
    queries = {f"q{i}": " ".join(g.choice(WORDS, size=4)) for i in range(8)}
    qrels = {f"q{i}": {f"d{3 * i}": 1, f"d{3 * i + 1}": 1} for i in range(8)}
    ours = evaluate_retrieval(model, docs, queries, qrels, return_results=True)
    theirs = run_mteb(model, LocalBEIRTriple(docs, queries, qrels))
    tol = retrieval_tolerance(ours["results"], len(queries))
    for key in ("ndcg@10", "recall@10", "ndcg@5"):
        assert theirs[key.replace("@", "_at_")] == pytest.approx(ours[key], abs=tol), key


# -- the local tasks read the benchmark data folder -----------------------------------------------------------
@pytest.mark.integration
def test_local_tasks_read_the_benchmark_files(shared_data):
    sts = LocalSTSBenchmark()
    sts.load_data()
    test = sts.dataset["default"]["test"]
    rows = load_sts_benchmark("test")
    assert test.num_rows == len(rows) == 1379
    assert test["sentence1"] == [r.sentence1 for r in rows] and test["score"] == [r.score for r in rows]
    dev = LocalSTSBenchmark().filter_eval_splits(["validation"])
    dev.load_data()
    assert dev.dataset["default"]["validation"].num_rows == 1500
    with pytest.raises(ValueError, match="no split 'validaton'"):
        LocalSTSBenchmark().filter_eval_splits(["validaton"]).load_data()

    sf = LocalSciFact()
    sf.load_data()
    split = sf.dataset["default"]["test"]
    assert split["corpus"].num_rows == 5183 and split["queries"].num_rows == 300
    assert sum(len(d) for d in split["relevant_docs"].values()) == 339
    assert split["top_ranked"] is None


# -- real model: mteb's figures equal the library's -------------------------------------------------------
class EncodeMemo:
    """Memoises `encoder.encode(texts, ...)`: a call with the same texts, batch size and prompt as an earlier one
    returns that call's embeddings instead of running the model again. Encoding is deterministic on CPU (same
    texts, same batches), so no figure changes; it halves the time, and `hits` counts the calls mteb made
    exactly as the library's evaluator did (a call routed otherwise misses and is computed afresh)."""

    def __init__(self, encoder):
        self.original = encoder.encode
        self.cache: dict = {}
        self.hits = self.misses = 0
        encoder.encode = self

    def __call__(self, texts, *args, **kwargs):
        if not isinstance(texts, list) or args:
            return self.original(texts, *args, **kwargs)
        options = sorted(
            (k, repr(v)) for k, v in kwargs.items() if v is not None and k != "show_progress_bar"
        )
        key = (tuple(texts), tuple(options))
        if key in self.cache:
            self.hits += 1
        else:
            self.misses += 1
            self.cache[key] = self.original(texts, *args, **kwargs)
        return self.cache[key].clone()


@pytest.mark.slow
@pytest.mark.integration
def test_minilm_sts_b_test_under_mteb_equals_sts_evaluator(minilm_path, shared_data):
    model = SentenceEncoder.from_pretrained(minilm_path)
    memo = EncodeMemo(model)
    ours = evaluate_sts(model, load_sts_benchmark("test"), similarities=("cosine",), return_predictions=True)
    scores = run_mteb(model, LocalSTSBenchmark())
    assert (memo.misses, memo.hits) == (
        2,
        2,
    )  # mteb asked for the first and second sentences as the library did
    assert round(ours["spearman_cosine"], 4) == 0.8203  # the documented figure of all-MiniLM-L6-v2
    # mteb's "spearman" scores pairs with model.similarity_pairwise (float64, cosine): the same numbers.
    assert scores["spearman"] == pytest.approx(ours["spearman_cosine"], abs=1e-12)
    # Its main score takes sklearn's cosine of the float32 embeddings: pairs whose float64 cosines lie within
    # 1e-5 may swap ranks, each swap moving Spearman by at most 12 / (n^2 - 1).
    n = len(ours["gold"])
    tol = near_ties(ours["predictions_cosine"], 1e-5) * 12 / (n**2 - 1) + 1e-12
    assert (
        scores["main_score"] == scores["cosine_spearman"] == pytest.approx(ours["spearman_cosine"], abs=tol)
    )


def scifact_subset(num_queries=40, num_documents=150):
    """The first SciFact test claims with every document they cite, plus the first other abstracts."""
    corpus, queries, qrels = load_beir("scifact", "test")
    queries = dict(list(queries.items())[:num_queries])
    qrels = {q: qrels[q] for q in queries}
    judged = {d for docs in qrels.values() for d in docs}
    others = [d for d in corpus if d not in judged][: num_documents - len(judged)]
    keep = judged | set(others)
    return {d: doc for d, doc in corpus.items() if d in keep}, queries, qrels


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("kind", ["encoder", "bi-encoder"])
def test_minilm_scifact_under_mteb_equals_evaluate_retrieval(minilm_path, shared_data, kind):
    if kind == "encoder":
        model = SentenceEncoder.from_pretrained(minilm_path)
        memo = EncodeMemo(model)
    else:  # separate prompts: mteb must send queries and documents each their own way
        model = BiEncoder.from_pretrained(minilm_path, query_prompt="query: ", document_prompt="passage: ")
        memo = EncodeMemo(model.query_encoder)  # shared towers: one encoder embeds both roles
    corpus, queries, qrels = scifact_subset()
    ours = evaluate_retrieval(model, corpus, queries, qrels, return_results=True)
    theirs = run_mteb(model, LocalBEIRTriple(corpus, queries, qrels))
    assert (memo.misses, memo.hits) == (2, 2)  # queries and documents, each with the library's prompt
    tol = retrieval_tolerance(ours["results"], len(queries))
    assert theirs["main_score"] == theirs["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=tol)
    assert theirs["recall_at_100"] == pytest.approx(ours["recall@100"], abs=tol)
