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


def full_row_record():
    """A k-anonymized (full-row) privacy record as privacy/protect.py writes it."""
    return {"method": "k_anonymity", "guarantee": "full_row", "k": 10, "records_out": 40, "smallest_group": 10, "parts": {"1-a": 40},
            "importance": ["yearOfRegistration", "ageBroad", "meansOfControlConcatenated", "traffickMonths"],
            "facts": {"yearOfRegistration": ["yearOfRegistration"], "ageBroad": ["ageBroad"], "traffickMonths": ["traffickMonths"],
                      "meansOfControlConcatenated": ["meansOfControlThreats", "meansOfControlOther", "meansOfControlConcatenated"]},
            "hierarchies": {"yearOfRegistration": "year", "ageBroad": "age"}, "finest_levels": {"yearOfRegistration": 0, "ageBroad": 2},
            "finest_level_names": {"yearOfRegistration": "year", "ageBroad": "CTDC bands"},
            "detail": {"ageBroad": {"full": 0.5, "coarser": 0.25, "suppressed": 0.25}, "meansOfControlConcatenated": {"full": 0.0, "coarser": 0.0, "suppressed": 1.0},
                       "traffickMonths": {"full": 1.0, "coarser": 0.0, "suppressed": 0.0}, "yearOfRegistration": {"full": 1.0, "coarser": 0.0, "suppressed": 0.0}}}


def test_full_row_report_names_what_was_lost_with_codebook_labels_and_levels_in_words():
    page = parse(render_report(full_row_record()))
    text = " ".join("".join(page.text).split())
    assert "Age at registration: hidden (*) in 25.0% of rows, coarser than recorded in 25.0%" in text
    assert "Means of control (all recorded, combined) (with its 2 yes/no columns): hidden (*) in 100.0% of rows" in text
    assert "Kept as recorded (at the finest level published) in every row: Year of registration, How long the person was trafficked (months)." in text
    assert "at best CTDC's age bands (0--8, 9--17" in text and "only whether the person was a minor (under 18) or an adult" in text
    assert [img["alt"] for img in page.images] == ["What was lost, column by column (share of published rows)"]
    assert "The more green, the less was lost." in text  # the information-loss figure is explained


def test_captions_stand_above_their_charts_and_a_column_without_information_gets_no_chart(metrics):
    record = synthetic_record(metrics)
    record["metrics"] = {**metrics, "marginals": {**metrics["marginals"], "ageBroad": {"values": ["*"], "real": None, "release": [1.0]}}}
    html = render_report(record).decode()
    figure = html[html.index('<figure id="marginals">'):]
    assert figure.index("<figcaption>") < figure.index("<img")
    assert "Not shown, as they carry no information in this release: Age at registration." in html


def test_concatenated_values_are_written_out_in_the_chart_labels(monkeypatch, metrics):
    from privacy import report

    seen = []
    monkeypatch.setattr(report, "_figure_png", lambda fig: seen.extend(t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.get_yticklabels()) or "")
    record = synthetic_record(metrics)
    record["metrics"] = {**metrics, "marginals": {"meansOfControlConcatenated": {
        "values": ["meansOfControlThreats;meansOfControlOther", "(unknown)"], "real": None, "release": [0.6, 0.4]}}}
    render_report(record)
    assert any("Threats of harm to the person or to others" in t and "Another means of control" in t for t in seen)
    assert not any("meansOfControl" in t for t in seen)


def test_a_synthetic_release_of_poor_use_says_so_first_from_its_published_numbers(metrics):
    good = parse(render_report(synthetic_record(metrics)))
    assert "totals and broad patterns are reliable" in " ".join(good.text).lower()
    record = {**synthetic_record(metrics), "records_synthesized": 100, "records_removed_below_resolution": 40,
              "binning": {"ageBroad": {"hierarchy": "age", "level": 4, "level_name": "*"}}}
    html = render_report(record).decode()
    first = html[html.index("</h1>"):html.index("<h2>")]
    assert "poor use for analysis" in first and "Age at registration had to be hidden entirely" in first
    assert "40.0% of the synthetic records were removed" in first and "broad patterns are reliable" not in html


def test_the_preview_comparison_shows_real_values_at_the_finest_level_next_to_the_release():
    from privacy.preview_compare import before_generalization

    view = pd.DataFrame({"ageBroad": [7, 7, 27, 28, 45, None], "yearOfRegistration": [2020] * 6})
    table = pd.DataFrame({"ageBroad": ["0--8", "0--8", "*", "*", "39--47", ""], "yearOfRegistration": ["2020"] * 6})
    marginals = before_generalization(view, table, full_row_record())
    age = dict(zip(marginals["ageBroad"]["values"], zip(marginals["ageBroad"]["real"], marginals["ageBroad"]["release"])))
    assert age["27--29"] == (0.33, 0.0) and age["*"] == (0.0, 0.33) and age["0--8"] == (0.33, 0.33)
    assert list(marginals) == ["yearOfRegistration", "ageBroad"]
    text = " ".join("".join(parse(render_report({**full_row_record(), "metrics": {"marginals": marginals}})).text).split())
    assert "Real data before generalization and the release" in text and "This is a local preview" in text


def vp_entry():
    """privacy.json's `victim_perpetrator` of a k-anonymized release (privacy.vp_release.describe_vp)."""
    detail = {"ageBroad": {"of": "victim", "full": 0.5, "coarser": 0.25, "suppressed": 0.25},
              "perpetratorRole": {"of": "perpetrator", "full": 1.0, "coarser": 0.0, "suppressed": 0.0},
              "perpetratorAge": {"of": "perpetrator", "full": 0.4, "coarser": 0.0, "suppressed": 0.6}}
    return {"file": "victim_perpetrator.csv", "records_out": 24, "smallest_group": 6, "columns": ["ageBroad", "perpetratorRole", "perpetratorAge"],
            "detail": dict(sorted(detail.items()))}  # as read back from privacy.json: keys sorted


def _section(page: Page) -> str:
    return " ".join(" ".join(page.text).split())  # table cells apart


def test_a_k_anonymized_release_with_perpetrators_has_their_section_with_columns_detail_and_numbers():
    data = render_report({**full_row_record(), "victim_perpetrator": vp_entry()})
    page = parse(data)
    text = _section(page)
    assert data.count(b'<section id="victim-perpetrator">') == 1
    assert page.headings.count("The victim-perpetrator table") == 1
    assert {"Its columns and their detail", "Its privacy numbers"} <= set(page.headings)
    assert "one row per perpetrator of a victim (24 rows)" in text and "How it is counted: per victim." in text
    assert "is shared by at least k = 10 victims" in text
    # columns in the table's order (not privacy.json's sorted keys), each with its detail
    age = text.index("Age at registration ageBroad victim As recorded in 50.0%, coarser in 25.0%, hidden (*) in 25.0% of its rows")
    role = text.index("perpetratorRole perpetrator As recorded in 100.0% of its rows")
    assert age < role < text.index("perpetratorAge perpetrator As recorded in 40.0%, hidden (*) in 60.0% of its rows")
    assert "k (counted per victim, across both tables) 10 smallest group of identical rows 6" in text
    assert "The victim-perpetrator table" not in _section(parse(render_report(full_row_record())))  # no table, no section


def test_a_synthetic_release_with_perpetrators_has_their_section_with_its_epsilon_counted_per_victim(metrics):
    vp = {"file": "victim_perpetrator.csv", "method": "synthetic", "epsilon": 1.0, "delta": 1e-5, "epsilon_per_row": 0.5, "max_perpetrators_per_victim": 2,
          "reporting_length": 2, "resolution": 10, "records_out": 30, "link_columns": ["gender", "citizenshipRegion"],
          "perpetrator_columns": ["perpetratorRole", "perpetratorAge"], "binning": {"perpetratorAge": {"hierarchy": "perpetrator_age", "level": 0, "level_name": "value"},
          "citizenshipRegion": {"hierarchy": "region", "level": 0, "level_name": "UN M49 region"}}}
    record = {**synthetic_record(metrics), "epsilon_parts": {"victim_perpetrator": 1.0, "victims": 3.0}, "victim_perpetrator": vp}
    page = parse(render_report(record))
    text = _section(page)
    assert "The victim-perpetrator table" in page.headings
    assert "epsilon = 1.0 of the release's 4.0" in text and "at most 2 perpetrators of each victim were read and each row was given epsilon 0.5" in text
    assert "UN M49 region of the victim's citizenship citizenshipRegion victim The UN region" in text
    assert "perpetratorRole perpetrator as drawn (not grouped)" in text
    assert "epsilon of each table: victims / victim-perpetrator 3.0 / 1.0" in text
    assert "perpetrators read per victim, at most 2" in text and "epsilon per row 0.5" in text
