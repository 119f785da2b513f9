"""Configuration: a generic strict loader (``loader.py``: YAML -> dataclasses, ``base:`` includes,
``key=value`` overrides, ``type:`` resolved through the registries) and the run's top-level
dataclass (``run.py``), composed of each layer's own block."""
from mmcit.config.loader import apply_overrides, from_dict, read_yaml, to_dict
from mmcit.config.run import RunConfig, load_config
from mmcit.errors import ConfigError

__all__ = ["ConfigError", "RunConfig", "apply_overrides", "from_dict", "load_config", "read_yaml", "to_dict"]
