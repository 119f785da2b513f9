"""Continual-learning methods, one module each, registered in ``METHODS`` under the file's name
(the YAML ``method.type``). The registry imports every module of this package on its first lookup;
CONTRIBUTING.md says how to add one."""
from mmcit.methods.base import METHODS, Method, MethodConfig, RunContext, Stage, build_method

__all__ = ["METHODS", "Method", "MethodConfig", "RunContext", "Stage", "build_method"]
