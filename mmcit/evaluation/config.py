"""The ``eval:`` block of a run's config."""
from __future__ import annotations

from dataclasses import dataclass, field

from mmcit.errors import ConfigError

#: Scoring modes: ``default`` (plain bugs of the original scorers fixed) or ``reference`` (identical
#: per-sample results to the original evaluation scripts).
MODES: tuple[str, ...] = ("default", "reference")
#: The splits a run can evaluate on: the test split, or the validation split (for choosing settings).
EVAL_SPLITS: tuple[str, ...] = ("test", "val")


#: The general-skill sets ``eval.general`` may name (``mmcit/evaluation/general_sets.py``).
GENERAL_SETS: tuple[str, ...] = ("mme", "pope", "seed", "mmbench")


@dataclass
class GeneralSetConfig:
    """One general-skill set evaluated on the base model and after the stream (retention)."""

    set: str = "mme"  # mme | pope | seed | mmbench
    questions: str = ""  # llava_mme.jsonl | llava_pope_test.jsonl | llava-seed-bench.jsonl | mmbench_dev_*.tsv
    images: str = ""  # MME: MME_Benchmark_release_version (also its ground truth); POPE: COCO val2014; SEED: image root
    anno: str = ""  # POPE: folder of coco_pope_<split>.json; SEED: SEED-Bench.json
    name: str = ""  # label in results.json (default: the set)
    limit: int | None = None  # keep the first questions (MMBench: the first rows)

    def validate(self) -> None:
        """The set is known and has the files its layout needs."""
        if self.set not in GENERAL_SETS:
            raise ConfigError(f"eval.general: set must be one of {', '.join(GENERAL_SETS)}, got {self.set!r}")
        needed = {"mme": ("questions", "images"), "pope": ("questions", "images", "anno"),
                  "seed": ("questions", "images", "anno"), "mmbench": ("questions",)}[self.set]
        missing = [k for k in needed if not getattr(self, k)]
        if missing:
            raise ConfigError(f"eval.general ({self.set}): {', '.join(missing)} required")


@dataclass
class EvalConfig:
    """``eval``: generation batch and length, the scorers' mode and the split runs evaluate on."""

    batch_size: int = 32
    max_new_tokens: int = 24
    scoring_mode: str = "default"  # default | reference
    split: str = "test"  # test | val (every task must then have validation samples)
    # General-skill sets scored on the base model and after the last stage (retention).
    general: list[GeneralSetConfig] = field(default_factory=list)
    # Speed options (docs/performance.md), all off by default. Each answers as the default does up to
    # float rounding, not bit for bit. merge_adapters: each adapter's LoRA merged into the weights
    # for its batches (the weights restored bit for bit after). static_cache: a static KV cache
    # (transformers then compiles the decoding step on a GPU). image_cache: the frozen tower run
    # once per image, its output kept across evaluations.
    merge_adapters: bool = False
    static_cache: bool = False
    image_cache: bool = False

    def validate(self) -> None:
        """Value checks that the types alone cannot express."""
        if self.scoring_mode not in MODES:
            raise ConfigError(f"eval.scoring_mode must be one of {', '.join(MODES)}")
        if self.split not in EVAL_SPLITS:
            raise ConfigError(f"eval.split must be one of {', '.join(EVAL_SPLITS)}, got {self.split!r}")
        if self.batch_size < 1:
            raise ConfigError("eval.batch_size must be >= 1")
        for g in self.general:  # list items are not reached by the loader's tree walk
            g.validate()
        labels = [g.name or g.set for g in self.general]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"eval.general: two sets share a name ({labels}); give each a distinct 'name'")
