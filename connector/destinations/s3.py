"""S3 destination: objects under `<prefix>/<partner>/<release id>/` in any S3-compatible bucket.

Why `manifest.json` goes last: S3 has no atomic multi-object write, so the manifest is the marker
of a whole release. Readers (and this destination, to make a repeat publish a no-op) look for the
manifest first and treat a folder without one as not there. A crash midway leaves objects without
a manifest; the next publish of the same release simply writes them again.

    dest = S3Destination("htcds-releases", prefix="central", endpoint_url="https://minio.local:9000")
    dest.publish(bundle)   # -> PublishResult(release_id, "s3://htcds-releases/central/ngo-a/r-...", True)

Credentials come from `access_key`/`secret_key` secret references or, when both are omitted,
boto3's default chain (environment, shared config, instance role). They are read only when the
client is made and never appear in messages: errors name the bucket, key and S3 error code.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
from typing import TYPE_CHECKING, Any

from connector.destinations.base import Destination, PublishError, PublishResult
from connector.records import Problem
from connector.release import MANIFEST_FILE, Bundle
from connector.secrets import Secret, SecretMissing

if TYPE_CHECKING:
    from connector.config import S3DestinationConfig

MB = 1024 * 1024
_CONTENT_TYPES = {".csv": "text/csv; charset=utf-8", ".json": "application/json", ".md": "text/markdown; charset=utf-8", ".html": "text/html; charset=utf-8"}


def content_type(name: str) -> str:
    """The Content-Type stored with an object, so a browser or client reads it right."""
    for suffix, kind in _CONTENT_TYPES.items():
        if name.endswith(suffix):
            return kind
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class S3Destination(Destination):
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: Secret | None = None,
        secret_key: Secret | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
        multipart_threshold: int = 8 * MB,
        client: Any = None,
    ):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.multipart_threshold = multipart_threshold
        self._client = client

    @classmethod
    def from_config(cls, config: "S3DestinationConfig") -> "S3Destination":
        return cls(
            config.bucket,
            prefix=config.prefix,
            endpoint_url=config.endpoint_url,
            region=config.region,
            access_key=config.access_key,
            secret_key=config.secret_key,
            sse=config.sse,
            kms_key_id=config.kms_key_id,
            multipart_threshold=config.multipart_threshold_mb * MB,
        )

    # -- helpers -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use so that `describe()` needs no credentials."""
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            kwargs: dict[str, Any] = {
                "endpoint_url": self.endpoint_url,
                "region_name": self.region,
                "config": BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60),
            }
            if self.access_key is not None and self.secret_key is not None:
                kwargs["aws_access_key_id"] = self.access_key.get()
                kwargs["aws_secret_access_key"] = self.secret_key.get()
            self._client = boto3.client("s3", **kwargs)
        return self._client

    def key(self, bundle: Bundle, name: str) -> str:
        parts = [self.prefix] if self.prefix else []
        return "/".join([*parts, bundle.partner, bundle.release_id, name])

    def location(self, bundle: Bundle) -> str:
        return f"s3://{self.bucket}/{self.key(bundle, '')}"

    def _extra_args(self, name: str, content: bytes) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "ContentType": content_type(name),
            "Metadata": {"sha256": hashlib.sha256(content).hexdigest()},
        }
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
            if self.kms_key_id:
                extra["SSEKMSKeyId"] = self.kms_key_id
        return extra

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def _put(self, key: str, name: str, content: bytes) -> None:
        """One object; files above the threshold go up in parts (boto3's managed transfer)."""
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(multipart_threshold=self.multipart_threshold, multipart_chunksize=max(self.multipart_threshold, 5 * MB), use_threads=False)
        self.client.upload_fileobj(io.BytesIO(content), self.bucket, key, ExtraArgs=self._extra_args(name, content), Config=transfer)

    # -- Destination ---------------------------------------------------------------------------

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"
        return f"s3 {where}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def check(self) -> list[Problem]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except SecretMissing as exc:
            return [Problem("destination", str(exc), hint="set the variable or file the access_key/secret_key references name")]
        except ClientError as exc:
            code = _code(exc)
            hint = {"404": "create the bucket or fix `bucket`", "403": "the credentials may not access this bucket"}.get(code, "check bucket, endpoint_url and credentials")
            return [Problem("destination.bucket", f"bucket {self.bucket}: S3 error {code}", hint=hint)]
        except BotoCoreError as exc:
            return [Problem("destination", f"cannot reach S3 ({type(exc).__name__})", hint="check endpoint_url, region and credentials")]
        return []

    def publish(self, bundle: Bundle) -> PublishResult:
        from botocore.exceptions import BotoCoreError, ClientError

        manifest_key = self.key(bundle, MANIFEST_FILE)
        current = MANIFEST_FILE
        sent = False  # True from the first put on: an object put before a failure stays readable
        try:
            if self._exists(manifest_key):
                return PublishResult(bundle.release_id, self.location(bundle), published=False)
            for name, content in bundle.files.items():
                if name != MANIFEST_FILE:
                    current, sent = name, True
                    self._put(self.key(bundle, name), name, content)
            current, sent = MANIFEST_FILE, True
            self._put(manifest_key, MANIFEST_FILE, bundle.files[MANIFEST_FILE])  # last: marks the release whole
        except SecretMissing as exc:
            raise PublishError(f"cannot publish to {self.describe()}: {exc}", sent=sent) from None
        except ClientError as exc:
            raise PublishError(f"cannot write s3://{self.bucket}/{self.key(bundle, current)}: S3 error {_code(exc)}", sent=sent) from None
        except BotoCoreError as exc:
            raise PublishError(f"cannot write s3://{self.bucket}/{self.key(bundle, current)}: {type(exc).__name__}", sent=sent) from None
        return PublishResult(bundle.release_id, self.location(bundle), published=True)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "unknown"))


__all__ = ["S3Destination", "content_type"]
