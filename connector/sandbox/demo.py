"""The demo: one job over every kind of source, each served by its local sandbox.

`htcds-connector sandbox demo CONFIG` generates cases (a different, reproducible set per source,
as different partner systems hold different cases), writes the HTCDS Excel workbook, starts the
Salesforce, ODK Central and KoboToolbox sandboxes on 127.0.0.1, publishes their addresses and
credentials as the `HTCDS_DEMO_*` environment variables that `deploy/examples/demo.yaml` refers
to, runs the job exactly as `htcds-connector run` would, and stops the sandboxes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from connector.sandbox.excel_writer import write_workbook
from connector.sandbox.generate import generate_cases
from connector.scheduler import RunOutcome, run_job

# Seeds per source: the same demo data every time, so a second demo run finds nothing new.
SEEDS = {"excel": 7, "salesforce": 8, "odk_central": 9, "kobo": 10}


@contextmanager
def demo_sandboxes(cases_per_source: int, workbook: Path) -> Iterator[dict[str, str]]:
    """Write the workbook, start the three HTTP sandboxes, and yield the environment they need."""
    from connector.sandbox.kobo import start_kobo_sandbox
    from connector.sandbox.odk_central import start_odk_sandbox
    from connector.sandbox.salesforce import start_sandbox as start_salesforce_sandbox

    def cases(kind: str):
        return generate_cases(cases_per_source, seed=SEEDS[kind])

    if not workbook.is_file():  # rewriting it would change its bytes (xlsx embeds times) and re-read it all
        workbook.parent.mkdir(parents=True, exist_ok=True)
        write_workbook(cases("excel"), workbook)
    with ExitStack() as stack:
        salesforce = stack.enter_context(start_salesforce_sandbox(cases("salesforce")))
        odk = start_odk_sandbox(cases("odk_central"))
        stack.callback(odk.stop)
        kobo = start_kobo_sandbox(cases("kobo"))
        stack.callback(kobo.stop)
        sf = salesforce.config_options()
        yield {
            "HTCDS_DEMO_SF_URL": sf["login_url"],
            "HTCDS_DEMO_SF_CLIENT_ID": sf["client_id"],
            "HTCDS_DEMO_SF_USERNAME": sf["username"],
            "HTCDS_DEMO_SF_KEY_FILE": sf["private_key_file"],
            "HTCDS_DEMO_SF_CA_FILE": sf["ca_file"],
            "HTCDS_DEMO_ODK_URL": odk.url,
            "HTCDS_DEMO_ODK_FORM": odk.form_id,
            "HTCDS_DEMO_ODK_EMAIL": odk.email,
            "HTCDS_DEMO_ODK_PASSWORD": odk.password,
            "HTCDS_DEMO_KOBO_URL": kobo.url,
            "HTCDS_DEMO_KOBO_ASSET": kobo.asset_uid,
            "HTCDS_DEMO_KOBO_TOKEN": kobo.token,
        }


def run_demo(config_path: Path, *, cases_per_source: int, workbook: Path, progress=None) -> RunOutcome:
    """Run the demo job against freshly started sandboxes; the environment is restored afterwards."""
    with demo_sandboxes(cases_per_source, workbook) as env:
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            return run_job(config_path, progress=progress)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
