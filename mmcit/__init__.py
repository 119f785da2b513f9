"""mmcit: continual instruction tuning of LLaVA-style multimodal models."""
__version__ = "0.1.0"
