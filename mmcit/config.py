"""Experiment configuration: one YAML maps one-to-one onto these dataclasses.

Loading is strict: an unknown key or a value of the wrong type is a `ConfigError` that names the
key and lists the valid ones. ``key.sub=value`` overrides from the command line are applied before
validation; a YAML may name a ``base:`` file (relative to itself) whose values it overrides.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmcit.backends.base import ModelConfig
from mmcit.methods.base import METHODS, MethodConfig

COIN_TASKS = ["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA"]


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts."""


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic | coin
    variant: str = "Instructions"
    tasks: list[str] = field(default_factory=lambda: list(COIN_TASKS))
    instruction_root: str | None = None  # coin: <instruction_root>/<variant>/<task>/{train,test}.json
    image_root: str | None = None
    seed: int = 0  # synthetic: generator seed
    scale: float = 1.0  # synthetic: multiplies the per-task sample counts
    image_size: int = 64  # synthetic: image side in pixels
    pretrain_per_task: int = 2400  # synthetic: pretraining scenes per task kind (each captioned and focused)
    train_limit: int | None = None  # keep at most this many training samples per task
    test_limit: int | None = None
    cache_dir: str | None = None  # where generated data and pretrained bases are cached


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int | None = None  # per task; overrides epochs when set
    batch_size: int = 16
    lr: float = 2e-4  # LoRA
    projector_lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # cosine | constant
    max_grad_norm: float = 1.0
    max_length: int = 2048
    # Optimizer steps between step checkpoints inside a task (None: only the checkpoint after each
    # task). They live under checkpoints/NN_<stage>/steps/ and let `mmcit run --resume` continue
    # mid-task; see mmcit/checkpoint.py.
    checkpoint_every: int | None = None
    # Global batch per task, overriding batch_size (CoIN's published batches differ per task).
    task_batch_size: dict[str, int] = field(default_factory=dict)
    # Rows per forward/backward on one process; the global batch is accumulated from such
    # micro-batches, with the same gradient as one pass (None: the process's whole share at once).
    micro_batch_size: int | None = None
    # Tasks with at most this many training samples are encoded once; larger ones batch by batch.
    encode_once_limit: int = 4096
    # Shard the frozen base weights across data-parallel processes (FSDP2); also turned on by
    # `accelerate launch --use_fsdp`. Adapters stay whole on every process.
    fsdp: bool = False


@dataclass
class EvalConfig:
    batch_size: int = 32
    max_new_tokens: int = 24
    scoring_mode: str = "default"  # default | reference


@dataclass
class RunConfig:
    name: str = "run"
    output_dir: str = "runs/run"
    seed: int = 0
    threads: int = 0  # torch threads; 0 = leave torch's default
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: _default_model())
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _default_model() -> ModelConfig:
    from mmcit.backends.tiny_llava import TinyLlavaConfig

    return TinyLlavaConfig()


# ---------------------------------------------------------------------------------------------
_SCI = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None

        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _SCI.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if tp in (int, float, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    if cls is MethodConfig or (isinstance(cls, type) and issubclass(cls, MethodConfig) and "type" in data):
        cls = _method_config_cls(data, prefix)
    elif cls is ModelConfig or (isinstance(cls, type) and issubclass(cls, ModelConfig) and "type" in data):
        cls = _model_config_cls(data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if name == "method":
            kwargs[name] = from_dict(MethodConfig, value, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def _method_config_cls(data: dict, prefix: str) -> type:
    import mmcit.methods  # noqa: F401  (registers the built-in methods)

    kind = data.get("type", "lora_ft")
    if kind not in METHODS:
        raise ConfigError(f"{prefix or 'method'}.type: unknown method {kind!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[kind].config_cls


def _model_config_cls(data: dict, prefix: str) -> type:
    from mmcit.backends import BACKENDS

    kind = data.get("type", "tiny_llava")
    if kind not in BACKENDS:
        raise ConfigError(f"{prefix or 'model'}.type: unknown model type {kind!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[kind].config_cls


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            if k in ("method", "model") and v.get("type", out[k].get("type")) != out[k].get("type"):
                out[k] = v  # a different method or backend: its keys do not mix with the base's
            else:
                out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a YAML file, following ``base:`` includes (relative to the including file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("base", None)
    if base is not None:
        data = _merge(read_yaml(path.parent / base), data)
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings; values parse as YAML (``lr=1e-4``, ``tasks=[A,B]``)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        if isinstance(value, str) and _SCI.fullmatch(value):
            value = float(value)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            nxt = dict(nxt) if isinstance(nxt, dict) else {}
            node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    cfg = from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Value checks that the types alone cannot express."""
    checks = [
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (cfg.train.projector_lr >= 0, "train.projector_lr must be >= 0"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (all(v >= 1 for v in cfg.train.task_batch_size.values()), "train.task_batch_size values must be >= 1"),
        (cfg.train.micro_batch_size is None or cfg.train.micro_batch_size >= 1, "train.micro_batch_size must be >= 1"),
        (cfg.train.epochs > 0 or (cfg.train.max_steps or 0) > 0, "train.epochs must be > 0"),
        (cfg.train.max_steps is None or cfg.train.max_steps >= 1, "train.max_steps must be >= 1"),
        (cfg.train.checkpoint_every is None or cfg.train.checkpoint_every >= 1,
         "train.checkpoint_every must be >= 1 (or null for no step checkpoints)"),
        (0 <= cfg.train.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
        (cfg.train.schedule in ("cosine", "constant"), "train.schedule must be cosine or constant"),
        (cfg.eval.scoring_mode in ("default", "reference"), "eval.scoring_mode must be default or reference"),
        (cfg.eval.batch_size >= 1, "eval.batch_size must be >= 1"),
        (cfg.data.source in ("synthetic", "coin"), "data.source must be synthetic or coin"),
        (len(cfg.data.tasks) > 0, "data.tasks is empty: a stream needs at least one task"),
        (len(set(cfg.data.tasks)) == len(cfg.data.tasks), f"data.tasks has duplicates: {cfg.data.tasks}"),
        (cfg.data.scale > 0, "data.scale must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    unknown = sorted(set(cfg.train.task_batch_size) - set(cfg.data.tasks))
    if unknown:
        raise ConfigError(f"train.task_batch_size: {', '.join(unknown)} not in data.tasks ({', '.join(cfg.data.tasks)})")
    problems = cfg.model.validate()
    if problems:
        raise ConfigError(problems[0])
    if cfg.data.source == "coin":
        for key in ("instruction_root", "image_root"):
            if getattr(cfg.data, key) is None:
                raise ConfigError(f"data.{key} is required when data.source is coin")
    if cfg.data.source == "synthetic":
        bad = [t for t in cfg.data.tasks if t not in COIN_TASKS]  # the synthetic tasks bear CoIN's names
        if bad:
            raise ConfigError(f"data.tasks: unknown synthetic task(s) {bad}; valid: {', '.join(COIN_TASKS)}")
    check = getattr(cfg.method, "validate", None)
    if check is not None:
        check()
