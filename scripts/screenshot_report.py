"""Screenshot a report.html in a headless browser (Debian's chromium), to see what a reader sees.

    python scripts/screenshot_report.py runs/demo/report/report.html --out /tmp/report.png
    python scripts/screenshot_report.py REPORT.html --out PNG --height 9000   # most of the page

Exit 0 with the PNG written; 2 (one line) when the report or chromium is missing or chromium
writes no picture. Not part of CI: tests/report/test_screenshot.py runs it where chromium is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium(explicit: str | None = None) -> str | None:
    """The browser to run: `explicit`, $CHROMIUM, else the first of BROWSERS on PATH."""
    for name in (explicit, os.environ.get("CHROMIUM"), *BROWSERS):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(
    report: Path, png: Path, chromium: str, width: int = 1280, height: int = 2000
) -> Path:
    """Render `report` at width x height CSS pixels into `png`; raises RuntimeError on failure."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="medmerge-chromium-") as profile:
        command = [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png}",
            report.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if not png.is_file() or png.stat().st_size == 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{chromium} wrote no screenshot (exit {done.returncode}): {tail[0]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--chromium", help="the browser binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report}: no such report; pass a report.html", file=sys.stderr)
        return 2
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(
            "error: no chromium found (tried --chromium, $CHROMIUM, "
            f"{', '.join(BROWSERS)}); install it: apt-get install chromium",
            file=sys.stderr,
        )
        return 2
    try:
        screenshot(args.report, args.out, chromium, args.width, args.height)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {args.report}: {exc}", file=sys.stderr)
        return 2
    print(f"screenshot: {args.out} ({args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
