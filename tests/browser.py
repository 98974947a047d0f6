"""Look at a rendered page as a person would: headless Chromium with every network address refused.

Debian's `chromium` package; .ci/run installs it. Tests that need it skip, naming it, where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm: the page's Vega comes from its registry")

# Every host name resolves to nothing: a page that needs a CDN draws nothing, as on a cluster node.
OFFLINE_BROWSER = [
    "--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=20000",
]


def rendered_dom(page: Path) -> str:
    """The page's DOM once its scripts have run."""
    done = subprocess.run([CHROMIUM, *OFFLINE_BROWSER, "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def charts_drawn(page: Path) -> tuple[int, int]:
    """(charts Vega drew, charts the page asks for): Vega marks each drawing canvas or svg "marks"."""
    asked = len(re.findall(r"vegaEmbed\('#", page.read_text(encoding="utf-8")))
    drawn = len(re.findall(r'<(?:canvas|svg)\b[^>]*class="marks"', rendered_dom(page)))
    return drawn, asked



# Written into a copy of the page: once everything is drawn, the bottom edge (in CSS pixels from the
# top of the page) of the first element each selector finds, as a data attribute of <body>.
LAYOUT_PROBE = """<script>window.addEventListener("load", () => setTimeout(() => {{
  const bottoms = {selectors}.map(s => {{ const e = document.querySelector(s);
    return e ? Math.round(e.getBoundingClientRect().bottom + window.scrollY) : -1; }});
  document.body.setAttribute("data-bottoms", bottoms.join(","));
}}, 500));</script>"""


def bottoms_on_screen(page: Path, selectors: list[str], width: int = 1440, height: int = 900) -> list[int]:
    """Where (pixels from the top) the first element of each selector ends when the page is opened in
    a width x height window: an element ending above `height` is on the first screen."""
    import json

    probe = page.with_name(f".probe-{page.name}")
    head, _, tail = page.read_text(encoding="utf-8").rpartition("</body>")  # the inlined scripts hold "</body>" too
    probe.write_text(head + LAYOUT_PROBE.format(selectors=json.dumps(selectors)) + "</body>" + tail, encoding="utf-8")
    done = subprocess.run([CHROMIUM, *OFFLINE_BROWSER, f"--window-size={width},{height}", "--dump-dom",
                           probe.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    probe.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-bottoms="([-\d,]*)"', done.stdout)
    assert found, "the layout probe did not run"
    return [int(x) for x in found.group(1).split(",")]
