"""A run's configuration: the top-level dataclass, composed of each layer's own config block.

``data`` (mmcit.data.config), ``model`` (a backend's, resolved by ``model.type``), ``method`` (a
method's, resolved by ``method.type``), ``train`` (mmcit.training.config), ``eval``
(mmcit.evaluation.config) and ``logging`` (an experiment tracker, mmcit.results.tracking). Each
block validates its own values; ``RunConfig.validate`` only checks what spans blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmcit.config.loader import load
from mmcit.data.config import DataConfig
from mmcit.errors import ConfigError
from mmcit.evaluation.config import EvalConfig
from mmcit.methods.base import METHODS, MethodConfig
from mmcit.models.base import BACKENDS, ModelConfig
from mmcit.results.tracking import LoggingConfig
from mmcit.training.config import TrainConfig


def _default_method() -> MethodConfig:
    return METHODS.get(METHODS.default).config_cls()


def _default_model() -> ModelConfig:
    return BACKENDS.get(BACKENDS.default).config_cls()


@dataclass
class RunConfig:
    """One experiment: what to read, which model, which method, how to train and evaluate."""

    name: str = "run"
    output_dir: str = "runs/run"
    seed: int = 0
    threads: int = 0  # torch threads; 0 = leave torch's default
    method: MethodConfig = field(default_factory=_default_method)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=_default_model)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        """Checks across blocks (each block has checked its own values first)."""
        for key in ("task_batch_size", "task_epochs"):
            unknown = sorted(set(getattr(self.train, key)) - set(self.data.tasks))
            if unknown:
                raise ConfigError(f"train.{key}: {', '.join(unknown)} not in data.tasks "
                                  f"({', '.join(self.data.tasks)})")
        if self.train.packing and self.model.type == "hf_vlm":
            raise ConfigError("train.packing is not supported with model.type=hf_vlm (its processor builds "
                              "the batches); use the default padded batches")
        self.method.validate_run(self)  # a method's options that depend on other blocks


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A run's config from a YAML file (optional) and ``key=value`` overrides, strictly checked."""
    return load(RunConfig, path, overrides)
