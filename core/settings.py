"""The one settings object: every knob of Dispo, read from the environment (`DISPO_*`).

Each field says why it exists; `DISPO_<FIELD NAME>` overrides it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REFRESH = r"^(-1|\d+(ms|s|m))$"  # an Elasticsearch refresh interval; -1 for none


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPO_", extra="ignore")

    # Which search backend serves and stores everything: the embedded SQLite index needs no server.
    backend: Literal["sqlite", "elasticsearch"] = "sqlite"
    # Where the embedded index, import reports and local state live.
    data_dir: Path = Path(".dispo")
    # Elasticsearch URL, used when backend=elasticsearch (and by the test suite); on a cluster, several nodes'
    # URLs comma-separated: the client spreads requests over them and retries one on another node when a node is gone.
    es_url: str | None = None
    # Prefix of every Elasticsearch index and alias, so several deployments can share a cluster.
    index_prefix: str = "dispo"
    # Elasticsearch request timeout in seconds.
    es_timeout_s: float = 30.0
    # Layout of every Elasticsearch index: shards, and replicas, applied once an import's version is sealed so that
    # bulk loading writes each document once: a count ("1"), or a range auto-expanded to the nodes there are ("0-1":
    # none on a single node, which stays green, one on a cluster, which then survives the loss of a node).
    es_shards: int = Field(default=1, ge=1, le=64)
    es_replicas: str = Field(default="0-1", pattern=r"^(\d|\d-(\d|all))$")
    # How soon writes are seen by searches, for every kind, and per kind where it differs ('{"slots": "5s"}').
    es_refresh_interval: str = Field(default="1s", pattern=REFRESH)
    es_refresh_intervals: dict[str, Annotated[str, Field(pattern=REFRESH)]] = Field(default_factory=dict)
    # Copies of a shard (primary included) that must be up before a write goes ahead: "1", a number, or "all".
    es_wait_for_active_shards: str = Field(default="1", pattern=r"^(\d|all)$")

    # Import safety: refuse to switch the live index when accepted records drop by more than this.
    max_drop_ratio: float = 0.10
    # Records handled per chunk by the readers (~20 KB each in flight). Memory then grows with the file only by the
    # RPPS reader's duplicate check, ~115 bytes per line (about 260 MB for the national file's 2.3 M lines).
    import_chunk_lines: int = 2_000
    # Documents per bulk request.
    bulk_size: int = 2_000

    # Where the national files are published, fetched by `dispo import rpps|finess` without a file and by the
    # scheduled imports (the annuaire santé's extraction; data.gouv.fr's etalab FINESS file): HTTPS, a zip or the file.
    rpps_url: str | None = None
    finess_url: str | None = None
    # A download larger than this is refused (the national RPPS extraction is under 1 GB unzipped), as is a zip
    # member that would unpack larger.
    import_max_bytes: int = Field(default=3_000_000_000, ge=1_000)
    # Seconds a whole download may take, and a read may wait, before it is given up (it resumes at the next try).
    import_download_timeout_s: float = Field(default=3_600.0, gt=0)
    import_read_timeout_s: float = Field(default=60.0, gt=0)
    # Downloaded files kept per kind (the latest ones), to re-import or compare by hand.
    import_keep_files: int = Field(default=3, ge=1, le=100)
    # When the scheduler imports (Paris time): RPPS every day, FINESS every month on this day; off without a URL.
    rpps_import_at: str = Field(default="05:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    finess_import_day: int = Field(default=5, ge=1, le=28)
    finess_import_at: str = Field(default="06:30", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    # How long an import holds its kind's lease: another import of the kind waits this long after a crash.
    import_lease_s: float = Field(default=300.0, ge=5.0)
    # Where imports that raise SAS alerts are announced (a JSON POST: counts and ids, never names); off when unset.
    import_webhook_url: str | None = None

    # Address geocoder (BAN/addok `/search/csv/`); off unless a base URL is given.
    geocoder_url: str | None = None
    # Minimum addok score for an address result to be trusted over the commune centroid.
    geocoder_min_score: float = 0.5
    # Requests per second allowed against the geocoder (the public service allows 50 per IP).
    geocoder_rps: float = 10.0
    # Rows per batch CSV upload to the geocoder.
    geocoder_batch_rows: int = 1_000
    # Retries of a failed geocoder batch before falling back to commune centroids.
    geocoder_retries: int = 3

    # API bearer tokens: a file of `role:sha256(token):label` lines ...
    tokens_file: Path | None = None
    # ... and/or the same entries comma-separated in the environment.
    tokens: str = ""
    # People sign in through Pro Santé Connect (OpenID Connect) when an issuer is set; unset, pages ask for a token.
    oidc_issuer: str | None = None
    oidc_client_id: str = "dispo"
    oidc_client_secret: SecretStr | None = None
    # Pro Santé Connect's production scopes are "openid scope_all".
    oidc_scopes: str = "openid profile"
    # The ID token's claims naming the person's IDNPS and profession (Pro Santé Connect's names).
    oidc_idnps_claim: str = "SubjectNameID"
    oidc_profession_claim: str = "SubjectRefPro"
    # The API's address as browsers reach it (https://dispo.example.fr), for the provider's redirections and the
    # session cookie's Secure flag; unset, each request's own address.
    public_url: str | None = None
    # A session ends this long after sign-in (a regulation shift) or after this long unused, whichever comes first.
    session_lifetime_s: float = Field(default=12 * 3600, gt=0)
    session_idle_s: float = Field(default=2 * 3600, gt=0)
    # HTTP bind address of `dispo serve`.
    host: str = "127.0.0.1"
    port: int = 8000
    # Processes of `dispo serve`, each with its own interpreter and connections: a search is CPU-bound Python, so
    # one process serves one core. Default: the machine's cores.
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64)

    # Availability aggregation: seconds between two cycles of one vendor.
    aggregation_interval_s: float = 120.0
    # Seconds a scheduler's lease on a vendor lasts unless renewed (every third of it): several `dispo aggregate`
    # may run, one pulls each vendor, and a standby takes over a dead one's vendors within 1⅓ of this.
    aggregation_lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    # The Hub Santé (AMQP 0-9-1) that carries appointments to the SAMU's regulation software: amqps://... with the
    # platform's certificate; a broker of the project's own (tests, demo) declares the Hub's queues itself.
    amqp_url: str | None = None
    amqp_ca: str | None = None
    amqp_cert: str | None = None
    amqp_key: str | None = None
    lrm_sender_id: str = Field(default="fr.health.test.ptfsas", pattern=r"^fr\.health(\.[a-z0-9-]+)+$")
    lrm_exchange: str = "hubsante"
    lrm_declare_hub: bool = False
    lrm_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400)  # dateTimeExpires: queued + this
    lrm_poll_s: float = Field(default=0.1, gt=0, le=10)  # how often the transmitter looks for queued messages
    # A vendor's slots older than this (no successful call since) are hidden from "free" results.
    staleness_limit_s: float = 900.0
    # Retries of a batch after a timeout, a lost connection, a 429 or a 5xx (`core/retry.py`), with jittered
    # exponential backoff from this base.
    batch_retries: int = 2
    retry_base_s: float = 0.5
    # Seconds from a vendor's cycle start during which failed batches are split in halves to isolate the practitioner
    # at fault (25 -> 1 is 5 rounds of the contract's 7 s); past it, what still fails is marked failing whole.
    split_budget_s: float = Field(default=60.0, ge=0)
    # Circuit breaker: opens after this many consecutive failed calls (a half of a split batch counts only when its
    # sibling failed too, so one slow agenda never opens it), probes again after reset_s.
    breaker_failures: int = 5
    breaker_reset_s: float = 60.0
    # Live re-check of a search page's cards with their vendors: one deadline for the whole page.
    verify_deadline_s: float = 0.8
    # Days after today the slot window covers (2 = today, tomorrow and the day after, as the contract).
    horizon_days: int = 2

    # Coverage snapshots for analysts: taken after `dispo aggregate --once` and by the scheduler at this
    # interval (at least hourly, as analysts compare hours of the day).
    coverage_interval_s: float = Field(default=600.0, gt=0, le=3600)
    # How long snapshots and search outcomes are kept; commune rows are many, so kept less.
    coverage_retention_days: float = Field(default=90.0, gt=0)
    coverage_commune_retention_days: float = Field(default=7.0, gt=0)

    # Largest page the search API returns.
    max_page_size: int = Field(default=200, ge=1)
    # Request bodies larger than this are refused with 413, on every route.
    max_body_bytes: int = Field(default=1_000_000, ge=1_024)

    # The server's secret (`core/secrets.py`): signs search cursors, seals vendor credentials at rest. Unset, a random
    # key is made once in `<data_dir>/secret.key`; set it (32+ characters) when several API instances share an index.
    secret_key: SecretStr | None = None

    # Vendor answers are untrusted input: a page larger than this fails the call, read as it streams, never whole ...
    vendor_max_answer_bytes: int = Field(default=16_000_000, ge=1_024)
    # ... and a whole call (every page of its answer) ends by this deadline, however slowly the bytes come.
    vendor_call_deadline_s: float = Field(default=30.0, gt=0, le=600)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
