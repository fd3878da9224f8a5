"""report.html renders from a privacy record: plain words first, the plots inline, deterministic."""

import base64
from html.parser import HTMLParser

import pandas as pd
import pytest

from privacy.metrics import compare
from privacy.report import render_report


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.headings, self.text, self._tag = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag in ("h1", "h2", "h3") and data.strip():
            self.headings.append(data.strip())
        self.text.append(data)


@pytest.fixture(scope="module")
def metrics():
    real = pd.DataFrame({"gender": ["Female"] * 30 + ["Male"] * 20, "isForcedLabour": ["1", "0"] * 25})
    release = pd.DataFrame({"gender": ["Female"] * 26 + ["Male"] * 24, "isForcedLabour": ["1", "0", "0"] * 16 + ["1", "1"]})
    return compare(real, release, reporting_length=2, quasi_identifiers=["gender"], threshold=10)


def synthetic_record(metrics):
    return {"method": "synthetic", "epsilon": 4.0, "delta": 1e-5, "resolution": 10, "records_in": 50, "records_out": 50,
            "reporting_length": 2, "budget": {"total": 12.0, "spent_before": 4.0, "left_after": 4.0},
            "binning": {"gender": {"level": 0, "level_name": "value"}}, "columns_dropped": ["prs_FirstName"], "metrics": metrics}


def parse(data: bytes) -> Page:
    page = Page()
    page.feed(data.decode("utf-8"))
    return page


def test_synthetic_report_explains_in_plain_words_then_numbers_with_three_plots(metrics):
    page = parse(render_report(synthetic_record(metrics), partner="ngo-a"))
    assert page.headings[:4] == ["Privacy and utility report - ngo-a", "What was protected, and how", "What was lost", "The numbers"]
    text = "".join(page.text)
    assert "no real case" in text and "epsilon = 4.0" in text
    assert [img["alt"] for img in page.images] == [
        "Real data and release side by side (share of records per value)",
        "How well counts of trait combinations are kept",
        "Group sizes on identifying traits",
    ]
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_k_anonymity_report_names_k_and_what_was_left_out(metrics):
    record = {"method": "k_anonymity", "k": 10, "records_in": 60, "records_out": 50, "records_suppressed": 10,
              "information_loss": {"loss": 0.25}, "level_names": {"gender": "value"}, "metrics": metrics}
    text = "".join(parse(render_report(record)).text)
    assert "k = 10" in text and "10 of 60 cases were left out" in text


def test_report_is_deterministic_for_the_same_record(metrics):
    assert render_report(synthetic_record(metrics)) == render_report(synthetic_record(metrics))


def test_report_escapes_values(metrics):
    record = synthetic_record(metrics)
    record["binning"] = {"gender": {"level": 0, "level_name": "<script>x</script>"}}
    assert b"<script>" not in render_report(record)
