"""How the adaptive EMA sees its parameters: groups (one balance weight each), shards and chunks.

* ``layer_group`` maps a parameter name to its group at ``layer`` granularity (LoRA A and B of one
  module together, the projector as one unit); at ``tensor`` granularity every tensor is its own;
* ``GroupLayout`` is the fixed table that turns per-tensor norms into per-group sums with a gather
  and a fixed-order sum (deterministic on GPUs, unlike ``index_add_``), and the batches in which
  the plain path computes norms;
* the DTensor helpers give a parameter's local shard and the process group it is sharded over.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
import torch.distributed as dist

try:  # torch builds without distributed support have no DTensor
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover - depends on the torch build
    DTensor = None  # type: ignore[assignment,misc]

__all__ = ["PROJECTOR_MARKERS", "GroupLayout", "is_sharded_dtensor", "layer_group", "local_part", "shard_group"]

#: Module names whose tensors (weights and biases of all their layers) form one group at "layer"
#: granularity: HF LLaVA's projector and the original LLaVA code's, Qwen2-VL's merger and
#: Idefics3's connector (the projectors of mmcit.models.families).
PROJECTOR_MARKERS: tuple[str, ...] = ("multi_modal_projector", "mm_projector", "merger", "connector")

_LORA_RE = re.compile(
    r"^(?P<module>.+)\.lora_(?:A|B|embedding_A|embedding_B|magnitude_vector)\.(?P<adapter>[^.]+)"
    r"(?:\.(?:weight|bias))?$"
)
_SAVED_RE = re.compile(r"^(?P<module>.+?)\.modules_to_save\.(?P<adapter>[^.]+)\.")


def layer_group(name: str) -> str:
    """Group key of a parameter name at "layer" granularity.

    * anything under a projector module (``PROJECTOR_MARKERS``): the projector, one group per
      adapter copy when peft wraps it in ``modules_to_save``;
    * ``<module>.lora_A.<adapter>.weight`` / ``lora_B``: ``"<module>:<adapter>"``, so A and B of one
      module (and one adapter) share a group;
    * ``<module>.modules_to_save.<adapter>....``: ``"<module>:<adapter>"``;
    * anything else: the owning module (weight and bias of a plain layer together).
    """
    parts = name.split(".")
    for marker in PROJECTOR_MARKERS:
        if marker in parts:
            k = parts.index(marker)
            key = ".".join(parts[: k + 1])
            if len(parts) > k + 2 and parts[k + 1] == "modules_to_save":
                key += ":" + parts[k + 2]
            return key
    m = _LORA_RE.match(name)
    if m:
        return f"{m['module']}:{m['adapter']}"
    m = _SAVED_RE.match(name)
    if m:
        return f"{m['module']}:{m['adapter']}"
    return name.rsplit(".", 1)[0] if "." in name else name


def is_dtensor(t: torch.Tensor) -> bool:
    """Whether ``t`` is a DTensor (sharded or replicated)."""
    return DTensor is not None and isinstance(t, DTensor)


def is_sharded_dtensor(t: torch.Tensor) -> bool:
    """Whether ``t`` is a DTensor split over ranks (FSDP2 parameters and their gradients are)."""
    return is_dtensor(t) and any(pl.is_shard() for pl in t.placements)


def local_part(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this process holds: the local shard of a DTensor, else ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t.detach()


def shard_group(params: list[torch.Tensor]) -> "dist.ProcessGroup | None":
    """The process group the DTensor parameters are sharded over (None: no DTensors)."""
    for p in params:
        if not is_dtensor(p):
            continue
        dims = [i for i, pl in enumerate(p.placements) if pl.is_shard()]
        if len(dims) == 1:
            return p.device_mesh.get_group(dims[0])
        if len(dims) > 1:
            raise ValueError(
                "parameters are sharded over several mesh dimensions; pass the process_group "
                "that spans all of them"
            )
    return None




class GroupLayout:
    """The grouping of a fixed list of tensors: group names in order of first appearance, each
    tensor's group, and the padded (group, member) table that sums per-tensor values per group.

    ``chunks`` splits the tensors into batches of at most ``chunk_numel`` elements (or one tensor),
    which bounds the temporary memory of the plain path's norm computation.
    """

    def __init__(self, names: list[str], numels: list[int], key_of: Callable[[str], str], device: torch.device,
                 chunk_numel: int) -> None:
        keys = [key_of(n) for n in names]
        self.group_names: list[str] = list(dict.fromkeys(keys))
        index = {k: i for i, k in enumerate(self.group_names)}
        tensor_group = [index[k] for k in keys]
        n = len(names)
        self.members: list[list[int]] = [[] for _ in self.group_names]
        for t, g in enumerate(tensor_group):
            self.members[g].append(t)
        width = max(len(m) for m in self.members)
        # Group sums as a gather over a padded (group, member) table and a fixed-order sum: unlike
        # index_add_/scatter_add_ it is deterministic on GPUs and exact to the summation order.
        # Column n is the zero that pads groups with fewer members than the largest one.
        pad = [m + [n] * (width - len(m)) for m in self.members]
        self.pad_idx = torch.tensor(pad, dtype=torch.long, device=device)
        self.tensor_group = torch.tensor(tensor_group, dtype=torch.long, device=device)
        self.chunks: list[list[int]] = []
        cur: list[int] = []
        cur_numel = 0
        for i, numel in enumerate(numels):
            if cur and cur_numel + numel > chunk_numel:
                self.chunks.append(cur)
                cur, cur_numel = [], 0
            cur.append(i)
            cur_numel += numel
        self.chunks.append(cur)

    def group_sums(self, per_tensor: torch.Tensor) -> torch.Tensor:
        """(k, n_tensors) -> (k, n_groups) in a fixed summation order."""
        padded = torch.cat([per_tensor, per_tensor.new_zeros(per_tensor.shape[0], 1)], dim=1)
        return padded[:, self.pad_idx].sum(dim=-1)
