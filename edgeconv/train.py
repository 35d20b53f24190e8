"""Train a zoo model (the embedded default: ``tiny`` and its standard-conv twin) on the bundled
digits, on CPU, in well under a minute each.

Data: scikit-learn's digits through the model's own preprocessing (``edgeconv.data``): 1,297
training images, 500 held out for evaluation (never seen in training nor in int8 calibration,
which draws from the training part). Recipe: Adam (lr 3e-3, weight decay 1e-4) with a cosine
schedule, batch 64, label smoothing 0.05, and light augmentation (random shift of up to 2
pixels, zero padded). The checkpoint holds ``state_dict``, ``source`` and ``metrics``; a JSON of
the metrics is written beside it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    shift: int = 2            # max random shift in pixels (augmentation); 0 turns it off
    seed: int = 0
    threads: int | None = None  # torch threads; default: all cores

    def __post_init__(self):
        for key in ("epochs", "batch_size", "threads"):
            v = getattr(self, key)
            if (v is not None or key != "threads") and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{key}={v!r}: must be a whole number >= 1")
        for key in ("lr", "weight_decay", "label_smoothing"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (key == "lr" and v == 0):
                raise ValueError(f"{key}={v!r}: must be a finite number{' > 0' if key == 'lr' else ' >= 0'}")


def set_threads(threads: int | None = None) -> int:
    """Small convs on CPU: one intra-op thread per core this process may run on (its affinity,
    e.g. under taskset), no inter-op oversubscription."""
    from .exporters import cores
    n = threads or cores()
    torch.set_num_threads(n)
    return n


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    pad = nn.functional.pad(x, (max_shift,) * 4, value=float(x.min()))
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])            # n x h
    cols = (dx[:, None] + torch.arange(w)[None, :])            # n x w
    idx = torch.arange(n)[:, None, None]
    return pad.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    model.eval()
    preds = [model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy() for i in range(0, len(x), batch)]
    return float(np.mean(np.concatenate(preds) == y))


def train(model: nn.Module, data: str = "digits", config: TrainConfig = TrainConfig(), out: str | Path | None = None,
          log=print) -> dict:
    """Train ``model`` in place on ``data`` (``digits``); returns the metrics (held-out accuracy,
    seconds, ...) and saves a checkpoint to ``out`` if given."""
    from .data import load_data
    if data != "digits":
        raise ValueError(f"--data {data!r}: training supports the bundled 'digits' only "
                         "(image folders are for calibration and evaluation)")
    if out:
        from .artifact import ensure_writable
        ensure_writable(Path(out).parent, "--out")
    threads = set_threads(config.threads)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    card = model.card
    common = dict(input_shape=model.input_shape, preprocess=card.preprocess)
    tr = load_data(data, split="train", **common)
    ev = load_data(data, split="eval", **common)
    if (card.num_classes or 0) < int(tr.y.max()) + 1:
        raise ValueError(f"{card.name} has {card.num_classes} classes; digits needs 10")
    xt, yt = torch.from_numpy(tr.x), torch.from_numpy(tr.y)
    steps = config.epochs * math.ceil(len(xt) / config.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    t0 = time.perf_counter()
    history = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), config.batch_size):
            idx = order[i:i + config.batch_size]
            xb = _shift(xt[idx], config.shift, gen)
            loss = loss_fn(model(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(round(total / len(xt), 4))
        if log:
            log(f"epoch {epoch + 1}/{config.epochs}: loss {history[-1]:.4f}")
    seconds = time.perf_counter() - t0
    model.eval()
    metrics = {"model": card.name, "twin": card.twin, "data": data, "train_count": len(tr),
               "eval_count": len(ev), "eval_split": "digits held-out 500",
               "fp32_top1": evaluate(model, ev.x, ev.y), "train_top1": evaluate(model, tr.x, tr.y),
               "seconds": round(seconds, 1), "threads": threads, "loss_history": history,
               "config": asdict(config)}
    if out:
        save_checkpoint(model, metrics, out)
    return metrics


def save_checkpoint(model: nn.Module, metrics: dict, out: str | Path) -> Path:
    """``out`` (a .pt): {state_dict, source, metrics}, loadable by ``--weights`` (and by
    ``torch.load(weights_only=True)``); ``out`` with .json: the metrics."""
    import io

    from .artifact import write_bytes_atomic, write_json_atomic
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "source": model.card.source, "metrics": metrics}, buf)
    write_bytes_atomic(out, buf.getvalue())
    write_json_atomic(out.with_suffix(".json"), metrics)
    return out
