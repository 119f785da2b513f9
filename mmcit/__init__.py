"""mmcit: continual instruction tuning of LLaVA-style multimodal models."""
__version__ = "0.1.0"
__all__ = ["AdaptiveEMA", "__version__"]


def __getattr__(name: str):
    # Lazy: importing the package (e.g. for `mmcit --help`) should not load torch.
    if name == "AdaptiveEMA":
        from mmcit.ema import AdaptiveEMA

        return AdaptiveEMA
    raise AttributeError(f"module 'mmcit' has no attribute {name!r}")
