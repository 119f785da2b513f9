"""Checkpoints of a run: writing them, verifying them, and rebuilding a model from one.

A checkpoint is the folder ``checkpoints/NN_<stage>`` written after stage NN was trained and
evaluated. It holds

* ``adapters.safetensors``: every adapter's LoRA and projector weights;
* ``method_state.json``: the adapter names, the active adapter, the method's ``state_dict()``,
  and the stage index and elapsed time (for a resume);
* ``rng_state.json``: Python's and torch's global RNG states at that point (for a resume);
* ``manifest.json``: sha256 and size of each file above, written last.

The manifest is the commit record: every file is written atomically (``mmcit.io``) and the manifest
only after all of them, so a folder without a manifest is an incomplete checkpoint (the writer was
interrupted) and is skipped; a folder whose files do not match their manifest is corrupt and is
refused with an error naming the file. Rewriting a checkpoint first removes its manifest, so no
state mixes old and new files under a valid manifest.

Shared by the runner (save, resume) and ``mmcit predict`` (load).
"""
from __future__ import annotations

import base64
import json
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcit.config import ConfigError
from mmcit.io import is_temp_file, save_safetensors, sha256_file, write_json

if TYPE_CHECKING:  # kept out of import time: `mmcit --help` should not load torch
    from mmcit.methods.base import Method
    from mmcit.model import MMModel

__all__ = [
    "CheckpointError", "ADAPTERS", "METHOD_STATE", "RNG_STATE", "MANIFEST", "checkpoint_folders",
    "last_checkpoint", "verify_checkpoint", "save_checkpoint", "read_state", "restore_adapters",
    "capture_rng", "restore_rng",
]

ADAPTERS = "adapters.safetensors"
METHOD_STATE = "method_state.json"
RNG_STATE = "rng_state.json"
MANIFEST = "manifest.json"
REQUIRED = (ADAPTERS, METHOD_STATE)  # rng_state.json is optional: older checkpoints lack it
MANIFEST_FORMAT = 1


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used (corrupt, incomplete, missing); the message names the file.

    A ConfigError, so the CLI reports it as ``mmcit: error: ...`` with exit code 2.
    """


# -- finding and verifying ---------------------------------------------------------------------------
def checkpoint_folders(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(NN, folder)`` of every ``checkpoints/NN_<stage>`` folder, complete or not, by NN."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := re.match(r"(\d+)_", p.name))]
    return sorted(found)


def verify_checkpoint(folder: str | Path) -> dict[str, Any]:
    """Check every file against ``manifest.json``; returns the manifest or raises CheckpointError."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"incomplete checkpoint {folder}: no {MANIFEST} (its writer was interrupted)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"corrupt checkpoint file {manifest_path}: unreadable manifest ({e})") from None
    for name in REQUIRED:
        if name not in files:
            raise CheckpointError(f"incomplete checkpoint {folder}: {MANIFEST} does not list {name}")
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"corrupt checkpoint: {path} is missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise CheckpointError(f"corrupt checkpoint file {path}: {size} bytes, manifest says {entry.get('size')}")
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            raise CheckpointError(f"corrupt checkpoint file {path}: sha256 {digest[:12]}... does not match "
                                  f"the manifest's {str(entry.get('sha256'))[:12]}...")
    return manifest


def last_checkpoint(run_dir: str | Path, *, verify: bool = True) -> Path:
    """The newest complete checkpoint folder (one with a manifest), verified against it.

    Folders without a manifest are interrupted writes and are passed over for the previous one;
    a complete but corrupt newest checkpoint raises rather than silently falling back, so damage
    is noticed.
    """
    for _, folder in reversed(checkpoint_folders(run_dir)):
        if (folder / MANIFEST).is_file():
            if verify:
                verify_checkpoint(folder)
            return folder
    raise CheckpointError(f"{run_dir}: no complete checkpoint under checkpoints/ (has the run finished a stage?)")


# -- writing ---------------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return {"note": "method state is not JSON-serialisable"}


def capture_rng() -> dict[str, Any]:
    """Python's and torch's global RNG states, JSON-serialisable.

    Per-stage shuffling is seeded explicitly, but the torch global generator also feeds dropout
    and the (discarded) random init of every adapter peft adds, so a resume must continue it.
    """
    import torch

    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss],
                             "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode("ascii") for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([
            torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy()) for s in state["cuda"]])


def save_checkpoint(run_dir: Path, index: int, stage: str, model: "MMModel", method: "Method",
                    extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint of stage ``index`` (0-based): weights, method state, RNG, manifest last."""
    folder = Path(run_dir) / "checkpoints" / f"{index + 1:02d}_{stage}"
    folder.mkdir(parents=True, exist_ok=True)
    # An older manifest would vouch for files about to change: drop it first, so the folder reads
    # as incomplete until the new manifest lands.
    (folder / MANIFEST).unlink(missing_ok=True)
    tensors = {}
    for name in model.adapters:
        tensors.update(model.adapter_state(name))
    save_safetensors(folder / ADAPTERS, tensors, metadata={"stage": stage})
    write_json(folder / METHOD_STATE, {"adapters": model.adapters, "active": model.active_adapter,
                                       "method": _jsonable(method.state_dict()), "stage": stage,
                                       "stage_index": index, **(extra or {})})
    write_json(folder / RNG_STATE, capture_rng(), indent=None)
    files = {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
             for name in (ADAPTERS, METHOD_STATE, RNG_STATE)}  # hashed from disk: what a reader will see
    write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "files": files})
    return folder


# -- loading ---------------------------------------------------------------------------------------------
def read_state(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's ``method_state.json`` (verify the folder first)."""
    return json.loads((Path(folder) / METHOD_STATE).read_text(encoding="utf-8"))


def read_rng(folder: str | Path) -> dict[str, Any] | None:
    """The checkpoint's RNG state, or None where it has none."""
    path = Path(folder) / RNG_STATE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def restore_adapters(model: "MMModel", folder: str | Path, state: dict[str, Any]) -> str:
    """Recreate every adapter of the checkpoint in ``model``, load its weights, activate the saved one.

    Returns the active adapter's name. Adapters are added in their saved order, so peft's internal
    order (and anything derived from it) matches the run that wrote the checkpoint.
    """
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / ADAPTERS))
    for name in state["adapters"]:
        if name not in model.adapters:
            model.add_adapter(name)  # shape only; the weights come from the checkpoint next
        model.load_adapter_state(name, tensors)  # picks this adapter's keys out of the file
    active = state.get("active", model.adapters[0])
    model.set_adapter(active)
    return active


def visible_files(folder: str | Path) -> list[Path]:
    """Every file under ``folder`` except ``atomic_path`` temporaries (what a reader may rely on)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not is_temp_file(p))
