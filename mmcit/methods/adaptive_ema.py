"""Adaptive EMA on every task (LCIA section 1 without instruction grouping).

The EMA of the trainable weights is rebuilt (or reset) before each task, updated after every
optimizer step and copied into the live weights after the task: what is saved, evaluated and carried
into the next task are the EMA weights. The reference turns the EMA on only for tasks that re-train
an existing parameter group (``when: on_reuse``); that needs instruction grouping, which this
standalone method does not have, so it only accepts ``when: always``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmcit.ema import AdaptiveEMA
from mmcit.methods.base import Method, MethodConfig, Stage, register

if TYPE_CHECKING:
    from mmcit.model import MMModel

WHEN_CHOICES = ("always", "on_reuse")


def _config_error(message: str) -> Exception:
    # Imported late: mmcit.config imports the method registry, so a top-level import could cycle.
    try:
        from mmcit.config import ConfigError
    except ImportError:  # pragma: no cover - config module absent in a partial checkout
        return ValueError(message)
    return ConfigError(message)


@dataclass
class AdaptiveEMAConfig(MethodConfig):
    type: str = "adaptive_ema"
    scale: float = 2.0
    fallback: float = 0.01
    granularity: str = "tensor"  # "tensor" (reference) or "layer"
    when: str = "always"  # "always" here; "on_reuse" (reference) needs instruction grouping

    def validate(self) -> None:
        """Reject settings this method cannot run, before any work starts."""
        if self.when not in WHEN_CHOICES:
            raise _config_error(f"method.when must be one of {WHEN_CHOICES}, got {self.when!r}")
        if self.when != "always":
            raise _config_error(
                "method.when: 'on_reuse' needs instruction grouping to know which tasks re-train a "
                "parameter group; the standalone adaptive_ema method only supports 'always'"
            )
        if self.granularity not in ("tensor", "layer"):
            raise _config_error(f"method.granularity must be 'tensor' or 'layer', got {self.granularity!r}")
        if not 0.0 < self.fallback <= 1.0:
            raise _config_error(f"method.fallback must be in (0, 1], got {self.fallback}")


@register
class AdaptiveEMAMethod(Method):
    """Hooks that keep an :class:`~mmcit.ema.AdaptiveEMA` of the trainable weights per task."""

    name = "adaptive_ema"
    config_cls = AdaptiveEMAConfig

    def __init__(self, cfg: MethodConfig):
        super().__init__(cfg)
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()
        self.ema: AdaptiveEMA | None = None
        self._in_task = False
        self._pending: dict | None = None  # EMA state loaded before the EMA exists (resume)
        self._totals = {"fallbacks": 0, "skipped": 0, "updates": 0}
        self._tasks: list[dict[str, Any]] = []

    def ema_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the AdaptiveEMA this method builds."""
        return {"scale": self.cfg.scale, "fallback": self.cfg.fallback, "granularity": self.cfg.granularity}

    # -- hooks ------------------------------------------------------------------------------------
    def before_task(self, stage: Stage, model: "MMModel") -> None:
        named = model.trainable_named_parameters()
        if self.ema is None or not self._same_params(named):
            # A new adapter or a new set of trainable tensors: new state over them.
            self.ema = AdaptiveEMA(named, **self.ema_kwargs())
        else:
            self.ema.reset()
        if self._pending is not None:
            self.ema.load_state_dict(self._pending)  # resuming inside this task
            self._pending = None
        self._in_task = True

    def after_optimizer_step(self, model: "MMModel") -> None:
        if self.ema is None:
            raise RuntimeError(f"{self.name}: after_optimizer_step before before_task")
        self.ema.update()

    def after_task(self, stage: Stage, model: "MMModel") -> None:
        if self.ema is None:
            return
        self.ema.copy_to()
        self._in_task = False
        alphas = [a for a in self.ema.last_alphas.values() if math.isfinite(a)]
        record = {
            "stage": stage.name,
            "updates": self.ema.num_updates,
            "fallbacks": self.ema.num_fallbacks,
            "skipped": self.ema.num_skipped,
            "last_alpha_mean": sum(alphas) / len(alphas) if alphas else None,
            "mean_alpha": None if math.isnan(mean := self.ema.mean_alpha) else mean,
        }
        self._tasks.append(record)
        for key in ("fallbacks", "skipped", "updates"):
            self._totals[key] += record[key]

    def _same_params(self, named: list) -> bool:
        ema = self.ema
        return ema is not None and ema.names == [n for n, _ in named] and all(
            a is b for a, (_, b) in zip(ema.params, named)
        )

    # -- persistence and reporting ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters per task (JSON); inside a task also the EMA tensors, for a mid-task resume.

        Between tasks the EMA state is dead (the next task starts afresh), so the checkpoint the
        runner writes after a task stays JSON-serialisable.
        """
        state: dict[str, Any] = {"totals": dict(self._totals), "tasks": [dict(t) for t in self._tasks]}
        if self._in_task and self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self._totals = dict(state.get("totals", self._totals))
        self._tasks = [dict(t) for t in state.get("tasks", [])]
        ema_state = state.get("ema")
        if ema_state is None:
            return
        if self.ema is not None and self.ema.names == list(ema_state["names"]):
            self.ema.load_state_dict(ema_state)
            self._in_task = True
        else:
            self._pending = ema_state  # applied by the next before_task, instead of a reset

    def summary(self) -> dict:
        """Fallbacks and skipped group updates over the run, the mean alpha of the last blends, and per
        task the mean alpha over all its blends."""
        fallbacks, skipped = self._totals["fallbacks"], self._totals["skipped"]
        last = self._tasks[-1]["last_alpha_mean"] if self._tasks else None
        if self._in_task and self.ema is not None:  # asked mid-task: count the running task too
            fallbacks += self.ema.num_fallbacks
            skipped += self.ema.num_skipped
            alphas = [a for a in self.ema.last_alphas.values() if math.isfinite(a)]
            last = sum(alphas) / len(alphas) if alphas else last
        return {"fallbacks": fallbacks, "skipped": skipped, "last_alpha_mean": last,
                "per_task": [dict(t) for t in self._tasks]}
