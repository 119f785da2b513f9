"""mmcit: continual instruction tuning of LLaVA-style multimodal models."""
import logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft and transformers whenever it is installed) logs a warning on every
# CPU import that an optional kernels package is missing; its plain CPU path works without it
# (tested in tests/test_backends.py), so the line is noise in every run.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
__all__ = ["AdaptiveEMA", "__version__"]


def __getattr__(name: str):
    # Lazy: importing the package (e.g. for `mmcit --help`) should not load torch.
    if name == "AdaptiveEMA":
        from mmcit.ema.adaptive import AdaptiveEMA  # lazy: `import mmcit` must not load torch

        return AdaptiveEMA
    raise AttributeError(f"module 'mmcit' has no attribute {name!r}")
