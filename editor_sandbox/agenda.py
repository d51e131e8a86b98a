"""Deterministic agendas for sandbox practitioners: the same seed gives the same slots, which evolve.

Slots are laid out per practitioner x site x day in Europe/Paris opening hours; a generator seeded by
the practitioner, site and day decides which candidate times exist, their type, modality and appointment
type. Churn hides a share of slots per period (taken by other patients) and brings them back later, so
agendas change between cycles without any state.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.geo import PARIS
from core.records import Flow


class SandboxSite(BaseModel):
    idnst: str  # organisation identifier with its prefix (1+FINESS, 3+SIRET, ...)
    line: str | None = None
    city: str | None = None
    postcode: str | None = None


class SandboxCpts(BaseModel):
    """A CPTS some practitioners take part through: their CPTS-typed slots are offered through it (flow INT_R04)."""

    idnst: str  # 1 + FINESS
    name: str
    phone: str | None = None  # +33..., the contract's telecom format


class SandboxPractitioner(BaseModel):
    idnps: str
    family: str
    given: str | None = None
    phone: str | None = None
    specialties: list[str] = Field(default_factory=lambda: ["SM54"])
    sites: list[SandboxSite] = Field(default_factory=list)
    cpts: SandboxCpts | None = None


EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class SandboxPlace(BaseModel):
    """An SOS Médecins consultation place (lieu fixe de consultation)."""

    place_id: str  # the vendor's identifier of the place
    name: str
    line: str | None = None
    city: str | None = None
    postcode: str | None = None
    phone: str | None = None  # +33...
    # FHIR hoursOfOperation entries: daysOfWeek, openingTime, closingTime
    hours: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"daysOfWeek": EVERY_DAY, "openingTime": "08:00:00", "closingTime": "20:00:00"}]
    )


class SandboxAssociation(BaseModel):
    """An SOS Médecins association and its consultation places, searched by SIRET (Schedule search)."""

    siret: str
    name: str
    places: list[SandboxPlace]

    @property
    def agenda_id(self) -> str:
        """Its agendas are laid out as a practitioner's are, one per place, under this id."""
        return f"sos{self.siret}"

    def as_practitioner(self) -> SandboxPractitioner:
        idnst = "3" + self.siret
        sites = [SandboxSite(idnst=idnst, line=p.line, city=p.city, postcode=p.postcode) for p in self.places]
        return SandboxPractitioner(idnps=self.agenda_id, family=self.name, specialties=["SM54"], sites=sites)


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt knob is an error, not a silent default

    vendor_id: str = "sandbox"
    name: str = "Sandbox vendor"
    seed: int = 0
    practitioners: list[SandboxPractitioner] = Field(default_factory=list)
    associations: list[SandboxAssociation] = Field(default_factory=list)  # SOS Médecins (Schedule search)
    # The flows its CapabilityStatement declares (`GET /fhir/metadata`); None: individual and CPTS, and SOS Médecins
    # when it has associations.
    flows: list[Flow] | None = None
    slot_minutes: int = 20
    # Share of candidate times that are free slots (~40 slots per practitioner over 72 h at 0.4).
    density: float = 0.4
    # Behaviour knobs, adjustable at run time through POST /_control.
    latency_ms_min: float = 0.0
    latency_ms_max: float = 0.0
    error_rate: float = 0.0  # share of searches answered 500 with an OperationOutcome
    malformed_rate: float = 0.0  # share answered with a body that is not a Bundle
    hang_rate: float = 0.0  # share that hang for hang_s (beyond any sane client timeout)
    hang_s: float = 30.0
    churn_rate: float = 0.1  # share of slots hidden (taken) in any churn period
    churn_period_s: int = 120
    # Share of practitioners whose agenda is full: no free slot at all (scarce availability).
    full_rate: float = 0.0
    # IDNPS -> seconds a search waits before answering when it asks for that practitioner (one slow agenda slows
    # its whole batch, as at a real vendor).
    slow_practitioners: dict[str, float] = Field(default_factory=dict)
    page_size: int = 0  # Slots per page imposed whatever `_count` asks, with next links (0: pages only on `_count`)
    total_offset: int = 0  # added to Bundle.total: a vendor stating a wrong total
    foreign_next: str | None = None  # base URL next links point to instead of the sandbox's: a hostile vendor
    # Bytes each searchset Bundle is padded to with entries that are not Slots (a vendor answering far more than
    # asked, still a valid Bundle); 0: no padding.
    padding_bytes: int = 0
    # Seconds over which each search's body is sent, in small chunks (a vendor dribbling its answer); 0: at once.
    dribble_s: float = 0.0
    # IDNPS whose PractitionerRole names a structure and an address the directory does not know: the town hall
    # square of another commune of the same department (a practitioner who opened a second practice).
    unknown_sites: list[str] = Field(default_factory=list)
    # IDNPS the answer to every search adds a free slot of, though the search did not ask for them (a vendor leaking
    # other practitioners' agendas); one the sandbox does not serve gets an agenda at the first served site.
    foreign_practitioners: list[str] = Field(default_factory=list)
    # Every answer adds two slots of the first practitioner asked, otherwise well formed, dated 9999-12-31 and
    # 0001-01-01 (a vendor's placeholder dates), where converting to UTC overflows.
    odd_dates: bool = False
    # Where bookings made with origin=sas are reported (the platform's FHIR base) and with which token.
    platform_url: str | None = None
    platform_token: str | None = None


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _pick(u: float, weighted: list[tuple[str, float]]) -> str:
    acc = 0.0
    for value, weight in weighted:
        acc += weight
        if u < acc:
            return value
    return weighted[-1][0]


TYPES = [("PUBLIC", 0.6), ("SNP", 0.2), ("PRO", 0.1), ("CPTS", 0.1)]
MODALITIES = [("AMB", 0.7), ("VR", 0.2), ("HH", 0.1)]
REASONS = ["Consultation", "Consultation non programmée", "Visite de contrôle", "Renouvellement"]


@dataclass(frozen=True)
class AgendaSlot:
    slot_id: str
    idnps: str
    site_index: int
    start: datetime  # Europe/Paris aware
    end: datetime
    slot_type: str
    modality: str
    appointment_type: str
    reason: str
    specialty: str


def day_slots(config: SandboxConfig, practitioner: SandboxPractitioner, site_index: int, day: date) -> list[AgendaSlot]:
    # Draws in a fixed order (is the time free; then, for a free one, its four attributes): the same agenda
    # every time, at a fraction of the cost of hashing each candidate (a national cycle asks for 2.4 M slots).
    rng = random.Random(f"{config.seed}|{practitioner.idnps}|{site_index}|{day.isoformat()}")
    threshold = config.density / max(1, len(practitioner.sites))
    specialty = practitioner.specialties[0] if practitioner.specialties else "SM54"
    stamp = day.strftime("%Y%m%d")
    out = []
    for minute in range(8 * 60, 19 * 60 - config.slot_minutes + 1, config.slot_minutes):  # 08:00-19:00
        if rng.random() >= threshold:
            continue
        kind, modality, walkin, reason = rng.random(), rng.random(), rng.random(), rng.random()
        hour, minutes = divmod(minute, 60)
        start = datetime.combine(day, time(hour, minutes), tzinfo=PARIS)
        out.append(
            AgendaSlot(
                slot_id=f"{practitioner.idnps}-{site_index}-{stamp}{hour:02d}{minutes:02d}",
                idnps=practitioner.idnps,
                site_index=site_index,
                start=start,
                end=start + timedelta(minutes=config.slot_minutes),
                slot_type=_pick(kind, TYPES),
                modality=_pick(modality, MODALITIES),
                appointment_type="WALKIN" if walkin < 0.05 else "ROUTINE",
                reason=REASONS[int(reason * len(REASONS))],
                specialty=specialty,
            )
        )
    return out


def is_taken(config: SandboxConfig, slot_id: str, now: datetime) -> bool:
    """Churn: whether another patient holds this slot in the current period."""
    period = int(now.timestamp()) // max(1, config.churn_period_s)
    return _unit("taken", config.seed, slot_id, period) < config.churn_rate


def free_slots(
    config: SandboxConfig,
    practitioner: SandboxPractitioner,
    start_ge: datetime,
    start_le: datetime,
    now: datetime,
    booked: set[str],
) -> list[AgendaSlot]:
    if config.full_rate and _unit("full", config.seed, practitioner.idnps) < config.full_rate:
        return []
    days = (start_le.astimezone(PARIS).date() - start_ge.astimezone(PARIS).date()).days
    out = []
    for offset in range(days + 1):
        day = start_ge.astimezone(PARIS).date() + timedelta(days=offset)
        for site_index in range(len(practitioner.sites)):
            for slot in day_slots(config, practitioner, site_index, day):
                if not (start_ge <= slot.start <= start_le) or slot.start < now:
                    continue
                if slot.slot_id in booked or is_taken(config, slot.slot_id, now):
                    continue
                out.append(slot)
    return out
