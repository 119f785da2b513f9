"""The EMA as a part that methods hold: one settings dataclass, validated once, and the per-stage
life cycle of an :class:`~mmcit.ema.AdaptiveEMA` of the model's trainable weights.

A method that averages its weights calls ``start(model)`` before a stage trains (a new EMA over the
trainable tensors, or the old one reset when they are the same tensors), ``update()`` after every
optimizer step and ``finish(stage)`` after the stage: the EMA weights are copied into the live
weights, so what is saved, evaluated and carried into the next stage are the EMA weights.
``state_dict()`` holds per-stage counters (JSON) and, inside a stage, the EMA tensors, so that a
step checkpoint resumes mid-stage exactly.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcit.ema.adaptive import ALPHA_NORMS, AdaptiveEMA
from mmcit.errors import ConfigError
from mmcit.io import save_safetensors

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel

GRANULARITIES = ("tensor", "layer")


@dataclass
class EMASettings:
    """``method.ema``: the balance weight alpha = scale * (1 + ||g||_1) / (||theta - E||_1 *
    ||g - g_prev||_1), ``fallback`` where that is no weight in (0, 1), one alpha per tensor or per
    layer; ``alpha_norm: mean`` takes the norms as means over the elements, so that alpha does not
    grow as tensors shrink; with ``fixed_alpha`` a plain EMA of constant weight (decay =
    1 - fixed_alpha)."""

    scale: float = 2.0  # the reference value
    fallback: float = 0.01  # the reference value
    granularity: str = "tensor"  # tensor (reference) | layer
    fixed_alpha: float | None = None  # None: adaptive
    alpha_norm: str = "sum"  # sum (reference: L1 norms summed over elements) | mean (over elements)

    def validate(self) -> None:
        """Reject settings the EMA cannot run, before any work starts."""
        if not self.scale > 0:  # also rejects NaN
            raise ConfigError(f"method.ema.scale must be > 0, got {self.scale}")
        if not 0.0 < self.fallback <= 1.0:
            raise ConfigError(f"method.ema.fallback must be in (0, 1], got {self.fallback}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"method.ema.granularity must be one of {', '.join(GRANULARITIES)}, "
                              f"got {self.granularity!r}")
        if self.fixed_alpha is not None and not 0.0 < self.fixed_alpha <= 1.0:
            raise ConfigError(f"method.ema.fixed_alpha must be in (0, 1], got {self.fixed_alpha}")
        if self.alpha_norm not in ALPHA_NORMS:
            raise ConfigError(f"method.ema.alpha_norm must be one of {', '.join(ALPHA_NORMS)}, got {self.alpha_norm!r}")


def _mean_finite(values) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


class EMAComponent:
    """An EMA of the trainable weights per stage, with its counters; see the module docstring."""

    def __init__(self, settings: EMASettings) -> None:
        self.settings = settings
        self.ema: AdaptiveEMA | None = None
        self.active = False  # between start() and finish()
        self._pending: dict | None = None  # EMA state loaded before the EMA exists (a resume)
        self._totals = {"fallbacks": 0, "skipped": 0, "updates": 0}
        self._stages: list[dict[str, Any]] = []

    def start(self, model: "MMModel") -> None:
        """A fresh EMA over the model's trainable tensors (or the state a resume loaded)."""
        named = model.trainable_named_parameters()
        if self.ema is None or not self._same_params(named):
            self.ema = AdaptiveEMA(named, **asdict(self.settings))
        else:
            self.ema.reset()
        if self._pending is not None:
            self.ema.load_state_dict(self._pending)  # resuming inside this stage
            self._pending = None
        self.active = True

    def update(self) -> None:
        """Blend the live weights in; call after ``optimizer.step()``, before ``zero_grad``."""
        if self.ema is None or not self.active:
            raise RuntimeError("EMAComponent.update() outside start() ... finish()")
        self.ema.update()

    def finish(self, stage: str, trace_path: str | Path | None = None) -> dict[str, Any]:
        """Copy the EMA weights into the model and record the stage's figures (returned); with
        ``trace_path``, save the stage's alpha trace there (``alpha`` (steps, groups) float32, the
        group names and the stage in the metadata), read from the device once."""
        if self.ema is None or not self.active:
            raise RuntimeError("EMAComponent.finish() without start()")
        if trace_path is not None:
            save_safetensors(trace_path, {"alpha": self.ema.alpha_trace()},
                             metadata={"groups": json.dumps(list(self.ema.groups)), "stage": stage})
        self.ema.copy_to()
        self.active = False
        mean = self.ema.mean_alpha
        record = {"stage": stage, "updates": self.ema.num_updates, "fallbacks": self.ema.num_fallbacks,
                  "skipped": self.ema.num_skipped, "last_alpha_mean": _mean_finite(self.ema.last_alphas.values()),
                  "mean_alpha": None if math.isnan(mean) else mean}
        self._stages.append(record)
        for key in self._totals:
            self._totals[key] += record[key]
        return record

    def _same_params(self, named: list) -> bool:
        ema = self.ema
        return ema is not None and ema.names == [n for n, _ in named] and all(
            a is b for a, (_, b) in zip(ema.params, named))

    # -- persistence and reporting ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters per stage (JSON); inside a stage also the EMA tensors, for a mid-stage resume.

        Between stages the EMA state is dead (the next stage starts afresh), so the checkpoint the
        recipe writes after a stage stays JSON-serialisable.
        """
        state: dict[str, Any] = {"totals": dict(self._totals), "tasks": [dict(t) for t in self._stages]}
        if self.active and self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`; EMA tensors are applied now or by the next ``start``."""
        self._totals = dict(state.get("totals", self._totals))
        self._stages = [dict(t) for t in state.get("tasks", [])]
        ema_state = state.get("ema")
        if ema_state is None:
            return
        if self.ema is not None and self.ema.names == list(ema_state["names"]):
            self.ema.load_state_dict(ema_state)
            self.active = True
        else:
            self._pending = ema_state

    def summary(self) -> dict:
        """Fallbacks and skipped group updates over the run, the mean alpha of the last blends, and per
        stage the mean alpha over all its blends."""
        fallbacks, skipped = self._totals["fallbacks"], self._totals["skipped"]
        last = self._stages[-1]["last_alpha_mean"] if self._stages else None
        if self.active and self.ema is not None:  # asked mid-stage: count the running stage too
            fallbacks += self.ema.num_fallbacks
            skipped += self.ema.num_skipped
            current = _mean_finite(self.ema.last_alphas.values())
            last = current if current is not None else last
        return {"fallbacks": fallbacks, "skipped": skipped, "last_alpha_mean": last,
                "per_task": [dict(t) for t in self._stages]}
