"""One training epoch and one evaluation pass.

Training minimises  L = CE(f(x), y) + sum over MoE layers of the gates' auxiliary losses
(the Switch balancing loss of hard MoE; zero otherwise), one optimiser step per batch at the
schedule's rate for that step. Both passes accumulate per-expert load: rows routed to each
expert of each MoE layer, summed over the batches.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from train.schedule import Schedule


class LoadMeter:
    """Sum of `model.expert_load()` over batches: layer name -> (E,) counts."""

    def __init__(self) -> None:
        self.total: dict[str, Tensor] = {}

    def add(self, model: nn.Module) -> None:
        for name, counts in getattr(model, "expert_load", dict)().items():
            self.total[name] = self.total.get(name, torch.zeros_like(counts)) + counts

    def plain(self) -> dict[str, list[int]]:
        return {name: counts.tolist() for name, counts in self.total.items()}


def train_epoch(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer,
                schedule: Schedule, step: int, *, max_steps: int | None = None,
                label_smoothing: float = 0.0, frozen: Iterable[nn.Module] = (),
                progress: bool = True, desc: str = "train", log_every: int = 0,
                on_log: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], int]:
    """Train over `batches`; returns (epoch stats, step after the epoch).

    Args:
        model: the network; `model.aux_loss()` is added when it has one.
        batches: (x (B, 3, S, S), y (B,)) pairs on the model's device.
        optimizer: steps once per batch, at lr = schedule(step).
        step: optimiser steps taken before this epoch.
        max_steps: stop once `step` reaches it.
        label_smoothing: epsilon of the cross-entropy.
        frozen: modules kept in eval mode (their BatchNorm statistics stay fixed).
        progress: show a tqdm bar with running loss / accuracy.
        log_every: call `on_log` every this many steps (0: never).
    """
    model.train()
    for module in frozen:
        module.eval()
    loss_sum = torch.zeros(())
    aux_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    seen = 0
    batches_done = 0
    load = LoadMeter()
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for x, y in bar:
        if max_steps is not None and step >= max_steps:
            break
        lr = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(x)
        ce = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        aux = model.aux_loss().to(ce.device) if hasattr(model, "aux_loss") else torch.zeros((), device=ce.device)
        optimizer.zero_grad(set_to_none=True)
        (ce + aux).backward()
        optimizer.step()
        step += 1
        batches_done += 1
        n = y.shape[0]
        seen += n
        loss_sum += ce.detach().cpu() * n
        aux_sum += aux.detach().cpu() * n
        correct += (logits.detach().argmax(dim=1) == y).sum().cpu()
        load.add(model)
        if step % 10 == 0 or seen == n:
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{float(correct) / seen:.4f}",
                            lr=f"{lr:.3g}")
        if on_log is not None and log_every and step % log_every == 0:
            on_log({"event": "step", "step": step, "lr": lr, "loss": float(ce.detach()),
                    "aux_loss": float(aux.detach()),
                    "train_loss": float(loss_sum) / seen, "train_acc": float(correct) / seen})
    bar.close()
    stats = {"train_loss": float(loss_sum) / max(seen, 1), "train_acc": float(correct) / max(seen, 1),
             "train_aux_loss": float(aux_sum) / max(seen, 1), "train_samples": seen,
             "train_batches": batches_done, "train_expert_load": load.plain()}
    return stats, step


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], progress: bool = False,
             desc: str = "test") -> dict[str, Any]:
    """Mean cross-entropy, top-1 accuracy and per-expert load over `batches` (eval mode)."""
    model.eval()
    loss_sum = 0.0
    correct = 0
    seen = 0
    load = LoadMeter()
    for x, y in tqdm(batches, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
        seen += y.shape[0]
        load.add(model)
    return {"test_loss": loss_sum / max(seen, 1), "test_acc": correct / max(seen, 1),
            "test_samples": seen, "test_expert_load": load.plain()}
