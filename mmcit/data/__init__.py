"""Samples, readers and collation."""
from mmcit.data.sample import Sample, TaskData

__all__ = ["Sample", "TaskData"]
