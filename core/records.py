"""Canonical records: the one definition of each concept, shared by the readers, the backends and the API.

Index documents are these records dumped to JSON plus a few derived search fields (see
`indexer.documents`); `mappings/` declares how each field is indexed.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PositionPrecision(StrEnum):
    """How precisely a position places an address, from best to worst."""

    housenumber = "housenumber"  # the building, from an address geocoder
    establishment = "establishment"  # the FINESS establishment's own coordinates
    street = "street"  # the street, from an address geocoder
    locality = "locality"  # a hamlet or named place, from an address geocoder
    municipality = "municipality"  # the commune's centroid (INSEE code known)
    postcode = "postcode"  # the centroid of the communes sharing a postcode


class Position(BaseModel):
    model_config = ConfigDict(frozen=True)

    lat: float
    lon: float
    precision: PositionPrecision
    # Where the position comes from: "finess", "ban", "laposte-commune", ...
    source: str


class Address(BaseModel):
    number: str | None = None
    repetition: str | None = None  # indice de répétition: B (bis), T (ter), ...
    street_type: str | None = None  # label: "Rue", "Avenue", or the FINESS code "AV" when no label is given
    street: str | None = None
    complement: str | None = None  # recipient complement or geographic complement
    distribution: str | None = None  # mention de distribution, lieu-dit, BP
    cedex_office: str | None = None  # bureau distributeur / ligne d'acheminement
    postcode: str | None = None
    insee_code: str | None = None
    commune: str | None = None
    country_code: str | None = None
    country: str | None = None

    def street_line(self) -> str:
        parts = [self.number, self.repetition, self.street_type, self.street]
        return " ".join(p for p in parts if p)

    def label(self) -> str:
        """One-line postal label, as a regulator reads it out."""
        town = " ".join(p for p in (self.postcode, self.commune or self._office_town()) if p)
        return ", ".join(p for p in (self.street_line(), self.distribution, town) if p)

    def _office_town(self) -> str | None:
        # "01440 VIRIAT" -> "VIRIAT" when the commune label itself is missing.
        if not self.cedex_office:
            return None
        head, _, tail = self.cedex_office.partition(" ")
        return tail if head.isdigit() and tail else self.cedex_office


class Specialty(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str  # savoir-faire code, e.g. SM54 (médecine générale)
    label: str | None = None
    kind: str | None = None  # code type savoir-faire: S (spécialité ordinale), CEX, ...


class Practitioner(BaseModel):
    """A health professional of the RPPS or ADELI register."""

    idnps: str  # national id: "8" + RPPS (11 digits) or "0" + ADELI (9 digits)
    id_type: str  # "RPPS" or "ADELI"
    id: str  # the register's own identifier (Identifiant PP)
    civility: str | None = None  # Madame, Monsieur
    title: str | None = None  # civilité d'exercice: Docteur, Professeur
    last_name: str
    first_name: str | None = None
    profession_code: str
    profession_label: str | None = None
    profession_category: str | None = None  # C civil, M militaire, E étudiant
    specialties: list[Specialty] = Field(default_factory=list)

    def display_name(self) -> str:
        return " ".join(p for p in (self.title, self.first_name, self.last_name) if p)


class PracticeSite(BaseModel):
    """One activity of a practitioner: the practitioner at a practice structure (or at none).

    Activities without a structure stay in the directory but have no address and no position.
    """

    site_id: str  # stable: IDNPS + structure key (+ mode of practice)
    practitioner: Practitioner
    mode_code: str | None = None  # L libéral, S salarié, B bénévole
    mode_label: str | None = None
    siret: str | None = None
    siren: str | None = None
    finess_site: str | None = None
    finess_legal: str | None = None
    structure_technical_id: str | None = None  # e.g. F010010288, C49940088500020
    name: str | None = None  # raison sociale du site
    brand: str | None = None  # enseigne commerciale
    address: Address | None = None
    department_code: str | None = None
    department_label: str | None = None
    phone: str | None = None
    phone2: str | None = None
    fax: str | None = None
    email: str | None = None
    sector_code: str | None = None  # secteur d'activité
    registration_authority: str | None = None
    position: Position | None = None

    @property
    def has_structure(self) -> bool:
        return bool(self.structure_technical_id or self.siret or self.finess_site)


class Structure(BaseModel):
    """A FINESS establishment (établissement géographique)."""

    finess: str  # nofinesset, 9 characters
    finess_legal: str | None = None  # nofinessej
    name: str
    long_name: str | None = None
    address: Address
    department_code: str | None = None
    department_label: str | None = None
    phone: str | None = None
    fax: str | None = None
    category_code: str | None = None
    category_label: str | None = None
    category_group_code: str | None = None
    category_group_label: str | None = None
    siret: str | None = None
    ape_code: str | None = None
    opened_on: str | None = None
    authorised_on: str | None = None
    updated_on: str | None = None
    position: Position | None = None


class SlotType(StrEnum):
    """TRE_R314 slot types, carried in Slot.meta.security."""

    PUBLIC = "PUBLIC"  # everyone
    PRO = "PRO"  # health professionals
    SNP = "SNP"  # reserved for SAS regulation (soins non programmés)
    CPTS = "CPTS"


class Modality(StrEnum):
    """v3-ActCode consultation modalities, carried in Slot.serviceType."""

    AMB = "AMB"  # at the practice
    HH = "HH"  # home visit
    VR = "VR"  # teleconsultation


class Flow(StrEnum):
    """The agency's aggregation flows a vendor serves: practitioners taking part individually (their Slot search),
    the same search with their CPTS included, SOS Médecins associations (a Schedule search by SIRET)."""

    individual = "individual"
    cpts = "cpts"
    sos = "sos"


class Cpts(BaseModel):
    """A communauté professionnelle territoriale de santé a slot is offered through (serviceType 604 of the Slot,
    its HealthcareService and Organization): what a card shows of it."""

    idnst: str  # the CPTS's structure identifier with its prefix (1 + FINESS)
    name: str | None = None
    phone: str | None = None


class CptsStructure(BaseModel):
    """A CPTS as the directory knows it: its identifier, its name and phone (from the FINESS establishment when it is
    one, else from the vendors offering slots through it), the departments where its members practise, and who its
    members are: named by the participation list, and seen in vendors' answers (slots offered through it)."""

    idnst: str  # 1 + FINESS, or 3 + SIRET
    name: str | None = None
    phone: str | None = None
    finess: str | None = None  # the FINESS establishment it is, when the directory has it
    territory: list[str] = Field(default_factory=list)  # department codes
    members: list[str] = Field(default_factory=list)  # IDNPS the participation list gives it
    seen_members: list[str] = Field(default_factory=list)  # IDNPS whose slots a vendor offered through it
    vendors: list[str] = Field(default_factory=list)  # vendors that offered slots through it
    seen_at: datetime | None = None  # when a vendor last offered a slot through it


class OpeningHours(BaseModel):
    """When a place is open on some days of the week (a Location's hoursOfOperation): 'mon'..'sun', 'HH:MM'."""

    days: list[str]
    opens: str | None = None
    closes: str | None = None


class SlotPlace(BaseModel):
    """Where the vendor says the slot takes place (PractitionerRole's contained Location, or Location). An SOS
    Médecins consultation place (lieu fixe de consultation) also has its name, phone, opening hours and the vendor's
    identifier of it; None for a practitioner's place, so that their slots' documents are unchanged."""

    line: str | None = None
    city: str | None = None
    postcode: str | None = None
    name: str | None = None
    phone: str | None = None
    hours: list[OpeningHours] | None = None
    place_id: str | None = None  # the vendor's identifier of the place (Location.identifier, else its id)


class Slot(BaseModel):
    """One free slot of a vendor, normalised from the contract's FHIR Slot and its context."""

    slot_id: str  # "<vendor>:<Slot.id>"
    vendor: str
    resource_id: str
    start: datetime  # UTC
    end: datetime  # UTC
    utc_offset: str  # the offset the vendor wrote, e.g. "+02:00"
    types: list[SlotType]
    modalities: list[Modality]
    appointment_type: str  # ROUTINE (booking needed) or WALKIN
    specialties: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)  # free-text and non-modality serviceType codes
    booking_url: str | None = None
    idnps: str | None = None
    practitioner_name: str | None = None
    structure_idnst: str | None = None  # organisation identifier with its prefix: 1+FINESS, 3+SIRET, ...
    structure_name: str | None = None  # the SOS Médecins association's name (Location's managing Organization)
    place: SlotPlace | None = None
    cpts: list[Cpts] = Field(default_factory=list)  # the CPTS the slot is offered through (CPTS flow), if any
    site_id: str | None = None  # the directory practice site it was mapped to
    fetched_at: datetime


# A vendor id goes into every slot id (`<vendor>:<slot>`): a short token without ':'.
VENDOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_VENDOR_ID = re.compile(VENDOR_ID_PATTERN)


class Vendor(BaseModel):
    """A booking-software vendor (éditeur) and how to reach its FHIR endpoint.

    Bounded as input from a maintainer should be: the id goes into every slot id (`<vendor>:<slot>`), so it is a
    short token without ':'; the call settings stay within what one vendor may cost the aggregator."""

    vendor_id: str
    name: str = Field(min_length=1, max_length=200)
    # FHIR base: the Slot search is GET <base_url>/Slot
    base_url: str
    # Sandbox and test deployments; production uses mutual TLS. Stored sealed (`indexer.registry`), never shown.
    bearer_token: str | None = Field(default=None, min_length=1, max_length=4_096)
    client_cert: str | None = Field(default=None, max_length=1_000)  # path to the IGC-Santé client certificate
    client_key: str | None = Field(default=None, max_length=1_000)
    ca_bundle: str | None = Field(default=None, max_length=1_000)
    concurrency: int = Field(default=4, ge=1, le=64)  # calls in flight at once
    timeout_s: float = Field(default=7.0, gt=0, le=60)  # the agency's guide drops answers slower than 7 s
    requests_per_second: float = Field(default=20.0, gt=0, le=1_000)
    # The agency's flows the vendor serves: with `cpts`, its Slot searches include the slots' CPTS.
    flows: list[Flow] = Field(default_factory=lambda: [Flow.individual], min_length=1)
    enabled: bool = True

    @field_validator("vendor_id")
    @classmethod
    def _short_token(cls, value: str) -> str:
        if not _VENDOR_ID.fullmatch(value):
            raise ValueError("1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 2_000 or " " in value:
            raise ValueError("an http(s) URL of the vendor's FHIR base, e.g. https://agenda.example/fhir")
        return value


class ParticipationVia(StrEnum):
    """How a practitioner takes part in the SAS."""

    practice = "practice"  # own practice
    cpts = "cpts"  # communauté professionnelle territoriale de santé
    msp = "msp"  # maison de santé pluriprofessionnelle
    sos = "sos"  # SOS Médecins


def association_idnst(siret: str) -> str:
    """An SOS Médecins association's structure identifier: 3 + its SIRET. The association takes part in the SAS by
    SIRET, and is a participant under this identifier (a practitioner under their IDNPS)."""
    return "3" + siret


def is_association(participant: str) -> bool:
    """Whether a participant is an SOS Médecins association (3 + SIRET, 15 digits; an IDNPS has 10 or 12)."""
    return len(participant) == 15 and participant.startswith("3") and participant.isdigit()


class Participation(BaseModel):
    """A practitioner's participation in the SAS, and the vendor(s) their free slots come from."""

    idnps: str
    vendors: list[str]
    via: ParticipationVia = ParticipationVia.practice
    extra_patients: bool = False  # accepts patients beyond visible slots (surnuméraire)
    er_redirection: bool = False  # accepts patients redirected from emergency departments (réorientation des urgences)
    active: bool = True
    cpts: str | None = None  # the IDNST of the CPTS the practitioner belongs to, if any


class AppointmentStatus(StrEnum):
    booked = "booked"
    fulfilled = "fulfilled"
    noshow = "noshow"
    cancelled = "cancelled"


class StatusChange(BaseModel):
    status: AppointmentStatus
    at: datetime  # when the vendor says it changed (meta.lastUpdated), else when it was received
    received_at: datetime


class Appointment(BaseModel):
    """An appointment a vendor reports back (FrAppointmentSAS), with the history of its statuses.

    Carries no patient data: the contract's Appointment names the practitioner and the regulator only."""

    appointment_id: str  # "<vendor>:<identifier value>"
    vendor: str
    identifier_system: str | None = None
    identifier_value: str
    status: AppointmentStatus
    start: datetime
    end: datetime
    idnps: str  # the practitioner (participant actor)
    operator: str  # the regulator who booked (FrAppointmentOperator)
    department_code: str | None = None  # of the practitioner's site, for territory follow-up
    version: str | None = None  # meta.versionId
    last_updated: datetime  # meta.lastUpdated, else the time it was received
    history: list[StatusChange] = Field(default_factory=list)


class OrientationKind(StrEnum):
    """Where a regulator sends a patient without booking a slot."""

    extra_patients = "extra_patients"  # to a practitioner who accepts patients beyond their slots (surnuméraire)
    sos = "sos"  # to an SOS Médecins consultation place
    er_redirection = "er_redirection"  # redirected from an emergency department (réorientation des urgences)


class OrientationOutcome(StrEnum):
    pending = "pending"  # the regulator has not heard back yet
    accepted = "accepted"
    refused = "refused"
    no_answer = "no_answer"


class Orientation(BaseModel):
    """A patient sent to a practitioner or a place without a slot, as the regulator records it (no patient data)."""

    orientation_id: str
    kind: OrientationKind
    idnps: str  # the practitioner, or the SOS Médecins association (3 + SIRET)
    site_id: str
    department_code: str | None = None
    operator: str  # the regulator
    outcome: OrientationOutcome = OrientationOutcome.pending
    at: datetime
    outcome_at: datetime | None = None


class BookingAttempt(BaseModel):
    """A regulator opening a vendor's booking page for a slot (no patient data)."""

    attempt_id: str
    regulator: str
    slot_id: str
    idnps: str
    vendor: str
    slot_start: datetime
    at: datetime
    verified: bool  # the vendor confirmed the slot was still free


class SearchOutcome(BaseModel):
    """What analysis keeps of one regulator search: never the point, the address, the regulator or the
    patient; the place only as its commune, department and SAS territory."""

    model_config = ConfigDict(extra="forbid")

    outcome_id: str
    at: datetime  # UTC, to the second
    hour: int = Field(ge=0, le=23)  # hour of day, Europe/Paris
    department: str | None
    territory: str | None
    commune: str | None  # INSEE code of the commune nearest the searched place; none for a department search
    place_kind: str  # how the place was given: point, address, municipality, postcode, department
    specialty: str | None
    profession: str | None
    radius_km: float  # the radius finally used
    enlargements: int  # radius steps beyond the first
    practitioners_with_slots: int  # found in the final circle
    cards_with_slots: int  # on the first page, after live verification
    under_served: bool  # fewer than 5 cards with slots
    verified: bool  # the page was re-checked live
    verification_changed: bool  # the live re-check removed slots or emptied cards
    latency_ms: float


def iso_week(instant: datetime) -> str:
    """The ISO week (2026-W49) an instant falls in, in France's time: what weekly figures are counted by."""
    iso = instant.astimezone(ZoneInfo("Europe/Paris")).isocalendar()
    return f"{iso.year}-W{iso.week:02d}"
