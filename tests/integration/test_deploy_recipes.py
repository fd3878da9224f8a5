"""The deploy recipes run as written, as far as this machine allows.

- cron: the crontab line itself, run by /bin/sh as an unprivileged user (runuser, as root), with the
  env file made by the install steps' command: it must read the secrets, run, and log JSON;
- compose: the central image's build arguments install the receiver's extra;
- Kubernetes: the manifests parse, hold no Secret to overwrite the real one, and their job config
  loads; the Secret's shape is a separate example file;
- systemd: `systemd-analyze verify` on the units (the venv path swapped for this checkout's), and
  the install steps create every folder the units read;
- daemon logs: a real APScheduler warning is a JSON line under --log-json.
Each test that needs something the machine may lack (root, runuser, systemd-analyze) skips and
says which.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from connector.config import load_config
from connector.sandbox.excel_writer import write_workbook
from connector.sandbox.generate import generate_cases
from connector.scheduler import cron_trigger

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
PLACES = ("/var/lib/htcds-connector", "/etc/htcds-connector", "/var/log/htcds-connector")


def _install_block() -> str:
    readme = (DEPLOY / "README.md").read_text()
    block = readme.split("## Install once", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return block


def _cron_line() -> tuple[str, str, str]:
    """(SHELL, user, command) of the job line in deploy/crontab."""
    shell, line = "/bin/sh", None
    for raw in (DEPLOY / "crontab").read_text().splitlines():
        if raw.startswith("SHELL="):
            shell = raw.split("=", 1)[1]
        elif raw.strip() and not raw.startswith("#") and "=" not in raw.split()[0]:
            line = raw
    assert line is not None, "no job line in deploy/crontab"
    parts = line.split(None, 6)
    return shell, parts[5], parts[6]


# -- cron --------------------------------------------------------------------------------------


def test_the_env_file_the_install_steps_make_is_readable_by_the_cron_user():
    _, user, _ = _cron_line()
    command = next(line for line in _install_block().splitlines() if ".env" in line and "install" in line)
    mode = re.search(r"-m (\d+)", command).group(1)
    group = re.search(r"-g (\S+)", command)
    assert int(mode, 8) & 0o040 and group and group.group(1) == user, f"{command!r}: the {user} user cannot read it"


def _cron_capable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to switch to an unprivileged user"
    if shutil.which("runuser") is None:
        return "runuser(1) is not installed"
    if not Path("/bin/sh").exists():
        return "no /bin/sh"
    return None


@pytest.fixture
def cron_host():
    """A host tree the unprivileged user can walk: its own folder in /tmp (pytest's tmp root is
    root-only, and other pytest sessions reset its mode), removed afterwards. /tmp is not touched."""
    import tempfile

    host = Path(tempfile.mkdtemp(prefix="htcds-cron-", dir="/tmp"))
    host.chmod(0o755)
    yield host
    shutil.rmtree(host, ignore_errors=True)


@pytest.mark.skipif(_cron_capable() is not None, reason=str(_cron_capable()))
def test_the_crontab_line_runs_as_an_unprivileged_user_and_logs_json(cron_host):
    shell, user, command = _cron_line()
    assert user == "htcds"
    host = cron_host
    places = {p: host / p.strip("/").replace("/", "_") for p in PLACES}
    for place in places.values():
        place.mkdir()
        place.chmod(0o755)
    for writable in (places["/var/lib/htcds-connector"], places["/var/log/htcds-connector"]):
        os.chown(writable, 65534, 65534)  # what `chown htcds:htcds` does in the install steps
    write_workbook(generate_cases(40, seed=5), places["/var/lib/htcds-connector"] / "cases.xlsx")
    config = places["/etc/htcds-connector"] / "ngo-athens.yaml"
    config.write_text(
        "partner: {id: ngo-athens}\n"
        f'store: {{url: "sqlite:///{places["/var/lib/htcds-connector"]}/ngo-athens.sqlite"}}\n'
        "sources:\n  - {id: workbook, type: excel, mapping: excel_htcds, options: {path: \"${HTCDS_CASES}\"}}\n"
        f"release: {{k: 2}}\ndestination: {{type: folder, path: {places['/var/lib/htcds-connector']}/releases}}\n"
    )
    # The env file exactly as the install steps make it, with the htcds group played by nogroup.
    env_file = places["/etc/htcds-connector"] / "ngo-athens.env"
    install = next(line for line in _install_block().splitlines() if ".env" in line and "install" in line)
    args = install.split("#")[0].split()[1:]  # drop `sudo`
    args = [a.replace("/etc/htcds-connector", str(places["/etc/htcds-connector"])) for a in args]
    args[args.index("-g") + 1] = "nogroup"
    subprocess.run(args, check=True)
    with env_file.open("a") as f:
        f.write(f"HTCDS_CASES={places['/var/lib/htcds-connector']}/cases.xlsx\n")
    command = command.replace("/opt/htcds-connector/.venv/bin", str(_bin_for_nobody(host)))
    for place, there in places.items():
        command = command.replace(place, str(there))
    done = subprocess.run(["runuser", "-u", "nobody", "-g", "nogroup", "--", shell, "-c", command], capture_output=True, text=True, timeout=300)
    log = (places["/var/log/htcds-connector"] / "ngo-athens.log").read_text()
    assert done.returncode in (0, 1), (done.returncode, done.stderr, log)
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert "page committed" in events and "release published" in events, log
    assert list((places["/var/lib/htcds-connector"] / "releases" / "ngo-athens").iterdir())

    # A broken env file is in the log, not lost.
    env_file.unlink()
    done = subprocess.run(["runuser", "-u", "nobody", "-g", "nogroup", "--", shell, "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ngo-athens.env" in (places["/var/log/htcds-connector"] / "ngo-athens.log").read_text()


def _bin_for_nobody(host: Path) -> Path:
    """This checkout's `htcds-connector` as the unprivileged user can start it.

    When the venv's interpreter lives where that user cannot reach it (pyenv under /root), the
    same packages run on the system's Python of the same minor version, through a two-line
    launcher that stands in for /opt/htcds-connector/.venv/bin/htcds-connector."""
    probe = subprocess.run(["runuser", "-u", "nobody", "--", str(VENV_BIN / "python"), "-c", "import connector"], capture_output=True)
    if probe.returncode == 0:
        return VENV_BIN
    system_python = Path(f"/usr/bin/python3.{sys.version_info.minor}")
    if not system_python.exists():
        pytest.skip(f"the venv's Python is not reachable by an unprivileged user and there is no {system_python}")
    site = next(Path(sys.prefix).glob("lib/python3.*/site-packages"))
    launcher = host / "bin"
    launcher.mkdir()
    launcher.chmod(0o755)
    script = launcher / "htcds-connector"
    script.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT}:{site} exec {system_python} -m connector.cli "$@"\n')
    script.chmod(0o755)
    return launcher


# -- compose -----------------------------------------------------------------------------------


def _compose_value(text: str, env: dict[str, str]) -> str:
    """docker compose's `${NAME:-default}` interpolation."""
    return re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), text)


def test_the_compose_central_image_is_built_with_the_receivers_dependencies():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    extras_known = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    example_env = dict(line.split("=", 1) for line in (DEPLOY / "compose" / "example.env").read_text().splitlines() if "=" in line and not line.startswith("#"))
    build = compose["services"]["central"]["build"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text() if build["dockerfile"] == "deploy/Dockerfile" else ""
    assert "ARG EXTRAS" in dockerfile and '".[${EXTRAS}]"' in dockerfile
    for env in ({}, example_env):  # without a .env, and with the example's
        extras = {e.strip() for e in _compose_value(build["args"]["EXTRAS"], env).split(",")}
        assert "central" in extras and extras <= extras_known, (env, extras)
    assert compose["services"]["central"]["command"][:2] == ["central", "serve"]
    assert compose["services"]["connector"]["image"] == compose["services"]["central"]["image"]
    job = load_config_text((DEPLOY / "compose" / "connector.yaml").read_text(), {"HTCDS_CENTRAL_TOKEN": "t" * 20})
    assert job.job.destination.type == "central_api"


def load_config_text(text: str, env: dict[str, str], tmp: Path | None = None):
    import tempfile

    folder = Path(tmp or tempfile.mkdtemp())
    (folder / "connector.yaml").write_text(text)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_config(folder / "connector.yaml")
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


# -- Kubernetes --------------------------------------------------------------------------------


def test_the_kubernetes_manifests_hold_no_secret_to_overwrite_and_their_config_loads(tmp_path):
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert "Secret" not in kinds, "applying the manifest would overwrite the real Secret with placeholders"
    assert {"ConfigMap", "PersistentVolumeClaim", "CronJob"} <= set(kinds)
    cron = kinds["CronJob"]["spec"]
    cron_trigger(cron["schedule"], cron["timeZone"])
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    secret_name = pod["containers"][0]["envFrom"][0]["secretRef"]["name"]
    header = (DEPLOY / "kubernetes" / "cronjob.yaml").read_text().split("\n\n")[0]
    assert f"create secret generic {secret_name}" in header
    example = yaml.safe_load((DEPLOY / "kubernetes" / "secret.example.yaml").read_text())
    assert example["kind"] == "Secret" and example["metadata"]["name"] == secret_name
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert pod["volumes"][1]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"] and mounts["config"] == "/config"
    assert pod["containers"][0]["args"] == ["run", "/config/connector.yaml"]
    env = {key: "x" * 24 for key in example["stringData"]}
    config = load_config_text(kinds["ConfigMap"]["data"]["connector.yaml"], env, tmp_path)
    assert config.job.store.url.startswith("sqlite:////state/")


# -- systemd -----------------------------------------------------------------------------------


def test_the_install_steps_create_every_folder_the_units_read():
    created = set()
    for line in _install_block().splitlines():
        if "mkdir -p" in line:
            created.update(line.split("#")[0].split("mkdir -p", 1)[1].split())
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text()
        for key in ("WorkingDirectory", "ReadWritePaths"):
            for value in re.findall(rf"^{key}=(\S+)", text, re.M):
                assert value in created, f"{unit.name}: {key}={value} is not created by the install steps"
        for folder in re.findall(r"(/etc/htcds-connector/[^\s'*]+)/\*\.yaml", text):
            assert folder in created, f"{unit.name} reads {folder}, which the install steps do not create"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_units_verify(tmp_path):
    for unit in (DEPLOY / "systemd").iterdir():
        name = unit.name.replace("@.", "@ngo-athens.")
        (tmp_path / name).write_text(unit.read_text().replace("/opt/htcds-connector/.venv/bin", str(VENV_BIN)))
    units = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "htcds-connector" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


# -- daemon logs -------------------------------------------------------------------------------


def test_apscheduler_lines_are_json_under_log_json(capsys):
    from apscheduler.schedulers.background import BackgroundScheduler

    from connector import logs

    logs.configure(json_lines=True)
    scheduler = BackgroundScheduler(timezone=timezone.utc)
    scheduler.start()
    try:
        # A run time already past its grace time: APScheduler logs "Run time of job ... was missed".
        scheduler.add_job(lambda: None, "date", run_date=datetime.now(timezone.utc) - timedelta(seconds=30), misfire_grace_time=1, id="late")
        deadline = time.monotonic() + 10
        while scheduler.get_job("late") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.shutdown(wait=False)
        logging.getLogger("apscheduler").handlers.clear()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any("was missed" in line for line in lines), lines
    for line in lines:
        json.loads(line)
