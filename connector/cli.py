"""`htcds-connector`: a thin shell over the pipeline. Tables for people, `--json` for machines.

Exit codes (also in the README): 0 ok, 1 finished with rejections, 2 config or store error, 3
source unreachable or auth failed, 4 privacy gate refused, 5 publish failed, 6 locked, 7 internal
error. Every failure is a `connector.errors.ConnectorError` carrying its code and a hint, caught
once, in `main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from connector import logs
from connector.config import ConfigError, load_config
from connector.errors import EXIT_CONFIG, EXIT_LOCKED, EXIT_OK, ConnectorError, InternalError, ReleaseRefused
from connector.pipeline import Pipeline, privacy_refusals

# Not a terminal (cron, CI, a pipe): a fixed, wide layout instead of rich's 80 columns.
out = Console(width=None if Console().is_terminal else 140)
# Errors are one line each, never wrapped: a log or `grep` sees the whole message.
err = Console(stderr=True, width=None if Console(stderr=True).is_terminal else 140, soft_wrap=True)

EXAMPLES = {
    "init": "htcds-connector init connector.yaml",
    "check": "htcds-connector check connector.yaml",
    "sync": "htcds-connector sync connector.yaml --json",
    "release": "htcds-connector release connector.yaml",
    "run": "htcds-connector run connector.yaml",
    "daemon": "htcds-connector --log-json daemon connector.yaml",
    "preview": "htcds-connector preview connector.yaml",
    "status": "htcds-connector status connector.yaml --json",
    "rejections": "htcds-connector rejections connector.yaml --source odk-cases --csv rejections.csv",
    "codebook": "htcds-connector codebook --format md > codebook.md",
    "notify": "htcds-connector notify test connector.yaml",
    "sandbox": "htcds-connector sandbox excel --cases 2000 --out cases.xlsx",
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    json_lines = getattr(args, "log_json", False)
    logs.configure(json_lines=json_lines, level=logging.INFO if json_lines or args.verbose else logging.WARNING)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.func(args) or EXIT_OK)
    except ConnectorError as exc:
        return _failed(args, exc)
    except Exception as exc:  # noqa: BLE001 - a bug: exit 7 with one line, never exit 1 (rejections)
        if isinstance(exc, privacy_refusals()):  # `preview`: the privacy step would refuse (exit 4)
            return _failed(args, ReleaseRefused(f"the privacy step refuses this release: {exc}"))
        if args.verbose:
            err.print_exception()
        return _failed(args, InternalError.wrap(exc, f"running `{args.command}`"))


def _failed(args: argparse.Namespace, exc: ConnectorError) -> int:
    """The one place a failure is shown: one line per problem on stderr (what, then what to do),
    and with `--json` the command's report (as far as it got) with the exit code and the error."""
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            err.print(f"[red]config error[/red] {escape(problem)}", highlight=False, soft_wrap=True)
    else:
        word = {EXIT_LOCKED: "[yellow]locked[/yellow]"}.get(exc.exit_code, "[red]error[/red]")
        err.print(f"{word} {escape(exc.one_line())}", highlight=False, soft_wrap=True)  # one line, never wrapped
    if getattr(args, "json", False):
        report = exc.report.as_dict() if exc.report is not None else {}
        _print_json({**report, "exit_code": exc.exit_code, "error": exc.message, "hint": exc.hint})
    return exc.exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="htcds-connector", description="Pull trafficking cases, map them to HTCDS, publish privacy-protected releases.")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines on stderr (for unattended runs)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every page and step on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command")

    def command(name: str, help_text: str, func, *, config: bool = True, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example: {EXAMPLES[name]}")
        if config:
            p.add_argument("config", type=Path, help="the job config YAML")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
        p.set_defaults(func=func)
        return p

    p = command("init", "write a commented config to start from", cmd_init, config=False, json_flag=False)
    p.add_argument("path", type=Path, nargs="?", default=Path("connector.yaml"))
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    command("check", "validate config, credentials, reachability and mappings; publishes nothing", cmd_check)
    p = command("sync", "pull new and changed records, map them and store them", cmd_sync)
    p.add_argument("--source", action="append", help="only this source id (repeatable)")
    p.add_argument("--reset-cursor", metavar="SOURCE", action="append", default=[],
                   help="forget SOURCE's stored cursor first, so this sync re-reads it from the start (records are kept); repeatable")
    command("release", "protect the stored cases, run the gate and publish a release", cmd_release)
    command("run", "sync, then release (what cron runs)", cmd_run)
    p = sub.add_parser("daemon", help="run the jobs on their `schedule` until SIGTERM", description="run the jobs on their `schedule` until SIGTERM",
                       epilog="example: htcds-connector --log-json daemon /etc/htcds/ngo.yaml")
    p.add_argument("configs", type=Path, nargs="+", help="one job config per job")
    p.set_defaults(func=cmd_daemon)
    p = command("preview", "show the protected release and its privacy record; publishes nothing", cmd_preview)
    p.add_argument("--rows", type=int, default=10, help="rows of the protected table to show")
    p.add_argument("--report", metavar="PATH", help="also write the release's report.html there (a dry run: nothing is published)")
    command("status", "last runs, record counts, rejections by reason, source errors", cmd_status)
    p = command("rejections", "every rejected value (source, record id, field, reason, closest code) and value-map lines that fix code misses", cmd_rejections)
    p.add_argument("--source", help="only this source id")
    p.add_argument("--field", help="only this common-schema field, e.g. prs_Gender")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the list as CSV there")
    p = command("codebook", "print the codebook generated from the common schema", cmd_codebook, config=False, json_flag=False)
    p.add_argument("--format", choices=["md", "json"], default="md")

    notify = sub.add_parser("notify", help="notifications: send a test message", epilog=f"example: {EXAMPLES['notify']}")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True)
    p = notify_sub.add_parser("test", help="send a test notification on every configured channel (webhook, email)", epilog=f"example: {EXAMPLES['notify']}")
    p.add_argument("config", type=Path, help="the job config YAML")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of lines")
    p.set_defaults(func=cmd_notify_test, command="notify")

    mapping = sub.add_parser("mapping", help="draft a mapping for a partner's own form")
    mapping_sub = mapping.add_subparsers(dest="mapping_command", required=True)
    p = mapping_sub.add_parser("suggest", help="match a form's questions and choices to the common schema; unmatched items are marked REVIEW",
                               description="Draft a mapping for your own form: from an XLSForm file (no server needed) or from a configured ODK Central/Kobo source.",
                               epilog="examples: htcds-connector mapping suggest --xlsform my_form.xlsx --out my_form_mapping.yaml\n"
                                      "          htcds-connector mapping suggest connector.yaml odk-cases --out mappings/odk-cases.yaml",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, nargs="?", help="the job config (not needed with --xlsform)")
    p.add_argument("source", nargs="?", help="the source id in the config")
    p.add_argument("--xlsform", type=Path, metavar="FILE", help="read the form from this XLSForm workbook (.xlsx); no server or config needed")
    p.add_argument("--out", type=Path, help="write the draft here instead of printing it")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_mapping_suggest, command="mapping")

    central = sub.add_parser("central", help="the central team's receiver: serve, add-partner")
    from connector.central.cli import register as register_central  # its web stack is loaded by its commands only

    register_central(central.add_subparsers(dest="central_command", required=True))

    sandbox = sub.add_parser("sandbox", help="generated cases for demos and tests", epilog=f"example: {EXAMPLES['sandbox']}")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True)
    p = sandbox_sub.add_parser("excel", help="write generated cases as an HTCDS Excel workbook (or CSV)")
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mess-rate", type=float, default=0.05)
    p.add_argument("--out", type=Path, required=True, help=".xlsx or .csv")
    p.set_defaults(func=cmd_sandbox_excel, command="sandbox")
    p = sandbox_sub.add_parser("serve", help="serve generated cases as Salesforce, ODK Central and Kobo sandboxes until Ctrl-C",
                               epilog="example: htcds-connector sandbox serve --cases 500")
    p.add_argument("--cases", type=int, default=500, help="generated cases per sandbox")
    p.set_defaults(func=cmd_sandbox_serve, command="sandbox")
    p = sandbox_sub.add_parser("demo", help="start every sandbox, run the demo job against them, stop them",
                               epilog="example: htcds-connector sandbox demo deploy/examples/demo.yaml --cases 3000")
    p.add_argument("config", type=Path, help="the demo job config (deploy/examples/demo.yaml)")
    p.add_argument("--cases", type=int, default=3000, help="generated cases per source")
    p.add_argument("--workbook", type=Path, default=Path("build/demo/cases.xlsx"), help="where the Excel source's workbook is written")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    p.set_defaults(func=cmd_sandbox_demo, command="sandbox")
    _accept_global_options(parser)
    return parser


def _accept_global_options(parser: argparse.ArgumentParser) -> None:
    """`-v` and `--log-json` also after the command (`htcds-connector run job.yaml --log-json`).

    Every subcommand takes them with a SUPPRESS default, so leaving them out there keeps what was
    given before the command."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for subparser in set(action.choices.values()):
            for flags, kwargs in (
                (("--log-json",), {"help": "log JSON lines on stderr (also accepted before the command)"}),
                (("-v", "--verbose"), {"help": "log every page and step on stderr (also accepted before the command)"}),
            ):
                try:
                    subparser.add_argument(*flags, action="store_true", default=argparse.SUPPRESS, **kwargs)
                except argparse.ArgumentError:
                    pass  # the subcommand already has its own
            _accept_global_options(subparser)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("htcds-connector")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        from connector import __version__

        return __version__


# -- commands --------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from importlib import resources

    if args.path.exists() and not args.force:
        err.print(f"{args.path} exists; use --force to overwrite")
        return EXIT_CONFIG
    template = resources.files("connector").joinpath("config_template.yaml").read_text(encoding="utf-8")
    args.path.write_text(template, encoding="utf-8")
    out.print(f"wrote {args.path}: edit it, then run `htcds-connector check {args.path}`")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    pipeline = Pipeline(config)
    try:
        problems = pipeline.check()
    finally:
        pipeline.close()
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        _print_json({"ok": not errors, "problems": [vars(p) for p in problems]})
    else:
        for p in problems:
            colour = "red" if p.severity == "error" else "yellow"
            err.print(f"[{colour}]{p.severity}[/{colour}] {p}", highlight=False)
        if not errors:
            out.print(f"[green]ok[/green] {args.config}: config, store, {len(config.job.sources)} source(s) and destination look right")
        else:
            err.print(f"{len(errors)} problem(s) to fix before the first sync")
    return EXIT_CONFIG if errors else EXIT_OK


def cmd_sync(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with _locked(config) as pipeline, _progress(args) as hook:
        if not _reset_cursors(pipeline, config, args.reset_cursor):
            return EXIT_CONFIG
        pipeline.progress = hook
        report = pipeline.sync(args.source)
    _show_sync(report, args.json)
    return report.exit_code


def _reset_cursors(pipeline: Pipeline, config: Any, sources: list[str]) -> bool:
    """`sync --reset-cursor SOURCE`: the way out of a cursor a source cannot read (or a wanted full re-read)."""
    known = [s.id for s in config.job.sources]
    unknown = [s for s in sources if s not in known]
    if unknown:
        err.print(f"[red]error[/red] --reset-cursor: no source {', '.join(unknown)} in {config.path}; sources: {', '.join(known)}", highlight=False)
        return False
    for source in sources:
        pipeline.store.reset_cursor(source)
        err.print(f"{source}: cursor reset; this sync re-reads it from the start", highlight=False)
    return True


def cmd_release(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with _locked(config) as pipeline:
        report = pipeline.release()
    _show_release(report, args.json)
    return report.exit_code


def cmd_run(args: argparse.Namespace) -> int:
    from connector.scheduler import run_job, stop_on_signals

    with _progress(args) as hook, stop_on_signals() as stop:
        outcome = run_job(args.config, progress=hook, stop_requested=stop.is_set)
    if args.verbose and outcome.exception is not None:  # a bug (exit 7): the traceback, on request only
        sys.stderr.write("".join(traceback.format_exception(outcome.exception)))
    return _show_outcome(outcome, args.json)


def _show_outcome(outcome, as_json: bool) -> int:
    for message in outcome.errors:  # on stderr with --json too: cron mails it, systemd journals it
        err.print(f"[red]error[/red] {escape(message)}", highlight=False, soft_wrap=True)
    if as_json:
        _print_json(outcome.as_dict())
        return outcome.exit_code
    if outcome.sync is not None:
        _show_sync(outcome.sync, False)
    if outcome.release is not None:
        _show_release(outcome.release, False)
    if outcome.stopped:
        err.print("stopped on request after the last committed page; the next run continues")
    return outcome.exit_code


def cmd_daemon(args: argparse.Namespace) -> int:
    from connector.scheduler import run_daemon

    return run_daemon(args.configs)


def cmd_preview(args: argparse.Namespace) -> int:
    from privacy.gate import GateRefused, admit

    config = load_config(args.config)
    pipeline = Pipeline(config)
    try:
        view = pipeline.release_view()
        if len(view) == 0:
            return _preview_empty(args)
        # The privacy step refusing (k out of reach, too many synthetic columns) is not caught here:
        # `main` prints why, with exit 4, as `run` would exit.
        view, table, privacy, extra = pipeline.protected_tables(view)
    finally:
        pipeline.close()
    verdict: dict[str, Any] = {"passes_gate": True, "reasons": []}
    try:
        admit(table, privacy, roles=pipeline.schema.view_roles(), extra=extra)  # the victim-perpetrator table too
    except GateRefused as exc:
        verdict = {"passes_gate": False, "reasons": list(exc.reasons)}
    report_path = getattr(args, "report", None)
    if report_path:
        from privacy.report import render_report

        record = privacy
        if privacy.get("guarantee") == "full_row":  # local only: the real cases next to the release, before generalization
            from privacy.preview_compare import before_generalization

            record = {**privacy, "metrics": {"marginals": before_generalization(view, table, privacy)}}
        Path(report_path).write_bytes(render_report(record, partner=config.job.partner.id))
        verdict["report"] = str(report_path)
    if args.json:
        _print_json({"records_in": len(view), "privacy": privacy, **verdict, "sample": table.head(args.rows).map(_cell).to_dict("records")})
        return EXIT_OK
    out.print(f"release view: {len(view)} cases -> {len(table)} rows after protection ({privacy.get('method')}, k={privacy.get('k')})")
    _print_mapping_table("privacy", {k: v for k, v in privacy.items() if not isinstance(v, (dict, list))})
    if privacy.get("levels"):
        _print_mapping_table("generalization level per quasi-identifier", privacy["levels"])
    if privacy.get("detail"):
        detail = Table(title="detail kept per column (share of published rows)")
        for column in ("column", "as recorded", "coarser", "hidden (*)"):
            detail.add_column(column)
        for column, shares in privacy["detail"].items():
            detail.add_row(column, *(f"{100 * shares.get(key, 0):.0f}%" for key in ("full", "coarser", "suppressed")))
        out.print(detail)
    if isinstance(privacy.get("year_and_country_full"), (int, float)):
        out.print(f"rows with year of registration and country of exploitation both in full: {100 * privacy['year_and_country_full']:.0f}%", highlight=False)
    if privacy.get("held"):
        held = privacy["held"]
        out.print(
            f"held for a later part (not published yet): {held.get('new', 0)} new, {held.get('corrected_still_published', 0)} corrected "
            f"and {held.get('deleted_still_published', 0)} deleted cases; "
            + ("the next release changes the series" if privacy.get("changes") else "the next release publishes nothing new"),
            highlight=False,
        )
    sample = Table(title=f"first {args.rows} rows (quasi-identifiers)")
    qis = [c for c in privacy.get("quasi_identifiers", []) if c in table.columns]
    for column in qis:
        sample.add_column(column)
    for _, row in table.head(args.rows).iterrows():
        sample.add_row(*[_cell(v) for v in row[qis]])
    out.print(sample)
    out.print("[green]passes the gate[/green]" if verdict["passes_gate"] else f"[red]the gate would refuse[/red]: {escape('; '.join(verdict['reasons']))}")
    if report_path:
        out.print(f"report written to {report_path} (dry run: nothing published, no privacy budget spent)")
    return EXIT_OK


def _preview_empty(args: argparse.Namespace) -> int:
    """Before the first sync there is nothing to protect: say so, and what to run, not a traceback."""
    message = f"the store holds no cases yet: run `htcds-connector sync {args.config}` (or `run`) first"
    if args.json:
        _print_json({"records_in": 0, "empty": True, "message": message})
    else:
        out.print(message, highlight=False)
    return EXIT_OK


def _cell(value: Any) -> str:
    """A table cell; missing values (None, NaN, pd.NA, NaT) print empty. `pd.NA != pd.NA` is not a bool."""
    import pandas as pd

    try:
        missing = bool(pd.isna(value))
    except (TypeError, ValueError):
        missing = False
    return "" if missing else str(value)


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    pipeline = Pipeline(config)
    try:
        store = pipeline.store
        status = {
            "runs": store.runs(limit=10),
            "counts": store.counts(),
            "rejections_by_reason": store.rejections_by_reason(),
            "sources": store.source_status(),
            "releases": store.releases(limit=5),
            "privacy_budget": store.budget_ledger(config.job.partner.id),
        }
    finally:
        pipeline.close()
    if args.json:
        _print_json(status)
        return EXIT_OK
    runs = Table(title="last runs")
    for column in ("run", "kind", "started", "status", "counts", "error"):
        runs.add_column(column)
    for run in status["runs"]:
        counts = run.get("counts") or {}
        shown = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
        runs.add_row(str(run["run_id"])[:8], run["kind"], str(run["started_at"])[:19], run["status"], shown, (run.get("error") or "")[:80])
    out.print(runs)
    records = Table(title="records")
    for column in ("source", "live", "deleted", "rejected values"):
        records.add_column(column)
    for source, row in (status["counts"].get("sources") or {}).items():
        records.add_row(source, str(row.get("live", 0)), str(row.get("deleted", 0)), str(row.get("rejections", 0)))
    out.print(records)
    reasons = Table(title="rejections by reason")
    for column in ("source", "field", "reason", "count"):
        reasons.add_column(column)
    for row in status["rejections_by_reason"]:
        reasons.add_row(str(row.get("source")), str(row.get("field")), str(row.get("reason")), str(row.get("count")))
    out.print(reasons)
    sources = Table(title="sources")
    for column in ("source", "last success", "last error"):
        sources.add_column(column)
    for row in status["sources"]:
        sources.add_row(row["source"], str(row.get("last_success_at") or "")[:19], (row.get("last_error") or "")[:100])
    out.print(sources)
    releases = Table(title="last releases")
    for column in ("release", "method", "created", "destination"):
        releases.add_column(column)
    for row in status["releases"]:
        releases.add_row(row["release_id"], str(row.get("method")), str(row.get("created_at"))[:19], str(row.get("destination")))
    out.print(releases)
    if status["privacy_budget"]:
        spent = sum(float(e["epsilon"]) for e in status["privacy_budget"] if e.get("status") in ("spent", "pending"))
        out.print(f"privacy budget spent (synthetic releases): epsilon {spent:g} of {config.job.release.synthetic.budget:g}")
    return EXIT_OK


def cmd_rejections(args: argparse.Namespace) -> int:
    from connector.rejections import COLUMNS, list_rejections, render_snippets, to_csv, value_map_snippets

    config = load_config(args.config)
    pipeline = Pipeline(config)
    try:
        rows = list_rejections(config, pipeline.store, source=args.source, field=args.field, schema=pipeline.schema)
    finally:
        pipeline.close()
    snippets = value_map_snippets(config, rows, schema=pipeline.schema)
    if args.csv:
        args.csv.write_text(to_csv(rows), encoding="utf-8")
    if args.json:
        _print_json({"rejections": [vars(r) for r in rows], "value_map_snippets": [vars(s) for s in snippets]})
        return EXIT_OK
    table = Table(title=f"{len(rows)} rejected value(s)")
    for column in COLUMNS:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*[escape(_cell(getattr(row, c))) for c in COLUMNS])  # '[redacted, 8 chars]' is not markup
    out.print(table)
    if snippets:
        sys.stdout.write("\n" + render_snippets(snippets))
    if args.csv:
        out.print(f"wrote {len(rows)} row(s) to {args.csv}")
    return EXIT_OK


def cmd_notify_test(args: argparse.Namespace) -> int:
    from connector import notify

    config = load_config(args.config)
    settings = config.job.notify
    channels = [name for name, value in (("webhook", settings.webhook), ("email", settings.email)) if value is not None]
    if not channels:
        err.print(f"{config.where('notify')}: no notification channel configured (add `notify.webhook` or `notify.email`)", highlight=False)
        return EXIT_CONFIG
    failures = notify.send(notify.test_notice(config), settings, secrets=notify.job_secrets(config))
    if args.json:
        _print_json({"channels": channels, "sent": not failures, "problems": failures})
    else:
        for problem in failures:
            err.print(f"[red]error[/red] {escape(problem)}", highlight=False)
        if not failures:
            out.print(f"[green]sent[/green] a test notification by {' and '.join(channels)}", highlight=False)
    return EXIT_CONFIG if failures else EXIT_OK


def cmd_codebook(args: argparse.Namespace) -> int:
    from connector.codebook import codebook_json, render_codebook_markdown
    from connector.schema import load_schema

    schema = load_schema()
    if args.format == "json":
        _print_json(codebook_json(schema))
    else:
        sys.stdout.write(render_codebook_markdown(schema))
    return EXIT_OK


def cmd_sandbox_excel(args: argparse.Namespace) -> int:
    from connector.sandbox.excel_writer import write_csv, write_workbook
    from connector.sandbox.generate import generate_cases

    cases = generate_cases(args.cases, seed=args.seed, mess_rate=args.mess_rate)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    (write_csv if args.out.suffix.lower() == ".csv" else write_workbook)(cases, args.out)
    out.print(f"wrote {len(cases)} generated cases (seed {args.seed}) to {args.out}")
    return EXIT_OK


def cmd_mapping_suggest(args: argparse.Namespace) -> int:
    from connector.mapping_suggest import suggest_for_config, suggest_from_xlsform

    if args.out and args.out.exists() and not args.force:
        err.print(f"{args.out} exists; use --force to overwrite it", highlight=False)
        return EXIT_CONFIG
    try:
        if args.xlsform:
            if not args.xlsform.is_file():
                err.print(f"[red]error[/red] {args.xlsform}: no such XLSForm file", highlight=False)
                return EXIT_CONFIG
            draft = suggest_from_xlsform(args.xlsform, profile=f"{args.xlsform.stem}_mapping")
        elif args.config is None or args.source is None:
            err.print("give an XLSForm (--xlsform FILE) or a config and a source id: `mapping suggest CONFIG SOURCE`", highlight=False)
            return EXIT_CONFIG
        else:
            draft = suggest_for_config(load_config(args.config), args.source)
    except (KeyError, TypeError, ValueError) as exc:
        err.print(f"[red]error[/red] {escape(str(exc.args[0]))}", highlight=False)
        return EXIT_CONFIG
    if args.out:
        args.out.write_text(draft, encoding="utf-8")
        out.print(f"wrote {args.out}: review every line marked REVIEW, then point the source's `mapping:` at it")
    else:
        sys.stdout.write(draft)
    return EXIT_OK


def cmd_sandbox_serve(args: argparse.Namespace) -> int:
    from connector.sandbox.demo import demo_sandboxes
    from connector.scheduler import stop_on_signals

    with demo_sandboxes(args.cases, Path("build/sandbox/cases.xlsx")) as env, stop_on_signals() as stop:
        out.print("sandboxes ready. Export these, then run a job such as deploy/examples/demo.yaml:")
        for name, value in env.items():
            sys.stdout.write(f"export {name}={value}\n")
        sys.stdout.flush()
        out.print("(Ctrl-C stops them)")
        while not stop.wait(1.0):
            pass
    return EXIT_OK


def cmd_sandbox_demo(args: argparse.Namespace) -> int:
    from connector.sandbox.demo import run_demo

    with _progress(args) as hook:
        outcome = run_demo(args.config, cases_per_source=args.cases, workbook=args.workbook, progress=hook)
    return _show_outcome(outcome, args.json)


# -- helpers ---------------------------------------------------------------------------------


class _locked:
    """A pipeline under the job's lock, closed on exit."""

    def __init__(self, config):
        self.pipeline = Pipeline(config)
        self.lock: Any = None

    def __enter__(self) -> Pipeline:
        try:
            self.lock = self.pipeline.lock()
            self.lock.__enter__()
        except BaseException:
            self.pipeline.close()
            raise
        return self.pipeline

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(*exc)
        self.pipeline.close()


class _progress:
    """A progress line per source on a terminal; nothing when output is JSON or not a terminal."""

    def __init__(self, args: argparse.Namespace):
        self.enabled = not args.json and err.is_terminal
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if not self.enabled:
            return None
        self.bar.start()
        return self.update

    def update(self, source: str, pages: int, records: int) -> None:
        if source not in self.tasks:
            self.tasks[source] = self.bar.add_task(f"sync {source}", total=None, info="")
        self.bar.update(self.tasks[source], info=f"{pages} pages, {records} records")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()


def _show_sync(report, as_json: bool) -> None:
    if as_json:
        _print_json(report.as_dict())
        return
    table = Table(title=f"sync {report.run_id[:8]}")
    columns = ("source", "status", "pages", "fetched", "inserted", "updated", "unchanged", "deleted", "rejected", "requests", "seconds")
    for column in columns:
        table.add_column(column)
    for s in report.sources:
        table.add_row(*[str(getattr(s, c)) for c in columns])
    out.print(table)
    for s in report.failed:
        err.print(f"[red]source failed[/red] {s.error}", highlight=False)
    if any(s.rejected for s in report.sources):
        out.print("some values were rejected: `htcds-connector rejections CONFIG` lists each one, with the mapping lines that fix misspelt codes")


def _show_release(report, as_json: bool) -> None:
    if as_json:
        _print_json(report.as_dict())
        return
    if report.status == "unchanged" and report.location is None:
        # the release step decided there is nothing new to publish (nothing changed, or what
        # changed waits for a later part): say why, and which release still stands
        why = "; ".join(report.reasons) or "nothing to publish"
        out.print(f"[green]release {report.release_id}[/green] unchanged: {escape(why)}", highlight=False)
    elif report.status in ("published", "unchanged"):
        word = "published" if report.status == "published" else "unchanged (already published)"
        out.print(f"[green]release {report.release_id}[/green] {word}: {report.records_out} rows from {report.records_in} cases -> {report.location}")
    else:
        err.print(f"[red]release {report.status}[/red]: " + "; ".join(report.reasons), highlight=False)


def _print_mapping_table(title: str, mapping: dict) -> None:
    table = Table(title=title)
    table.add_column("key")
    table.add_column("value")
    for key, value in mapping.items():
        table.add_row(str(key), json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    out.print(table)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
