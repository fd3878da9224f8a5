"""The demo job: Excel, Salesforce, ODK Central and Kobo sandboxes -> one store -> one release."""

import shutil
from pathlib import Path

from connector.sandbox.demo import run_demo

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "demo.yaml"


def test_demo_pulls_every_source_into_one_release_and_a_rerun_changes_nothing(tmp_path):
    # Run a copy so the repository's state/ and releases/ are untouched; the paths in the config are
    # relative to it, so copy it two folders deep as in the repository.
    config = tmp_path / "deploy" / "examples" / "demo.yaml"
    config.parent.mkdir(parents=True)
    shutil.copy(DEMO, config)
    workbook = tmp_path / "build" / "demo" / "cases.xlsx"

    first = run_demo(config, cases_per_source=150, workbook=workbook)
    by_source = {s.source: s for s in first.sync.sources}
    assert set(by_source) == {"demo-workbook", "demo-salesforce", "demo-odk", "demo-kobo"}
    assert all(s.status == "ok" and s.inserted > 100 for s in by_source.values()), first.as_dict()
    assert first.release.status == "published"
    assert first.release.records_in == sum(s.inserted for s in by_source.values())
    assert (tmp_path / "releases" / "demo-ngo" / first.release.release_id / "manifest.json").is_file()

    second = run_demo(config, cases_per_source=150, workbook=workbook)
    assert all(s.inserted == 0 and s.updated == 0 and s.deleted == 0 for s in second.sync.sources), second.as_dict()
    assert second.release.status == "unchanged" and second.release.release_id == first.release.release_id
    assert second.exit_code == 0
