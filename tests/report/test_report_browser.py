"""The report in a real browser (headless Chromium); skipped when Chromium is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from longctx.report.html import write_report

from .browser_probe import assert_clean, browser_check
from .report_fixtures import BASE_LOSS, make_run

pytestmark = pytest.mark.browser


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", with_pngs=True, loss_values=BASE_LOSS)
    out = tmp_path / "report.html"
    images = write_report([run], out, title="browser check")
    result = browser_check(out, tmp_path)
    assert result["title"] == "browser check"
    assert len(result["images"]) == images
    assert_clean(result, 4)


def test_probe_catches_broken_images_and_script_errors(tmp_path: Path) -> None:
    """The check itself can fail: a broken image and a throwing script are reported."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img src="data:image/png;base64,AAAA">'
        "<script>undefinedFunction();</script></body></html>"
    )
    result = browser_check(bad, tmp_path)
    assert result["images"][0]["w"] == 0
    assert any("undefinedFunction" in e for e in result["errors"])
