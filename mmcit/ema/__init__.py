"""The exponential moving average of the trainable weights: LCIA's adaptive EMA (``AdaptiveEMA``),
its fused GPU kernels (``kernels.py``), the part methods hold (``EMAComponent`` with its
``EMASettings``) and a Hugging Face ``Trainer`` callback (``AdaptiveEMACallback``, imported on
first use: it needs transformers)."""
from mmcit.ema.adaptive import AdaptiveEMA
from mmcit.ema.component import EMAComponent, EMASettings
from mmcit.ema.groups import is_sharded_dtensor, layer_group

__all__ = ["AdaptiveEMA", "AdaptiveEMACallback", "EMAComponent", "EMASettings", "is_sharded_dtensor",
           "layer_group"]


def __getattr__(name: str):
    if name == "AdaptiveEMACallback":  # lazy: transformers is heavy and only the callback needs it
        from mmcit.ema.callback import AdaptiveEMACallback  # lazy: needs transformers

        return AdaptiveEMACallback
    raise AttributeError(f"module 'mmcit.ema' has no attribute {name!r}")
