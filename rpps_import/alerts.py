"""SAS alerts of an import announced to maintainers: a JSON POST to the webhook of the settings, if any.

What is sent names the import, its counts and each alert (participant's IDNPS or CPTS's IDNST, department, site,
distance): identifiers of professionals and structures, as in the change report, never a name or anything of a
patient. A webhook that fails is retried a few times, then logged: the import stands.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import httpx

from core.report import ImportSummary
from core.retry import Retry
from core.settings import Settings

log = logging.getLogger("dispo.imports")


def payload(summary: ImportSummary) -> dict[str, Any]:
    alerts = summary.changes.sas_alerts if summary.changes else []
    return {
        "import_id": summary.import_id,
        "kind": summary.kind,
        "outcome": summary.outcome,
        "published": summary.file.published.isoformat() if summary.file and summary.file.published else None,
        "sas_alerts": dict(Counter(a.alert for a in alerts)),
        "alerts": [a.model_dump(mode="json", exclude_none=True) for a in alerts],
    }


def announce(settings: Settings, summary: ImportSummary, transport: httpx.BaseTransport | None = None) -> bool:
    """POST the import's SAS alerts to the webhook; True when it took them, False when there was nothing to send, no
    webhook, or it kept failing."""
    if summary.outcome != "switched" or summary.changes is None or not summary.changes.sas_alerts:
        return False
    if not settings.import_webhook_url:
        return False
    body = payload(summary)

    def post() -> None:
        with httpx.Client(timeout=10.0, transport=transport) as client:
            client.post(settings.import_webhook_url or "", json=body).raise_for_status()

    try:
        Retry(retries=2, base_s=0.5, max_s=5.0).call(post)
    except Exception as exc:  # a refusal, an address that is not one: logged, the import stands
        log.warning("import %s: the webhook refused its SAS alerts (%s)", summary.import_id, type(exc).__name__)
        return False
    return True
