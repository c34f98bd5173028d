"""`hf-contrastive generate`: contrastive search (or greedy / nucleus) from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from hf_contrastive.generation.batching import generate_continuations, load_causal_lm, load_prompts
from hf_contrastive.generation.contrastive_search import validate_contrastive_arguments
from hf_contrastive.generation.metrics import repetition_and_diversity


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="Generate text with contrastive search (penalty_alpha/top_k), greedy or nucleus sampling.",
        description="Generate continuations of prompts with a causal LM (folder, Hub id, or 'smollm2' for the "
        "PyPI-packaged SmolLM2-135M-Instruct). Contrastive search runs locally, without remote code.",
    )
    p.add_argument("model", help="model folder, Hub id, or 'smollm2'")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument(
        "--prompts-file", help="JSON lines (field --field, default 'instructions') or one prompt a line"
    )
    p.add_argument("--field", default="instructions", help="JSON field holding the prompt")
    p.add_argument("--limit", type=int, default=None, help="use the first N prompts of the file")
    p.add_argument(
        "--penalty-alpha", type=float, default=0.6, help="alpha in [0, 1] (default 0.6; 0 = greedy)"
    )
    p.add_argument("--top-k", type=int, default=4, help="candidates per step (default 4)")
    p.add_argument("--method", choices=["contrastive", "greedy", "nucleus"], default="contrastive")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling p (with --method nucleus)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--device", default=None)
    p.add_argument("--metrics", action="store_true", help="also print rep-2/3/4 and diversity")
    p.add_argument("--json", action="store_true", help="print JSON lines (prompt, continuation)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += load_prompts(args.prompts_file, limit=args.limit, field=args.field)
    if not prompts:
        print("error: give --prompt TEXT and/or --prompts-file FILE", file=sys.stderr)
        return 2
    if args.method == "contrastive":
        validate_contrastive_arguments(args.penalty_alpha, args.top_k)
        gen = dict(penalty_alpha=args.penalty_alpha, top_k=args.top_k, do_sample=False)
    elif args.method == "greedy":
        gen = dict(do_sample=False)
    else:
        gen = dict(do_sample=True, top_p=args.top_p, top_k=0)
    model, tok = load_causal_lm(args.model, dtype=args.dtype, device=args.device)
    outs = generate_continuations(
        model,
        tok,
        prompts,
        batch_size=args.batch_size,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        **gen,
    )
    for prompt, cont in zip(prompts, outs):
        if args.json:
            print(json.dumps({"prompt": prompt, "continuation": cont}, ensure_ascii=False))
        else:
            print(f"{prompt}\033[1m{cont}\033[0m" if sys.stdout.isatty() else f"{prompt}{cont}")
            print("-" * 40)
    if args.metrics:
        m = repetition_and_diversity(outs)
        line = "  ".join(f"{k} {v:.2f}" for k, v in m.items())
        print(json.dumps(m) if args.json else line)
    return 0
