"""Recipe task ``retrieval``: dense-retriever pre-training (crop pairs) or fine-tuning (hard negatives).

A recipe with ``task: retrieval`` trains a [`BiEncoder`] with [`ContrastiveTrainer`] and reports
retrieval figures (nDCG@10, Recall@100, MRR@10) on a BEIR-layout evaluation set before and after.
Its ``data`` section says where the training pairs come from:

* unsupervised (``trainers/contriever-pretrain.yaml``)::

      data:
        corpus: {name: ${data}/retrieval/scifact}            # documents to build pairs from
        pairs: {builder: random_crop, ratio_range: [0.1, 0.5], deletion_prob: 0.1}
        eval: {name: ${data}/retrieval/scifact, split: test}

  ``builder`` is ``random_crop`` (Contriever), ``inverse_cloze`` or ``context_window`` (CCP); the
  other keys go to that builder of :mod:`hf_contrastive.retrieval.augment`.

* supervised (``trainers/retrieval-finetune.yaml``)::

      data:
        train: {name: ${data}/retrieval/scifact, split: train}   # (query, relevant document) pairs
        hard_negatives: {num_negatives: 1, range_min: 10, range_max: 50, relative_margin: 0.05}
        eval: {name: ${data}/retrieval/scifact, split: test}

  hard negatives are mined with the model being trained (before training), over the whole corpus,
  with :func:`hf_contrastive.retrieval.mining.mine_hard_negatives` (its keyword arguments).

``name`` is anything :func:`hf_contrastive.retrieval.evaluation.load_beir` reads; ``max_queries`` /
``max_documents`` cut the data (smoke runs). ``model`` takes [`BiEncoder.from_pretrained`] arguments
(``query_prompt``, ``document_prompt``, ``shared_towers``, ``pooling``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["run_retrieval_recipe"]

RECIPE_SECTIONS: tuple[str, ...] = ()
BUILDERS = ("random_crop", "inverse_cloze", "context_window")


def _load(spec: dict[str, Any], default_split: str):
    from hf_contrastive.retrieval.evaluation import load_beir

    spec = dict(spec)
    if "name" not in spec:
        raise ValueError(f"A retrieval data source needs a name (a BEIR folder or data set), got {spec}.")
    corpus, queries, qrels = load_beir(spec["name"], split=str(spec.get("split", default_split)))
    if spec.get("max_queries"):
        keep = list(queries)[: int(spec["max_queries"])]
        queries = {q: queries[q] for q in keep}
        qrels = {q: qrels[q] for q in keep if q in qrels}
    if spec.get("max_documents"):
        judged = {d for rel in qrels.values() for d in rel}
        others = [d for d in corpus if d not in judged][: max(0, int(spec["max_documents"]) - len(judged))]
        keep_docs = judged | set(others)
        corpus = {d: corpus[d] for d in corpus if d in keep_docs}
    return corpus, queries, qrels


def _pairs_from_corpus(data: dict[str, Any], seed: int):
    from hf_contrastive.retrieval import augment
    from hf_contrastive.retrieval.evaluation import document_text

    corpus, _, _ = _load(data["corpus"], "test")
    options = dict(data.get("pairs") or {})
    builder = options.pop("builder", "random_crop")
    if builder not in BUILDERS:
        raise ValueError(f"data.pairs.builder must be one of {BUILDERS}, got {builder!r}.")
    texts = [document_text(doc) for doc in corpus.values()]
    fn = {
        "random_crop": augment.random_crop_pairs,
        "inverse_cloze": augment.inverse_cloze_pairs,
        "context_window": augment.context_window_pairs,
    }[builder]
    if "ratio_range" in options:
        options["ratio_range"] = tuple(options["ratio_range"])
    return fn(texts, seed=seed, **options).remove_columns(["doc_index"]), f"{builder} pairs"


def _pairs_from_qrels(model: Any, data: dict[str, Any], seed: int):
    from datasets import Dataset

    from hf_contrastive.retrieval.evaluation import document_text

    corpus, queries, qrels = _load(data["train"], "train")
    anchors, positives = [], []
    for q, text in queries.items():
        for d, grade in qrels.get(q, {}).items():
            if grade > 0 and d in corpus:
                anchors.append(text)
                positives.append(document_text(corpus[d]))
    if not anchors:
        raise ValueError(
            "The training qrels name no document of the corpus: no (query, document) pair to train on."
        )
    ds = Dataset.from_dict({"anchor": anchors, "positive": positives})
    options = data.get("hard_negatives")
    if not options:
        return ds, "(query, relevant document) pairs"
    from hf_contrastive.retrieval.mining import mine_hard_negatives

    options = dict(options)
    options.setdefault("seed", seed)
    mined = mine_hard_negatives(model, ds, corpus=corpus, **options)
    keep = [c for c in mined.column_names if c == "anchor" or c == "positive" or c.startswith("negative")]
    return mined.select_columns(
        keep
    ), f"(query, relevant document, {options.get('num_negatives', 3)} mined negatives)"


def _evaluate(model: Any, eval_data: tuple | None, batch_size: int) -> dict[str, float]:
    if eval_data is None:
        return {}
    from hf_contrastive.retrieval.evaluation import evaluate_retrieval

    corpus, queries, qrels = eval_data
    metrics = evaluate_retrieval(model, corpus, queries, qrels, batch_size=batch_size)
    return {k: float(metrics[k]) for k in ("ndcg@10", "recall@100", "mrr@10") if k in metrics}


def run_retrieval_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a bi-encoder as the recipe says; retrieval figures before/after; save a Hub-ready encoder."""
    from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer
    from hf_contrastive.recipes.registry import build_args
    from hf_contrastive.retrieval.bi_encoder import BiEncoder

    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    data = dict(recipe.get("data") or {})
    if ("corpus" in data) == ("train" in data):
        raise ValueError(
            "A retrieval recipe's data section needs either corpus (+ pairs: unsupervised pre-training) or train "
            f"(+ hard_negatives: fine-tuning on qrels), not {'both' if 'corpus' in data else 'neither'}."
        )
    args_cfg = dict(recipe.get("args") or {})
    args_cfg.setdefault("output_dir", "hf-contrastive-output")
    args_cfg.setdefault("report_to", "none")
    eval_batch = int(data.get("eval", {}).get("batch_size", 64)) if isinstance(data.get("eval"), dict) else 64
    args = build_args(ContrastiveConfig, args_cfg)

    model = BiEncoder.from_pretrained(model_cfg.pop("name_or_path"), **model_cfg)
    tok = model.tokenizer
    if tok is not None and tok.pad_token is None:
        tok.pad_token = tok.eos_token
    eval_data = _load(data["eval"], "test") if data.get("eval") else None
    results: dict[str, Any] = {"before": _evaluate(model, eval_data, eval_batch)}
    if "corpus" in data:
        train, layout = _pairs_from_corpus(data, args.seed)
    else:
        train, layout = _pairs_from_qrels(model, data, args.seed)
    peft_config = None
    if recipe.get("lora"):
        from peft import LoraConfig

        peft_config = LoraConfig(**recipe["lora"])
    trainer = ContrastiveTrainer(model=model, args=args, train_dataset=train, peft_config=peft_config)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(trained, "merge_and_unload"):
        import copy

        trained = copy.deepcopy(trained).merge_and_unload()
    trained.eval()
    results["after"] = _evaluate(trained, eval_data, eval_batch)
    results["training pairs"] = f"{len(train)} {layout}"
    final = Path(args.output_dir) / "final"
    if args.should_save:
        trained.save_pretrained(str(final))
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results
