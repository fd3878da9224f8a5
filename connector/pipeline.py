"""One job, end to end: sources -> mapping -> store, then store -> privacy -> gate -> destination.

The pipeline owns the run record and the cursors: a source only yields pages, and each page's
cases, rejections and cursor are committed together, so a crash at any point leaves the store at
the last whole page and the next run continues from there. One failing source does not stop the
others; the release waits until every enabled source has synced in this run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from connector.config import Config
from connector.destinations import PublishError, create_destination
from connector.errors import (
    EXIT_CONFIG,
    EXIT_GATE,
    EXIT_INTERNAL,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PUBLISH,
    EXIT_REJECTIONS,
    EXIT_SOURCE,
    ConnectorError,
    ReleaseRefused,
    as_connector_error,
)
from connector.faults import fault_point
from connector.lock import JobLock, PostgresJobLock
from connector.map_pages import MapAhead, map_page
from connector.logs import get_logger
from connector.mapping import MappingError, load_mapping
from connector.records import MappedPage, Page, Problem, RawRecord, Rejection
from connector.release import build_bundle
from connector.schema import Schema, load_schema
from connector.secrets import SecretMissing
from connector.sources import source_class
from connector.sources.base import Source, SourceError
from connector.store import Store

# The exit codes (connector.errors, documented in the README), importable from here as before.
__all__ = ["EXIT_CONFIG", "EXIT_GATE", "EXIT_INTERNAL", "EXIT_LOCKED", "EXIT_OK", "EXIT_PUBLISH", "EXIT_REJECTIONS", "EXIT_SOURCE", "Pipeline"]

ProgressHook = Callable[[str, int, int], None]  # (source id, pages done, records done)
log = get_logger()


@dataclass
class SourceReport:
    source: str
    status: str = "ok"  # ok | failed
    pages: int = 0
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    rejected_new: int = 0
    requests: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class SyncReport:
    run_id: str
    sources: list[SourceReport] = field(default_factory=list)
    # Set when the run itself failed (store, bug) with this documented code; see Pipeline._run_failed.
    failure_code: int | None = None

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if s.status != "ok"]

    @property
    def exit_code(self) -> int:
        if self.failure_code is not None:
            return self.failure_code
        if self.failed:
            return EXIT_SOURCE
        return EXIT_REJECTIONS if any(s.rejected_new for s in self.sources) else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "exit_code": self.exit_code, "sources": [asdict(s) for s in self.sources]}


@dataclass
class ReleaseReport:
    run_id: str
    status: str  # published | unchanged | refused | failed | preview | skipped
    release_id: str | None = None
    location: str | None = None
    records_in: int = 0
    records_out: int = 0
    privacy: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    failure_code: int | None = None  # set when the run itself failed (store, bug), as in SyncReport

    @property
    def exit_code(self) -> int:
        if self.failure_code is not None:
            return self.failure_code
        return {"refused": EXIT_GATE, "failed": EXIT_PUBLISH, "skipped": EXIT_SOURCE}.get(self.status, EXIT_OK)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


class Pipeline:
    """Runs the stages of one job. Construct per run; `close()` releases the store."""

    def __init__(
        self,
        config: Config,
        *,
        progress: ProgressHook | None = None,
        schema: Schema | None = None,
        stop_requested: Callable[[], bool] | None = None,
        map_ahead_after: int | None | str = "config",
    ):
        self.config = config
        # Records a source delivers in a run before its pages are mapped in a worker process
        # (connector.map_pages); None maps every page in this process. "config": the job's
        # `run.map_worker_after_records`.
        self.map_ahead_after = config.job.run.map_worker_after_records if map_ahead_after == "config" else map_ahead_after
        self.schema = schema or load_schema()
        self.progress = progress
        # Checked after each committed page: SIGTERM handlers and the daemon set it to stop cleanly.
        self.stop_requested = stop_requested or (lambda: False)
        self._store: Store | None = None
        self._deadline: float | None = None
        self._failing_source: SourceReport | None = None  # the source whose page was in flight when the run failed
        self._lock: JobLock | PostgresJobLock | None = None

    def _should_stop(self) -> str | None:
        """Why fetching must stop after the page just committed, or None to go on."""
        if self.stop_requested():
            return "stopped on request (signal or shutdown) after the last committed page"
        if isinstance(self._lock, PostgresJobLock) and self._lock.lost():
            return "stopped: the job's lock in the store was lost (the connection to PostgreSQL dropped); the next run continues"
        if self._deadline is not None and time.monotonic() > self._deadline:
            return f"time budget of {self.config.job.run.time_budget_minutes} min spent; the next run continues"
        return None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.config.store_url())
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def job_name(self) -> str:
        return self.config.job.partner.id

    def lock(self) -> JobLock | PostgresJobLock:
        """The job's lock, to hold for a run: in the store itself when it is PostgreSQL (two hosts
        or pods may share it), a file beside an SQLite store (only one host can reach the file)."""
        if self.config.store_url().startswith("sqlite"):
            self._lock = JobLock(self.lock_path())
        else:
            self._lock = self.store.job_lock(self.config.job.partner.id, self.job_name)
        return self._lock

    def lock_path(self) -> Path:
        url = self.config.store_url()
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            return Path(url[len("sqlite:///"):]).with_suffix(".lock")
        return self.config.resolve_path(f"{self.job_name}.lock")

    # -- sync ----------------------------------------------------------------------------------

    def sync(self, only: list[str] | None = None) -> SyncReport:
        """Sync every enabled source (or `only` these). A failing source is in the report; a failure
        of the run itself (the store, a bug) raises ConnectorError with the partial report attached,
        after marking the run failed."""
        run_id = self.store.start_run(self.job_name, "sync")
        report = SyncReport(run_id)
        budget = self.config.job.run.time_budget_minutes
        self._deadline = time.monotonic() + budget * 60 if budget else None
        try:
            for source_config in self.config.job.sources:
                if not source_config.enabled or (only and source_config.id not in only):
                    continue
                if self._should_stop():
                    report.sources.append(SourceReport(source_config.id, "interrupted", error=f"{source_config.id}: {self._should_stop()}"))
                    continue
                report.sources.append(self._sync_source(run_id, source_config))
        except Exception as exc:
            raise self._run_failed(run_id, exc, "syncing", report) from exc
        counts = _total_counts(report)
        status = "failed" if report.failed else ("rejections" if counts["rejected_new"] else "ok")
        error = "; ".join(f"{s.source}: {s.error}" for s in report.failed) or None
        self.store.finish_run(run_id, status, counts, error)
        return report

    def _sync_source(self, run_id: str, source_config) -> SourceReport:
        result = SourceReport(source_config.id)
        started = time.monotonic()
        source: Source | None = None
        try:
            mapping = load_mapping(source_config.mapping, self.schema, base_dir=self.config.base_dir)
            source = source_class(source_config.type)(source_config, self.config)
            seen: set[str] = set()
            cursor = self.store.cursor(source_config.id)
            log.info("sync started", extra={"run_id": run_id, "source": source_config.id, "resume": cursor is not None})
            duplicates = FirstCopies(source_config.id) if source.full_snapshot else None

            def commit(fetched: Page, page: Page, mapped: MappedPage) -> str | None:
                """Store one page and count it; why to stop fetching now, or None."""
                counts = self.store.commit_page(source_config.id, run_id, mapped)
                # Every record the read met is present, stored or rejected: none of them is "missing".
                seen.update(raw.record_id for raw in page.records)
                seen.update(r.record_id for r in page.rejections)
                result.pages += 1
                result.fetched += len(fetched.records) + len(fetched.rejections)  # every record read, rejected whole or not
                result.inserted += counts.inserted
                result.updated += counts.updated
                result.unchanged += counts.unchanged
                result.deleted += counts.deleted
                result.rejected += len(mapped.rejections)
                result.rejected_new += counts.rejected_new
                log.info(
                    "page committed",
                    extra={"run_id": run_id, "source": source_config.id, "page": page.number, "records": len(page.records), "rejected": len(mapped.rejections)},
                )
                if self.progress:
                    self.progress(source_config.id, result.pages, result.fetched)
                fault_point("sync.page_committed")
                return self._should_stop()

            # Pages are mapped in this process until the source has delivered `map_ahead_after`
            # records; then in a worker process, one page ahead of the commits (connector.map_pages).
            ahead: MapAhead | None = None
            held: tuple[Page, Page] | None = None  # (as fetched, de-duplicated) page in the worker
            read = 0
            reason: str | None = None
            pages = iter(source.pages(cursor))
            try:
                while True:
                    try:
                        fetched = next(pages)
                    except StopIteration:
                        break
                    except Exception:
                        if held is not None and ahead is not None:  # what was read before the failure is kept
                            commit(*held, ahead.take())
                            held = None
                        raise
                    fault_point("sync.page_fetched")
                    page = duplicates.of(fetched) if duplicates is not None else fetched
                    starting = ahead is None and self.map_ahead_after is not None and read >= self.map_ahead_after
                    if starting:  # it starts while this page is mapped here, and takes the next one
                        ahead = MapAhead(mapping, source_config.id)
                    read += len(page.records)
                    if ahead is None or starting:
                        reason = commit(fetched, page, map_page(mapping, source_config.id, page))
                    else:
                        before, held = held, (fetched, page)
                        mapped_before = ahead.take() if before is not None else None
                        ahead.put(page)
                        if before is not None:
                            reason = commit(*before, mapped_before)
                    if reason:
                        break
                if held is not None and ahead is not None and not reason:
                    reason = commit(*held, ahead.take())
            finally:
                if ahead is not None:
                    ahead.close()
            if reason:
                result.status, result.error = "interrupted", f"{source_config.id}: {reason}"
            if result.status == "ok" and getattr(source, "full_snapshot", False) and getattr(source, "complete_read", False):
                result.deleted += self.store.mark_missing_deleted(source_config.id, run_id, seen)
            result.requests = source.stats.requests
            if result.status == "ok":
                self.store.record_source_status(source_config.id, ok=True)
        except (SourceError, SecretMissing, MappingError) as exc:
            result.status, result.error = "failed", str(exc)
        except OSError as exc:
            result.status, result.error = "failed", f"{source_config.id}: {type(exc).__name__}: {exc.strerror or exc}"
        except BaseException:
            # The run itself failed (store, bug): `sync` reports it; the report names this source.
            result.status, result.error = "failed", f"{source_config.id}: the run failed at page {result.pages + 1}"
            self._failing_source = result
            raise
        finally:
            if source is not None:
                result.requests = source.stats.requests
                source.close()
            result.seconds = round(time.monotonic() - started, 3)
        if result.status != "ok":
            self.store.record_source_status(source_config.id, ok=False, error=result.error)
            log.error("sync failed", extra={"run_id": run_id, "source": source_config.id, "error": result.error})
        else:
            log.info("sync finished", extra={"run_id": run_id, **{k: v for k, v in asdict(result).items() if k != "error"}})
        return result

    # -- release -------------------------------------------------------------------------------

    def release_view(self) -> pd.DataFrame:
        """Snapshot of the store -> the release view (unprotected: it never leaves this process)."""
        return self._keyed_view()[1]

    def _keyed_view(self) -> tuple[list[tuple[str, str]], pd.DataFrame]:
        """(source, record id) of every live case, and the release view aligned with them."""
        from privacy.view import derive_release_view, view_fields

        job = self.config.job
        fields = view_fields(self.schema)
        if "victim_perpetrator" in job.release.tables:
            from privacy.view_vp import PERPETRATORS_FIELD

            fields |= view_fields(self.schema, self.schema.vp_view) | {PERPETRATORS_FIELD}
        snapshot = self.store.snapshot([s.id for s in job.sources if s.enabled], fields=fields)
        keys = list(zip(snapshot["source"].astype(str), snapshot["record_id"].astype(str)))
        view = derive_release_view(snapshot, self.schema, datasource=job.partner.datasource, columns=job.release.columns)
        if "victim_perpetrator" in job.release.tables and job.release.method == "k_anonymity":  # each victim's perpetrators, one value (privacy.vp_release)
            from privacy.view_vp import derive_vp_view
            from privacy.vp_release import PROFILE, perpetrator_columns, profiles

            vp = derive_vp_view(snapshot, self.schema, datasource=job.partner.datasource)
            view[PROFILE] = profiles(vp, perpetrator_columns(self.schema), snapshot.index).reindex(view.index).to_numpy()
        return keys, view.reset_index(drop=True)

    def synthetic_views(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The release view and, when the release publishes it, the victim-perpetrator view with
        each row's victim (`_case`: for counting per victim, never published), from one snapshot."""
        from privacy.view import derive_release_view

        job = self.config.job
        snapshot = self.store.snapshot([s.id for s in job.sources if s.enabled])
        view = derive_release_view(snapshot, self.schema, datasource=job.partner.datasource, columns=job.release.columns)
        vp = None
        if "victim_perpetrator" in job.release.tables:
            from privacy.view_vp import CASE_COLUMN, derive_vp_view

            vp = derive_vp_view(snapshot, self.schema, datasource=job.partner.datasource)
            positions = {label: i for i, label in enumerate(snapshot.index)}
            vp[CASE_COLUMN] = vp[CASE_COLUMN].map(positions)  # the victim's row in the view
        return view.reset_index(drop=True), vp

    def release_marker(self) -> str:
        """What a release is computed from, short of the cases themselves: the store's change
        counter, and every setting that reaches the published bytes (release settings, partner,
        enabled sources, destination, schema and connector versions)."""
        from connector import __version__

        job = self.config.job
        settings = {
            "release": job.release.model_dump(mode="json"),
            "partner": job.partner.model_dump(mode="json"),
            "sources": [s.id for s in job.sources if s.enabled],
            "destination": job.destination.model_dump(mode="json"),
            "schema": self.schema.version,
            "connector": __version__,
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:32]
        return f"{self.store.cases_version()}:{digest}"

    def synthesis_input_hash(self, view: pd.DataFrame, vp: pd.DataFrame | None = None) -> str:
        """What a synthetic release is made from: the view's content (and the victim-perpetrator
        view's, when published) and the release settings."""
        from privacy.gate import to_csv_bytes

        settings = self.config.job.release.model_dump(mode="json")
        digest = hashlib.sha256(to_csv_bytes(view))
        if vp is not None:
            digest.update(b"\x00" + to_csv_bytes(vp))
        digest.update(json.dumps(settings, sort_keys=True).encode())
        return digest.hexdigest()

    def next_k_release(self, keys: list[tuple[str, str]], view: pd.DataFrame) -> Any:
        """The next release of the job's k-anonymized series (connector.kanon_release)."""
        from connector.kanon_release import next_k_release
        from privacy.protect import k_setup, prepare

        job = self.config.job
        hierarchy_names = {c.name: c.hierarchy for c in self.schema.view.values() if c.hierarchy}
        rules = {c.name: c.rule for c in self.schema.view.values()}
        from privacy.vp_release import PROFILE

        profile = view.pop(PROFILE) if PROFILE in view.columns else None
        prepared = prepare(view, job.release, self.schema.view_roles(), hierarchy_names=hierarchy_names)
        setup = k_setup(list(prepared.table.columns), job.release, self.schema.view_roles(), hierarchies=prepared.hierarchies, rules=rules)
        table = prepared.table if profile is None else prepared.table.assign(**{PROFILE: profile.to_numpy()})
        nxt = next_k_release(self.store, self.job_name, keys, table, setup, min_new=job.release.part_min_records, schema=self.schema)
        nxt.privacy.update(prepared.notes())
        return nxt

    def protected_view(self, view: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
        """Snapshot -> release view -> protection. Returns (view, the table the next release would
        publish, its privacy record). For a k-anonymized series the record also carries `held`:
        what waits for a later part (local only; `release` never publishes it). A synthetic
        release's victim-perpetrator table: `synthesized`."""
        return self.protected_tables(view)[:3]

    def protected_tables(self, view: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, Any, dict[str, Any] | None]:
        """`protected_view` and the further tables the release would publish, as the gate is handed
        them (`extra_tables`): `preview`'s verdict must check every file a release would carry, the
        victim-perpetrator table included, not the victims alone."""
        job = self.config.job
        if job.release.method == "k_anonymity":
            from privacy.protect import ProtectionError

            keys, keyed = self._keyed_view()
            nxt = self.next_k_release(keys, keyed)
            if not nxt.changed and not nxt.previous_csv:
                raise ProtectionError(_nothing_yet(len(keyed), job.release.k))
            return keyed, nxt.table, {**nxt.privacy, "held": nxt.held, "changes": nxt.changed}, self.extra_tables(nxt.vp_table, nxt)
        vp = None
        if view is None:
            view, vp = self.synthetic_views()
        elif "victim_perpetrator" in job.release.tables:
            vp = self.synthetic_views()[1]
        view, table, privacy, vp_table = self.synthesized(view, vp)
        return view, table, privacy, self.extra_tables(vp_table)

    def extra_tables(self, vp_table: pd.DataFrame | None, nxt: Any = None) -> dict[str, Any] | None:
        """The victim-perpetrator table as `privacy.gate.admit` checks it (`extra`), or None: with the
        k-anonymized series' previous version and victims (`nxt`), or a synthetic release's alone."""
        if vp_table is None:
            return None
        from privacy.gate import ExtraTable
        from privacy.view import value_domains
        from privacy.vp_release import VP_FILE

        vp_roles = {c: col.role for c, col in self.schema.vp_view.items()}
        domains = value_domains(self.schema, self.schema.vp_view)
        if nxt is None:
            return {VP_FILE: ExtraTable(vp_table, vp_roles, domains)}
        return {VP_FILE: ExtraTable(vp_table, {**vp_roles, "releasePart": "process"}, domains, nxt.previous_vp_csv, nxt.vp_new)}

    def synthesized(self, view: pd.DataFrame, vp: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], pd.DataFrame | None]:
        """(view, synthetic victim table, privacy record, synthetic victim-perpetrator table or None)."""
        from privacy.protect import protect

        job = self.config.job
        hierarchy_names = {c.name: c.hierarchy for c in self.schema.view.values() if c.hierarchy}
        rules = {c.name: c.rule for c in self.schema.view.values()}
        protected = protect(view, job.release, self.schema.view_roles(), hierarchy_names=hierarchy_names, rules=rules, vp=vp, schema=self.schema)
        privacy = dict(protected.privacy)
        synth = job.release.synthetic
        spent_epsilon, spent_delta = self.store.spent(job.partner.id)
        privacy["budget"] = {
            "total": synth.budget,
            "spent_before": round(spent_epsilon, 9),
            "delta_spent_before": spent_delta,
            "left_after": round(max(synth.budget - spent_epsilon - synth.epsilon, 0.0), 9),
        }
        privacy["metrics"] = _release_metrics(protected.basis, protected.table, synth.reporting_length, privacy, synth.resolution, synth.seed)
        return view, protected.table, privacy, protected.vp_table

    def release(self, run_ids: list[str] | None = None) -> ReleaseReport:
        from privacy.gate import GateRefused, admit

        run_id = self.store.start_run(self.job_name, "release")
        report = ReleaseReport(run_id, "failed")
        method = self.config.job.release.method
        try:
            marker = self.release_marker()
            if self.store.release_marker(self.job_name, method) == marker:
                # nothing that reaches the release view changed since the last release with these
                # settings: not a case is read (issue #16's unchanged night)
                report.status = "unchanged"
                report.release_id = (self.store.last_release(method) or {}).get("release_id")
                report.reasons = ["nothing changed since the last release"]
                self.store.finish_run(run_id, "ok", {"records_in": 0, "records_out": 0, "skipped": 1}, None)
                log.info("release unchanged", extra={"run_id": run_id, "reason": "no case changed since the last release"})
                return report
            series = None
            previous, previous_k, extra = None, None, None
            if self.config.job.release.method == "k_anonymity":
                keys, view = self._keyed_view()
                report.records_in = len(view)
                nxt = self.next_k_release(keys, view)
                if not nxt.changed and not nxt.previous_csv:
                    # nothing was ever published and no first part can be formed: say so, loudly
                    raise GateRefused([_nothing_yet(len(view), self.config.job.release.k)])
                if not nxt.changed:
                    report.status = "unchanged"
                    report.release_id = (self.store.last_release("k_anonymity") or {}).get("release_id")
                    report.reasons = [_held_text(nxt.held, self.config.job.release.part_min_records)] if any(nxt.held.values()) else []
                    self.store.mark_released(self.job_name, method, marker)
                    self.store.finish_run(run_id, "ok", {"records_in": len(view), "records_out": 0, "held": nxt.held}, None)
                    log.info("release unchanged", extra={"run_id": run_id, "reason": "no new part and no part to retire", **{f"held_{k}": v for k, v in nxt.held.items()}})
                    return report
                table, privacy, previous, series = nxt.table, nxt.privacy, nxt.previous_csv, nxt.change
                extra = self.extra_tables(nxt.vp_table, nxt)
                previous_k = ((self.store.last_release("k_anonymity") or {}).get("privacy") or {}).get("k")
            else:
                view, vp = self.synthetic_views()
                # Re-synthesizing unchanged data would spend privacy budget for nothing.
                input_hash = self.synthesis_input_hash(view, vp)
                already = self.store.released_input(self.job_name, input_hash)
                if already is not None:
                    self.store.mark_released(self.job_name, method, marker)
                    report.status, report.release_id, report.records_in = "unchanged", already, len(view)
                    self.store.finish_run(run_id, "ok", {"records_in": len(view), "records_out": 0}, None)
                    log.info("release unchanged", extra={"run_id": run_id, "release_id": already, "reason": "same input, no budget spent"})
                    return report
                view, table, privacy, vp_table = self.synthesized(view, vp)
                report.records_in = len(view)
                extra = self.extra_tables(vp_table)  # the gate checks it with the victims (privacy.gate._check_synthetic_extra)
            privacy = {**privacy, "schema_version": self.schema.version}
            privacy = publishable_record(privacy, table)
            release = admit(table, privacy, roles=self.schema.view_roles(), previous=previous, previous_k=previous_k if previous else None, extra=extra)
            bundle = build_bundle(release, partner=self.job_name, schema=self.schema, run_ids=[*(run_ids or []), run_id])
            destination = create_destination(self.config)
            # Privacy budget (synthetic releases): reserved after the gate, before publishing, in a
            # transaction that re-checks the total; spent with the release row, voided only if the
            # destination says no byte left (PublishError.sent is False). Anything else (files put
            # before a failure, an upload the receiver read, a crash or a signal mid-publish) leaves
            # it pending, and pending counts as spent: the next run draws new noise from the same cases.
            budget_entry = None
            if privacy.get("method") == "synthetic":
                synth = self.config.job.release.synthetic
                budget_entry = self.store.reserve_budget(
                    self.config.job.partner.id, float(privacy["epsilon"]), float(privacy["delta"]), synth.budget, run_id, input_hash=input_hash,
                    parts=privacy.get("epsilon_parts"),
                )
            try:
                result = destination.publish(bundle)
            except BaseException as exc:
                if budget_entry is not None and isinstance(exc, PublishError) and not exc.sent:
                    self.store.void_budget(budget_entry)
                raise
            fault_point("publish.before_ledger")
            self.store.record_release(
                bundle.release_id, run_id, str(privacy.get("method")), destination.describe(), release.privacy, budget_entry=budget_entry, series=series
            )
            self.store.mark_released(self.job_name, method, marker)
            report.status = "published" if result.published else "unchanged"
            report.release_id, report.location = bundle.release_id, result.location
            report.records_out, report.privacy = release.row_count, release.privacy
        except GateRefused as exc:
            report.status, report.reasons = "refused", list(exc.reasons)
        except PublishError as exc:
            report.status, report.reasons = "failed", [str(exc)]
        except privacy_refusals() as exc:
            # Only the privacy step's own refusals (the model cannot be met as configured, the budget
            # is spent) are "refused" (exit 4); any other ValueError is a failure of the run.
            report.status, report.reasons = "refused", [str(exc)]
        except Exception as exc:
            raise self._run_failed(run_id, exc, "releasing", report) from exc
        status = {"published": "ok", "unchanged": "ok"}.get(report.status, "failed")
        self.store.finish_run(run_id, status, {"records_in": report.records_in, "records_out": report.records_out}, "; ".join(report.reasons) or None)
        level = log.info if status == "ok" else log.error
        level("release " + report.status, extra={"run_id": run_id, "release_id": report.release_id, "records_out": report.records_out})
        return report

    def _run_failed(self, run_id: str, exc: Exception, doing: str, report: SyncReport | ReleaseReport) -> ConnectorError:
        """Mark the run failed (if the store still answers) and return the documented error for
        `exc`, carrying the partial report, for `cli.main` to print and exit with."""
        error = as_connector_error(exc, doing)
        failing, self._failing_source = self._failing_source, None
        if isinstance(report, SyncReport) and failing is not None and failing not in report.sources:
            report.sources.append(failing)
        if isinstance(report, ReleaseReport):
            report.status, report.reasons = "failed", [error.message]
            counts = {"records_in": report.records_in, "records_out": report.records_out}
        else:
            counts = _total_counts(report)
        report.failure_code = error.exit_code
        error.report = report
        try:
            self.store.finish_run(run_id, "failed", counts, error.message)
        except Exception:  # noqa: BLE001 - the store itself may be what failed; the next start marks the run crashed
            log.warning("could not mark the run failed", extra={"run_id": run_id})
        log.error("run failed", extra={"run_id": run_id, "exit_code": error.exit_code, "error": error.message})
        return error

    def run(self) -> tuple[SyncReport, ReleaseReport]:
        sync = self.sync()
        return sync, self.release_after(sync)

    def release_after(self, sync: SyncReport) -> ReleaseReport:
        """The release step of `run`: skipped (exit 3) while a source did not sync, if so configured."""
        if sync.failed and self.config.job.run.release_requires_all_sources:
            names = ", ".join(s.source for s in sync.failed)
            return ReleaseReport(sync.run_id, "skipped", reasons=[f"not released: source(s) {names} did not sync"])
        return self.release([sync.run_id])

    # -- check ---------------------------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Everything a new user should fix before the first sync, each with where and what to do."""
        from connector.checks import notify_problems, release_problems, schedule_problems

        problems: list[Problem] = [*schedule_problems(self.config), *release_problems(self.config, self.schema), *notify_problems(self.config)]
        try:
            self.store.counts()
        except ConnectorError as exc:  # StoreError: a safe message (no password, no case data)
            problems.append(Problem("store.url", exc.message, hint=exc.hint))
        except Exception as exc:  # noqa: BLE001 - any driver error is reported, not raised
            problems.append(Problem("store.url", f"cannot open the store: {type(exc).__name__}", hint="check the URL and that the server runs"))
        for i, source_config in enumerate(self.config.job.sources):
            where = f"{self.config.where('sources', i)} ({source_config.id})"
            try:
                mapping = load_mapping(source_config.mapping, self.schema, base_dir=self.config.base_dir)
            except MappingError as exc:
                problems.extend(Problem(where, p) for p in exc.problems)
                continue
            source = source_class(source_config.type)(source_config, self.config)
            try:
                found = source.check()
                problems.extend(Problem(where, str(p.message), p.severity, p.hint) for p in found)
                offered = {f.name for f in source.fields()}
                if offered and not any(p.severity == "error" for p in found):
                    for rule in mapping.missing_fields(offered, _always_offered(source_config.type, source)):
                        problems.append(Problem(where, f"mapping {mapping.name}: no source field for {rule}; it will stay unknown", "warning"))
            except (SourceError, SecretMissing) as exc:
                problems.append(Problem(where, str(exc)))
            finally:
                source.close()
        problems.extend(create_destination(self.config).check())
        return problems


def _always_offered(source_type: str, source: Source) -> set[str]:
    """Fields a source's records always carry though `fields()` may not list them, so `check`
    does not warn about them: form metadata (`_submission_time`, ...) and the Case's owner."""
    names = set(getattr(source, "system_fields", ()))
    if hasattr(source, "form"):
        from connector.sources.xlsform import META_KEYS

        names.update(META_KEYS)
    if source_type == "salesforce":
        from connector.sources.salesforce_soql import OWNER_NAME

        names.add(OWNER_NAME)
    return names


def privacy_refusals() -> tuple[type[Exception], ...]:
    """The privacy step's own refusals: the gate's, the budget's, and the privacy methods' declared
    errors (k cannot be reached, nothing to synthesize, a value with no place in its hierarchy)."""
    import importlib

    found: list[type[Exception]] = [ReleaseRefused]
    for module, name in (("privacy.hierarchies", "HierarchyError"), ("privacy.kanon", "KAnonymityError"),
                         ("privacy.protect", "ProtectionError"), ("privacy.synth", "SynthesisError")):
        error = getattr(importlib.import_module(module), name, None)
        if isinstance(error, type) and issubclass(error, Exception):
            found.append(error)
    return tuple(found)


DUPLICATE_ID = "duplicate record id: the first copy is stored, this one is not"


class FirstCopies:
    """Duplicate record ids within one read of a full-snapshot source (a spreadsheet): the first copy
    goes on, each later copy becomes a rejection naming both places, instead of silently
    overwriting the first (300 rows in, 250 stored, no word).

    Only for full-snapshot sources: an API source that delivers an id twice in a run delivers a
    newer version of it (edited while the run paged), which must win.
    """

    def __init__(self, source: str):
        self.source = source
        self.first: dict[str, str] = {}

    def of(self, page: Page) -> Page:
        """The page with only first copies, and a rejection for each later copy."""
        kept: list[RawRecord] = []
        rejected: list[Rejection] = []
        for i, raw in enumerate(page.records):
            where = raw.position or f"page {page.number + 1}, record {i + 1}"
            first = self.first.get(raw.record_id)
            if first is None:
                self.first[raw.record_id] = where
                kept.append(raw)
            else:
                rejected.append(Rejection(self.source, raw.record_id, "record_id", f"{first} and {where}", DUPLICATE_ID))
        if not rejected:
            return page
        return Page(kept, page.cursor, page.number, rejections=[*page.rejections, *rejected])


def _release_metrics(basis: Any, table: pd.DataFrame, reporting_length: int, privacy: dict[str, Any], threshold: int, seed: int | None) -> dict[str, Any]:
    """Utility and risk of the release against the real view in its representation (privacy.metrics)."""
    from privacy.metrics import compare

    qis = [q for q in privacy.get("quasi_identifiers", []) if q in table.columns]
    return compare(basis, table, reporting_length=reporting_length, quasi_identifiers=qis, threshold=threshold, seed=seed or 0)


def _nothing_yet(cases: int, k: int) -> str:
    return f"nothing to publish: the store holds {cases} live case(s) and a first release needs at least k={k}"


def _held_text(held: dict[str, int], part_min: int) -> str:
    """What waits for a later part, in words (local: the run record and the console, never a release)."""
    return (
        f"held for a later part (release.part_min_records = {part_min}): {held.get('new', 0)} new, "
        f"{held.get('corrected_still_published', 0)} corrected and {held.get('deleted_still_published', 0)} deleted records"
    )


def publishable_record(privacy: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """The privacy record as it may leave the partner: metrics computed from the release (`table`,
    the rows to publish) alone, and for a synthetic release no exact count of the real cases
    (epsilon does not cover it)."""
    from privacy.metrics import publishable_metrics

    public = dict(privacy)
    if public.get("metrics"):
        public["metrics"] = publishable_metrics(public["metrics"], table)
    if public.get("method") == "synthetic":
        public.pop("records_in", None)
    return public


def _total_counts(report: SyncReport) -> dict[str, int]:
    keys = ("pages", "fetched", "inserted", "updated", "unchanged", "deleted", "rejected", "rejected_new", "requests")
    return {k: sum(getattr(s, k) for s in report.sources) for k in keys}
