"""The balance weight of every blend, per step and group, kept on the device while training runs.

:class:`AlphaTrace` is a (capacity, groups) tensor on the EMA's device that ``AdaptiveEMA.update()``
writes one row of per call with tensor operations only (no host synchronisation); it doubles its
capacity when full (a device allocation and copy, still no synchronisation). Row k holds the alpha
each group was blended with at update k, NaN where a group did not blend (the first update of a
stage, which copies the weights, and skipped updates). The host reads it once, at the end of a stage.

Memory: 4 bytes per step and group (LLaVA-1.5-7B's 452 LoRA and projector tensors: 1.8 kB a step,
under 10 MB for a 5,000-step task).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["AlphaTrace", "trace_file"]

INITIAL_CAPACITY = 256


class AlphaTrace:
    """A growing (steps, groups) record of blend weights on one device; see the module docstring."""

    def __init__(self, n_groups: int, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.n_groups, self.device, self.dtype = n_groups, device, dtype
        self._buffer = torch.full((INITIAL_CAPACITY, n_groups), math.nan, dtype=dtype, device=device)
        self.steps = 0

    def record(self, alphas: torch.Tensor) -> None:
        """Write the row of this update (one value per group, NaN where no blend happened)."""
        if self.steps == self._buffer.shape[0]:
            grown = torch.full((2 * self.steps, self.n_groups), math.nan, dtype=self.dtype, device=self.device)
            grown[: self.steps].copy_(self._buffer)
            self._buffer = grown
        self._buffer[self.steps].copy_(alphas)
        self.steps += 1

    def reset(self) -> None:
        """Forget the recorded rows (the buffer is kept for the next stage)."""
        self.steps = 0

    def rows(self) -> torch.Tensor:
        """The recorded rows, (steps, groups), on the device (a view: copy before modifying)."""
        return self._buffer[: self.steps]

    def load(self, rows: torch.Tensor) -> None:
        """Replace the record with ``rows`` (from :meth:`rows` of a saved state)."""
        self.steps = 0
        while self._buffer.shape[0] < rows.shape[0]:
            self._buffer = torch.full((2 * self._buffer.shape[0], self.n_groups), math.nan, dtype=self.dtype,
                                      device=self.device)
        self._buffer[: rows.shape[0]].copy_(rows)
        self.steps = int(rows.shape[0])


def trace_file(run_dir: str | Path, stage_index: int, stage_name: str) -> Path:
    """Where a run keeps a stage's alpha trace: ``alpha_trace/NN_<stage>.safetensors``."""
    return Path(run_dir) / "alpha_trace" / f"{stage_index + 1:02d}_{stage_name}.safetensors"
