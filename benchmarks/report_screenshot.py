"""Render a run's HTML report with headless Chromium and check the screenshot is not blank.

    python benchmarks/report_screenshot.py RUN_DIR [--out benchmarks/results/report_screenshot.png] [--height 4000]

Writes RUN_DIR/report/index.html first (``smose explain``; ``--no-explain`` uses the existing report), installs
Debian's ``chromium`` with apt-get when it is missing and we are root, takes a 1280-pixel-wide screenshot and checks
that it shows a page: enough pixel variance and several distinct colours (a blank or error page has neither). Exits
non-zero when the check fails or Chromium cannot run. The full-size screenshot is shrunk to keep the PNG small.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

MIN_STD = 20.0  # grey-level standard deviation; a blank page is ~0, a page of text and figures is 40+
MIN_COLOURS = 64  # distinct colours after reducing to 5 bits per channel; the report's figures give hundreds
MAX_BYTES = 1_000_000


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium() -> str:
    path = find_chromium()
    if path:
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit("report_screenshot: chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
    path = find_chromium()
    if not path:
        sys.exit("report_screenshot: apt-get installed chromium but no chromium binary is on PATH")
    return path


def screenshot(chromium: str, html: Path, out: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--hide-scrollbars", f"--screenshot={out}", f"--window-size={width},{height}", html.resolve().as_uri(),
        ]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)
    if result.returncode != 0 or not out.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"report_screenshot: chromium failed (exit {result.returncode}): {last}")


def check_not_blank(path: Path) -> dict:
    image = np.asarray(Image.open(path).convert("RGB"))
    grey = image.mean(axis=2)
    colours = np.unique((image >> 3).reshape(-1, 3), axis=0).shape[0]
    return {"width": image.shape[1], "height": image.shape[0], "std": float(grey.std()), "colours": int(colours),
            "ok": bool(grey.std() >= MIN_STD and colours >= MIN_COLOURS)}


def shrink(path: Path, width: int) -> None:
    """Halve the screenshot until it is under MAX_BYTES (it stays legible at 640 px width)."""
    image = Image.open(path).convert("RGB")
    while True:
        image.save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES or image.width <= width // 4:
            return
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "report_screenshot.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--no-explain", action="store_true", help="use the existing report, do not (re)write it")
    args = parser.parse_args()

    html = args.run_dir / "report" / "index.html"
    if not args.no_explain:
        from smose.cli import main as smose_main

        if smose_main(["explain", str(args.run_dir)]) != 0:
            return 1
    elif not html.is_file():
        sys.exit(f"report_screenshot: {html} does not exist; run `smose explain {args.run_dir}` or drop --no-explain")
    chromium = ensure_chromium()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    screenshot(chromium, html, args.out, args.width, args.height)
    check = check_not_blank(args.out)
    shrink(args.out, args.width)
    print(f"screenshot {args.out} ({args.out.stat().st_size:,} bytes): {check['width']}x{check['height']} px, "
          f"grey std {check['std']:.1f} (min {MIN_STD}), {check['colours']} colours (min {MIN_COLOURS}): "
          f"{'not blank' if check['ok'] else 'BLANK'}")
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
