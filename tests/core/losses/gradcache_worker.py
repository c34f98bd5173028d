"""Worker of the two-process GradCache test: ``torchrun --nproc_per_node 2 THIS OUT.json TMPDIR``.

Every rank builds the same tiny BERT encoder (float64, dropout off) and the same global batch. The
runs compared differ only in summation order, so float64 keeps their gap far below any real mistake.

* ``ddp``: one GradCache step under DDP, each rank embedding its half of the batch in mini-batches,
  the loss on the embeddings gathered from both ranks, against one process computing the uncached
  loss on the whole batch. Also counts the gradient all-reduces of DDP's communication hook: GradCache
  must launch as many as one plain DDP backward (``no_sync`` on all re-forwards but the last).
* ``trainer``: two ContrastiveTrainer runs on two processes, GradCache (mini-batch 3, gradient
  accumulation 2) against the plain loss: the same weights after the run.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for tiny_models

from tiny_models import WORDS, bert_config, bert_tokenizer  # noqa: E402

from hf_contrastive.core.losses import GradCache, InfoNCELoss  # noqa: E402
from hf_contrastive.embeddings.configuration import SentenceEncoderConfig
from hf_contrastive.embeddings.modeling import SentenceEncoder
from tests.distributed_run import end_worker  # noqa: E402


def sentences(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 9, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(len(WORDS), (k,), generator=g).tolist()))
    return out


def encoder(tok, dtype=torch.float64) -> SentenceEncoder:
    torch.manual_seed(0)
    cfg = bert_config(len(tok))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    model = SentenceEncoder(SentenceEncoderConfig(backbone_config=cfg)).to(dtype)
    model.tokenizer = tok
    return model


def counting_allreduce_hook(state: dict, bucket):
    """DDP's default all-reduce (mean), counting its calls in ``state["calls"]``."""
    state["calls"] += 1
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0] / dist.get_world_size())


def ddp_check(tok) -> dict:
    rank = dist.get_rank()
    g_batch = 8
    a, p, n = sentences(g_batch, 1), sentences(g_batch, 2), sentences(g_batch, 3)
    base = encoder(tok)

    # one process, the whole batch, uncached
    ref = copy.deepcopy(base).train()
    feats = [tok(col, padding=True, return_tensors="pt") for col in (a, p, n)]
    emb = [ref(**f).embeddings for f in feats]
    loss = InfoNCELoss(hard_negative_weight=0.3, symmetric=True, gather_across_devices=False)
    ref_loss = loss(emb[0], emb[1], emb[2][:, None]).loss
    ref_loss.backward()
    ref_grads = {k: v.grad.clone() for k, v in ref.named_parameters() if v.grad is not None}

    def run(cached: bool) -> tuple[dict, int, float]:
        local = slice(rank * g_batch // 2, (rank + 1) * g_batch // 2)
        rows = a[local] + p[local] + n[local]
        features = dict(tok(rows, padding=True, return_tensors="pt"))
        model = DistributedDataParallel(
            copy.deepcopy(base).train(), find_unused_parameters=True
        )  # (BERT pooler unused)
        hook = {"calls": 0}
        model.register_comm_hook(hook, counting_allreduce_hook)
        fn = InfoNCELoss(hard_negative_weight=0.3, symmetric=True)
        if cached:
            gc = GradCache(fn, mini_batch_size=3)
            out = gc.backward(
                lambda f: model(**f).embeddings,
                features,
                roles=3,
                encode_no_grad=lambda f: model.module(**f).embeddings,
                no_sync=model.no_sync,
            )
            value = float(out.loss)
        else:
            e = model(**features).embeddings.split(g_batch // 2)
            out = fn(e[0], e[1], e[2][:, None])
            out.loss.backward()
            value = float(out.loss.detach())
        grads = {k.removeprefix("module."): v.grad for k, v in model.named_parameters() if v.grad is not None}
        return grads, hook["calls"], value

    out = {}
    for cached in (True, False):
        grads, calls, value = run(cached)
        diff = max(float((grads[k] - ref_grads[k]).abs().max()) for k in ref_grads)
        t = torch.tensor([diff])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        logged = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(logged)
        name = "cached" if cached else "plain"
        out[f"{name}_grad_max_abs_diff"] = float(t)
        out[f"{name}_allreduce_calls"] = calls
        out[f"{name}_loss_abs_diff"] = abs(float(logged) / 2 - float(ref_loss))
        out[f"{name}_grad_keys"] = len(grads)
    out["ref_grad_keys"] = len(ref_grads)
    out["ref_loss"] = float(ref_loss)
    out["tokens"] = sum(int(f["attention_mask"].numel()) for f in feats)
    out["grad_max_abs"] = max(float(g.abs().max()) for g in ref_grads.values())
    return out


def trainer_check(tok, tmp: Path) -> dict:
    from datasets import Dataset

    from hf_contrastive import ContrastiveConfig, ContrastiveTrainer

    ds = Dataset.from_dict(
        {"anchor": sentences(24, 4), "positive": sentences(24, 5), "negative": sentences(24, 6)}
    )
    finals = {}
    for name, extra in (("plain", {}), ("cached", {"gradcache_mini_batch_size": 3})):
        model = encoder(tok)  # float64: the two runs differ only by summation order, see test_gradcache.py
        args = ContrastiveConfig(
            output_dir=str(tmp / name),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=2,
            learning_rate=1e-3,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            seed=0,
            hard_negative_weight=0.2,
            **extra,
        )
        trainer = ContrastiveTrainer(model=model, args=args, train_dataset=ds)
        trainer.train()
        finals[name] = {
            k: v.detach().clone()
            for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()
        }
        finals[name + "_loss"] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    diff = max(float((finals["plain"][k] - finals["cached"][k]).abs().max()) for k in finals["plain"])
    moved = max(
        float((finals["plain"][k] - encoder(tok).state_dict()[k]).abs().max()) for k in finals["plain"]
    )
    t = torch.tensor([diff])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return {
        "weights_max_abs_diff": float(t),
        "weights_moved": moved,
        "world": dist.get_world_size(),
        "learning_rate": args.learning_rate,
        "adam_epsilon": args.adam_epsilon,
        "optimizer_steps": args.max_steps,
    }


def moco_check(tok, tmp: Path) -> dict:
    """Momentum contrast on two processes: both ranks enqueue the keys of the global batch."""
    from datasets import Dataset

    from hf_contrastive import ContrastiveConfig, ContrastiveTrainer

    ds = Dataset.from_dict({"anchor": sentences(24, 7), "positive": sentences(24, 8)})
    args = ContrastiveConfig(
        output_dir=str(tmp / "moco"),
        loss="moco",
        queue_size=32,
        momentum=0.9,
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = ContrastiveTrainer(model=encoder(tok, dtype=torch.float32), args=args, train_dataset=ds)
    trainer.train()
    queue = trainer.loss_fn.queue.detach().clone()
    key = torch.cat([p.detach().reshape(-1) for p in trainer.key_encoder.parameters()])
    out = {"queue_ptr": int(trainer.loss_fn.queue_ptr[0])}
    for name, t in (("queue", queue), ("key_encoder", key)):
        other = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(other, t)
        out[f"{name}_rank_diff"] = float((other[0] - other[1]).abs().max())
    return out


def main(path: str, tmp: str) -> None:
    dist.init_process_group("gloo")
    tok = bert_tokenizer(Path(tmp) / f"vocab{dist.get_rank()}")
    results = {
        "ddp": ddp_check(tok),
        "trainer": trainer_check(tok, Path(tmp)),
        "moco": moco_check(tok, Path(tmp)),
    }
    if dist.get_rank() == 0:
        Path(path).write_text(json.dumps(results, indent=1))
    end_worker()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
