"""S3 destination against moto's standalone S3 server over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib

import boto3
import pytest

from connector.config import load_config
from connector.destinations import create_destination
from connector.destinations.base import PublishError
from connector.destinations.s3 import MB, S3Destination
from connector.release import _sealed
from connector.secrets import Secret
from tests.unit.test_central_fixtures import make_bundle

import moto.server as moto_server  # noqa: E402  (a dev dependency: missing is a failure, not a skip)


@pytest.fixture(scope="module")
def endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(endpoint, monkeypatch, request):
    monkeypatch.setenv("TEST_S3_ACCESS", "testing")
    monkeypatch.setenv("TEST_S3_SECRET", "testing")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    name = "htcds-" + request.node.name.replace("_", "-")[:40].lower().strip("-")
    admin().create_bucket(Bucket=name)
    return name


def admin(endpoint_url: str | None = None):
    return boto3.client("s3", endpoint_url=endpoint_url or _ENDPOINT[0], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


_ENDPOINT: list[str] = []


@pytest.fixture(autouse=True)
def _remember(endpoint):
    _ENDPOINT[:] = [endpoint]


def destination(bucket: str, **kwargs) -> S3Destination:
    return S3Destination(bucket, prefix="central/releases", endpoint_url=_ENDPOINT[0], region="us-east-1",
                         access_key=Secret(env="TEST_S3_ACCESS"), secret_key=Secret(env="TEST_S3_SECRET"), **kwargs)


def record_writes(dest: S3Destination) -> list[str]:
    """Keys in the order their writes started (single PUTs and multipart uploads)."""
    seen: list[str] = []

    def hook(params, **_kwargs):
        seen.append(params["Key"])

    dest.client.meta.events.register("before-parameter-build.s3.PutObject", hook)
    dest.client.meta.events.register("before-parameter-build.s3.CreateMultipartUpload", hook)
    return seen


def test_release_lands_under_partner_and_release_id_with_manifest_last(bucket):
    bundle = make_bundle("ngo-a")
    dest = destination(bucket)
    writes = record_writes(dest)
    result = dest.publish(bundle)
    prefix = f"central/releases/ngo-a/{bundle.release_id}/"
    assert result.published and result.location == f"s3://{bucket}/{prefix}"
    assert writes[-1] == prefix + "manifest.json" and sorted(writes) == sorted(prefix + n for n in bundle.files)
    for name, content in bundle.files.items():
        body = admin().get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(content).digest()


def test_publishing_the_same_release_again_writes_nothing(bucket):
    bundle = make_bundle("ngo-a")
    destination(bucket).publish(bundle)
    dest = destination(bucket)
    writes = record_writes(dest)
    again = dest.publish(bundle)
    assert not again.published and writes == []


def test_large_files_go_up_in_parts_and_arrive_whole(bucket):
    small = make_bundle("ngo-a")
    big = b"x" * (6 * MB + 123)
    # a large file added to a real bundle (re-sealed here, as only build_bundle may otherwise)
    bundle = _sealed(small.release_id, small.partner, {**small.files, "data.parquet": big}, small.manifest)
    dest = destination(bucket, multipart_threshold=5 * MB)
    multipart: list[str] = []
    dest.client.meta.events.register("before-parameter-build.s3.CreateMultipartUpload", lambda params, **_: multipart.append(params["Key"]))
    dest.publish(bundle)
    key = f"central/releases/ngo-a/{bundle.release_id}/data.parquet"
    assert multipart == [key]
    assert hashlib.sha256(admin().get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == hashlib.sha256(big).hexdigest()


def test_server_side_encryption_is_requested_for_every_object(bucket):
    bundle = make_bundle("ngo-a")
    destination(bucket, sse="AES256").publish(bundle)
    for name in bundle.files:
        head = admin().head_object(Bucket=bucket, Key=f"central/releases/ngo-a/{bundle.release_id}/{name}")
        assert head["ServerSideEncryption"] == "AES256"


def test_a_crash_before_the_manifest_leaves_no_visible_release_and_a_retry_completes_it(bucket):
    bundle = make_bundle("ngo-a")
    dest = destination(bucket)
    real_put = dest._put

    def failing(key, name, content):
        if name == "manifest.json":
            raise OSError("power cut")
        real_put(key, name, content)

    dest._put = failing  # type: ignore[method-assign]
    with pytest.raises(OSError):
        dest.publish(bundle)
    keys = [o["Key"] for o in admin().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and not any(k.endswith("manifest.json") for k in keys)
    assert destination(bucket).publish(bundle).published


def test_a_failure_after_a_put_says_bytes_left_and_one_before_any_says_none(bucket):
    """Objects put before the failure stay readable in the bucket: a synthetic release's noisy counts
    left the partner, so its privacy budget must stay spent (PublishError.sent)."""
    from botocore.exceptions import ClientError

    bundle = make_bundle("ngo-a")
    dest = destination(bucket)
    real_put = dest._put

    def failing(key, name, content):
        if name == "manifest.json":
            raise ClientError({"Error": {"Code": "500", "Message": "internal"}}, "PutObject")
        real_put(key, name, content)

    dest._put = failing  # type: ignore[method-assign]
    with pytest.raises(PublishError) as caught:
        dest.publish(bundle)
    assert caught.value.sent is True and admin().list_objects_v2(Bucket=bucket).get("Contents")

    def refused(key):
        raise ClientError({"Error": {"Code": "403", "Message": "denied"}}, "HeadObject")

    checking = destination(bucket)
    checking._exists = refused  # type: ignore[method-assign]
    with pytest.raises(PublishError) as before:
        checking.publish(make_bundle("ngo-b"))
    assert before.value.sent is False  # the check before the first put failed: nothing went up


def test_errors_name_the_bucket_not_the_credentials(bucket, monkeypatch):
    monkeypatch.setenv("TEST_S3_SECRET", "wrong-secret-value")
    dest = S3Destination("no-such-bucket-here", endpoint_url=_ENDPOINT[0], region="us-east-1",
                         access_key=Secret(env="TEST_S3_ACCESS"), secret_key=Secret(env="TEST_S3_SECRET"))
    problems = dest.check()
    assert problems and "no-such-bucket-here" in problems[0].message
    with pytest.raises(PublishError) as caught:
        dest.publish(make_bundle("ngo-a"))
    assert "no-such-bucket-here" in str(caught.value) and "wrong-secret-value" not in str(caught.value)
    assert destination(bucket).check() == []


def test_a_job_config_with_destination_s3_publishes_to_the_bucket(bucket, write_config):
    path = write_config(f"""
partner: {{id: ngo-a}}
sources: [{{id: s, type: fake, mapping: excel_htcds}}]
destination:
  type: s3
  bucket: {bucket}
  prefix: htcds
  endpoint_url: {_ENDPOINT[0]}
  region: us-east-1
  access_key_env: TEST_S3_ACCESS
  secret_key_env: TEST_S3_SECRET
  sse: AES256
""")
    dest = create_destination(load_config(path))
    assert "s3://" + bucket in dest.describe() and dest.check() == []
    bundle = make_bundle("ngo-a")
    assert dest.publish(bundle).published
    assert admin().head_object(Bucket=bucket, Key=f"htcds/ngo-a/{bundle.release_id}/manifest.json")["ContentType"] == "application/json"
