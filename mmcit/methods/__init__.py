"""Continual-learning methods. Importing this package registers every module in it.

A method lives in ``mmcit/methods/<name>.py``, where ``<name>`` is also its registry name and the
YAML ``method.type`` (see CONTRIBUTING.md).
"""
import importlib
import pkgutil

from mmcit.methods.base import METHODS, Method, MethodConfig, RunContext, Stage, build_method, register

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["METHODS", "Method", "MethodConfig", "RunContext", "Stage", "build_method", "register"]
