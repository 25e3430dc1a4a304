"""A headless browser renders the fixture report: the PNG exists, is not blank, and shows the
caveat's note box at the top (its background colour in the first 300 pixel rows)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from medmerge.report.build import ReportConfig, build_report

SCRIPT = Path(__file__).parents[2] / "scripts" / "screenshot_report.py"
NOTE_BACKGROUND = (0xFF, 0xF4, 0xE5)  # .note in render.py's CSS


def _script():
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_report_renders_in_a_headless_browser(fixture_run, tmp_path):
    script = _script()
    if script.find_chromium() is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); the screenshot needs one")
    assert build_report(ReportConfig(run_dir=str(fixture_run))) == 0
    png = tmp_path / "report.png"
    assert script.main([str(fixture_run / "report" / "report.html"), "--out", str(png)]) == 0
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, tables and a plot, not one flat colour
    white = sum(n for n, c in colours if c == (255, 255, 255))
    assert white < 0.95 * image.size[0] * image.size[1]
    top = image.crop((0, 0, 1280, 300)).getcolors(maxcolors=1 << 20)
    assert any(c == NOTE_BACKGROUND and n > 1000 for n, c in top)


def test_the_script_says_in_one_line_when_the_report_is_missing(tmp_path, capsys):
    assert _script().main([str(tmp_path / "none.html"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such report" in err
