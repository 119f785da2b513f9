"""Turning samples into model inputs: chat template, image-token expansion, label masking, padding.

Each sample is encoded once per task (images decoded and normalised, text tokenised, ``<image>``
expanded by the LLaVA processor to the vision tower's real token count); batches then only pad and
stack. Training batches are right-padded; generation batches are left-padded, because a decoder
continues every row from its last position.

A text-only sample (``Sample.image`` None) has no ``<image>`` tag and no pixels
(``pixel_values`` None); a batch stacks the pixels of its rows that have an image, in row order, which
is the order in which LLaVA-style forwards fill the image tokens of the batch. A batch without any
image has no ``pixel_values``.
"""
from __future__ import annotations

import hashlib
import os

import torch
from PIL import Image

from mmcit.data.sample import Sample
from mmcit.data.templates import ChatTemplate, Template
from mmcit.errors import DataError

IGNORE_INDEX = -100


def load_image(sample: Sample, pad_color: tuple[int, int, int] | None = None) -> Image.Image:
    """The sample's image in RGB; with ``pad_color``, padded to a centred square of that colour.

    An image that cannot be decoded raises ``DataError`` naming it (one line, exit 2): the reader
    checked its header, but only a full decode (``mmcit data check --verify-images``) finds a
    truncated body."""
    try:
        with Image.open(sample.image) as im:
            image = im.convert("RGB")
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"{sample.task} sample {sample.id}: image {sample.image} cannot be decoded "
                        f"({type(e).__name__}: {e}); `mmcit data check --verify-images` finds every such image",
                        kind="unreadable_image", image=str(sample.image)) from e
    if pad_color is None or image.width == image.height:
        return image
    side = max(image.size)
    square = Image.new("RGB", (side, side), pad_color)
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def mean_color(processor) -> tuple[int, int, int]:
    """The image processor's normalisation mean as an RGB colour (LLaVA's padding colour)."""
    mean = getattr(getattr(processor, "image_processor", None), "image_mean", None) or \
        getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5)
    return tuple(int(round(m * 255)) for m in mean)  # type: ignore[return-value]


class Encoder:
    """Encodes samples for training (with labels) or generation (prompt only)."""

    def __init__(self, processor, template: Template | None = None, max_length: int = 2048,
                 pad_to_square: bool = False):
        self.processor = processor
        self.pad_color = mean_color(processor) if pad_to_square else None
        self.tok = processor.tokenizer
        self.template = template or ChatTemplate()
        self.max_length = max_length
        # Context ids with the image tokens expanded, per (context text, image size): many samples
        # share one prompt, and the expansion depends only on the image's size.
        self._context_ids: dict[tuple[str, tuple[int, int]], list[int]] = {}
        self._last_pixels: tuple[tuple, torch.Tensor] | None = None
        self._last_image: tuple[tuple, Image.Image] | None = None
        # Filled for one chunk by encode_train_many: target text -> ids, pixel key -> pixels.
        self._target_ids: dict[str, list[int]] = {}
        self._chunk_pixels: dict[tuple, torch.Tensor] = {}
        self._chunk_keys: dict[int, tuple] = {}  # id of an image of the chunk (all alive) -> its pixel key

    def _image(self, sample: Sample) -> Image.Image | None:
        """The sample's image, decoded again only when it is not the file decoded last (several
        records of one image in a row, as in the synthetic pretraining set, decode it once). The
        file's size and modification time are part of the key, so a rewritten file is read again."""
        if sample.image is None:
            return None
        try:
            st = os.stat(sample.image)
            key: tuple | None = (str(sample.image), st.st_size, st.st_mtime_ns, self.pad_color)
        except OSError:
            key = None  # load_image reports the file
        if key is not None and self._last_image is not None and self._last_image[0] == key:
            return self._last_image[1]
        image = load_image(sample, self.pad_color)
        if key is not None:
            self._last_image = (key, image)
        return image

    def _text_ids(self, text: str, image: Image.Image | None) -> tuple[list[int], torch.Tensor | None]:
        if image is not None:
            key = (text, image.size)
            if key in self._context_ids and hasattr(self.processor, "image_processor"):
                return list(self._context_ids[key]), self._pixels(image)
            # The template writes every special token itself (bos included): the tokenizer adds none.
            enc = self.processor(images=[image], text=[text], return_tensors="pt", add_special_tokens=False)
            ids = enc["input_ids"][0].tolist()
            if len(self._context_ids) < 4096:
                self._context_ids[key] = ids
            return list(ids), enc["pixel_values"][0]
        return self.tok(text, add_special_tokens=False)["input_ids"], None

    @staticmethod
    def _pixel_key(image: Image.Image) -> tuple:
        return image.size, image.mode, hashlib.blake2b(image.tobytes(), digest_size=16).digest()

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        """The image processor's output, reused when the same pixels come twice in a row (several
        records of one image, as in the synthetic pretraining set)."""
        if self._chunk_pixels and id(image) in self._chunk_keys:
            return self._chunk_pixels[self._chunk_keys[id(image)]]
        key = self._pixel_key(image)
        if self._last_pixels is not None and self._last_pixels[0] == key:
            return self._last_pixels[1]
        pixels = self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]
        self._last_pixels = (key, pixels)
        return pixels

    def _pieces(self, turns: list[tuple[str, str]], image: Image.Image | None) -> list[tuple[str, str]]:
        if image is None:  # only then: a template written before text-only samples keeps working
            return self.template.pieces(turns, self.tok.bos_token, self.tok.eos_token, image=False)
        return self.template.pieces(turns, self.tok.bos_token, self.tok.eos_token)

    def encode_train(self, sample: Sample) -> dict:
        """input_ids, labels (-100 on every context token), pixel_values (None without an image)."""
        return self._encode_train(sample, self._image(sample))

    def encode_train_many(self, samples: list[Sample], chunk: int = 256) -> list[dict]:
        """``encode_train`` of each sample, the same ids and pixels, with the work shared per chunk of
        samples: the answers are tokenised in one call and the distinct images go through the image
        processor in one call. One call per sample spent most of its time in per-call overhead (the
        image processor validates its arguments each time): the demo's 38,400 pretraining records
        took 22-30 s one by one, 9 s in chunks. A chunk's decoded images are held together, so the
        chunk stays small for full-size photos."""
        out: list[dict] = []
        for start in range(0, len(samples), chunk):
            part = samples[start:start + chunk]
            images = [self._image(s) for s in part]
            pieces = [self._pieces(s.turns, im) for s, im in zip(part, images)]
            targets = sorted({t for p in pieces for _, t in p})
            if targets:
                self._target_ids = dict(zip(targets, self.tok(targets, add_special_tokens=False)["input_ids"]))
            distinct: dict[tuple, Image.Image] = {}
            if hasattr(self.processor, "image_processor"):
                for im in images:
                    if im is not None and id(im) not in self._chunk_keys:
                        self._chunk_keys[id(im)] = key = self._pixel_key(im)
                        distinct.setdefault(key, im)
            if distinct:
                pixels = self.processor.image_processor(images=list(distinct.values()),
                                                        return_tensors="pt")["pixel_values"]
                self._chunk_pixels = dict(zip(distinct, pixels))
            try:
                out += [self._encode_train(s, im, p) for s, im, p in zip(part, images, pieces)]
            finally:
                self._target_ids, self._chunk_pixels, self._chunk_keys = {}, {}, {}
        return out

    def _encode_train(self, sample: Sample, image: Image.Image | None,
                      pieces: list[tuple[str, str]] | None = None) -> dict:
        if pieces is None:
            pieces = self._pieces(sample.turns, image)
        ids: list[int] = []
        labels: list[int] = []
        pixel_values = None
        for k, (context, target) in enumerate(pieces):
            ctx_ids, pv = self._text_ids(context, image if k == 0 else None)
            if k == 0:
                pixel_values = pv
            tgt_ids = self._target_ids.get(target)
            if tgt_ids is None:
                tgt_ids = self.tok(target, add_special_tokens=False)["input_ids"]
            ids += ctx_ids + tgt_ids
            labels += [IGNORE_INDEX] * len(ctx_ids) + tgt_ids
        if len(ids) > self.max_length:  # a DataError (one line, exit 2): the record, not the code, is at fault
            raise DataError(f"sample {sample.task}/{sample.id} has {len(ids)} tokens, over "
                            f"max_length={self.max_length} (train.max_length)")
        return {"input_ids": ids, "labels": labels, "pixel_values": pixel_values}

    def encode_prompts(self, samples: list[Sample]) -> list[dict]:
        """``encode_prompt`` of each sample: the same ids and pixels, but the samples with an image go
        through one processor call together. The image processor validates its arguments on every
        call (about 0.6 ms on a CPU), which one call per sample made a tenth of a first evaluation."""
        rows: list[dict | None] = [None] * len(samples)
        together: list[tuple[int, str, Image.Image]] = []
        for k, sample in enumerate(samples):
            image = self._image(sample)
            if image is None or not hasattr(self.processor, "image_processor"):
                rows[k] = self.encode_prompt(sample)
                continue
            together.append((k, self._pieces(sample.turns[:1], image)[0][0], image))
        if together:
            enc = self.processor(images=[im for _, _, im in together], text=[t for _, t, _ in together],
                                 add_special_tokens=False)
            for (k, _, _), ids, pixels in zip(together, enc["input_ids"], enc["pixel_values"]):
                rows[k] = {"input_ids": list(ids), "pixel_values": torch.as_tensor(pixels)}
        return rows  # type: ignore[return-value]

    def encode_prompt(self, sample: Sample) -> dict:
        """The first turn's context only, ready for generation."""
        image = self._image(sample)
        context, _ = self._pieces(sample.turns[:1], image)[0]
        ids, pv = self._text_ids(context, image)
        return {"input_ids": ids, "pixel_values": pv}


def collate(features: list[dict], pad_id: int, padding_side: str = "right") -> dict:
    """Pad and stack encoded features into a batch (labels padded with -100); ``pixel_values`` holds
    the rows with an image, in order, and is left out when no row has one."""
    longest = max(len(f["input_ids"]) for f in features)
    batch_ids, batch_mask, batch_labels = [], [], []
    for f in features:
        n = len(f["input_ids"])
        pad = longest - n
        if padding_side == "left":
            batch_ids.append([pad_id] * pad + f["input_ids"])
            batch_mask.append([0] * pad + [1] * n)
            if "labels" in f:
                batch_labels.append([IGNORE_INDEX] * pad + f["labels"])
        else:
            batch_ids.append(f["input_ids"] + [pad_id] * pad)
            batch_mask.append([1] * n + [0] * pad)
            if "labels" in f:
                batch_labels.append(f["labels"] + [IGNORE_INDEX] * pad)
    batch = {
        "input_ids": torch.tensor(batch_ids, dtype=torch.long),
        "attention_mask": torch.tensor(batch_mask, dtype=torch.long),
    }
    pixels = [f["pixel_values"] for f in features if f.get("pixel_values") is not None]
    if pixels:
        batch["pixel_values"] = torch.stack(pixels)
    if batch_labels:
        batch["labels"] = torch.tensor(batch_labels, dtype=torch.long)
    return batch


def pack(features: list[dict], pad_id: int, capacity: int | None = None) -> tuple[dict, list[int]]:
    """Pack training features into few rows with no padding between them (sequence packing).

    Features go first-fit in decreasing length into rows of ``capacity`` tokens (default: the
    longest feature, so that no row grows longer than the padded batch would be; a longer feature
    gets a row of its own); the last rows end in padding where they are not full. Each sequence's
    position ids start again at 0, which is how a transformers model finds the attention
    boundaries of packed sequences (no ``attention_mask``: a token attends only within its own
    sequence; a row's padding is a sequence of its own). Each sequence's first label is -100: an
    unpacked row never predicts its first token either, and here it would be predicted from the
    previous sequence's last token.

    Returns the batch (``input_ids``, ``labels``, ``position_ids``, ``pixel_values`` in packing
    order) and the features' indices in packing order (row by row), the order in which a model
    fills the batch's image tokens.
    """
    lengths = [len(f["input_ids"]) for f in features]
    capacity = max(capacity or 0, max(lengths))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(features)), key=lambda k: -lengths[k]):
        slot = next((r for r, room in enumerate(free) if room >= lengths[i]), None)
        if slot is None:
            rows.append([])
            free.append(capacity)
            slot = len(rows) - 1
        rows[slot].append(i)
        free[slot] -= lengths[i]
    width = max(capacity - room for room in free)
    ids, labels, positions = [], [], []
    for members in rows:
        r_ids, r_labels, r_pos = [], [], []
        for i in members:
            f = features[i]
            r_ids += f["input_ids"]
            r_labels += [IGNORE_INDEX] + f["labels"][1:]
            r_pos += list(range(lengths[i]))
        pad = width - len(r_ids)
        ids.append(r_ids + [pad_id] * pad)
        labels.append(r_labels + [IGNORE_INDEX] * pad)
        positions.append(r_pos + list(range(pad)))
    order = [i for members in rows for i in members]
    batch = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "labels": torch.tensor(labels, dtype=torch.long),
        "position_ids": torch.tensor(positions, dtype=torch.long),
    }
    pixels = [features[i]["pixel_values"] for i in order if features[i].get("pixel_values") is not None]
    if pixels:
        batch["pixel_values"] = torch.stack(pixels)
    return batch, order
