"""The ``eval:`` block of a run's config."""
from __future__ import annotations

from dataclasses import dataclass

from mmcit.errors import ConfigError

#: Scoring modes: ``default`` (plain bugs of the original scorers fixed) or ``reference`` (identical
#: per-sample results to the original evaluation scripts).
MODES: tuple[str, ...] = ("default", "reference")
#: The splits a run can evaluate on: the test split, or the validation split (for choosing settings).
EVAL_SPLITS: tuple[str, ...] = ("test", "val")


@dataclass
class EvalConfig:
    """``eval``: generation batch and length, the scorers' mode and the split runs evaluate on."""

    batch_size: int = 32
    max_new_tokens: int = 24
    scoring_mode: str = "default"  # default | reference
    split: str = "test"  # test | val (every task must then have validation samples)

    def validate(self) -> None:
        """Value checks that the types alone cannot express."""
        if self.scoring_mode not in MODES:
            raise ConfigError(f"eval.scoring_mode must be one of {', '.join(MODES)}")
        if self.split not in EVAL_SPLITS:
            raise ConfigError(f"eval.split must be one of {', '.join(EVAL_SPLITS)}, got {self.split!r}")
        if self.batch_size < 1:
            raise ConfigError("eval.batch_size must be >= 1")
