"""Open a page in headless Chromium with a small probe script injected into a test-only copy;
the probe writes what the browser saw (images decoded, script errors, network fetches) into
the DOM, and ``--dump-dom`` hands that back."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]

# Installed first in <head>, so it sees every later error (capture: resource errors too).
PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target.tagName ? e.target.tagName + ' ' + (e.target.src || '') : '';
  window.__errors.push(String(e.message || t || 'error'));
}, true);
window.addEventListener('unhandledrejection', function (e) {
  window.__errors.push('unhandled rejection: ' + String(e.reason));
});
</script>"""

PROBE_BODY = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images).map(function (im) {
    return {w: im.naturalWidth, h: im.naturalHeight, complete: im.complete};
  });
  var fetched = performance.getEntriesByType('resource').map(function (r) { return r.name; });
  var out = document.createElement('pre');
  out.id = 'browser-check';
  out.textContent = JSON.stringify({images: imgs, errors: window.__errors, fetched: fetched,
                                    title: document.title});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian package `chromium`)")


def browser_check(page: Path, tmp_path: Path) -> dict:
    """Open a probed copy of ``page`` in headless Chromium; return what the probe recorded."""
    doc = page.read_text(encoding="utf-8")
    assert doc.count("<head>") == 1 and doc.count("</body>") == 1
    probed = doc.replace("<head>", "<head>" + PROBE_HEAD).replace("</body>", PROBE_BODY + "</body>")
    copy = tmp_path / "probed.html"
    copy.write_text(probed, encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", copy.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"probe did not report; stderr: {proc.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


def assert_clean(result: dict, min_images: int) -> None:
    assert result["errors"] == []
    assert len(result["images"]) >= min_images
    for im in result["images"]:
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, im
    assert [u for u in result["fetched"] if not u.startswith(("data:", "file:"))] == []


