"""Atomic file output: every file a run writes goes through here.

A file is written to a temporary name in the same folder, flushed to disk, then renamed over the
target, so a reader (or a resumed run) sees either the old complete file or the new complete one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)  # make the rename itself durable, not only the file's bytes
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# What ``atomic_path`` names its temporary files: ``.<target name>.<random>.tmp``. A process killed
# mid-write leaves one behind; being hidden and suffixed, it is never taken for the target itself.
TEMP_NAME = re.compile(r"^\..+\.tmp$")


def _fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename in it survives a crash; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for a temporary file of ``atomic_path`` (possibly left behind by a killed process)."""
    return bool(TEMP_NAME.match(Path(path).name))


def clean_temp_files(root: str | os.PathLike) -> list[Path]:
    """Delete leftover ``atomic_path`` temporaries under ``root``; returns what was removed.

    Only safe when no other process writes into ``root`` (a resumed run owns its folder).
    """
    removed = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if TEMP_NAME.match(name):
                target = Path(dirpath) / name
                target.unlink(missing_ok=True)
                removed.append(target)
    return removed


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (checkpoints may be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write one JSON object per line to ``path`` atomically."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    """Save tensors (moved to the CPU, contiguous) as a safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
