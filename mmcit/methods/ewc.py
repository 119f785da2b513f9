"""EWC: elastic weight consolidation, in its online form, over the trainable tensors.

Sources: Kirkpatrick et al. (2017), "Overcoming catastrophic forgetting in neural networks"
(PNAS; the quadratic penalty weighted by a diagonal Fisher information), and Schwarz et al. (2018),
"Progress & Compress: A scalable framework for continual learning" (ICML; online EWC: one running
Fisher, decayed by gamma at every task, and one anchor, the weights after the latest task).

After each task (``consolidate``: the task's weights are final), the diagonal Fisher of the
trainable tensors (the LoRA matrices and the projector copy of the one shared adapter) is estimated
on ``fisher_samples`` of the task's training samples, drawn without replacement by a generator
seeded from the run's seed and the task's name: for each sample alone, the gradient of its
log-likelihood (the mean over its answer tokens, the training loss of a batch of one) is squared,
and the squares are averaged over the samples (the empirical Fisher: the gold answers, not answers
sampled from the model). Then

    F <- gamma * F + F_task          theta* <- the weights after the task

and while every later task trains, ``(lambda / 2) * sum_i F_i * (theta_i - theta*_i)^2`` is added to
the loss of every micro-batch (micro-batch losses are weighted to sum to one per step, so the
penalty enters each step once). Everything is float32. Under data parallelism each process takes
its share of the Fisher samples (``SamplePass``) and the per-process sums are all-reduced before
the division; every process makes the same number of passes, so a forward through frozen weights
that FSDP shards stays in step. Adapters are never sharded in mmcit (FSDP shards frozen weights
only), so Fisher and anchor are whole tensors on every process; a sharded trainable tensor (a
DTensor) is refused, since its gradient is averaged over processes before any per-sample square
could be taken.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.distributed.tensor import DTensor

from mmcit.errors import ConfigError
from mmcit.methods.base import METHODS, Method, MethodConfig, Stage
from mmcit.training import distributed as dist

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel
    from mmcit.training.sample_pass import SamplePass


@dataclass
class EWCConfig(MethodConfig):
    """``ewc``: penalty weight ``lam`` (lambda), Fisher decay ``gamma``, samples per Fisher."""

    type: str = "ewc"
    lam: float = 1000.0  # lambda: weight of the quadratic penalty
    gamma: float = 1.0  # decay of the accumulated Fisher at each new task (1: plain sum)
    fisher_samples: int = 64  # per finished task

    def validate(self) -> None:
        """lambda >= 0, gamma in (0, 1], at least one Fisher sample."""
        if not self.lam >= 0:  # also rejects NaN
            raise ConfigError(f"method.lam must be >= 0, got {self.lam}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"method.gamma must be in (0, 1], got {self.gamma}")
        if self.fisher_samples < 1:
            raise ConfigError(f"method.fisher_samples must be >= 1, got {self.fisher_samples}")


def add_squared_gradients(fisher: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter],
                          weight: float = 1.0) -> None:
    """``fisher[name] += weight * grad^2`` for every parameter with a gradient, in float32."""
    if weight == 0:
        return
    for name, p in params.items():
        if p.grad is not None:
            fisher[name].add_(p.grad.detach().float().square(), alpha=weight)


def all_reduce_mean(tensors: dict[str, torch.Tensor], count: int) -> None:
    """Sum ``tensors`` over the processes (one flat all-reduce; a no-op alone), then divide by
    ``count``, in place."""
    if dist.world_size() > 1 and tensors:
        flat = dist.all_reduce_sum(torch.cat([t.reshape(-1) for t in tensors.values()]))
        offset = 0
        for t in tensors.values():
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()
    for t in tensors.values():
        t.div_(count)


def ewc_penalty(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], lam: float) -> torch.Tensor:
    """``(lam / 2) * sum F * (theta - theta*)^2`` over ``(theta, F, theta*)`` triples, in float32."""
    total = sum((f * (p.float() - a).square()).sum() for p, f, a in pairs)
    return 0.5 * lam * total


@METHODS.register
class EWC(Method):
    """One shared adapter, trained with the online-EWC penalty towards the previous tasks' weights."""

    name = "ewc"
    config_cls = EWCConfig

    def __init__(self, cfg: EWCConfig):
        super().__init__(cfg)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.records: list[dict[str, Any]] = []
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """Bind the live trainable tensors to their Fisher and anchor (none before the first task)."""
        self._pairs = None

    def _bind(self, model: "MMModel") -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self._pairs is None:
            params = dict(model.trainable_named_parameters())
            missing = sorted(set(self.fisher) - set(params))
            if missing:
                raise RuntimeError(f"ewc: trainable tensors changed since the Fisher was taken ({missing[0]}, ...)")
            self._pairs = [(params[n], self.fisher[n].to(params[n].device), self.anchor[n].to(params[n].device))
                           for n in self.fisher]
        return self._pairs

    def extra_loss(self, model: "MMModel", batch: dict, outputs: Any) -> torch.Tensor | None:
        """The penalty (None before the first Fisher)."""
        if not self.fisher or self.cfg.lam == 0:
            return None
        return ewc_penalty(self._bind(model), self.cfg.lam)

    def consolidate(self, stage: Stage, model: "MMModel", passes: "SamplePass") -> None:
        """Estimate the task's Fisher, fold it into the running one, anchor at the task's weights."""
        samples = [s for t in stage.train for s in t.train]
        if not samples:
            return
        seed = self.ctx.seed if self.ctx is not None else 0
        count = min(self.cfg.fisher_samples, len(samples))
        chosen = random.Random(f"ewc-{seed}-{stage.name}").sample(samples, count)
        params = dict(model.trainable_named_parameters())
        sharded = [n for n, p in params.items() if isinstance(p, DTensor)]
        if sharded:  # a sharded gradient is averaged over processes: no per-sample square exists
            raise RuntimeError(f"ewc: trainable tensor {sharded[0]} is sharded; the Fisher needs whole adapter "
                               "tensors (mmcit's FSDP shards frozen weights only)")
        task = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        passes.per_sample_gradients(chosen, lambda weight: add_squared_gradients(task, params, weight))
        all_reduce_mean(task, count)
        for n, f in task.items():
            self.fisher[n] = self.fisher[n].mul_(self.cfg.gamma).add_(f) if n in self.fisher else f
            self.anchor[n] = params[n].detach().float().clone()
        self._pairs = None
        self.records.append({"stage": stage.name, "fisher_samples": count,
                             "task_fisher_mean": _mean(task.values()), "fisher_mean": _mean(self.fisher.values()),
                             "fisher_max": max(float(f.max()) for f in self.fisher.values())})

    # -- persistence and reporting ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Fisher and anchor tensors (by parameter name) and the per-task records."""
        return {"fisher": dict(self.fisher), "anchor": dict(self.anchor), "tasks": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.fisher = {n: t.float().clone() for n, t in state.get("fisher", {}).items()}
        self.anchor = {n: t.float().clone() for n, t in state.get("anchor", {}).items()}
        self.records = [dict(r) for r in state.get("tasks", [])]
        self._pairs = None

    def stored_tensors(self) -> dict[str, list[torch.Tensor]]:
        """The running Fisher and the anchor."""
        return {"fisher": list(self.fisher.values()), "anchor": list(self.anchor.values())} if self.fisher else {}

    def summary(self) -> dict:
        """Lambda, gamma and per task the samples and Fisher figures."""
        return {"lam": self.cfg.lam, "gamma": self.cfg.gamma, "fisher_samples": self.cfg.fisher_samples,
                "tasks": [dict(r) for r in self.records]}


def _mean(tensors) -> float:
    tensors = list(tensors)
    total = sum(float(t.double().sum()) for t in tensors)
    return total / max(1, sum(t.numel() for t in tensors))
