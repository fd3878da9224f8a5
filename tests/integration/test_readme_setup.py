"""README's "Setting up a partner" runs top to bottom as written, with no traceback."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ALLOWED = {"sync": {0, 1}, "run": {0, 1}}  # 1: finished with rejections (generated data is messy on purpose)


def _setup_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Setting up a partner", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_setup_section_runs_top_to_bottom(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "mappings").symlink_to(ROOT / "mappings")  # what a clone has; the rest is the installed package
    cwd = clone
    commands = _setup_block()
    assert any("mapping suggest --xlsform" in c for c in commands) and any(" rejections " in c for c in commands)
    for command in commands:
        if command.startswith("make install"):
            continue  # this checkout is installed already
        if command.startswith("mkdir -p") and "&& cd" in command:
            folder = command.split("&& cd", 1)[1].strip()
            (cwd / folder).mkdir(parents=True, exist_ok=True)
            cwd = cwd / folder
            continue
        argv = shlex.split(command.replace("../.venv/bin/", f"{VENV_BIN}/"))
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "140"})
        verb = argv[1]
        assert done.returncode in ALLOWED.get(verb, {0}), (command, done.returncode, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (command, done.stderr[-2000:])
    assert (cwd / "rejections.csv").is_file() and (cwd / "preview.html").is_file() and (cwd / "my_form_mapping.yaml").is_file()
    assert list((cwd / "releases" / "my-organisation").iterdir())
