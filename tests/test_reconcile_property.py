"""Reconciliation as a property, on both backends: whatever the sequence of complete answers and failed calls, the
index holds exactly each practitioner's last complete answer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CHEPY, KRISTIAN, indexed

from aggregation.availability import SiteMapper, ensure_slots_index, reconcile
from core.records import Modality, Slot, SlotType
from editor_sandbox.agenda import SandboxPractitioner
from indexer.backend import Backend

NOW = datetime(2026, 11, 24, 9, 10, tzinfo=UTC)
PRACTITIONERS: list[SandboxPractitioner] = [CHEPY, KRISTIAN]  # placed on their FINESS sites in `loaded`
TIMES = 6  # candidate slot times per practitioner

# A practitioner's complete answer: which candidate times are free, each with one of two slot types (a changed
# type is an update of the same slot).
answers = st.dictionaries(st.integers(0, TIMES - 1), st.sampled_from([SlotType.PUBLIC, SlotType.SNP]), max_size=TIMES)
# One cycle: per practitioner, its answer or None (its call failed: reconcile is not called for it); and whether
# the practitioners that answered are reconciled in one batch or one by one (as halves of a split batch).
cycles = st.tuples(st.tuples(*(st.none() | answers for _ in PRACTITIONERS)), st.booleans())


def slot(vendor: str, p: SandboxPractitioner, k: int, kind: SlotType) -> Slot:
    start = NOW + timedelta(hours=k + 1)
    return Slot(
        slot_id=f"{vendor}:{p.idnps}-{k}",
        vendor=vendor,
        resource_id=f"{p.idnps}-{k}",
        start=start,
        end=start + timedelta(minutes=20),
        utc_offset="+01:00",
        types=[kind],
        modalities=[Modality.AMB],
        appointment_type="ROUTINE",
        idnps=p.idnps,
        structure_idnst=p.sites[0].idnst,
        fetched_at=NOW,
    )


# Function-scoped fixtures are fine here: every example uses a vendor of its own, whose slots no other example sees.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(cycles, min_size=1, max_size=5))
def test_the_index_holds_each_practitioners_last_complete_answer(
    loaded: Backend, run: list[tuple[tuple[dict[int, SlotType] | None, ...], bool]]
) -> None:
    vendor = f"v{uuid.uuid4().hex[:8]}"
    index = ensure_slots_index(loaded)
    mapper = SiteMapper(loaded)
    last: dict[str, dict[int, SlotType]] = {}
    for outcome, together in run:
        answered = {p.idnps: (p, a) for p, a in zip(PRACTITIONERS, outcome, strict=True) if a is not None}
        groups = [list(answered)] if together else [[i] for i in answered]
        for ids in filter(None, groups):
            slots = [slot(vendor, p, k, kind) for i in ids for p, a in [answered[i]] for k, kind in a.items()]
            reconcile(loaded, vendor, ids, slots, mapper, NOW)
        loaded.refresh(index)  # as a cycle ends
        last.update({i: a for i, (_, a) in answered.items()})
    held = {slot_id: (doc["idnps"], doc["types"]) for slot_id, doc in indexed(loaded, vendor).items()}
    expected = {
        f"{vendor}:{idnps}-{k}": (idnps, [kind.value]) for idnps, answer in last.items() for k, kind in answer.items()
    }
    assert held == expected
