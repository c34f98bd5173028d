"""The shared core: what every wing uses, importing no wing.

- `core.losses`: the loss contract (`LossOutput`, citation, `config_dict()`), the generic in-batch
  losses, GradCache, and the registry from names to losses.
- `core.distributed`: cross-device gather with gradient, no-ops on one process.
- `core.momentum`: the exponential-moving-average key encoder of momentum contrast.
- `core.search`: exact (chunked) nearest-neighbour search, shared by mining and evaluation.
- `core.hub`: model cards, the save / push / card mixin every head and trained artefact uses.
- `core.peft`: the one place that applies a `peft` config (target modules checked first).
- `core.recipes`: recipe sections -> `TrainingArguments`, the `lora:` section reader.
- `core.data`: role-named columns, collators, batch samplers, loaders for the benchmark formats.
- `core.checkpoint`: atomic Trainer checkpoints (staged, then renamed whole) and a resume that checks them.
- `core.saving`: replacing a model folder whole (staged sibling swapped in, leftovers of a killed save
  cleaned), and the check that refuses to replace a folder holding another model.
- `core.utils`, `core.smollm2`: data location, atomic folder writes, the packaged real models.
"""
