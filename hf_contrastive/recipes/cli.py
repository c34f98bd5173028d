"""`hf-contrastive train RECIPE [--section.key value ...]`."""

from __future__ import annotations

import argparse
import json

from hf_contrastive.recipes import load_recipe, run_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="Train with a recipe (trainers/*.yaml or a packaged name such as simcse-unsup).",
        description="Run a training recipe. Overrides use dotted keys: --args.learning_rate 1e-4 "
        "--method.temperature 0.1 --model.pooling cls --data.train.max_rows 1000 (a key without a section "
        "goes to method when it names a method setting, else to args). Works under "
        "`accelerate launch --multi_gpu --num_processes N -m hf_contrastive train RECIPE` (also on CPU-only machines).",
    )
    p.add_argument("recipe", help="recipe file or packaged recipe name")
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args: argparse.Namespace) -> int:

    recipe = load_recipe(args.recipe, args.overrides)
    if args.print_recipe:
        print(json.dumps(recipe, indent=2))
        return 0
    results = run_recipe(recipe)
    if not results.get("is_main_process", True):
        return 0
    before = results.get("before", {}).get("eval_sts_spearman")
    after = results.get("after", {}).get("eval_sts_spearman")
    if before is not None and after is not None:
        print(f"STS Spearman: {before:.4f} -> {after:.4f}")
    if "output" in results:
        print(f"Hub-ready model with its card: {results['output']}")
    figures = {k: v for k, v in results.items() if k not in ("before", "after", "output", "is_main_process")}
    if figures:
        print(json.dumps(figures, indent=2, default=str))
    return 0
