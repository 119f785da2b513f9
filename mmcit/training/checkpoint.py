"""Checkpoints of a run: writing them, verifying them, and rebuilding a model from one.

A checkpoint is the folder ``checkpoints/NN_<stage>`` written after stage NN was trained and
evaluated. It holds

* ``adapters.safetensors``: every adapter's LoRA and projector weights;
* ``method_state.json``: the adapter names, the active adapter, the method's ``state_dict()``,
  and the stage index and elapsed time (for a resume); a method whose state holds tensors
  between stages (EWC's Fisher) has them in ``method_tensors.safetensors``, referenced from the
  JSON by key as in a step checkpoint (the file exists only then);
* ``rng_state.json``: Python's and torch's global RNG states at that point (for a resume);
* ``manifest.json``: sha256 and size of each file above, written last.

The manifest is the commit record: every file is written atomically (``mmcit.io``) and the manifest
only after all of them, so a folder without a manifest is an incomplete checkpoint (the writer was
interrupted) and is skipped; a folder whose files do not match their manifest is corrupt and is
refused with an error naming the file. Rewriting a checkpoint first removes its manifest, so no
state mixes old and new files under a valid manifest.

Step checkpoints (``train.checkpoint_every``) are taken inside a task, every N optimizer steps,
in ``checkpoints/NN_<stage>/steps/step_SSSSSS`` (NN: the stage being trained, SSSSSS: steps done).
Each holds ``adapters.safetensors`` and ``method_state.json`` as above (the method's tensors, such
as the adaptive EMA's, go to ``method_tensors.safetensors`` and are referenced from the JSON by
key), ``optimizer.safetensors`` + ``train_state.json`` (optimizer tensors; the rest of the optimizer
and scheduler state, the remaining data order and the shuffling RNG), ``rng_state.json``, and the
same ``manifest.json``, written last. Only the newest complete step checkpoint of a stage is kept,
and a stage's ``steps/`` folder is deleted once that stage's own checkpoint is complete. A stage
folder holding only ``steps/`` has no manifest, so it never passes for a stage checkpoint. No file
is a pickle: tensors are safetensors, everything else JSON.

Shared by the runner (save, resume) and ``mmcit predict`` (load).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmcit.errors import CheckpointError
from mmcit.io import is_temp_file, save_safetensors, sha256_file, write_json
from mmcit.training.rng import capture_rng
from mmcit.training.state import TrainState

if TYPE_CHECKING:
    from mmcit.methods.base import Method
    from mmcit.models.wrapper import MMModel

__all__ = [
    "CheckpointError", "ADAPTERS", "METHOD_STATE", "RNG_STATE", "MANIFEST", "checkpoint_folders",
    "last_checkpoint", "verify_checkpoint", "save_checkpoint", "read_state", "restore_adapters",
    "save_step_checkpoint", "step_checkpoints", "last_step_checkpoint",
    "read_step_checkpoint", "remove_step_checkpoints",
]

ADAPTERS = "adapters.safetensors"
METHOD_STATE = "method_state.json"
RNG_STATE = "rng_state.json"
MANIFEST = "manifest.json"
STEPS = "steps"  # sub-folder of a stage folder holding its step checkpoints
METHOD_TENSORS = "method_tensors.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAIN_STATE = "train_state.json"
TENSOR_REF = "__tensor__"  # {"__tensor__": key}: a tensor kept in a safetensors file, in a JSON state
REQUIRED = (ADAPTERS, METHOD_STATE)  # rng_state.json is optional: older checkpoints lack it
MANIFEST_FORMAT = 1


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


def save_checkpoint(run_dir: Path, index: int, stage: str, model: "MMModel", method: "Method",
                    extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint of stage ``index`` (0-based): weights, method state, RNG, manifest last."""
    folder = Path(run_dir) / "checkpoints" / f"{index + 1:02d}_{stage}"
    folder.mkdir(parents=True, exist_ok=True)
    # An older manifest would vouch for files about to change: drop it first, so the folder reads
    # as incomplete until the new manifest lands.
    (folder / MANIFEST).unlink(missing_ok=True)
    save_safetensors(folder / ADAPTERS, _all_adapter_tensors(model), metadata={"stage": stage})
    method_json, method_tensors = split_tensors(method.state_dict(), prefix="m")
    if method_tensors:
        save_safetensors(folder / METHOD_TENSORS, method_tensors)
    else:  # a stale one from an earlier write of this folder must not be read back
        (folder / METHOD_TENSORS).unlink(missing_ok=True)
    write_json(folder / METHOD_STATE, {"adapters": model.adapters, "active": model.active_adapter,
                                       "method": _jsonable(method_json), "stage": stage,
                                       "stage_index": index, **(extra or {})})
    write_json(folder / RNG_STATE, capture_rng(), indent=None)
    write_manifest(folder, (ADAPTERS, METHOD_STATE, RNG_STATE, *((METHOD_TENSORS,) if method_tensors else ())))
    return folder


def write_manifest(folder: Path, names: tuple[str, ...] | list[str]) -> None:
    """Commit a checkpoint folder: sha256 and size of each named file, hashed from disk (what a
    reader will see). Call it after every listed file is written."""
    files = {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
             for name in names}
    write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "files": files})


def _all_adapter_tensors(model: "MMModel") -> dict:
    tensors = {}
    for name in model.adapters:
        tensors.update(model.adapter_state(name))
    return tensors


# -- step checkpoints (inside a task) --------------------------------------------------------------
def split_tensors(obj: Any, tensors: dict | None = None, prefix: str = "t") -> tuple[Any, dict]:
    """``(json_part, tensors)``: ``obj`` with every torch tensor replaced by ``{"__tensor__": key}``.

    Keys are sequential (``t0``, ``t1``, ...) rather than paths, so any nesting and any dict key
    (parameter names contain dots) maps onto safetensors' flat namespace. Tuples become lists.
    """
    import torch

    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}{len(tensors)}"
        tensors[key] = obj
        return {TENSOR_REF: key}, tensors
    if isinstance(obj, dict):
        return {k: split_tensors(v, tensors, prefix)[0] for k, v in obj.items()}, tensors
    if isinstance(obj, (list, tuple)):
        return [split_tensors(v, tensors, prefix)[0] for v in obj], tensors
    return obj, tensors


def join_tensors(obj: Any, tensors: dict) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {TENSOR_REF}:
            return tensors[obj[TENSOR_REF]]
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def _steps_root(run_dir: Path, index: int, stage: str) -> Path:
    return Path(run_dir) / "checkpoints" / f"{index + 1:02d}_{stage}" / STEPS


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, int, Path]]:
    """``(stage_index, step, folder)`` of every step checkpoint folder, complete or not, in order."""
    found = []
    for nn, stage_folder in checkpoint_folders(run_dir):
        root = stage_folder / STEPS
        if root.is_dir():
            found += [(nn - 1, int(m.group(1)), p) for p in root.iterdir()
                      if p.is_dir() and (m := re.fullmatch(r"step_(\d+)", p.name))]
    return sorted(found)


def last_step_checkpoint(run_dir: str | Path, index: int) -> Path | None:
    """The newest complete step checkpoint of stage ``index`` (0-based), verified; None if none.

    As with :func:`last_checkpoint`, folders without a manifest are passed over and a complete but
    corrupt one raises.
    """
    for stage_index, _, folder in reversed(step_checkpoints(run_dir)):
        if stage_index == index and (folder / MANIFEST).is_file():
            verify_checkpoint(folder)
            return folder
    return None


def _remove_folder(folder: Path) -> None:
    """Delete a checkpoint folder, manifest first: a kill midway leaves an incomplete folder, never
    a manifest vouching for missing files."""
    (folder / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def remove_step_checkpoints(run_dir: str | Path, *, keep: Path | None = None,
                            only_index: int | None = None) -> list[Path]:
    """Delete step checkpoints (of stage ``only_index``, or all) except ``keep``; returns them."""
    removed = []
    for stage_index, _, folder in step_checkpoints(run_dir):
        if folder != keep and (only_index is None or stage_index == only_index):
            _remove_folder(folder)
            removed.append(folder)
    for _, stage_folder in checkpoint_folders(run_dir):  # drop emptied steps/ folders
        root = stage_folder / STEPS
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    return removed


def save_step_checkpoint(run_dir: Path, index: int, stage: str, model: "MMModel", method: "Method",
                         state: TrainState, extra: dict[str, Any] | None = None) -> Path:
    """Write a step checkpoint of stage ``index`` after ``state.step`` optimizer steps (manifest
    last), then delete the stage's older step checkpoints."""
    import dataclasses

    rng = capture_rng()  # first: nothing below draws random numbers, but keep the moment exact
    folder = _steps_root(run_dir, index, stage) / f"step_{state.step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # a rewrite must not be vouched for by an old one
    save_safetensors(folder / ADAPTERS, _all_adapter_tensors(model), metadata={"stage": stage})
    method_json, method_tensors = split_tensors(method.state_dict(), prefix="m")
    save_safetensors(folder / METHOD_TENSORS, method_tensors)
    # A method state that is not JSON (apart from its tensors) is saved as a note, as in a stage
    # checkpoint; the runner then resumes from the stage checkpoint instead (see resume.py).
    write_json(folder / METHOD_STATE, {"adapters": model.adapters, "active": model.active_adapter,
                                       "method": _jsonable(method_json), "stage": stage, "stage_index": index,
                                       "step": state.step, **(extra or {})})
    train = dataclasses.asdict(state)
    train["optimizer"], opt_tensors = split_tensors(train["optimizer"], prefix="o")
    save_safetensors(folder / OPTIMIZER, opt_tensors)
    train.pop("global_rng", None)  # in rng_state.json, as in a stage checkpoint
    write_json(folder / TRAIN_STATE, {"stage": stage, "stage_index": index, **train}, indent=None)
    write_json(folder / RNG_STATE, rng, indent=None)
    write_manifest(folder, (ADAPTERS, METHOD_STATE, METHOD_TENSORS, OPTIMIZER, TRAIN_STATE, RNG_STATE))
    remove_step_checkpoints(run_dir, keep=folder, only_index=index)  # keep the run folder small
    return folder


def read_step_checkpoint(folder: str | Path) -> tuple[dict[str, Any], TrainState]:
    """``(method_state.json with the method's tensors put back, TrainState)`` of a verified step
    checkpoint folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    state = read_state(folder)  # the method's tensors put back
    train = json.loads((folder / TRAIN_STATE).read_text(encoding="utf-8"))
    optimizer = join_tensors(train["optimizer"], load_file(str(folder / OPTIMIZER)))
    # JSON turned the optimizer's integer parameter ids into strings and tuples into lists.
    optimizer["state"] = {int(k): v for k, v in optimizer["state"].items()}
    for group in optimizer["param_groups"]:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    fields = {k: train[k] for k in ("step", "total", "order", "rng", "first_loss", "last_loss", "seconds",
                                    "scheduler")}
    return state, TrainState(**fields, optimizer=optimizer, global_rng=read_rng(folder), mix=train.get("mix"))


# -- loading ---------------------------------------------------------------------------------------------
def read_state(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's ``method_state.json`` (verify the folder first), with the method's tensors
    put back where the checkpoint has ``method_tensors.safetensors``."""
    from safetensors.torch import load_file

    state = json.loads((Path(folder) / METHOD_STATE).read_text(encoding="utf-8"))
    tensors = Path(folder) / METHOD_TENSORS
    if tensors.is_file() and isinstance(state.get("method"), dict):
        state["method"] = join_tensors(state["method"], load_file(str(tensors)))
    return state


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
