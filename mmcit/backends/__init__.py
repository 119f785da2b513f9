"""Model backends, selected by ``model.type``. Importing this package registers every module in it.

A backend lives in ``mmcit/backends/<name>.py`` with its config dataclass; see base.py for the
interface and CONTRIBUTING.md for adding one.
"""
import importlib
import pkgutil

from mmcit.backends.base import BACKENDS, Backend, BuildContext, Built, ModelConfig, register

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")


def build_backend(cfg: ModelConfig, ctx: BuildContext) -> Built:
    """The base model, processor and chat template that ``cfg`` describes."""
    return BACKENDS[cfg.type]().build(cfg, ctx)


__all__ = ["BACKENDS", "Backend", "BuildContext", "Built", "ModelConfig", "build_backend", "register"]
