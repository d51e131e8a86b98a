"""The imports the scheduler runs: the national file fetched from its URL, then imported as by hand (same validation,
same refusals, same report); RPPS every day, FINESS every month, at the settings' times (Paris time)."""

from __future__ import annotations

import logging
from datetime import datetime

from apscheduler.triggers.cron import CronTrigger

from core.geo import PARIS
from core.report import FileRejected, ImportSummary
from core.settings import Settings
from indexer.backend import Backend
from indexer.lifecycle import ImportRefused
from rpps_import import history
from rpps_import.fetch import FetchError, fetch
from rpps_import.pipeline import ImportBusy, import_finess, import_lease, import_rpps

log = logging.getLogger("dispo.imports")
KINDS = ("rpps", "finess")


def url_of(kind: str, settings: Settings) -> str | None:
    return settings.rpps_url if kind == "rpps" else settings.finess_url


def trigger(kind: str, settings: Settings) -> CronTrigger:
    """When the scheduler imports a kind: RPPS daily (its extraction is published every day), FINESS monthly."""
    at = settings.rpps_import_at if kind == "rpps" else settings.finess_import_at
    hour, minute = (int(x) for x in at.split(":"))
    day = "*" if kind == "rpps" else str(settings.finess_import_day)
    return CronTrigger(day=day, hour=hour, minute=minute, timezone=PARIS)


def run_import(kind: str, backend: Backend, settings: Settings) -> ImportSummary | None:
    """Fetch and import a kind once; None when it did not (told in the log, and in the kept report when the import
    started): the live file already, another import of the kind running, the file unreachable, older than the live
    one, refused."""
    url = url_of(kind, settings)
    if not url:
        return None
    started = datetime.now(PARIS)
    try:
        # The lease from the download on: two schedulers never fetch into the same file, nor import it twice.
        with import_lease(backend, settings, kind) as guard:
            fetched = fetch(url, kind, settings)
            live = history.live_file(backend, kind)
            if live is not None and live.sha256 == fetched.source.sha256:
                # The publisher has not replaced it yet (or another scheduler imported it just now).
                log.info("scheduled %s import: %s is the live file already", kind, fetched.source.name)
                return None
            load = import_rpps if kind == "rpps" else import_finess
            summary = load(fetched.path, backend, settings, source=fetched.source, guard=guard)
    except ImportBusy as exc:
        log.warning("scheduled %s import not started: %s", kind, exc)
        return None
    except FetchError as exc:
        log.error("scheduled %s import: download failed: %s", kind, exc)
        return None
    except ImportRefused as exc:
        log.warning("scheduled %s import refused: %s", kind, exc.summary.message)
        return None
    except FileRejected as exc:
        log.error("scheduled %s import: file rejected: %s", kind, exc)
        return None
    alerts = len(summary.changes.sas_alerts) if summary.changes else 0
    log.info("scheduled %s import started %s: %s, %d SAS alert(s)", kind, f"{started:%H:%M}", summary.message, alerts)
    return summary
