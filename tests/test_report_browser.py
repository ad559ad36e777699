"""The evaluation report in a real browser: headless Chromium loads `graphrec report`'s file
with no console or page errors, no request off the file, and every plot decoded.

Slow (a browser start); skipped without Playwright's Python package or a Chromium
(``pip install -e ".[browser]"``, ``apt-get install chromium``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ok, run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_report_renders_in_chromium(trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("playwright.sync_api")
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                     if shutil.which(n)), None)
    if chromium is None:
        pytest.skip("no Chromium on this machine")
    report = tmp_path / "report.html"
    ok(run(trained, "report", "--output", str(report)))
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "report_in_browser.py"), str(report),
         "--screenshot", str(shot), "--chromium", chromium],
        capture_output=True, text=True, timeout=120)
    out = json.loads(done.stdout)
    assert done.returncode == 0, (out, done.stderr[-2000:])
    assert out["errors"] == [] and out["requests"] == []
    assert out["images"] == out["decoded"] == 5
    assert out["title"].startswith("graphrec report")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
