"""The ``eval:`` block of a run's config."""
from __future__ import annotations

from dataclasses import dataclass

from mmcit.errors import ConfigError

#: Scoring modes: ``default`` (plain bugs of the original scorers fixed) or ``reference`` (identical
#: per-sample results to the original evaluation scripts).
MODES: tuple[str, ...] = ("default", "reference")


@dataclass
class EvalConfig:
    """``eval``: generation batch and length, and the scorers' mode."""

    batch_size: int = 32
    max_new_tokens: int = 24
    scoring_mode: str = "default"  # default | reference

    def validate(self) -> None:
        """Value checks that the types alone cannot express."""
        if self.scoring_mode not in MODES:
            raise ConfigError(f"eval.scoring_mode must be one of {', '.join(MODES)}")
        if self.batch_size < 1:
            raise ConfigError("eval.batch_size must be >= 1")
