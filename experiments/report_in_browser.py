"""Open a `graphrec report` file in headless Chromium: list what went wrong on the page
(console errors, failed loads, images that did not decode, any request off the file itself),
and save a screenshot.

Needs Playwright's Python package and a Chromium (``pip install -e ".[browser]"``; on Debian
``apt-get install chromium``):

    graphrec --workdir W report --output W/report.html
    python experiments/report_in_browser.py W/report.html \
        --screenshot experiments/results/report/report.png [--top 1500] [--chromium PATH]

Prints one JSON document {"errors": [...], "requests": [...], "images": N, "decoded": N,
"title"}; exits 1 when there are errors, off-file requests or undecoded images.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def check_page(path: Path, chromium: str, screenshot: Path | None = None,
               width: int = 1100, height: int = 900, full_page: bool = True) -> dict:
    """Load ``path`` (file://) in headless Chromium and report what went wrong; the
    screenshot is of the whole page, or of the first ``height`` pixels."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    page_url = path.resolve().as_uri()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=chromium, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": width, "height": height})
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url[:80]}"))
        page.on("request", lambda r: None if r.url == page_url or r.url.startswith("data:")
                else requests.append(r.url[:120]))
        page.goto(page_url, wait_until="load")
        images = page.evaluate("[...document.images].map(i => i.complete && i.naturalWidth)")
        title = page.title()
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=full_page)
        browser.close()
    return {"title": title, "images": len(images), "decoded": sum(1 for w in images if w),
            "errors": errors, "requests": requests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--screenshot", type=Path)
    ap.add_argument("--chromium", default=None)
    ap.add_argument("--top", type=int, default=0,
                    help="Screenshot only the first TOP pixels (default: the whole page).")
    args = ap.parse_args()
    chromium = args.chromium or find_chromium()
    if chromium is None:
        sys.exit("no Chromium found: apt-get install chromium, or pass --chromium PATH")
    out = check_page(args.report, chromium, args.screenshot, height=args.top or 900,
                     full_page=not args.top)
    print(json.dumps(out, indent=1))
    bad = out["errors"] or out["requests"] or out["decoded"] != out["images"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
