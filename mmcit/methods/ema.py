"""Plain EMA baseline: E = decay * E + (1 - decay) * theta after every step, copied in after a task.

It shares every hook with ``adaptive_ema`` and only swaps the adaptive balance weight for the
constant ``1 - decay``, so that the two differ in nothing but the weight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmcit.methods.adaptive_ema import AdaptiveEMAMethod, _config_error
from mmcit.methods.base import MethodConfig, register


@dataclass
class EMAConfig(MethodConfig):
    type: str = "ema"
    decay: float = 0.99

    def validate(self) -> None:
        """The decay must leave a positive weight on the live weights."""
        if not 0.0 <= self.decay < 1.0:
            raise _config_error(f"method.decay must be in [0, 1), got {self.decay}")


@register
class EMAMethod(AdaptiveEMAMethod):
    """EMA of the trainable weights with a constant decay, per task."""

    name = "ema"
    config_cls = EMAConfig

    def ema_kwargs(self) -> dict[str, Any]:
        return {"fixed_alpha": 1.0 - self.cfg.decay}
