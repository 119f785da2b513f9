"""mmcit: continual instruction tuning of LLaVA-style multimodal models.

The Python API (``mmcit/api.py``, loaded on first use): ``mmcit.run(config, **overrides)`` runs a
stream and returns a ``Run``; ``mmcit.load_run(run_dir)`` opens a run folder; ``mmcit.compare(runs)``
gives mean ± std per method over seeds; ``mmcit.demo()`` runs the built-in demo.
"""
import logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft and transformers whenever it is installed) logs a warning on every
# CPU import that an optional kernels package is missing; its plain CPU path works without it
# (tested in tests/test_backends.py), so the line is noise in every run.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
__all__ = ["AdaptiveEMA", "__version__", "compare", "demo", "load_run", "run"]
_API = ("run", "load_run", "compare", "demo")


def __getattr__(name: str):
    # Lazy: importing the package (e.g. for `mmcit --help`) should not load torch, nor pandas.
    if name == "AdaptiveEMA":
        from mmcit.ema.adaptive import AdaptiveEMA  # lazy: `import mmcit` must not load torch

        return AdaptiveEMA
    if name in _API:
        from mmcit import api  # lazy: pandas and the config tree, only when the API is used

        return getattr(api, name)
    raise AttributeError(f"module 'mmcit' has no attribute {name!r}")
