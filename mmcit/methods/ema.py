"""Plain EMA baseline: E = (1 - alpha) * E + alpha * theta with a constant alpha after every step,
copied in after each task.

It runs exactly ``adaptive_ema``'s hooks with ``method.ema.fixed_alpha`` set (0.01 by default,
decay 0.99), so that the two differ in nothing but the balance weight.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mmcit.ema.component import EMASettings
from mmcit.errors import ConfigError
from mmcit.methods.adaptive_ema import AdaptiveEMAMethod
from mmcit.methods.base import METHODS, MethodConfig


@dataclass
class EMAConfig(MethodConfig):
    """``ema``: the EMA settings; ``ema.fixed_alpha`` (1 - decay) is required."""

    type: str = "ema"
    ema: EMASettings = field(default_factory=lambda: EMASettings(fixed_alpha=0.01))

    def validate(self) -> None:
        """A plain EMA needs its constant weight."""
        if self.ema.fixed_alpha is None:
            raise ConfigError("method.ema.fixed_alpha is required for ema (1 - decay, e.g. 0.01 for decay 0.99)")


@METHODS.register
class EMAMethod(AdaptiveEMAMethod):
    """EMA of the trainable weights with a constant balance weight (decay), per task."""

    name = "ema"
    config_cls = EMAConfig
