"""The Python API: run a stream, open a run folder, compare runs, run the built-in demo.

    import mmcit
    run = mmcit.run("configs/demo/lcia.yaml", output_dir="runs/lcia", train={"lr": 1e-3})
    run.matrix, run.metrics, run.plot_curves()
    again = mmcit.load_run("runs/lcia")
    table = mmcit.compare(["runs/demo"])        # mean ± std per method over the runs found
    table.plot()

``run`` and ``demo`` load torch when called; ``load_run`` and ``compare`` read files only.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from mmcit.config import RunConfig, read_yaml
from mmcit.config.loader import from_dict, merge, validate_tree
from mmcit.errors import ConfigError
from mmcit.results.compare import Comparison, comparison
from mmcit.results.run import Run

__all__ = ["run", "load_run", "compare", "demo", "build_config"]


def build_config(config: str | Path | dict | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A checked :class:`RunConfig` from a YAML path or a dict (which may name a ``base:`` YAML,
    relative to the working folder) and overrides.

    An override key is a dotted path (``"train.lr"``) or the same with double underscores
    (``train__lr``, usable as a keyword argument); a dict value is merged into that block
    (``train={"lr": 1e-3}``), anything else replaces the value.
    """
    if config is None:
        data: dict = {}
    elif isinstance(config, dict):
        data = copy.deepcopy(config)
        base = data.pop("base", None)
        if base is not None:
            data = merge(read_yaml(base), data)
    else:
        data = read_yaml(config)
    for key, value in (overrides or {}).items():
        parts = key.replace("__", ".").split(".")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            node[p] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        last = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = merge(node[last], value)
        else:
            node[last] = value
    cfg = from_dict(RunConfig, data)
    validate_tree(cfg)
    return cfg


def run(config: str | Path | dict | None = None, /, *, progress: bool = True, resume: bool = False,
        log: Callable[[str], None] = print, **overrides: Any) -> Run:
    """Run one stream (like ``mmcit run``) and return its :class:`Run`.

    ``config``: a YAML path or a dict; ``overrides``: see :func:`build_config` (e.g.
    ``output_dir="runs/x"``, ``seed=1``, ``train={"lr": 1e-3}``, ``**{"method.ema.scale": 0.1}``).
    ``resume=True`` continues an interrupted run in its ``output_dir``. Raises ``ConfigError`` for a
    bad setting before any work starts.
    """
    cfg = build_config(config, overrides)
    from mmcit.recipe import run as run_recipe  # lazy: loads torch and the models

    results = run_recipe(cfg, progress=progress, log=log, resume=resume)
    return Run(cfg.output_dir, results)


def load_run(run_dir: str | Path) -> Run:
    """Open a finished (or interrupted) run folder; reads files only (no torch)."""
    return Run(run_dir)


def compare(runs_or_dirs: list[str | Path | Run] | str | Path | Run, by: str = "method") -> Comparison:
    """Mean ± std per method over seeds of the metrics and costs of the given runs: run objects,
    run folders, or folders searched for run folders (e.g. a ``mmcit demo`` output). The result is a
    DataFrame with a ``plot()``, ``formatted()``, ``markdown()`` and ``write(folder)``."""
    items = runs_or_dirs if isinstance(runs_or_dirs, (list, tuple)) else [runs_or_dirs]
    try:
        return comparison(list(items), by=by)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None


def demo(output: str | Path = "runs/demo", methods: list[str] | None = None, seeds: list[int] | None = None,
         overrides: list[str] | tuple[str, ...] = (), sample_factor: float | None = None, jobs: int = 0,
         log: Callable[[str], None] | None = None) -> Comparison:
    """The built-in demo (like ``mmcit demo``): every method on the synthetic benchmark, in parallel
    processes, for each seed; writes the run folders and the comparison under ``output`` and
    returns the comparison. ``overrides``: ``key=value`` strings applied to every run."""
    from mmcit.cli.demo import run_demo  # lazy: loads torch and the models

    kwargs = {} if log is None else {"log": log}
    runs, _ = run_demo(Path(output), methods, seeds, list(overrides), sample_factor, jobs, **kwargs)
    return comparison(runs)
