"""central_api destination: retries, back-off, idempotency and refusals (HTTP mocked with `responses`)."""

from __future__ import annotations

import pytest
import responses
from pydantic import ValidationError

from connector.config import CentralApiDestinationConfig, JobConfig
from connector.destinations.base import PublishError
from connector.destinations.central_api import CentralApiDestination
from connector.secrets import Secret
from tests.unit.test_central_fixtures import make_bundle

URL = "https://central.example.org"
TOKEN = "0123456789abcdef.s3cr3t-token-value-xxxxxxxx"


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("CENTRAL_TOKEN", TOKEN)
    return Secret(env="CENTRAL_TOKEN")


def dest(token, **kwargs) -> tuple[CentralApiDestination, list[float]]:
    sleeps: list[float] = []
    return CentralApiDestination(URL, token, partner="ngo-a", sleep=sleeps.append, **kwargs), sleeps


@responses.activate
def test_upload_sends_every_file_manifest_last_with_the_release_id_as_idempotency_key(token):
    bundle = make_bundle("ngo-a")
    responses.get(f"{URL}/releases/{bundle.release_id}", status=404)
    post = responses.post(f"{URL}/releases", status=201, json={"release_id": bundle.release_id})
    destination, _ = dest(token)
    result = destination.publish(bundle)
    assert result.published and result.location == f"{URL}/releases/{bundle.release_id}"
    request = post.calls[0].request
    assert request.headers["Idempotency-Key"] == bundle.release_id and request.headers["Authorization"] == f"Bearer {TOKEN}"
    body = request.body
    positions = [body.index(f'filename="{name}"'.encode()) for name in bundle.files]
    assert positions.index(max(positions)) == list(bundle.files).index("manifest.json")


@responses.activate
def test_a_release_already_there_is_not_uploaded_again(token):
    bundle = make_bundle("ngo-a")
    responses.get(f"{URL}/releases/{bundle.release_id}", status=200, json={})
    destination, _ = dest(token)
    assert destination.publish(bundle).published is False
    assert [c.request.method for c in responses.calls] == ["GET"]


@responses.activate
def test_retries_honour_retry_after_then_succeed(token):
    bundle = make_bundle("ngo-a")
    responses.get(f"{URL}/releases/{bundle.release_id}", status=404)
    responses.post(f"{URL}/releases", status=503, headers={"Retry-After": "7"})
    responses.post(f"{URL}/releases", status=429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    responses.post(f"{URL}/releases", status=201, json={})
    destination, sleeps = dest(token)
    assert destination.publish(bundle).published
    assert sleeps == [7.0, 0.0] and destination.attempts == 4


@responses.activate
def test_connection_errors_back_off_exponentially_with_jitter_and_give_up(token):
    import requests

    bundle = make_bundle("ngo-a")
    responses.get(f"{URL}/releases/{bundle.release_id}", body=requests.ConnectionError("reset"))
    destination, sleeps = dest(token, retries=4, backoff=2.0)
    with pytest.raises(PublishError) as caught:
        destination.publish(bundle)
    assert "after 5 attempts" in str(caught.value) and TOKEN not in str(caught.value)
    assert len(sleeps) == 4 and all(0 <= s <= 2.0 * 2**i for i, s in enumerate(sleeps))


def test_jitter_spreads_delays_within_the_exponential_window(token):
    destination, _ = dest(token, backoff=1.0)
    delays = [destination.delay(4, None) for _ in range(200)]
    assert max(delays) <= 8.0 and min(delays) >= 0 and len({round(d, 3) for d in delays}) > 50


@responses.activate
def test_a_refusal_is_reported_with_the_receivers_reasons_and_not_retried(token):
    bundle = make_bundle("ngo-a")
    responses.get(f"{URL}/releases/{bundle.release_id}", status=404)
    post = responses.post(f"{URL}/releases", status=422, json={"detail": {"error": "the privacy gate refused the release",
                                                                           "reasons": ["column prs_FirstName: role direct_identifier never leaves the partner"],
                                                                           "hint": "run preview"}})
    destination, sleeps = dest(token)
    with pytest.raises(PublishError) as caught:
        destination.publish(bundle)
    assert "prs_FirstName" in str(caught.value) and "HTTP 422" in str(caught.value)
    assert len(post.calls) == 1 and sleeps == []
    assert caught.value.sent  # the receiver read the files: a synthetic release's budget stays spent


@responses.activate
def test_a_failure_before_the_upload_says_nothing_was_sent_and_one_during_it_says_it_may_have_been(token):
    import requests

    bundle = make_bundle("ngo-a")
    responses.get(f"{URL}/releases/{bundle.release_id}", body=requests.ConnectionError("reset"))
    with pytest.raises(PublishError) as checking:
        dest(token, retries=1)[0].publish(bundle)
    assert checking.value.sent is False
    responses.replace(responses.GET, f"{URL}/releases/{bundle.release_id}", status=404)
    responses.post(f"{URL}/releases", body=requests.Timeout("read timed out"))  # after the body went out
    with pytest.raises(PublishError) as uploading:
        dest(token, retries=1)[0].publish(bundle)
    assert uploading.value.sent is True


def test_a_missing_token_is_named_by_its_reference_only(monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    destination, _ = dest(Secret(env="NO_SUCH_TOKEN"))
    with pytest.raises(PublishError, match="NO_SUCH_TOKEN"):
        destination.publish(make_bundle("ngo-a"))


@responses.activate
def test_check_reports_a_token_of_another_partner(token):
    responses.get(f"{URL}/whoami", json={"role": "partner", "partner": "ngo-b"})
    destination, _ = dest(token)
    problems = destination.check()
    assert len(problems) == 1 and "ngo-b" in problems[0].message and TOKEN not in str(problems[0])


def test_config_requires_https_except_on_loopback():
    with pytest.raises(ValidationError, match="https"):
        CentralApiDestinationConfig(type="central_api", url="http://central.example.org", token=Secret(env="X"))
    assert CentralApiDestinationConfig(type="central_api", url="http://127.0.0.1:8080/", token=Secret(env="X")).url == "http://127.0.0.1:8080"
    job = JobConfig.model_validate({"partner": {"id": "ngo-a"}, "sources": [{"id": "s", "type": "fake", "mapping": "m"}],
                                    "destination": {"type": "central_api", "url": URL, "token": {"env": "X"}, "retries": 2}})
    assert job.destination.retries == 2 and repr(job.destination.token) == "Secret(env:X)"
    assert JobConfig.model_validate({"partner": {"id": "ngo-a"}, "sources": [{"id": "s", "type": "fake", "mapping": "m"}]}).destination.type == "folder"
