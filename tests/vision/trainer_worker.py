"""One optimiser step of `ImageTextContrastiveTrainer`, plain or with GradCache: ``torchrun ... THIS OUT_DIR MODE``
(the test runs the same function in one process on the whole batch and compares the weights)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import save_file

from hf_contrastive.vision.trainer import ImageTextContrastiveConfig, ImageTextContrastiveTrainer
from tests.distributed_run import end_worker
from tests.vision.tiny_vision import tiny_dual, tiny_processor, tiny_siglip, write_images

N = 8


def one_step(out_dir: Path, mode: str, per_device: int) -> dict[str, torch.Tensor]:
    tmp = Path(tempfile.mkdtemp(prefix="vision-trainer-"))
    processor = tiny_processor(tmp / "tok")
    vocab = len(processor.tokenizer)
    paths = write_images(tmp / "images", N, seed=1)
    words = "a man is eating food the woman plays guitar dog runs in park cat sleeps on sofa".split()
    rows = [{"image": p, "captions": [" ".join(words[k : k + 3 + k % 4])]} for k, p in enumerate(paths)]
    loss = "siglip" if mode.startswith("siglip") else "clip"
    model = (tiny_siglip(vocab, seed=4) if loss == "siglip" else tiny_dual(vocab, seed=3)).double()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = ImageTextContrastiveConfig(
        output_dir=str(tmp / "out"),
        loss=loss,
        per_device_train_batch_size=per_device,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        caption_sampling="first",
        gradcache_mini_batch_size=3 if mode.endswith("gradcache") else None,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        max_seq_length=12,
        seed=0,
    )
    trainer = ImageTextContrastiveTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor
    )
    trainer.train()
    params = {n: p.detach().clone().contiguous() for n, p in model.named_parameters()}
    params_moved = max(float((params[n] - start[n]).abs().max()) for n in params)
    if params_moved == 0.0:
        raise RuntimeError("the optimiser step changed no weight")
    if trainer.args.process_index == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_file(params, str(out_dir / f"{mode}.safetensors"))
    return params


if __name__ == "__main__":
    for mode in sys.argv[2:]:  # one launch for every mode: each launch costs the imports of two processes
        one_step(Path(sys.argv[1]), mode, per_device=N // 2)
    end_worker()
