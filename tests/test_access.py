"""Who may do what: every route called with every role and with none, as the table of routes and roles says;
territorial administrators kept to their territories, delegates to their practitioners; every grant and revocation
in the audit log; sessions that end, keep no secret in the index, and need their CSRF token for changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import ADMIN, TOKENS, api_settings, assert_problem, headers, person, signed_in

from access import accounts, sessions
from access.roles import PERSON_ROLES, Grant, Role
from api.access_table import FRAMEWORK, markdown, policies
from api.app import create_app
from api.auth import TokenRegistry
from core.records import Participation, Vendor
from core.settings import Settings
from indexer.backend import Backend
from indexer.registry import save_participation, save_vendor

DOCS = Path(__file__).resolve().parents[1] / "docs" / "access.md"
PRACTITIONER, OTHER = "810106476764", "810100050075"  # an effecteur, and a practitioner their delegate is not for
STRUCTURE = "010000024"
# Each person role's grant in the matrix: on the territory, practitioner or structure the paths below name.
SCOPED = {
    Role.delegate: Grant(Role.delegate, practitioners=frozenset({PRACTITIONER})),
    Role.structure_manager: Grant(Role.structure_manager, structures=frozenset({"1010000001"})),  # the path's CPTS
}
PATH_VALUES = {
    "account_id": "sas-nobody",
    "idnps": PRACTITIONER,
    "department": "01",
    "vendor_id": "alpha",
    "finess": STRUCTURE,
    "idnst": "1010000001",
    "resource_id": "x",
    "role": "regulator",
    "table": "coverage",
    "fmt": "csv",
    "period_id": "0123456789ab",
    "orientation_id": "0123456789abcdef0123456789abcdef",
    "import_id": "rpps-20261201T053000123456Z",
}


def grant_for(role: Role) -> Grant:
    if role in SCOPED:
        return SCOPED[role]
    from access.roles import SCOPE, Scope

    return Grant(role, territories=frozenset({"01"}) if SCOPE[role] is Scope.territories else frozenset())


@pytest.fixture
def client(backend: Backend, settings: Settings) -> TestClient:
    return TestClient(create_app(api_settings(settings), backend), follow_redirects=False)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_route_declares_its_callers_and_the_docs_table_is_current(client: TestClient) -> None:
    found = policies(client.app)  # type: ignore[arg-type]
    undeclared = [f"{p.method} {p.path}" for p in found if not p.declared and p.path not in FRAMEWORK]
    assert not undeclared, f"routes that declare no caller: {undeclared}"
    assert len(found) > 50
    assert DOCS.read_text(encoding="utf-8") == markdown(client.app), (  # type: ignore[arg-type]
        "docs/access.md is out of date: python -m api.access_table > docs/access.md"
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_route_with_every_role_and_none(client: TestClient, backend: Backend) -> None:
    """Each cell of the table: a role it admits is let through (whatever the route then answers), a role it does not
    is refused with 403, no caller with 401; public routes let everyone through."""
    # The vendor's token names a registered vendor, as its FHIR routes require.
    save_vendor(backend, Vendor(vendor_id="test-vendor", name="Test", base_url="http://127.0.0.1:9/fhir"))
    for role in PERSON_ROLES:
        account = PRACTITIONER if role is Role.effecteur else f"sas-{role.value.replace('_', '-')}"
        person(backend, account, grant_for(role), idnps=PRACTITIONER if role is Role.effecteur else None)
    checked = 0
    for policy in policies(client.app):  # type: ignore[arg-type]
        if policy.path in FRAMEWORK:
            continue
        url = policy.path.format(**PATH_VALUES)
        callers: list[tuple[str, Role | None]] = [("none", None)] + [(r.value, r) for r in Role]
        for name, role in callers:
            if role is None:
                sent: dict[str, str] = {}
            elif role in PERSON_ROLES:
                account = PRACTITIONER if role is Role.effecteur else f"sas-{role.value.replace('_', '-')}"
                sent = signed_in(backend, account)  # a fresh session: signing out ends the one it is called with
            else:
                sent = headers(role)
            status = client.request(policy.method, url, headers=sent).status_code
            where = f"{policy.method} {policy.path} as {name}: {status}"
            if policy.why_public is not None:
                assert status not in (401, 403), where
            elif role is None:
                assert status == 401, where
            elif role in policy.roles:
                assert status not in (401, 403), where
            else:
                assert status == 403, where
            checked += 1
    assert checked > 50 * 13


def test_tokens_carry_machine_roles_only() -> None:
    with pytest.raises(ValueError, match="unknown role 'national_admin' for a token"):
        TokenRegistry(["national_admin:" + "0" * 64])
    assert set(TOKENS) == {Role.regulator, Role.maintainer, Role.analyst, Role.vendor}


def test_a_territorial_administrator_reaches_only_their_territory(client: TestClient, backend: Backend) -> None:
    admin01 = signed_in(backend, person(backend, "sas-admin01", Grant(Role.territorial_admin, frozenset({"01"}))))
    person(backend, "sas-reg69", Grant(Role.regulator, frozenset({"69"})))

    assert (
        client.put("/v1/accounts/sas-reg01", json={"name": "Régulateur de l'Ain"}, headers=admin01).status_code == 200
    )
    ok = client.post(
        "/v1/accounts/sas-reg01/grants", json={"role": "regulator", "territories": ["01"]}, headers=admin01
    )
    assert ok.status_code == 200, ok.text
    assert [(g["role"], g["territories"]) for g in ok.json()["grants"]] == [("regulator", ["01"])]
    assert ok.json()["grants"][0]["granted_by"] == "sas-admin01"
    for body in (
        {"role": "regulator", "territories": ["69"]},
        {"role": "regulator", "territories": ["01", "69"]},
        {"role": "national_admin"},
        {"role": "territorial_admin", "territories": ["01"]},
    ):
        assert_problem(client.post("/v1/accounts/sas-reg01/grants", json=body, headers=admin01), 403)
    # The account of SAS 69 is out of sight and out of reach.
    assert_problem(client.get("/v1/accounts/sas-reg69", headers=admin01), 404)
    assert_problem(client.delete("/v1/accounts/sas-reg69/grants/regulator", headers=admin01), 403)
    assert_problem(client.put("/v1/accounts/sas-reg69", json={"name": "x"}, headers=admin01), 403)
    assert [a["account_id"] for a in client.get("/v1/accounts", headers=admin01).json()] == ["sas-admin01", "sas-reg01"]
    # The SAMU receiving appointments: their department only.
    assert (
        client.put("/v1/lrm/recipients/01", json={"recipient": "fr.health.samu010"}, headers=admin01).status_code == 200
    )
    assert_problem(client.put("/v1/lrm/recipients/69", json={"recipient": "fr.health.samu690"}, headers=admin01), 403)
    client.put("/v1/lrm/recipients/69", json={"recipient": "fr.health.samu690"}, headers=headers(Role.maintainer))
    assert client.get("/v1/lrm/recipients", headers=admin01).json() == {"01": "fr.health.samu010"}
    # A national administrator reaches everything.
    national = signed_in(backend, person(backend, "sas-national", Grant(Role.national_admin)))
    assert client.delete("/v1/accounts/sas-reg69/grants/regulator", headers=national).status_code == 200


def test_revoking_part_of_a_scope_keeps_the_rest(client: TestClient, backend: Backend) -> None:
    admin01 = signed_in(backend, person(backend, "sas-admin01", Grant(Role.territorial_admin, frozenset({"01"}))))
    person(backend, "sas-both", Grant(Role.regulator, frozenset({"01", "69"})))
    assert_problem(client.delete("/v1/accounts/sas-both/grants/regulator", headers=admin01), 403)  # 69 too
    left = client.delete("/v1/accounts/sas-both/grants/regulator", params={"scope": "01"}, headers=admin01)
    assert left.status_code == 200, left.text
    assert [(g["role"], g["territories"]) for g in left.json()["grants"]] == [("regulator", ["69"])]


def test_the_audit_log_records_who_granted_what_and_when(client: TestClient, backend: Backend) -> None:
    before = datetime.now(UTC)
    admin01 = signed_in(backend, person(backend, "sas-admin01", Grant(Role.territorial_admin, frozenset({"01"}))))
    client.put("/v1/accounts/sas-reg01", json={"name": "R"}, headers=admin01)
    client.post("/v1/accounts/sas-reg01/grants", json={"role": "osnp", "territories": ["01"]}, headers=admin01)
    client.delete("/v1/accounts/sas-reg01/grants/osnp", headers=admin01)
    person(backend, "sas-reg69", Grant(Role.regulator, frozenset({"69"})))

    mine = client.get("/v1/audit", params={"account": "sas-reg01"}, headers=admin01).json()
    assert [(e["actor"], e["action"], e["role"], e["territories"]) for e in mine] == [
        ("sas-admin01", "revoked", "osnp", ["01"]),
        ("sas-admin01", "granted", "osnp", ["01"]),
    ]  # the account's creation names no territory: a territorial administrator sees entries of their territories
    assert all(before <= datetime.fromisoformat(e["at"]) <= datetime.now(UTC) for e in mine)
    everything = client.get("/v1/audit", headers=headers(Role.maintainer)).json()
    assert {(e["account"], e["action"]) for e in everything} >= {
        ("sas-reg01", "created"),
        ("sas-reg69", "created"),
        ("sas-reg69", "granted"),
    }
    assert ("sas-reg69", "granted") not in {
        (e["account"], e["action"]) for e in client.get("/v1/audit", headers=admin01).json()
    }


def test_grants_are_checked_before_they_are_kept(client: TestClient, backend: Backend) -> None:
    admin = headers(Role.maintainer)
    client.put("/v1/accounts/sas-x01", json={}, headers=admin)
    for body, says in (
        ({"role": "regulator"}, "granted on territories"),
        ({"role": "regulator", "territories": ["100"]}, "not a department"),
        ({"role": "analyst", "territories": ["01"]}, "has no territories"),
        ({"role": "delegate", "practitioners": ["12"]}, "not an IDNPS"),
        ({"role": "effecteur"}, "must carry their IDNPS"),
        ({"role": "vendor"}, "machine clients"),
    ):
        assert (
            says in assert_problem(client.post("/v1/accounts/sas-x01/grants", json=body, headers=admin), 422)["detail"]
        )
    assert_problem(client.put("/v1/accounts/81010647676", json={"idnps": PRACTITIONER}, headers=admin), 422)
    assert_problem(client.post("/v1/accounts/sas-none/grants", json={"role": "analyst"}, headers=admin), 404)
    assert accounts.get_account(backend, "sas-x01")["grants"] == []


def test_a_delegate_acts_only_for_their_practitioners(client: TestClient, backend: Backend) -> None:
    for idnps in (PRACTITIONER, OTHER):
        save_participation(backend, Participation(idnps=idnps, vendors=[], active=True))
    secretary = signed_in(
        backend, person(backend, "sas-secretary", Grant(Role.delegate, practitioners=frozenset({PRACTITIONER})))
    )
    assert client.get(f"/v1/participations/{PRACTITIONER}", headers=secretary).json()["idnps"] == PRACTITIONER
    assert (
        "do not act for" in assert_problem(client.get(f"/v1/participations/{OTHER}", headers=secretary), 403)["detail"]
    )
    doctor = signed_in(backend, person(backend, PRACTITIONER, Grant(Role.effecteur), idnps=PRACTITIONER))
    assert client.get(f"/v1/participations/{PRACTITIONER}", headers=doctor).status_code == 200
    assert_problem(client.get(f"/v1/participations/{OTHER}", headers=doctor), 403)


def test_a_signed_in_change_needs_the_sessions_csrf_token(client: TestClient, backend: Backend) -> None:
    cookie = signed_in(backend, person(backend, "sas-national", Grant(Role.national_admin)))
    body = {"recipient": "fr.health.samu010"}
    without = {"Cookie": cookie["Cookie"]}
    assert assert_problem(client.put("/v1/lrm/recipients/01", json=body, headers=without), 403)["type"].endswith(
        "/csrf"
    )
    wrong = {**without, "X-CSRF-Token": "not-it"}
    assert_problem(client.put("/v1/lrm/recipients/01", json=body, headers=wrong), 403)
    assert client.put("/v1/lrm/recipients/01", json=body, headers=cookie).status_code == 200
    assert client.get("/v1/lrm/recipients", headers=without).status_code == 200  # reading needs none
    assert client.put("/v1/lrm/recipients/01", json=body, headers=headers(Role.maintainer)).status_code == 200


def test_me_says_who_one_is(client: TestClient, backend: Backend) -> None:
    cookie = signed_in(
        backend, person(backend, "sas-reg01", Grant(Role.regulator, frozenset({"01"})), name="P. Ricart")
    )
    me = client.get("/v1/me", headers={"Cookie": cookie["Cookie"]}).json()
    assert (me["id"], me["kind"], me["name"], me["csrf_token"]) == (
        "sas-reg01",
        "person",
        "P. Ricart",
        cookie["X-CSRF-Token"],
    )
    assert me["grants"] == [
        {
            "role": "regulator",
            "territories": ["01"],
            "practitioners": [],
            "structures": [],
            "granted_by": None,
            "granted_at": None,
        }
    ]
    token = client.get("/v1/me", headers=headers(Role.vendor)).json()
    assert (token["kind"], token["csrf_token"]) == ("token", None)
    assert_problem(client.get("/v1/me"), 401)


def test_a_revoked_role_takes_effect_at_once_and_the_last_one_signs_out(client: TestClient, backend: Backend) -> None:
    cookie = signed_in(
        backend, person(backend, "sas-reg01", Grant(Role.regulator, frozenset({"01"})), Grant(Role.analyst))
    )
    assert client.get("/v1/coverage/dictionary", headers=cookie).status_code == 200
    client.delete("/v1/accounts/sas-reg01/grants/analyst", headers=headers(Role.maintainer))
    assert_problem(client.get("/v1/coverage/dictionary", headers=cookie), 403)
    client.delete("/v1/accounts/sas-reg01/grants/regulator", headers=headers(Role.maintainer))
    assert_problem(client.get("/v1/me", headers=cookie), 401)


def test_signing_out_ends_the_session(client: TestClient, backend: Backend) -> None:
    cookie = signed_in(backend, person(backend, "sas-reg01", Grant(Role.regulator, frozenset({"01"}))))
    assert_problem(client.post("/auth/signout", headers={"Cookie": cookie["Cookie"]}), 403)  # its CSRF token too
    answer = client.post("/auth/signout", headers=cookie)
    assert answer.status_code == 200 and answer.json()["signed_out"] is True
    assert "dispo_session=" in answer.headers["set-cookie"] and "Max-Age=0" in answer.headers["set-cookie"]
    assert_problem(client.get("/v1/me", headers=cookie), 401)
    assert_problem(client.post("/auth/signout", headers=headers(Role.regulator)), 400)


def test_sessions_end_after_their_lifetime_or_when_unused(backend: Backend) -> None:
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    idle = timedelta(minutes=10)
    opened = sessions.open_session(backend, "sas-reg01", timedelta(hours=1), idle, now=t0)
    assert sessions.find(backend, opened.value, idle, now=t0 + timedelta(minutes=9)) is not None
    assert sessions.find(backend, opened.value, idle, now=t0 + timedelta(minutes=18)) is not None  # used at 9
    assert sessions.find(backend, opened.value, idle, now=t0 + timedelta(minutes=29)) is None  # unused since 18
    assert backend.get(sessions.KIND, opened.session_id) is None

    busy = sessions.open_session(backend, "sas-reg01", timedelta(hours=1), idle, now=t0)
    for minute in range(5, 60, 5):
        assert sessions.find(backend, busy.value, idle, now=t0 + timedelta(minutes=minute)) is not None
    assert sessions.find(backend, busy.value, idle, now=t0 + timedelta(minutes=60)) is None  # its lifetime is over

    old = sessions.open_session(backend, "sas-reg01", timedelta(hours=1), idle, now=t0)
    assert sessions.purge(backend, now=t0 + timedelta(hours=2)) == 1
    assert sessions.find(backend, old.value, idle, now=t0) is None


def test_the_index_keeps_no_session_secret(backend: Backend) -> None:
    opened = sessions.open_session(backend, "sas-reg01", timedelta(hours=1), timedelta(hours=1), logout_hint="sealed")
    stored = json.dumps(backend.get(sessions.KIND, opened.session_id))
    assert opened.value not in stored and opened.session_id != opened.value
    assert sessions.find(backend, opened.session_id, timedelta(hours=1)) is None  # the digest opens nothing


def test_accounts_changed_by_two_administrators_at_once_keep_both_grants(backend: Backend) -> None:
    accounts.save_account(backend, ADMIN, "sas-reg", None, None, None)
    from concurrent.futures import ThreadPoolExecutor

    wanted = [Grant(Role.regulator, frozenset({d})) for d in ("01", "38", "69", "73", "74")]
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda g: accounts.grant(backend, ADMIN, "sas-reg", g), wanted))
    (held,) = accounts.grants_of(accounts.get_account(backend, "sas-reg"))
    assert held.territories == {"01", "38", "69", "73", "74"}
    assert len(accounts.audit_entries(backend, ADMIN, "sas-reg")) == 6
