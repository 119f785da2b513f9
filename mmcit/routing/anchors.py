"""Task anchors: the mean image and text features of each task's training samples, and the test-time
choice of a task's parameters by comparing a sample's features with them.

DISCO, HiDe-LLaVA and EProj choose per test sample which task's parameters answer it, from its
features alone (never its task label). This part is what they share:

* **features** (``SampleFeatures``): ``text`` is an mmcit embedder's vector (``mmcit ls embedders``;
  ``hashing`` or ``sentence``, whose vectors are comparable across calls) of the sample's prompt
  (question and instruction: the text MCITlib's DISCO and HiDe give CLIP's text encoder) or of its
  instruction template; ``image`` is the frozen vision tower's output for the image, averaged over
  its tokens (``mmcit.models.image_features``). Test-time features are computed once per distinct
  image and prompt and kept for the run (one vector each).
* **anchors** (``TaskAnchors``): per task and modality, the mean of the raw features of its
  training samples (all of them, or ``max_samples`` drawn with a seeded RNG).
* **similarity** of a sample to a task: the mean, over the modalities both have, of the cosine
  between the sample's feature and the task's anchor (HiDe: ``(image + text) / 2``). A sample
  without any usable modality (a text-only sample when only images are compared) falls back to
  the most recent task, as LCIA's router does.
* **choice**: the most similar task (ties: the earlier task). The authors weight every task's
  parameters by ``softmax(similarity / T)`` instead; the report gives the mean weight that softmax
  would have put on the chosen task (``mean_chosen_weight``), which says how close the hard choice
  is to their mixture.

``AnchorSelector`` holds the three together with the counts for the report. ``Sample.task`` is read
only to count, per evaluated stage, which task's samples went where.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmcit.errors import ConfigError, EmbedderUnavailable
from mmcit.models.image_features import pooled_image_features
from mmcit.routing.embedders import build_embedder

if TYPE_CHECKING:
    from mmcit.data.sample import Sample
    from mmcit.models.wrapper import MMModel

__all__ = ["AnchorSelector", "AnchorSettings", "MODALITIES", "SampleFeatures", "TaskAnchors"]

MODALITIES = ("image", "text")
TEXT_FIELDS = ("prompt", "instruction")
CHUNK = 32  # images per tower call; fixed, so that a resumed run groups them exactly as before


@dataclass
class AnchorSettings:
    """``method.anchors``: the features compared, the text they read, the embedder, and how many
    training samples an anchor averages (0: all)."""

    modalities: list[str] = field(default_factory=lambda: ["image", "text"])
    text: str = "prompt"  # prompt (question + instruction, as MCITlib) | instruction (the template)
    embedder: str = "hashing"  # hashing | sentence (tfidf has no fixed vectors to average)
    embedder_path: str | None = None  # sentence: a local sentence-transformers folder
    max_samples: int = 0  # training samples averaged per anchor; 0 = every one

    def validate(self) -> None:
        """Known, distinct modalities; a known text field; an embedder with fixed vectors that is
        available here (checked cheaply, no model is loaded)."""
        if not self.modalities or len(set(self.modalities)) != len(self.modalities) or \
                any(m not in MODALITIES for m in self.modalities):
            raise ConfigError(f"method.anchors.modalities must be distinct values of {', '.join(MODALITIES)}, "
                              f"got {self.modalities}")
        if self.text not in TEXT_FIELDS:
            raise ConfigError(f"method.anchors.text must be one of {', '.join(TEXT_FIELDS)}, got {self.text!r}")
        if self.max_samples < 0:
            raise ConfigError(f"method.anchors.max_samples must be >= 0 (0: all), got {self.max_samples}")
        if "text" in self.modalities:
            if self.embedder == "tfidf":
                raise ConfigError("method.anchors.embedder: tfidf compares texts pair by pair and has no fixed "
                                  "vectors to average into an anchor; use hashing or sentence")
            try:
                build_embedder(self.embedder, self.embedder_path)
            except EmbedderUnavailable as e:
                raise ConfigError(f"method.anchors.embedder: {e}") from None


#: modality -> (features (n, d) float32, present (n,) bool); a row not present is all zeros.
Features = dict[str, tuple[np.ndarray, np.ndarray]]


class SampleFeatures:
    """Computes the configured modalities' features of samples (see the module docstring)."""

    def __init__(self, settings: AnchorSettings) -> None:
        self.settings = settings
        self.embedder = build_embedder(settings.embedder, settings.embedder_path) \
            if "text" in settings.modalities else None
        self._images: dict[str, np.ndarray] = {}  # test-time image features by path

    def text_of(self, sample: "Sample") -> str:
        """The text the ``text`` modality reads: the prompt or the instruction template."""
        return sample.prompt if self.settings.text == "prompt" else sample.instruction

    def compute(self, model: "MMModel", samples: list["Sample"], keep: bool = True) -> Features:
        """Every configured modality's features of ``samples``; ``keep`` caches them (test samples),
        otherwise the embedder is a fresh one that is dropped after (training samples are seen once)."""
        out: Features = {}
        if "text" in self.settings.modalities:
            embedder = self.embedder if keep else build_embedder(self.settings.embedder, self.settings.embedder_path)
            texts = [self.text_of(s) for s in samples]
            vectors = embedder.embed(texts) if samples else np.zeros((0, 1), np.float32)
            out["text"] = (vectors.astype(np.float32), np.linalg.norm(vectors, axis=1) > 0)
        if "image" in self.settings.modalities:
            out["image"] = self._image_features(model, samples, keep)
        return out

    def _image_features(self, model: "MMModel", samples: list["Sample"], keep: bool) -> tuple[np.ndarray, np.ndarray]:
        present = np.array([s.image is not None for s in samples], dtype=bool)
        by_path: dict[str, "Sample"] = {}
        for s in samples:
            if s.image is not None:
                by_path.setdefault(str(s.image), s)
        computed = self._images if keep else {}
        todo = [p for p in by_path if p not in computed]
        if todo:
            encoder, base = model.encoder(), model.peft.get_base_model()
            for k in range(0, len(todo), CHUNK):
                chunk = todo[k:k + CHUNK]
                pixels = torch.stack([encoder.encode_prompt(by_path[p])["pixel_values"] for p in chunk])
                with model.autocast():
                    feats = pooled_image_features(base, pixels.to(model.device), CHUNK).numpy()
                computed.update(zip(chunk, feats))
        if not by_path:
            return np.zeros((len(samples), 1), np.float32), present
        rows = np.zeros((len(samples), len(computed[next(iter(by_path))])), np.float32)
        for i, s in enumerate(samples):
            if s.image is not None:
                rows[i] = computed[str(s.image)]
        return rows, present


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class TaskAnchors:
    """Task key -> modality -> the mean feature of the key's training samples, in insertion order."""

    def __init__(self) -> None:
        self.means: dict[str, dict[str, np.ndarray]] = {}
        self.counts: dict[str, dict[str, int]] = {}

    @property
    def keys(self) -> list[str]:
        """The task keys, oldest first."""
        return list(self.means)

    def set(self, key: str, features: Features) -> None:
        """The anchors of ``key``: per modality, the mean of the present rows (none present: no anchor)."""
        self.means[key], self.counts[key] = {}, {}
        for modality, (rows, present) in features.items():
            if present.any():
                self.means[key][modality] = rows[present].astype(np.float64).mean(axis=0).astype(np.float32)
                self.counts[key][modality] = int(present.sum())

    def similarities(self, features: Features) -> np.ndarray:
        """``(n, keys)``: the mean over shared modalities of the cosine of each sample with each key's
        anchor; NaN where a sample and an anchor share no modality."""
        n = len(next(iter(features.values()))[0]) if features else 0
        total = np.zeros((n, len(self.means)))
        used = np.zeros((n, len(self.means)))
        for j, anchors in enumerate(self.means.values()):
            for modality, anchor in anchors.items():
                if modality not in features or not np.linalg.norm(anchor) > 0:
                    continue
                rows, present = features[modality]
                cos = _unit(rows.astype(np.float64)) @ _unit(anchor.astype(np.float64))
                total[:, j] += np.where(present, cos, 0.0)
                used[:, j] += present
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(used > 0, total / np.maximum(used, 1), np.nan)

    def state_dict(self) -> dict[str, Any]:
        """JSON: every anchor as a list of floats, with the number of samples it averages."""
        return {"means": {k: {m: v.tolist() for m, v in a.items()} for k, a in self.means.items()},
                "counts": copy.deepcopy(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (float32 values come back exactly)."""
        self.means = {k: {m: np.asarray(v, dtype=np.float32) for m, v in a.items()}
                      for k, a in state.get("means", {}).items()}
        self.counts = copy.deepcopy(state.get("counts", {}))


def _new_counts() -> dict[str, Any]:
    return {"samples": 0, "fallbacks": 0, "matched": 0, "chosen_weight": 0.0, "per_task": {}}


class AnchorSelector:
    """Anchors + features + the choice, with counts for the report (see the module docstring).

    ``temperature`` is the authors' softmax temperature, used only for ``mean_chosen_weight``
    (None: not reported). ``label`` names the stage whose evaluation is being counted.
    """

    def __init__(self, settings: AnchorSettings, temperature: float | None = None) -> None:
        self.settings = settings
        self.temperature = temperature
        self.features = SampleFeatures(settings)
        self.anchors = TaskAnchors()
        self.key_tasks: dict[str, list[str]] = {}
        self.counts: dict[str, dict[str, Any]] = {}
        self.label = "all"

    def fit(self, key: str, tasks: list[str], model: "MMModel", samples: list["Sample"], seed: int) -> None:
        """Set ``key``'s anchors from ``samples`` (the training samples of ``tasks``)."""
        limit = self.settings.max_samples
        if limit and len(samples) > limit:
            picked = sorted(random.Random(seed).sample(range(len(samples)), limit))
            samples = [samples[i] for i in picked]
        self.anchors.set(key, self.features.compute(model, samples, keep=False))
        self.key_tasks[key] = list(tasks)

    def choose(self, similarities: np.ndarray) -> tuple[list[str | None], list[bool]]:
        """The key of each row's largest similarity (ties: the earlier key) and whether the row fell
        back to the newest key (no shared modality with any anchor)."""
        keys = self.anchors.keys
        if not keys:
            return [None] * len(similarities), [True] * len(similarities)
        chosen, fell = [], []
        for row in similarities:
            if np.all(np.isnan(row)):
                chosen.append(keys[-1])
                fell.append(True)
            else:
                chosen.append(keys[int(np.nanargmax(row))])  # the first of equal values
                fell.append(False)
        return chosen, fell

    def select(self, model: "MMModel", samples: list["Sample"]) -> list[str | None]:
        """Each sample's key, from its features alone; counted under ``label``."""
        if not samples or not self.anchors.keys:
            return [None] * len(samples)
        sims = self.anchors.similarities(self.features.compute(model, samples, keep=True))
        chosen, fell = self.choose(sims)
        self._count(samples, sims, chosen, fell)
        return chosen

    def _count(self, samples: list["Sample"], sims: np.ndarray, chosen: list[str | None], fell: list[bool]) -> None:
        c = self.counts.setdefault(self.label, _new_counts())
        keys = self.anchors.keys
        for s, row, key, f in zip(samples, sims, chosen, fell):
            c["samples"] += 1
            c["fallbacks"] += int(f)
            c["matched"] += int(s.task in self.key_tasks.get(key, []))
            if self.temperature is not None and not f:
                logits = np.where(np.isnan(row), -np.inf, row) / self.temperature
                weights = np.exp(logits - np.max(logits))
                c["chosen_weight"] += float(weights[keys.index(key)] / weights.sum())
            per_task = c["per_task"].setdefault(s.task, {})
            per_task[key] = per_task.get(key, 0) + 1

    def state_dict(self) -> dict[str, Any]:
        """JSON: the anchors, which tasks each key holds, and the selection counts."""
        return {"anchors": self.anchors.state_dict(), "key_tasks": copy.deepcopy(self.key_tasks),
                "selection": copy.deepcopy(self.counts), "label": self.label}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.anchors.load_state_dict(state.get("anchors", {}))
        self.key_tasks = copy.deepcopy(state.get("key_tasks", {}))
        self.counts = copy.deepcopy(state.get("selection", {}))
        self.label = state.get("label", "all")

    def summary(self) -> dict[str, Any]:
        """Per evaluated stage: samples, fallbacks, the share whose key holds their own task
        (``task_match``, read from the labels after the choice), the mean weight the authors'
        softmax would give the chosen key, and where each task's samples went."""
        out = {}
        for label, c in self.counts.items():
            n = max(c["samples"], 1)
            row = {"samples": c["samples"], "fallbacks": c["fallbacks"], "task_match": round(c["matched"] / n, 4),
                   "per_task": copy.deepcopy(c["per_task"])}
            if self.temperature is not None:
                row["mean_chosen_weight"] = round(c["chosen_weight"] / max(c["samples"] - c["fallbacks"], 1), 4)
            out[label] = row
        return {"modalities": list(self.settings.modalities), "text": self.settings.text,
                "embedder": self.settings.embedder, "anchor_samples": copy.deepcopy(self.anchors.counts),
                "selection": out}
