import hashlib
import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from connector.destinations.base import PublishError
from connector.destinations.folder import FolderDestination
from connector.release import CONTENT_FILES, build_bundle
from connector.schema import load_schema
from privacy.gate import admit


@pytest.fixture
def release():
    schema = load_schema()
    table = pd.DataFrame(
        {
            "yearOfRegistration": ["2020-2021"] * 3 + ["2022-2023"] * 3,
            "gender": ["Female"] * 6,
            "meansOfControlDebtBondage": pd.array([1, 1, 1, None, None, None], dtype="Int64"),
        }
    )
    privacy = {"method": "k_anonymity", "k": 3, "quasi_identifiers": ["yearOfRegistration", "gender"], "records_in": 7, "records_out": 6}
    return admit(table, privacy, roles=schema.view_roles())


def test_same_content_gives_the_same_release_id(release):
    schema = load_schema()
    a = build_bundle(release, partner="ngo", schema=schema, run_ids=["r1"], created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    b = build_bundle(release, partner="ngo", schema=schema, run_ids=["r2"], created_at=datetime(2026, 2, 1, tzinfo=timezone.utc))
    assert a.release_id == b.release_id
    assert a.manifest["run_ids"] == ["r1"] and b.manifest["created_at"].startswith("2026-02-01")


def test_manifest_lists_the_sha256_of_every_file(release):
    bundle = build_bundle(release, partner="ngo", schema=load_schema(), run_ids=["r1"])
    manifest = json.loads(bundle.files["manifest.json"])
    assert set(manifest["files"]) == set(CONTENT_FILES)
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256(bundle.files[name]).hexdigest()
    assert bundle.files["data.csv"] == release.data_csv
    package = json.loads(bundle.files["datapackage.json"])
    fields = {f["name"]: f for f in package["resources"][0]["schema"]["fields"]}
    assert fields["yearOfRegistration"]["type"] == "string"  # generalized quasi-identifiers are strings
    assert fields["meansOfControlDebtBondage"]["type"] == "integer"


def test_folder_publish_is_atomic_and_idempotent(release, tmp_path):
    bundle = build_bundle(release, partner="ngo", schema=load_schema(), run_ids=["r1"])
    destination = FolderDestination(tmp_path / "releases")
    first = destination.publish(bundle)
    assert first.published
    folder = tmp_path / "releases" / "ngo" / bundle.release_id
    assert sorted(p.name for p in folder.iterdir()) == sorted(bundle.files)
    mtime = (folder / "manifest.json").stat().st_mtime_ns
    again = destination.publish(build_bundle(release, partner="ngo", schema=load_schema(), run_ids=["r9"]))
    assert not again.published and (folder / "manifest.json").stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "releases" / "ngo").iterdir()] == [bundle.release_id]


def test_a_failed_write_leaves_no_release_visible(release, tmp_path, monkeypatch):
    import connector.destinations.folder as folder_module

    bundle = build_bundle(release, partner="ngo", schema=load_schema(), run_ids=["r1"])
    real_write = folder_module._write
    written = []

    def failing_write(path, content):
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path)
        real_write(path, content)

    monkeypatch.setattr(folder_module, "_write", failing_write)
    with pytest.raises(PublishError, match="No space left") as caught:
        FolderDestination(tmp_path / "releases").publish(bundle)
    partner_dir = tmp_path / "releases" / "ngo"
    assert list(partner_dir.iterdir()) == []  # neither the release nor its staging folder
    assert caught.value.sent is False  # so a synthetic release's budget is given back
    monkeypatch.setattr(folder_module, "_write", real_write)
    assert FolderDestination(tmp_path / "releases").publish(bundle).published


def test_a_failure_after_the_rename_says_the_release_may_have_been_read(release, tmp_path, monkeypatch):
    import connector.destinations.folder as folder_module

    bundle = build_bundle(release, partner="ngo", schema=load_schema(), run_ids=["r1"])

    def failing_sync(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(folder_module, "_fsync_dir", failing_sync)
    with pytest.raises(PublishError) as caught:
        FolderDestination(tmp_path / "releases").publish(bundle)
    assert (tmp_path / "releases" / "ngo" / bundle.release_id / "data.csv").is_file() and caught.value.sent is True


def test_an_incomplete_folder_from_a_crash_is_replaced(release, tmp_path):
    bundle = build_bundle(release, partner="ngo", schema=load_schema(), run_ids=["r1"])
    target = tmp_path / "releases" / "ngo" / bundle.release_id
    target.mkdir(parents=True)
    (target / "data.csv").write_text("partial")
    assert FolderDestination(tmp_path / "releases").publish(bundle).published
    assert (target / "data.csv").read_bytes() == release.data_csv


def test_a_bundle_cannot_be_assembled_or_altered_outside_build_bundle(release):
    import dataclasses

    from connector.release import Bundle

    bundle = build_bundle(release, partner="ngo", schema=load_schema(), run_ids=["r1"])
    with pytest.raises(TypeError, match="only by connector.release.build_bundle"):
        Bundle(bundle.release_id, "ngo", {"data.csv": b"prs_FirstName\nAmina\n"}, bundle.manifest)
    with pytest.raises(TypeError, match="only by connector.release.build_bundle"):
        dataclasses.replace(bundle, files={**bundle.files, "data.csv": b"prs_FirstName\nAmina\n"})
