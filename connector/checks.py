"""What `check` verifies beyond the config's shape: values that only fail later, at 2 a.m.

Loading a config checks its keys and types. Some values are well-formed and still wrong, and
without these checks they fail only when the daemon starts, when the first release is protected,
or when the first failure should have been reported: a cron expression or time zone the scheduler
cannot read, quasi-identifiers or `levels` keys that are no column of the release view, a webhook
or mail server that does not answer. Each problem names the config line.
"""

from __future__ import annotations

import smtplib
from urllib.parse import urlsplit

import requests

from connector.config import Config
from connector.records import Problem
from connector.schema import Schema


def schedule_problems(config: Config) -> list[Problem]:
    """The daemon's cron expression and time zone, read exactly as the daemon reads them."""
    from connector.scheduler import cron_trigger

    schedule = config.job.schedule
    try:
        cron_trigger("* * * * *", schedule.timezone)
    except ValueError as exc:
        return [Problem(config.where("schedule", "timezone"), str(exc))]
    try:
        cron_trigger(schedule.cron, schedule.timezone)
    except ValueError as exc:
        return [Problem(config.where("schedule", "cron"), _cron_message(schedule.cron, exc), hint="five fields: minute hour day month day-of-week, e.g. `0 2 * * *`")]
    return []


def release_problems(config: Config, schema: Schema) -> list[Problem]:
    """Release settings that name columns: each must be a column of the release view (and levels a quasi-identifier)."""
    release = config.job.release
    columns = set(schema.view)
    known = ", ".join(sorted(c for c in columns if schema.view[c].role == "quasi_identifier"))
    problems: list[Problem] = []
    for i, name in enumerate(release.quasi_identifiers):
        if name not in columns:
            problems.append(Problem(config.where("release", "quasi_identifiers", i), f"{name!r} is no column of the release view", hint=f"quasi-identifier columns: {known}"))
    # As privacy.protect counts them: the listed ones plus every quasi-identifier column of the view.
    qis = set(release.quasi_identifiers) | {c for c in columns if schema.view[c].role == "quasi_identifier"}
    for scope, levels in (("release", release.levels), ("synthetic", release.synthetic.levels)):
        loc = ("release", "levels") if scope == "release" else ("release", "synthetic", "levels")
        for name, level in levels.items():
            if name not in qis:
                problems.append(Problem(config.where(*loc, name), f"level for {name!r}, which is no quasi-identifier of the release", hint=f"quasi-identifier columns: {known}"))
            elif level < 0:
                problems.append(Problem(config.where(*loc, name), f"level {level} for {name!r} must be 0 or more"))
    for i, name in enumerate(release.columns or []):
        if name not in columns:
            problems.append(Problem(config.where("release", "columns", i), f"{name!r} is no column of the release view", hint="`htcds-connector codebook` lists them"))
    for name in release.hierarchies:
        if name not in qis:
            problems.append(Problem(config.where("release", "hierarchies", name), f"hierarchy for {name!r}, which is no quasi-identifier of the release", hint=f"quasi-identifier columns: {known}"))
    if release.l_diversity is not None:
        for i, name in enumerate(release.l_diversity.facts):
            if name not in columns or schema.view[name].role != "sensitive":
                problems.append(Problem(config.where("release", "l_diversity", "facts", i), f"{name!r} is no sensitive column of the release view"))
    for i, name in enumerate(release.importance):
        if name == "perpetrators" and "victim_perpetrator" in release.tables:  # the victim-perpetrator fact
            continue
        if name not in columns:
            problems.append(Problem(config.where("release", "importance", i), f"{name!r} is no column of the release view", hint="`htcds-connector codebook` lists them"))
    if problems:
        return problems
    return problems + _protection_problems(config, schema)


def _protection_problems(config: Config, schema: Schema) -> list[Problem]:
    """What the release step itself would refuse about the settings, asked on the view's columns
    alone (no case is read): hierarchy levels out of range, a synthetic release (or its
    victim-perpetrator table) too wide to finish."""
    import pandas as pd

    from privacy.protect import ProtectionError, k_setup, prepare, synthetic_columns_problem

    release = config.job.release
    names = [c for c in (release.columns or list(schema.view))]
    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in names})
    rules = {c.name: c.rule for c in schema.view.values()}
    hierarchy_names = {c.name: c.hierarchy for c in schema.view.values() if c.hierarchy}
    try:
        prepared = prepare(empty, release, schema.view_roles(), hierarchy_names=hierarchy_names)
        if release.method == "synthetic":
            problem = synthetic_columns_problem(list(prepared.table.columns), rules)
            if problem:
                return [Problem(config.where("release", "columns"), problem)]
            if "victim_perpetrator" in release.tables:
                from privacy.vp_synth import synthetic_vp_problem

                problem = synthetic_vp_problem(list(prepared.table.columns), schema)
                return [Problem(config.where("release", "tables"), problem)] if problem else []
            return []
        k_setup(list(prepared.table.columns), release, schema.view_roles(), hierarchies=prepared.hierarchies, rules=rules)
    except (ProtectionError, ValueError) as exc:
        return [Problem(config.where("release"), str(exc))]
    return []


def notify_problems(config: Config, *, timeout: float = 5.0) -> list[Problem]:
    """Does each notification channel answer? Nothing is sent (`notify test` sends a message)."""
    settings = config.job.notify
    problems: list[Problem] = []
    if settings.webhook is not None:
        url = settings.webhook.url
        host = urlsplit(url).hostname or "?"
        try:
            requests.head(url, timeout=min(timeout, settings.webhook.timeout_seconds), allow_redirects=False)
        except requests.RequestException as exc:
            # Any HTTP answer (even 405 to a HEAD) means it is there; only no answer is a problem.
            problems.append(Problem(config.where("notify", "webhook", "url"), f"the webhook at host {host} does not answer ({type(exc).__name__})",
                                    hint="check the URL and that this host may reach it; `htcds-connector notify test CONFIG` sends a test message"))
    if settings.email is not None:
        email = settings.email
        try:
            client = (smtplib.SMTP_SSL if email.security == "ssl" else smtplib.SMTP)(email.host, email.port, timeout=min(timeout, email.timeout_seconds))
            client.close()
        except (OSError, smtplib.SMTPException) as exc:
            problems.append(Problem(config.where("notify", "email", "host"), f"the mail server {email.host}:{email.port} does not answer ({type(exc).__name__})",
                                    hint="check host, port and security; `htcds-connector notify test CONFIG` sends a test message"))
    return problems


def _cron_message(cron: str, exc: ValueError) -> str:
    text = str(exc)
    if cron in text:
        return text
    return f"cron expression {cron!r} cannot be read: {text}"


__all__ = ["notify_problems", "release_problems", "schedule_problems"]
