"""Cost of checking images before a run, per 1000 images: existence only, header (what every read
and ``mmcit data check`` do), full decode (``--verify-images``), serial, in threads, and as reads
do (threads only when the first probes were slow: ``mmcit.data.check.probe_images``).

    python benchmarks/bench_image_check.py                      # 1000 COCO-sized JPEGs in a temp folder
    python benchmarks/bench_image_check.py --folder DIR --n 5000  # real images (e.g. COCO2014/val2014)

Prints figures only (no assertions). The generated images are 640 x 480 JPEGs (quality 90) of
smooth noise, about COCO's size; the files are read from the page cache after the first pass (the
first pass of each mode is a warm-up and not timed), so the figures are a floor for cold or
network storage, where the threads help most.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's mmcit, installed or not

from PIL import Image  # noqa: E402

from mmcit.data.check import PROBE_THREADS, probe_images  # noqa: E402


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` 640 x 480 JPEGs (a few distinct noise pictures, saved under distinct names)."""
    pictures = [Image.effect_noise((640, 480), 64).convert("RGB").resize((640, 480)) for _ in range(8)]
    paths = []
    for k in range(n):
        path = folder / f"{k:06d}.jpg"
        pictures[k % len(pictures)].save(path, quality=90)
        paths.append(path)
    return paths


def timed(fn) -> float:
    fn()  # warm-up: page cache, thread start
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Time each way of checking the images and print seconds per 1000."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="folder of images to check (default: generated)")
    parser.add_argument("--n", type=int, default=1000, help="number of images")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.folder is None:
            paths = make_images(Path(tmp), args.n)
        else:
            paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
        size = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        print(f"{len(paths)} images, {size:.0f} KiB on average")
        rows = [
            ("exists (stat)", lambda: [p.is_file() for p in paths]),
            ("header, 1 thread", lambda: probe_images(paths, threads=1)),
            (f"header, {PROBE_THREADS} threads", lambda: probe_images(paths, slow_s=0.0)),
            ("header, as reads do", lambda: probe_images(paths)),
            ("full decode, 1 thread", lambda: probe_images(paths, decode=True, threads=1)),
            (f"full decode, {PROBE_THREADS} threads", lambda: probe_images(paths, decode=True, slow_s=0.0)),
        ]
        for name, fn in rows:
            seconds = timed(fn)
            print(f"{name:24s} {1000 * seconds / len(paths):8.3f} s per 1000 images")


if __name__ == "__main__":
    main()
