"""The regulators' web page in headless Chromium (Debian's package) against the real stack on loopback:
embedded index with a generated Ain directory, three sandbox vendors, the scheduler's first cycle, the API."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from hub_support import amqp_url, client_ids, eventually, hub_settings, transmitting
from playwright.sync_api import sync_playwright
from support import person, signed_in

from access.roles import Grant
from aggregation.scheduler import Aggregator
from analytics.snapshots import snapshot_now
from api.app import create_app
from api.auth import Role, new_token
from bench.generate import generate, mutate_rpps
from booking import hub_outbox
from core.records import Vendor, association_idnst, is_association
from core.settings import Settings
from editor_sandbox.fleet import DEMO_ASSOCIATIONS, start_fleet
from editor_sandbox.lrm import LrmSandbox
from editor_sandbox.server import ThreadedServer
from indexer.backend import GeoQuery
from indexer.es_backend import ElasticsearchBackend
from indexer.lifecycle import iterate_all
from indexer.registry import get_participation, participants, save_vendor
from indexer.sqlite_backend import SqliteBackend
from rpps_import.cpts import list_cpts
from rpps_import.pipeline import import_rpps, load_participations

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PARIS = ZoneInfo("Europe/Paris")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_or_skip() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("DISPO_REQUIRE_BROWSER") == "1":
            pytest.fail("DISPO_REQUIRE_BROWSER=1 but Chromium is not installed (make test installs it as root)")
        pytest.skip("no Chromium: install Debian's chromium package")


@dataclass
class Stack:
    url: str
    token: str
    vendors: dict[str, str]  # vendor id -> sandbox URL
    analyst: str
    backend: SqliteBackend
    settings: Settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _browser_or_skip()  # before building anything: without a browser no test here runs
    tmp = tmp_path_factory.mktemp("web")
    backend = SqliteBackend(tmp / "index")
    regulator, regulator_entry = new_token(Role.regulator, "reg-web")
    analyst, analyst_entry = new_token(Role.analyst, "analyst-web")
    vendor_tokens = {f"sandbox-{c}": new_token(Role.vendor, f"sandbox-{c}") for c in "abc"}
    settings = Settings(
        data_dir=tmp / "dispo",
        tokens=",".join([regulator_entry, analyst_entry, *(entry for _, entry in vendor_tokens.values())]),
        # The pages are tested here, not the deadline (test_verify.py is): on a loaded machine the default 0.8 s can
        # pass before the sandboxes answer, leaving a card unverified that the first test expects verified.
        verify_deadline_s=10.0,
    )
    files = generate(tmp / "gen", "department", seed=1, n_vendors=3)
    import_rpps(files["rpps"], backend, settings)
    with ThreadedServer(create_app(settings, backend), name="api") as api:
        servers = start_fleet(
            backend,
            3,
            participations=files["participations"],
            settings=settings,
            churn_rate=0.0,
            platform_url=api.url + "/fhir",
            platform_tokens={v: t for v, (t, _) in vendor_tokens.items()},
            associations=DEMO_ASSOCIATIONS,
        )
        # With the coverage snapshot after the cycle, as `dispo aggregate` runs it: the analysts' page shows it.
        asyncio.run(Aggregator(backend, settings, snapshot=snapshot_now).run_once())
        yield Stack(api.url, regulator, {s.config.vendor_id: s.url for s in servers}, analyst, backend, settings)
        for s in servers:
            s.stop()


@pytest.fixture
def page(stack: Stack):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="fr-FR")
        page = context.new_page()
        yield page
        browser.close()


def sign_in(page, stack: Stack, path: str = "/") -> None:
    page.goto(stack.url + path)
    page.fill("#token", stack.token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#app:not([hidden])")


def search(page, address: str) -> None:
    page.fill("#address", address)
    page.keyboard.press("Enter")  # Enter searches
    page.wait_for_function("document.querySelector('#status').textContent.includes('praticien')")


def test_search_shows_cards_with_slots_and_distances_then_more(page, stack: Stack) -> None:
    sign_in(page, stack)
    search(page, "12 rue de la République 01000 Bourg-en-Bresse")
    cards = page.locator(".card")
    assert cards.count() == 10
    first = cards.nth(0)
    assert " km" in first.locator("h3").inner_text()
    assert first.locator(".slot").count() > 0
    assert "vérifié à" in first.locator(".slot").first.inner_text()
    assert page.locator("#map circle.pin").count() == 10
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "results.png"), full_page=False)
    page.click("#more")
    page.wait_for_function("document.querySelectorAll('.card').length > 10")
    assert page.locator(".card").count() == 20


def test_filter_by_modality(page, stack: Stack) -> None:
    sign_in(page, stack)
    page.check("input[name=modality][value=home]")
    search(page, "Bourg-en-Bresse (01000)")
    slots = page.locator(".slot")
    assert slots.count() > 0
    texts = slots.all_inner_texts()
    assert all("Domicile" in t and "Téléconsultation" not in t for t in texts)  # ("Cabinet Connect" is a vendor)


def test_cpts_slots_name_the_cpts_they_are_offered_through(page, stack: Stack) -> None:
    sign_in(page, stack)
    page.select_option("#via", "cpts")
    page.check("input[name=slot_type][value=CPTS]")
    search(page, "Bourg-en-Bresse (01000)")
    cards = page.locator(".card")
    assert cards.count() > 0
    for text in cards.locator(".cpts").all_inner_texts():
        assert text.startswith("via CPTS du territoire 01") and "☎ CPTS +33" in text
    assert cards.locator(".cpts").count() == cards.count(), "each card's CPTS slots name their CPTS"
    assert all("via CPTS" in badge for badge in cards.locator(".badge").all_inner_texts() if "CPTS" in badge)


def test_sos_medecins_places_are_cards_with_their_hours(page, stack: Stack) -> None:
    sign_in(page, stack)
    page.select_option("#via", "sos")
    search(page, "12 rue de la République 01000 Bourg-en-Bresse")
    places = page.locator(".card .sos")
    assert places.count() >= 1
    bourg = next(t for t in places.all_inner_texts() if "Bourg-en-Bresse" in t)
    assert bourg.startswith("SOS Médecins · Centre de consultation Bourg-en-Bresse · ouvert aujourd'hui 08:00-20:00")
    card = page.locator(".card", has=page.locator(".sos", has_text="Bourg-en-Bresse")).first
    assert "SOS Médecins de l'Ain" in card.locator("h3").inner_text() and card.locator(".slot").count() > 0
    # Booked on the patient's behalf like a practitioner's slot; the vendor reports the appointment back.
    book(page, card.locator(".slot").first)
    page.wait_for_selector("#appointments td.status")
    assert "réservé" in page.locator("#appointments td.status").all_inner_texts()


def book(page, slot) -> tuple[str, str]:
    """Choose a slot, book it on the vendor's page that opens (as the regulator reg-web), then open the follow-up;
    returns the vendor's page address and content as the regulator saw them."""
    with page.context.expect_page() as popup_info:
        slot.click()
    vendor_page = popup_info.value
    vendor_page.wait_for_url("**origin=sas**")  # the tab opens at once, then goes to the vendor's page
    vendor_page.wait_for_load_state()
    seen = vendor_page.url, vendor_page.content()
    vendor_page.select_option("#operator", "reg-web")
    vendor_page.click("#book")
    vendor_page.wait_for_load_state()
    page.click("#tab-followup")
    return seen


def test_context_in_the_url_runs_the_search_at_once(page, stack: Stack) -> None:
    sign_in(page, stack, "/?address=Belley%2001300&specialty=SM54")
    page.wait_for_selector(".card")
    assert page.input_value("#address") == "Belley 01300"


def test_book_a_slot_and_follow_it(page, stack: Stack) -> None:
    sign_in(page, stack)
    search(page, "12 rue de la République 01000 Bourg-en-Bresse")
    url, content = book(page, page.locator(".card").first.locator(".slot").first)
    assert "origin=sas" in url and "via le SAS" in content
    page.wait_for_selector("#appointments td.status")
    assert page.locator("#appointments td.status").first.inner_text() == "réservé"


def test_the_follow_up_shows_the_transmission_to_the_samu(page, stack: Stack) -> None:
    """A booking reaches the SAMU's regulation software through the broker; the follow-up says when it was received."""
    url = amqp_url()
    sender, samu = client_ids()
    hub_outbox.set_recipient(stack.backend, "01", samu, datetime.now(UTC))
    with LrmSandbox(url, samu), transmitting(stack.backend, hub_settings(stack.settings, url, sender)):
        sign_in(page, stack)
        search(page, "Belley (01300)")
        book(page, page.locator(".card").first.locator(".slot").first)
        page.wait_for_selector("#appointments td.transmission")

        def received() -> bool:
            page.click("#refresh")
            page.wait_for_timeout(300)
            return any(
                t.startswith("reçu par le SAMU à ")
                for t in page.locator("#appointments td.transmission").all_inner_texts()
            )

        eventually(received, within_s=30, what="the follow-up showing the SAMU's acknowledgement")


def test_a_slot_taken_meanwhile_refreshes_the_card(page, stack: Stack) -> None:
    sign_in(page, stack)
    search(page, "Belley (01300)")
    card = page.locator(".card").nth(1)
    slot_id = card.locator(".slot").first.get_attribute("data-slot")
    vendor, resource = slot_id.split(":", 1)
    httpx.post(f"{stack.vendors[vendor]}/booking/{resource}")  # taken by another patient, elsewhere
    card.locator(".slot").first.click()
    card.locator(".card-message").wait_for()
    page.wait_for_function("[...document.querySelectorAll('.card-message')].some(e => e.textContent.includes('pris'))")
    assert "vient d'être pris" in card.locator(".card-message").inner_text()
    assert slot_id not in [b.get_attribute("data-slot") for b in card.locator(".slot").all()]
    assert len(page.context.pages) == 1  # no vendor tab left open


def test_the_credential_offered_in_the_fragment_signs_in(page, stack: Stack) -> None:
    page.goto(f"{stack.url}/#token={stack.token}")
    page.wait_for_selector("#app:not([hidden])")
    assert "token" not in page.url  # forgotten once used
    assert page.input_value("#specialty") == "SM54"


def test_no_result_explains_itself(page, stack: Stack) -> None:
    sign_in(page, stack)
    page.select_option("#specialty", "SM28")  # médecine nucléaire: nobody in the generated directory
    search(page, "Bourg-en-Bresse (01000)")
    assert page.locator(".card").count() == 0
    assert "Aucun praticien avec un créneau libre" in page.inner_text("#status")


def test_backend_down_says_what_to_do(tmp_path: Path) -> None:
    _browser_or_skip()
    token, entry = new_token(Role.regulator, "reg-down")
    dead = ElasticsearchBackend("http://127.0.0.1:9", prefix="none", timeout_s=1)
    with (
        ThreadedServer(create_app(Settings(data_dir=tmp_path, tokens=entry), dead), name="api-down") as api,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(api.url + "/")
        page.fill("#token", token)
        page.keyboard.press("Enter")
        page.wait_for_selector("#app:not([hidden])")
        page.fill("#address", "Bourg-en-Bresse (01000)")
        page.keyboard.press("Enter")
        page.wait_for_selector("#status .error")
        assert "momentanément indisponible" in page.inner_text("#status")
        browser.close()


def test_the_analysts_page_shows_the_map_the_chart_and_the_tables(page, stack: Stack) -> None:
    sign_in(page, stack)
    search(page, "Belley (01300)")  # a regulator's search: one outcome for the analysts' tables
    page.goto(f"{stack.url}/analysts#token={stack.analyst}")
    page.wait_for_selector("#app:not([hidden])")
    page.wait_for_function(
        "['map', 'chart'].every(id => { const img = document.getElementById(id);"
        " return img.complete && img.naturalWidth > 0; })"
    )
    assert "token" not in page.url
    assert "01 Ain" in page.inner_text("#departments")
    assert "Agenda Alpha" in page.inner_text("#vendors")
    assert "SAS-01" in page.inner_text("#underserved")
    assert page.locator("#exports a.download").count() == 15  # seven tables x two formats, and the dictionary
    assert "Instantané du" in page.inner_text("#status")
    box = page.locator("#map").bounding_box()
    assert box and box["width"] > 300 and box["height"] > 300
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "analysts.png"), full_page=True)


def test_the_analysts_page_refuses_a_regulator_token(page, stack: Stack) -> None:
    page.goto(f"{stack.url}/analysts")
    page.fill("#token", stack.token)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#signin-error').textContent.length > 0")
    assert "pas de rôle d'analyse" in page.inner_text("#signin-error")
    assert page.locator("#app").is_hidden()


def test_a_practitioner_opens_a_sas_calendar_and_a_regulator_books_it_on_the_page(page, stack: Stack) -> None:
    """The practitioner's space, then a SAS-calendar slot booked on the regulators' page (no vendor's page): a
    general practitioner of the Ain without booking software, signed in, declares their participation, opens a
    weekly range and a period away; a regulator finds the range's slots, books one, follows it; the practitioner
    sees it in their space."""
    backend = stack.backend
    sites = backend.search("practice_sites", GeoQuery(filters={"specialty": ["SM54"]}, limit=500)).hits
    doctor = next(
        h.doc
        for h in sites
        if h.doc.get("location") and backend.get("participations", h.doc["practitioner"]["idnps"]) is None
    )
    idnps = doctor["practitioner"]["idnps"]
    person(backend, idnps, Grant(Role.effecteur), idnps=idnps, name="Dr Agenda")
    cookie = signed_in(backend, idnps)["Cookie"].split("=", 1)[1]
    tomorrow = datetime.now(PARIS).date() + timedelta(days=1)
    own = page.context.browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    own.add_cookies([{"name": "dispo_session", "value": cookie, "url": stack.url}])
    space = own.new_page()
    space.goto(f"{stack.url}/espace")
    space.wait_for_selector("#app:not([hidden])")
    assert space.evaluate("document.activeElement.id") == "via"  # keyboard first
    assert space.input_value("#vendor") == ""  # no booking software: the SAS calendar
    space.check("#er")
    space.click("#save-participation")
    space.wait_for_function("document.querySelector('#participation-status').textContent.includes('enregistrée')")

    space.select_option("#weekday", str(tomorrow.weekday()))
    space.select_option("#site", doctor["site_id"])
    space.fill("#open-start", "09:00")
    space.fill("#open-end", "12:00")
    space.fill("#minutes", "30")
    space.click("#opening button[type=submit]")
    space.wait_for_function("document.querySelector('#calendar-status').textContent.includes('6 créneau(x) ajouté(s)')")
    assert space.locator("#weekly tr").count() == 1
    # A one-off range, withdrawn; a closed day takes the week's range away, and reopening it brings it back.
    space.fill("#one-off-day", (tomorrow + timedelta(days=1)).isoformat())
    space.select_option("#one-off-site", doctor["site_id"])
    space.fill("#one-off-start", "14:00")
    space.fill("#one-off-end", "15:00")
    space.fill("#one-off-minutes", "20")
    space.click("#one-off button[type=submit]")
    space.wait_for_function("document.querySelector('#calendar-status').textContent.includes('3 créneau(x) ajouté(s)')")
    assert "14:00" in space.inner_text("#one-offs")
    space.click("#one-offs button")
    space.wait_for_function("document.querySelector('#calendar-status').textContent.includes('3 retiré(s)')")
    space.fill("#closed-day", tomorrow.isoformat())
    space.click("#close-day button[type=submit]")
    space.wait_for_function("document.querySelector('#calendar-status').textContent.includes('6 retiré(s)')")
    assert space.locator("#closed button").count() == 1
    space.locator("#closed button").focus()
    space.keyboard.press("Enter")
    space.wait_for_function("document.querySelector('#calendar-status').textContent.includes('6 créneau(x) ajouté(s)')")
    away = tomorrow + timedelta(days=2)
    space.fill("#from", away.isoformat())
    space.fill("#to", away.isoformat())
    space.fill("#reason", "congés")
    space.click("#period button[type=submit]")
    space.wait_for_function("document.querySelector('#periods').textContent.includes('congés')")
    ARTIFACTS.mkdir(exist_ok=True)
    space.screenshot(path=str(ARTIFACTS / "practitioner-space.png"), full_page=True)

    page.goto(f"{stack.url}/?postcode={doctor['address']['postcode']}&specialty=SM54#token={stack.token}")
    page.wait_for_function("document.querySelector('#status').textContent.includes('praticien')")
    card = page.locator(f"article.card[data-site='{doctor['site_id']}']")
    while not card.count() and page.is_visible("#more"):
        page.click("#more")
        page.wait_for_timeout(300)
    slot = card.locator("button.slot").first
    assert "Agenda SAS" in slot.inner_text() and "SNP" in slot.inner_text()
    assert "Accepte la réorientation des urgences" in card.inner_text()
    slot.focus()
    page.keyboard.press("Enter")
    card.locator(".card-message.ok").wait_for()
    assert "réservé" in card.locator(".card-message").inner_text()
    assert card.locator("button.slot").count() == 5
    page.screenshot(path=str(ARTIFACTS / "sas-calendar-booked.png"))
    # The same card takes patients redirected from emergencies: one is sent there, without a slot.
    card.locator("form.orient select[name=outcome]").select_option("accepted")
    card.locator("form.orient button").click()
    page.wait_for_function("document.querySelector('.card-message.ok')?.textContent.includes('Orientation')")
    page.click("#tab-followup")
    page.wait_for_function("document.querySelector('#appointments').textContent.includes('sas')")
    page.wait_for_function("document.querySelector('#orientations').textContent.includes('réorientation des urgences')")

    space.reload()
    space.wait_for_selector("#app:not([hidden])")
    space.wait_for_function("document.querySelector('#appointments').textContent.includes('agenda SAS')")
    assert "réservé" in space.inner_text("#appointments")
    assert "5 créneau(x) libre(s)" in space.inner_text("#figures")
    assert "accepté" in space.inner_text("#orientations")
    own.close()
    (booked,) = backend.search("appointments", GeoQuery(filters={"idnps": [idnps]})).hits
    assert datetime.fromisoformat(booked.doc["start"]).astimezone(PARIS).date() == tomorrow


def test_structure_managers_keep_their_cpts_members_and_their_associations_participation(page, stack: Stack) -> None:
    """The structure managers' page: a CPTS's manager names a participating practitioner a member and takes them
    out again; an SOS Médecins association's manager sees its consultation places and changes what it accepts."""
    backend = stack.backend
    (cpts, *_) = list_cpts(backend)
    association = association_idnst(DEMO_ASSOCIATIONS[0].siret)
    member = next(
        p["idnps"]
        for p in iterate_all(backend, "participations")
        if not is_association(p["idnps"]) and p.get("cpts") != cpts.idnst
    )
    grant = Grant(Role.structure_manager, structures=frozenset({cpts.idnst, association}))
    person(backend, "sas-structures-web", grant, name="Gestionnaire")
    cookie = signed_in(backend, "sas-structures-web")["Cookie"].split("=", 1)[1]
    own = page.context.browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
    own.add_cookies([{"name": "dispo_session", "value": cookie, "url": stack.url}])
    view = own.new_page()
    view.goto(f"{stack.url}/structures")
    view.wait_for_selector("#which")
    assert view.evaluate("getComputedStyle(document.querySelector('header')).display") == "flex"  # the shared sheet
    view.select_option("#which", cpts.idnst)
    view.wait_for_selector("#cpts-app:not([hidden])")
    view.fill("#member-idnps", member)
    view.keyboard.press("Enter")
    view.wait_for_function("document.querySelector('#members-status').textContent.includes('rattaché')")
    assert member in view.inner_text("#members")
    assert get_participation(backend, member).cpts == cpts.idnst
    view.get_by_role("button", name=f"Retirer {member} de la CPTS").click()
    view.wait_for_function("document.querySelector('#members-status').textContent.includes('ne figure plus')")
    assert get_participation(backend, member).cpts is None

    view.select_option("#which", association)
    view.wait_for_selector("#sos-app:not([hidden])")
    assert view.inner_text("#sos-name") == DEMO_ASSOCIATIONS[0].name
    places = view.locator("#places tr")
    assert places.count() == len(DEMO_ASSOCIATIONS[0].places)
    assert DEMO_ASSOCIATIONS[0].places[0].name in view.inner_text("#places")
    view.check("#sos-er")
    view.click("#save-sos")
    view.wait_for_function("document.querySelector('#sos-status').textContent.includes('enregistrée')")
    ARTIFACTS.mkdir(exist_ok=True)
    view.screenshot(path=str(ARTIFACTS / "structure-manager.png"), full_page=True)
    own.close()
    assert get_participation(backend, association).er_redirection is True


def test_maintainers_read_an_imports_changes_sas_alerts_first(page, tmp_path: Path) -> None:
    """The maintainers' page: the latest imports, the one with SAS alerts opened first, its alerts, departments,
    professions, moves and specialty changes; keyboard-first."""
    backend = SqliteBackend(tmp_path / "index")
    maintainer, entry = new_token(Role.maintainer, "maintainer-web")
    settings = Settings(data_dir=tmp_path / "dispo", tokens=entry)
    files = generate(tmp_path / "gen", "department", seed=5, n_vendors=1)
    import_rpps(files["rpps"], backend, settings)
    save_vendor(backend, Vendor(vendor_id=files["vendors"][0], name="A", base_url="https://fhir.example.invalid"))
    load_participations(files["participations"], backend, settings)
    taking_part = {p.idnps for p in participants(backend)}
    after = tmp_path / "PS_LibreAcces_Personne_activite_next.txt"
    mutation = mutate_rpps(files["rpps"], after, seed=5, removed=4, moved=4, among=taking_part)
    changed = import_rpps(after, backend, settings)
    assert changed.changes is not None and changed.changes.sas_alerts
    with ThreadedServer(create_app(settings, backend), name="api") as api:
        own = page.context.browser.new_context(viewport={"width": 1280, "height": 900}, locale="fr-FR")
        view = own.new_page()
        view.goto(f"{api.url}/imports#token={maintainer}")
        view.wait_for_selector("#detail:not([hidden])")
        assert view.evaluate("document.activeElement.textContent") == "Voir"  # keyboard first
        assert view.locator("#imports tr").count() == 2
        assert "RPPS" in view.inner_text("#detail-title") and "en service" in view.inner_text("#detail-title")
        alerts = view.inner_text("#alerts")
        gone = sorted(mutation.removed & taking_part)
        assert gone and all(idnps in alerts for idnps in gone) and "sorti du répertoire" in alerts
        assert view.locator("#moves tr").count() == len(mutation.moved)
        assert "01" in view.inner_text("#departments")
        ARTIFACTS.mkdir(exist_ok=True)
        view.screenshot(path=str(ARTIFACTS / "imports.png"), full_page=True)
        # The first import, compared with nothing: said so.
        view.locator("#imports button").last.focus()
        view.keyboard.press("Enter")
        view.wait_for_function("document.querySelector('#alerts').textContent.includes('Pas de comparaison')")
        own.close()
