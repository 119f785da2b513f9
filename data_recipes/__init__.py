"""Data recipes: how each dataset becomes a stream of tasks.

Importing this package registers its readers with mmcit (``coin``: CoIN's file layout;
``synthetic``: the built-in benchmark, generated and then read in that layout; ``mcitlib``: the
layout of MCITlib's UCIT, MLLM-DCL and MLLM-ACL; ``suite``: a stream read through a suite file).
mmcit imports it through the ``mmcit.plugins`` entry point in ``pyproject.toml``, never by name.
"""
from data_recipes import coin, mcitlib, suite, synthetic  # noqa: F401  (registration)
