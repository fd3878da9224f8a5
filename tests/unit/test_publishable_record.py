"""What of the metrics leaves the partner: only what the published table itself shows. The real
cases must not move a byte of privacy.json (a synthetic release's epsilon does not cover them; a
k-anonymized one withheld some of them)."""

from __future__ import annotations

import pandas as pd

from connector.pipeline import publishable_record
from privacy.metrics import compare, publishable_metrics

RELEASE = pd.DataFrame({"gender": ["Male"] * 30 + ["Female"] * 20 + ["Other"] * 12, "isForcedLabour": ["1", "0"] * 31})


def _real(female: int, male: int, other: int) -> pd.DataFrame:
    n = female + male + other
    return pd.DataFrame({"gender": ["Female"] * female + ["Male"] * male + ["Other"] * other, "isForcedLabour": (["0", "1"] * n)[:n]})


def _public(real: pd.DataFrame) -> dict:
    return publishable_metrics(compare(real, RELEASE, reporting_length=2, quasi_identifiers=["gender"], threshold=10), RELEASE)


def test_the_published_marginals_are_ordered_and_pooled_by_the_release_not_the_real_cases():
    # real: Female first, and Other below the threshold (compare pools it as "(other values)")
    marginals = _public(_real(female=40, male=15, other=3))["marginals"]
    assert marginals["gender"]["values"] == ["Male", "Female", "Other"]
    assert marginals["gender"]["release"] == [round(30 / 62, 4), round(20 / 62, 4), round(12 / 62, 4)]
    assert marginals["gender"]["real"] is None


def test_the_published_metrics_do_not_depend_on_the_real_cases():
    assert _public(_real(female=40, male=15, other=3)) == _public(_real(female=5, male=50, other=30))


def test_a_synthetic_record_loses_its_real_count_and_keeps_release_only_metrics():
    real = _real(female=40, male=15, other=3)
    metrics = compare(real, RELEASE, reporting_length=2, quasi_identifiers=["gender"], threshold=10)
    public = publishable_record({"method": "synthetic", "records_in": len(real), "metrics": metrics}, RELEASE)
    assert "records_in" not in public and public["metrics"] == _public(real)
