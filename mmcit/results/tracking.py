"""Experiment trackers (``logging.tracker: none | tensorboard | wandb``) through accelerate's
tracker classes, offline only.

What a run logs, with the optimizer step counted across the whole stream as the x axis:

* ``train/loss`` and ``train/lr`` after every optimizer step (values the training loop already has
  on the host: no extra synchronisation);
* ``ema/alpha_mean`` per step of a stage whose method keeps an EMA: the mean over groups of the
  alpha trace (``alpha_trace/NN_<stage>.safetensors``), read once after the stage;
* ``eval/<task>`` (accuracy in %) and ``eval/average`` after every stage.

Files: TensorBoard writes event files under ``<logging.dir>/<run name>/`` (default ``logging.dir``:
``<output_dir>/logs``); W&B runs in offline mode and writes under ``<logging.dir>/wandb/``
(``wandb sync`` uploads it later). Those writers are the trackers' own, not ``mmcit.io``'s atomic
files. W&B is an optional extra: ``pip install 'mmcit[wandb]'``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcit.errors import ConfigError

__all__ = ["LoggingConfig", "TRACKERS", "Tracker", "open_tracker"]

TRACKERS = ("none", "tensorboard", "wandb")


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@dataclass
class LoggingConfig:
    """``logging``: an experiment tracker (``none``, ``tensorboard`` or ``wandb``, offline), the
    folder it writes to (default ``<output_dir>/logs``) and the W&B project (default: the run's
    name)."""

    tracker: str = "none"
    dir: str | None = None
    project: str | None = None

    def validate(self) -> None:
        """A known tracker whose package is installed."""
        if self.tracker not in TRACKERS:
            raise ConfigError(f"logging.tracker must be one of {', '.join(TRACKERS)}, got {self.tracker!r}")
        if self.tracker == "tensorboard" and not (_installed("tensorboard") or _installed("tensorboardX")):
            raise ConfigError("logging.tracker: tensorboard is not installed (pip install tensorboard)")
        if self.tracker == "wandb" and not _installed("wandb"):
            raise ConfigError("logging.tracker: wandb is not installed (pip install 'mmcit[wandb]')")


class Tracker:
    """One run's tracker; every method is a no-op for ``tracker: none``. ``offset`` is the number
    of optimizer steps of the stages before the current one (so a resumed run continues the axis)."""

    def __init__(self, backend: Any = None) -> None:
        self.backend = backend
        self.offset = 0

    @property
    def enabled(self) -> bool:
        """Whether anything is logged."""
        return self.backend is not None

    def log(self, values: dict[str, float], step: int) -> None:
        """Log scalar values at a global step."""
        if self.backend is not None:
            self.backend.log({k: float(v) for k, v in values.items()}, step=int(step))

    def on_step(self, step: int, loss: float, lr: float) -> None:
        """After optimizer step ``step`` (1-based within the stage)."""
        self.log({"train/loss": loss, "train/lr": lr}, self.offset + step)

    def after_stage(self, run_dir: Path, stage_index: int, stage_name: str, steps: int, tasks: list[str],
                    row: list[float | None]) -> None:
        """Log the stage's alpha trace (if its method kept one) and accuracies; advance the axis."""
        if self.backend is not None:
            from mmcit.ema.trace import trace_file  # lazy: mmcit.ema loads torch

            file = trace_file(run_dir, stage_index, stage_name)
            if file.is_file():
                for k, alpha in enumerate(_mean_alpha_per_step(file), start=1):
                    if not math.isnan(alpha):
                        self.log({"ema/alpha_mean": alpha}, self.offset + k)
            values = {f"eval/{t}": v for t, v in zip(tasks, row) if v is not None}
            if values:
                values["eval/average"] = sum(values.values()) / len(values)
                self.log(values, self.offset + steps)
        self.offset += steps

    def close(self) -> None:
        """Flush and close the backend."""
        if self.backend is not None:
            self.backend.finish()
            self.backend = None


def _mean_alpha_per_step(file: Path) -> list[float]:
    from safetensors import safe_open

    with safe_open(str(file), framework="numpy") as f:
        alpha = f.get_tensor("alpha")
    out = []
    for row in alpha:
        finite = [float(a) for a in row if not math.isnan(float(a))]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``a.b: value`` with values a tracker accepts (lists as JSON text)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (bool, int, float, str)) or v is None:
            out[key] = "" if v is None else v
        else:
            out[key] = json.dumps(v)
    return out


def open_tracker(cfg: LoggingConfig, run_name: str, output_dir: str | Path, config: dict) -> Tracker:
    """Start the configured tracker (offline) and store the run's config as its hyperparameters.

    Called on the main process only. accelerate's trackers log through its process state, so that
    is initialised here (``PartialState()``: no distributed setup of its own in a single process;
    under a launcher it finds the process group mmcit already joined).
    """
    if cfg.tracker == "none":
        return Tracker()
    folder = Path(cfg.dir) if cfg.dir else Path(output_dir) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    from accelerate import PartialState
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    PartialState()
    if cfg.tracker == "tensorboard":
        backend = TensorBoardTracker(run_name, str(folder))
    else:
        backend = WandBTracker(cfg.project or run_name, mode="offline", dir=str(folder), name=run_name)
    backend.start()
    backend.store_init_configuration(_flat(config))
    return Tracker(backend)
