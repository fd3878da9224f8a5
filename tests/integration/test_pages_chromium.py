"""The pages people read, rendered by a real browser: a k-anonymized and a synthetic report.html, the
central team's page and its login page. Headless Chromium (Debian's `chromium`, which .ci/run
installs) screenshots each at 1,280 px and reports the document's scroll width, which must fit.

Set HTCDS_SCREENSHOTS=DIR to keep the screenshots for a look.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from privacy.metrics import compare
from privacy.report import render_report
from tests.unit.test_central_app import Central
from tests.unit.test_central_fixtures import make_bundle, tampered

WIDTH = 1280
# Runs after load (images decoded): writes the layout's width into the DOM that --dump-dom prints.
PROBE = ("<script>addEventListener('load',()=>{const p=document.createElement('pre');p.id='probe';"
         "p.textContent='scrollWidth='+document.documentElement.scrollWidth;document.body.appendChild(p)})</script>")


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:  # not a skip: CI installs it (.ci/run), and a page nobody looked at is not tested
        pytest.fail("headless Chromium is needed: apt-get install -y chromium (.ci/run installs it when missing)")
    return found


def run_chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WIDTH},2000", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def look(tmp_path: Path, name: str, html: str) -> tuple[str, int]:
    """Screenshot the page (kept under HTCDS_SCREENSHOTS) and return its text and scroll width."""
    page = tmp_path / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / f"{name}.png"
    run_chromium(tmp_path, f"--screenshot={shot}", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("HTCDS_SCREENSHOTS"):
        Path(os.environ["HTCDS_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["HTCDS_SCREENSHOTS"]) / shot.name)
    probed = tmp_path / f"{name}-probe.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri())
    width = re.search(r"scrollWidth=(\d+)", dom)
    assert width, dom[-500:]
    text = " ".join(re.sub(r"<[^>]+>", "", dom).split())
    return text, int(width.group(1))


def test_reports_and_the_central_page_read_well_in_a_browser_at_1280_px(tmp_path):
    import pandas as pd

    # a k-anonymized release as a partner publishes it
    bundle = make_bundle("ngo-a")
    text, width = look(tmp_path, "report-k-anonymized", bundle.files["report.html"].decode())
    assert width <= WIDTH
    assert "What was lost, column by column" in text and "The more green, the less was lost." in text
    assert "Age at registration" in text and "ageBroad:" not in text

    # a synthetic release whose utility is poor: said in the first paragraph
    real = pd.DataFrame({"gender": ["Female"] * 30 + ["Male"] * 20, "isForcedLabour": ["1", "0"] * 25})
    release = pd.DataFrame({"gender": ["Female"] * 26 + ["Male"] * 24, "isForcedLabour": ["1", "0", "0"] * 16 + ["1", "1"]})
    from privacy.metrics import publishable_metrics

    metrics = publishable_metrics(compare(real, release, reporting_length=2, quasi_identifiers=["gender"], threshold=10), release)
    synthetic = {"method": "synthetic", "epsilon": 1.0, "delta": 1e-5, "resolution": 10, "records_out": 50, "reporting_length": 2,
                 "records_synthesized": 80, "records_removed_below_resolution": 30, "budget": {"total": 12.0, "spent_before": 1.0, "left_after": 10.0},
                 "binning": {"gender": {"hierarchy": "gender", "level": 0, "level_name": "value"}, "ageBroad": {"hierarchy": "age", "level": 4, "level_name": "*"}},
                 "metrics": metrics}
    text, width = look(tmp_path, "report-synthetic", render_report(synthetic, partner="ngo-a").decode())
    assert width <= WIDTH
    assert text.index("Poor utility.") < text.index("What was protected, and how")
    assert "Age at registration had to be hidden entirely" in text and "broad patterns are reliable" not in text

    # the central page, with two partners and one refused upload; and its login page
    central = Central(tmp_path, f"sqlite:///{tmp_path / 'central.sqlite'}")
    try:
        central.upload(bundle)
        central.upload(make_bundle("ngo-b"), who="ngo-b")
        central.upload(tampered(make_bundle("ngo-b"), "data.csv", b"x\n"), who="ngo-b")
        html = central.client.get("/", headers=central.auth("admin")).text
        login = central.client.get("/", headers={"Accept": "text/html"})
    finally:
        central.client.close()
        central.app.state.engine.dispose()
    text, width = look(tmp_path, "central-page", html)
    assert width <= WIDTH
    assert "No column was coarsened for the merge" in text and "How much detail each column keeps" in text
    assert "Age at registration" in text and "less than an hour ago" in text and "refused uploads" in text
    text, width = look(tmp_path, "central-login", login.text)
    assert login.status_code == 401 and width <= WIDTH
    assert "the central team's admin token as the password" in text
