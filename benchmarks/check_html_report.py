"""Open an mmcit HTML report in a real headless browser and check that it shows content.

    python benchmarks/check_html_report.py RUN_DIR_OR_REPORT [--out shot.png] [--width 1280 --height 3000]

Uses the system's Chromium (Debian: ``apt-get install chromium``) with no network access needed (the
report is self-contained). It (1) dumps the DOM Chromium built and checks that the report's sections
are there, (2) takes a full-width screenshot and checks its pixels: the size asked for, a share of
"ink" (pixels unlike the page background), many distinct colours (text, charts, images), and the
charts' line colours present. Prints the figures; exits 1 when a check fails. No assertion is hidden:
the thresholds are the constants below.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUN_SECTIONS = ("metrics", "matrix", "curves", "routing", "alpha", "forgotten")
MIN_INK = 0.02  # share of pixels that differ from the background
MIN_COLOURS = 64  # distinct colours in the screenshot (anti-aliased text alone gives dozens)
LINE_COLOURS = {"blue": (0x00, 0x72, 0xB2), "orange": (0xE6, 0x9F, 0x00)}  # the first two chart colours


def chromium() -> str:
    """The Chromium executable, or exit with a hint."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium found: apt-get install chromium")


def browse(report: Path, *extra: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """Run headless Chromium on the report with ``extra`` flags (a fresh profile each time)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", f"--user-data-dir={profile}", *extra, report.resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_pixels(shot: Path, width: int, height: int) -> dict:
    """Size, ink share, distinct colours and which chart colours appear in the screenshot."""
    import numpy as np
    from PIL import Image

    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    flat = rgb.reshape(-1, 3)
    values, counts = np.unique(flat, axis=0, return_counts=True)
    background = tuple(int(v) for v in values[counts.argmax()])
    differs = np.abs(rgb - np.array(background)).sum(axis=2)
    ink = float((differs > 60).mean())
    found = {name: bool((np.abs(flat - np.array(c)).sum(axis=1) < 30).any()) for name, c in LINE_COLOURS.items()}
    content_rows = np.flatnonzero((differs > 0).any(axis=1))
    return {"size": (rgb.shape[1], rgb.shape[0]), "size_ok": (rgb.shape[1], rgb.shape[0]) == (width, height),
            "background": background, "ink": round(ink, 4), "colours": int(len(values)), "chart_colours": found,
            "last_content_row": int(content_rows.max()) if content_rows.size else 0}


def main() -> int:
    """Dump the DOM, take the screenshot, check both; print what was measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a run folder (its report.html) or an HTML file")
    parser.add_argument("--out", type=Path, default=Path("report_screenshot.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args()
    report = args.report / "report.html" if args.report.is_dir() else args.report
    dom = browse(report, "--dump-dom")
    sections = [s for s in RUN_SECTIONS if f'id="{s}"' in dom.stdout]
    is_run = "id=\"metrics\"" in dom.stdout
    print(f"DOM: {len(dom.stdout)} characters, sections found: {', '.join(sections) or 'none'}, "
          f"{dom.stdout.count('<svg')} svg, {dom.stdout.count('<img')} img")
    shot = browse(report, f"--screenshot={args.out.resolve()}", f"--window-size={args.width},{args.height}")
    if not args.out.is_file():
        print(shot.stderr[-2000:])
        return 1
    figures = check_pixels(args.out, args.width, args.height)
    print(f"screenshot {args.out}: {figures}")
    failures = []
    if is_run and len(sections) != len(RUN_SECTIONS):
        failures.append("a run report's section is missing from the DOM")
    if not figures["size_ok"]:
        failures.append(f"screenshot size {figures['size']} != {(args.width, args.height)}")
    if figures["ink"] < MIN_INK:
        failures.append(f"ink {figures['ink']} < {MIN_INK}: the page looks empty")
    if figures["colours"] < MIN_COLOURS:
        failures.append(f"{figures['colours']} colours < {MIN_COLOURS}")
    if is_run and not figures["chart_colours"]["blue"]:
        failures.append("the charts' first line colour is not on screen")
    for f in failures:
        print("FAIL:", f)
    print("ok" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
