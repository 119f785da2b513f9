"""Running a frozen vision tower once per image instead of once per training step.

The tower is frozen in the continual stage (and, for the pretrained EfficientNet, in the base's
caption stage too), so its output for an image never changes while a stage trains. Measured on
2 CPU cores: the EfficientNet-Lite0 tower took about two thirds of a LoRA training step (about
90 of 170 ms for a batch of 16). These helpers compute the tower's output tokens for a stage's
images once, and build the batch as input embeddings with the projected tokens in the image
positions: exactly what the LLaVA forward does with ``pixel_values``, minus re-running the tower.
The projector still runs at every step (it is trained). Text-only samples have no tokens: a batch
carries the tokens of its rows with an image, in row order, or none at all.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Callable

import torch


#: Largest token cache kept for a stage (a real LLaVA's 576 x 1024 floats per image would not fit).
MAX_CACHE_BYTES = 256 * 2**20


def cacheable(model) -> bool:
    """True if ``tower_tokens`` gives exactly what this model's forward feeds its projector: a frozen
    tower, and a feature selection it reproduces."""
    cfg, inner = getattr(model, "config", None), getattr(model, "model", None)
    if cfg is None or not hasattr(inner, "vision_tower") or not hasattr(inner, "multi_modal_projector"):
        return False  # not a transformers LLaVA-style model (e.g. the composed backend)
    if any(p.requires_grad for p in inner.vision_tower.parameters()):
        return False
    if cfg.model_type == "fast_vlm":
        return True
    return (cfg.model_type == "llava" and isinstance(cfg.vision_feature_layer, int)
            and cfg.vision_feature_select_strategy == "default")


def cached_tower_tokens(model, pixels: list[torch.Tensor], batch_size: int = 64,
                        store: "TokenStore | None" = None) -> torch.Tensor | None:
    """``tower_tokens`` for these images if the model allows it and they fit in MAX_CACHE_BYTES,
    else None (the caller then runs the tower at every step, as the model's forward does). With a
    ``store``, tokens stored by an earlier or a concurrent run for the same inputs are read back
    instead of computed, and fresh ones are stored (``TokenStore.tokens``)."""
    if not pixels or not cacheable(model):
        return None
    if store is not None:
        return store.tokens(model, pixels, batch_size)
    if not _fits(tower_tokens(model, pixels[0][None])[0], len(pixels)):
        return None
    return tower_tokens(model, torch.stack(pixels), batch_size)


def _fits(one: torch.Tensor, n: int) -> bool:
    return one.numel() * one.element_size() * n <= MAX_CACHE_BYTES


class TokenStore:
    """Frozen-tower tokens on disk, for runs that train on the same images again (a rerun, a sweep,
    another method on the same base) and for runs that train on them at the same time.

    A set of images is stored in chunks of 64 (a multiple of the tower's batch size, so the tower
    sees the batches it would see on the whole set), one file each. A file is found only by a key
    that holds everything the tokens' bits depend on: the tower's weights and buffers, how its output
    is taken (model type, feature layer), the batch size it ran at (a CPU convolution's result
    depends on it), torch's version, thread count and CPU kernels, autocast, and the chunk's pixels
    in order. A file that cannot be read, or holds another number of images, counts as absent.

    Concurrent runs share the work: a process claims a chunk (an exclusively created ``.claim``
    file) before computing it and passes over chunks others have claimed, then reads those once they
    are written. A claim whose process has died, or older than ``WAIT_S``, is ignored. Files are
    written whole (a temporary name, then a rename), so no process reads half a file.
    """

    VERSION = 2
    CHUNK = 64
    WAIT_S = 300.0  # longest wait for another process's chunk before computing it here
    POLL_S = 0.05

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.read = self.computed = self.waited = 0  # chunks: read at once, computed here, read after a wait
        self.unwritable = False

    def tokens(self, model, pixels: list[torch.Tensor], batch_size: int) -> torch.Tensor | None:
        """The tower tokens of ``pixels`` at ``batch_size`` (as ``tower_tokens``), read where stored
        and computed (and stored) where not; None if they would not fit in MAX_CACHE_BYTES."""
        head = self.head(model, batch_size)
        size = max(1, self.CHUNK // batch_size) * batch_size
        chunks = [pixels[s:s + size] for s in range(0, len(pixels), size)]
        keys = [self.chunk_key(head, chunk) for chunk in chunks]
        parts: dict[int, torch.Tensor] = {}
        first = self.load(keys[0], len(chunks[0]))
        if not _fits(first[0] if first is not None else tower_tokens(model, pixels[0][None])[0], len(pixels)):
            return None
        later = []
        for j, (key, chunk) in enumerate(zip(keys, chunks)):
            got = first if j == 0 and first is not None else self.load(key, len(chunk))
            if got is not None:
                self.read += 1
            elif self._claim(key):
                got = self._compute(model, key, chunk, batch_size)
            else:
                later.append(j)  # another process is computing it
            parts[j] = got
        for j in later:
            parts[j] = self._wait(keys[j], len(chunks[j]))
            if parts[j] is None:
                parts[j] = self._compute(model, keys[j], chunks[j], batch_size, claimed=False)
            else:
                self.waited += 1
        device = next(model.model.vision_tower.parameters()).device  # files load on the CPU
        return torch.cat([parts[j].to(device) for j in range(len(chunks))])

    def head(self, model, batch_size: int) -> str:
        """The key's part that holds everything but the pixels."""
        digest = hashlib.sha256()
        tower = model.model.vision_tower
        device = next(tower.parameters()).device
        autocast = torch.is_autocast_enabled(device.type)
        kernels = (torch.backends.cpu.get_cpu_capability() if device.type == "cpu"
                   else torch.cuda.get_device_name(device) if device.type == "cuda" else None)
        head = (self.VERSION, model.config.model_type, getattr(model.config, "vision_feature_layer", None), batch_size,
                torch.__version__, torch.get_num_threads(), kernels, str(device), autocast,
                str(torch.get_autocast_dtype(device.type)) if autocast else None)
        digest.update(repr(head).encode())
        for name, tensor in tower.state_dict().items():
            _update(digest, name, tensor)
        return digest.hexdigest()

    def chunk_key(self, head: str, pixels: list[torch.Tensor]) -> str:
        """The hex key of one chunk's tokens."""
        digest = hashlib.sha256(head.encode())
        for image in pixels:
            _update(digest, "", image)
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        """Where the tokens of ``key`` are (or would be) stored."""
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str, n: int) -> torch.Tensor | None:
        """The stored tokens of ``key`` (``n`` images), or None."""
        from safetensors.torch import load_file

        path = self.path(key)
        try:
            tokens = load_file(path)["tokens"] if path.exists() else None
        except Exception:  # a damaged file: computed again and rewritten
            tokens = None
        return tokens if tokens is not None and tokens.shape[0] == n else None

    def save(self, key: str, tokens: torch.Tensor) -> None:
        """Store ``tokens`` under ``key``; a full disk or a read-only folder only costs the reuse."""
        from safetensors.torch import save_file

        path = self.path(key)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"tokens": tokens.contiguous().cpu()}, str(tmp))
            os.replace(tmp, path)
        except OSError as err:
            if not self.unwritable:  # once per store: a read-only folder would say it for every chunk
                warnings.warn(f"tower tokens not stored at {path}: {err}", stacklevel=2)
            self.unwritable = True
            _remove(tmp)

    def _compute(self, model, key: str, chunk: list[torch.Tensor], batch_size: int, claimed: bool = True):
        try:
            tokens = tower_tokens(model, torch.stack(chunk), batch_size)
            self.save(key, tokens)
        finally:
            if claimed:
                _remove(self._claim_path(key))
        self.computed += 1
        return tokens

    def _claim_path(self, key: str) -> Path:
        return self.path(key).with_suffix(".claim")

    def _claim(self, key: str) -> bool:
        """True if this process may compute ``key``'s chunk: it created the claim, or the existing
        claim is stale, or claims cannot be made here at all (then nothing is shared)."""
        path = self._claim_path(key)
        for _ in range(2):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(path):
                    return False
                _remove(path)  # its process is gone: take it over
                continue
            except OSError:
                return True
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}")
            return True
        return False

    def _stale(self, claim: Path) -> bool:
        """True if the process behind ``claim`` has died, or the claim is older than WAIT_S."""
        try:
            if time.time() - claim.stat().st_mtime > self.WAIT_S:
                return True
            host, pid = claim.read_text().split()
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return False  # still being written
        if host != socket.gethostname():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    def _wait(self, key: str, n: int) -> torch.Tensor | None:
        """``key``'s tokens once the process that claimed them has written them; None if it gave up
        (its claim is gone without a file, or stale) or WAIT_S passed."""
        claim, deadline = self._claim_path(key), time.monotonic() + self.WAIT_S
        while time.monotonic() < deadline:
            got = self.load(key, n)
            if got is not None:
                return got
            if not claim.exists() or self._stale(claim):
                return self.load(key, n)  # written just before the claim went, or given up
            time.sleep(self.POLL_S)
        return None


def _remove(path: Path) -> None:
    """Delete ``path`` if it is there and can be deleted."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _update(digest, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().reshape(-1)  # flat, so that a 0-d tensor can be viewed as bytes
    digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


@torch.no_grad()
def tower_tokens(model, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The tower's output tokens per image, as the projector receives them: (N, tokens, D).

    ``model`` is a transformers LLaVA-style model (``FastVlmForConditionalGeneration`` or
    ``LlavaForConditionalGeneration``, not a peft wrapper); the tower is left in eval mode.
    """
    tower = model.model.vision_tower
    tower.eval()
    first = next(tower.parameters())
    out = []
    for k in range(0, len(pixels), batch_size):
        # channels_last: measured about 1.5x faster for the CNN tower on CPU; a no-op for CLIP.
        chunk = pixels[k:k + batch_size].to(first.device).contiguous(memory_format=torch.channels_last)
        if model.config.model_type == "fast_vlm":  # a CNN: one token per cell of the last feature map
            out.append(_cnn_features(tower, chunk.to(first.dtype)).flatten(2).transpose(1, 2))
        else:  # CLIP: the configured layer's hidden states without the CLS token ("default")
            hidden = tower(chunk, output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
            out.append(hidden[:, 1:])
    return torch.cat(out).contiguous()


def _cnn_features(tower, chunk: torch.Tensor) -> torch.Tensor:
    """The timm tower's last feature map, through a TorchScript trace of it on a CPU.

    A stage runs the tower one image at a time, where Python's per-module overhead was about half
    the time (measured: 1.8x faster traced, on 2 CPU cores). The trace replays the same ATen
    operations (no freezing, so no folded BatchNorm), and it is used for a shape only after its
    first output equalled the eager one bit for bit; otherwise the eager tower runs.
    """
    traced = _traced(tower, chunk) if chunk.device.type == "cpu" and not torch.is_grad_enabled() else None
    return traced(chunk) if traced is not None else tower(chunk).last_hidden_state


def _traced(tower, chunk: torch.Tensor) -> Callable | None:
    """The checked trace of ``tower.timm_model.forward_features`` for this input shape, or None."""
    cache = tower.__dict__.setdefault("_mmcit_traces", {})
    key = (tuple(chunk.shape), chunk.dtype, chunk.is_contiguous(memory_format=torch.channels_last))
    if key not in cache:
        cache[key] = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
                traced = torch.jit.trace_module(tower.timm_model, {"forward_features": chunk},
                                                check_trace=False).forward_features
                # The profiling executor specialises on the first calls: compare after those.
                for _ in range(2):
                    traced(chunk)
                if torch.equal(traced(chunk), tower(chunk).last_hidden_state):
                    cache[key] = traced
        except Exception:  # any tracing problem: the eager tower, as before
            cache[key] = None
    return cache[key]


def attach_cached_tokens(model, features: list[dict], store: TokenStore | None = None) -> list[dict]:
    """``features`` (from ``Encoder.encode_train``) with ``image_tokens`` added to each one that has an
    image, when ``cached_tower_tokens`` allows (read from ``store`` where an earlier run kept them);
    else ``features`` unchanged."""
    rows = [k for k, f in enumerate(features) if f.get("pixel_values") is not None]
    tokens = cached_tower_tokens(model, [features[k]["pixel_values"] for k in rows], batch_size=1, store=store)
    if tokens is None:
        return features
    out = list(features)
    for k, t in zip(rows, tokens):
        out[k] = {**features[k], "image_tokens": t}
    return out


def batch_tower_tokens(model, rows: list[dict], batch: dict) -> torch.Tensor | None:
    """The tower tokens of a batch's rows that have an image (cached, or computed now one image at a
    time), or None when no row has one."""
    with_image = [f for f in rows if f.get("pixel_values") is not None]
    if not with_image:
        return None
    if "image_tokens" in with_image[0]:
        return torch.stack([f["image_tokens"] for f in with_image])
    return tower_tokens(model, batch["pixel_values"], batch_size=1)


def with_image_tokens(model, batch: dict, tokens: torch.Tensor | None) -> dict:
    """``batch`` (from ``collate``) as input embeddings with the projected ``tokens`` at the image
    positions (none for a batch without images), ready for ``model(**result)`` (or the peft wrapper
    around it)."""
    embed = model.get_input_embeddings()
    ids = batch["input_ids"].to(embed.weight.device)
    embeds = embed(ids)
    if tokens is not None:
        image = model.model.multi_modal_projector(tokens.to(embed.weight.device)).to(embeds.dtype)
        embeds = embeds.masked_scatter((ids == model.config.image_token_id).unsqueeze(-1), image)
    # A packed batch (``pack``) has position ids instead of an attention mask.
    return {"inputs_embeds": embeds, **{k: batch[k] for k in ("attention_mask", "position_ids", "labels") if k in batch}}


def with_cached_images(model, batch: dict, keys: list[str], cache: dict[str, torch.Tensor]) -> dict | None:
    """A generation batch (from ``collate``) as input embeddings, each image's tower tokens taken from
    ``cache`` by its key (an image's path), or computed now for the images missing there and kept
    while the cache stays under MAX_CACHE_BYTES. ``keys``: one per row with an image, in row order.
    None when this model's tower output cannot be reused (``cacheable``) or no row has an image.
    ``input_ids`` stay in the result: generation continues from them.
    """
    pixels = batch.get("pixel_values")
    if pixels is None or not cacheable(model):
        return None
    missing = [k for k, key in enumerate(keys) if key not in cache]
    fresh = dict(zip(missing, tower_tokens(model, pixels[missing], batch_size=len(missing)))) if missing else {}
    used = sum(t.numel() * t.element_size() for t in cache.values())
    for k, t in fresh.items():
        size = t.numel() * t.element_size()
        if used + size <= MAX_CACHE_BYTES:
            cache[keys[k]] = t
            used += size
    tokens = torch.stack([fresh[k] if k in fresh else cache[key] for k, key in enumerate(keys)])
    return {"input_ids": batch["input_ids"], **with_image_tokens(model, batch, tokens)}
