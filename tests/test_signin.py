"""People signing in to Dispo through the provider — Keycloak with Pro Santé Connect's claims, started by `make test`
(`scripts/keycloak.sh`) and named by `DISPO_OIDC_ISSUER` — then signing out: by httpx playing the browser's part, and
in headless Chromium on the regulators' page. A person is known by the IDNPS the provider vouches for; one without a
role in Dispo, a callback this browser did not start, a provider that does not answer, each gets a clear refusal."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr
from support import api_settings, person
from test_oidc import CLIENT, SECRET, issuer  # noqa: F401 - the provider's fixture
from test_web import ARTIFACTS, CHROMIUM, FLAGS, _browser_or_skip

from access import accounts
from access.roles import Grant, Role
from api.app import create_app
from core.settings import Settings
from editor_sandbox.server import ThreadedServer
from indexer.sqlite_backend import SqliteBackend

REGULATOR = "810100050075"  # the realm's user `regulateur`; `medecin` (810106476764) has no account in Dispo


@dataclass
class Api:
    url: str
    backend: SqliteBackend


def oidc_settings(settings: Settings, issuer: str) -> Settings:  # noqa: F811
    return api_settings(settings).model_copy(
        update={"oidc_issuer": issuer, "oidc_client_id": CLIENT, "oidc_client_secret": SecretStr(SECRET)}
    )


@pytest.fixture
def api(tmp_path: Path, settings: Settings, issuer: str) -> Iterator[Api]:  # noqa: F811
    backend = SqliteBackend(tmp_path / "index")
    person(backend, REGULATOR, Grant(Role.regulator, frozenset({"01"})), idnps=REGULATOR, name="Pauline RICART")
    with ThreadedServer(create_app(oidc_settings(settings, issuer), backend), name="api") as server:
        yield Api(server.url, backend)
    backend.close()


def provider_login(client: httpx.Client, login_page: str, username: str, password: str) -> httpx.Response:
    """The provider's login form filled in; returns its answer (a redirection back to Dispo when it accepts)."""
    page = client.get(login_page, follow_redirects=True)
    action = html.unescape(re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text).group(1))
    # The provider marks its cookies Secure, which a browser sends back to a loopback address over plain HTTP and
    # httpx does not: they are sent by hand.
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar if c.path.startswith("/realms"))
    return client.post(action, data={"username": username, "password": password}, headers={"Cookie": cookies})


def sign_in(client: httpx.Client, api: Api, username: str, password: str, return_to: str = "/") -> httpx.Response:
    """Dispo's answer at the end of a sign-in: the callback's."""
    started = client.get(f"{api.url}/auth/signin", params={"return_to": return_to})
    assert started.status_code == 303, started.text
    assert "/protocol/openid-connect/auth?" in started.headers["location"]
    back = provider_login(client, started.headers["location"], username, password)
    assert back.status_code == 302 and back.headers["location"].startswith(f"{api.url}/auth/callback?"), back.text[:300]
    return client.get(back.headers["location"])


def test_a_regulator_signs_in_through_the_provider_and_out_again(api: Api) -> None:
    with httpx.Client(timeout=30) as client:
        done = sign_in(client, api, "regulateur", "regulateur", return_to="/analysts")
        assert done.status_code == 303 and done.headers["location"] == "/analysts"
        cookie = done.headers["set-cookie"]
        assert cookie.startswith("dispo_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # served over plain HTTP here; `__Host-` and Secure behind HTTPS

        me = client.get(f"{api.url}/v1/me").json()
        assert (me["id"], me["kind"], me["name"]) == (REGULATOR, "person", "Pauline RICART")
        assert [g["role"] for g in me["grants"]] == ["regulator"]
        account = accounts.get_account(api.backend, REGULATOR)
        assert account["last_sign_in_at"] is not None
        assert account["profession"] == "10"  # the provider's SubjectRefPro: médecin
        assert client.get(f"{api.url}/v1/specialties").status_code == 200

        out = client.post(f"{api.url}/auth/signout", headers={"X-CSRF-Token": me["csrf_token"]})
        assert out.status_code == 200, out.text
        end = urlsplit(out.json()["end_session_url"])
        query = parse_qs(end.query)
        assert query["post_logout_redirect_uri"] == [f"{api.url}/"] and query["id_token_hint"][0].count(".") == 2
        assert client.get(f"{api.url}/v1/me").status_code == 401
        # The provider ends its session too, and sends the browser back to Dispo.
        bye = client.get(out.json()["end_session_url"], headers={"Cookie": _provider_cookies(client)})
        assert bye.status_code == 302 and bye.headers["location"] == f"{api.url}/"


def _provider_cookies(client: httpx.Client) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar if c.path.startswith("/realms"))


def test_a_person_without_a_role_is_told_whom_to_ask(api: Api) -> None:
    with httpx.Client(timeout=30) as client:
        refused = sign_in(client, api, "medecin", "medecin")
        assert refused.status_code == 403
        assert "aucun rôle dans Dispo" in html.unescape(refused.text) and "810106476764" in refused.text
        assert "dispo_session" not in refused.headers.get("set-cookie", "")


def test_the_way_back_stays_on_this_site(api: Api) -> None:
    with httpx.Client(timeout=30) as client:
        done = sign_in(client, api, "regulateur", "regulateur", return_to="//elsewhere.example/x")
        assert done.status_code == 303 and done.headers["location"] == "/"


def test_a_callback_this_browser_did_not_start_is_refused(api: Api) -> None:
    with httpx.Client(timeout=30) as client:
        forged = client.get(f"{api.url}/auth/callback", params={"code": "x", "state": "y"})
        assert forged.status_code == 400 and "n'a pas été commencée dans ce navigateur" in html.unescape(forged.text)
        started = client.get(f"{api.url}/auth/signin")  # this browser's pending sign-in, another state
        assert started.status_code == 303
        other = client.get(f"{api.url}/auth/callback", params={"code": "x", "state": "not-the-one"})
        assert other.status_code == 400
        assert client.get(f"{api.url}/v1/me").status_code == 401


def test_without_a_provider_pages_fall_back_to_tokens(tmp_path: Path, settings: Settings) -> None:
    backend = SqliteBackend(tmp_path / "index")
    with ThreadedServer(create_app(api_settings(settings), backend), name="api") as server:
        assert httpx.get(f"{server.url}/auth/signin").status_code == 404
        assert "sign_in" not in httpx.get(f"{server.url}/v1/me").json()
    away = oidc_settings(settings, "http://127.0.0.1:9/realms/dispo")  # nothing listens there
    with ThreadedServer(create_app(away, backend), name="api") as server:
        down = httpx.get(f"{server.url}/auth/signin")
        assert down.status_code == 503 and "Pro Santé Connect ne répond pas" in down.text
        assert httpx.get(f"{server.url}/v1/me").json()["sign_in"] == "/auth/signin"
    backend.close()


def test_the_regulators_page_signs_in_through_the_provider(api: Api) -> None:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_context(viewport={"width": 1280, "height": 800}, locale="fr-FR").new_page()
        try:
            page.goto(api.url + "/")
            page.wait_for_selector("#signin-psc:visible")
            assert page.evaluate("document.activeElement.id") == "signin-psc"  # keyboard first: Enter signs in
            page.keyboard.press("Enter")
            page.wait_for_selector("#kc-form-login")
            page.fill("#username", "regulateur")
            page.fill("#password", "regulateur")
            page.keyboard.press("Enter")
            page.wait_for_selector("#app:not([hidden])")
            assert page.url == api.url + "/"
            assert page.text_content("#whoami") == "Pauline RICART"
            assert page.evaluate("document.activeElement.id") == "address"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "signed-in.png"))
            # The session's CSRF token goes with the page's changes: following one's appointments is a read, pushing
            # one's account to a vendor a change (refused for an unknown vendor, not for a missing token).
            pushed = page.evaluate(
                "api('/v1/regulator-accounts/nope', {method: 'POST'}).then(() => 0, (e) => e.status)"
            )
            assert pushed == 404

            page.click("#signout")
            page.wait_for_selector("#signin:not([hidden])")
            assert page.url == api.url + "/"
            assert page.evaluate("fetch('/v1/me').then((r) => r.status)") == 401
            # Signed out at the provider too: signing in again asks for the password.
            page.click("#signin-psc")
            page.wait_for_selector("#kc-form-login")
        finally:
            browser.close()


def test_behind_https_the_cookies_are_secure_and_the_provider_sends_back_there(
    tmp_path: Path,
    settings: Settings,
    issuer: str,  # noqa: F811
) -> None:
    backend = SqliteBackend(tmp_path / "index")
    public = oidc_settings(settings, issuer).model_copy(update={"public_url": "https://dispo.example.fr"})
    with ThreadedServer(create_app(public, backend), name="api") as server:
        started = httpx.get(f"{server.url}/auth/signin")
        query = parse_qs(urlsplit(started.headers["location"]).query)
        assert query["redirect_uri"] == ["https://dispo.example.fr/auth/callback"]
        assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
        pending = started.headers["set-cookie"]
        assert pending.startswith("dispo_signin=") and "Secure" in pending and "HttpOnly" in pending
        assert "Path=/auth" in pending
    backend.close()


def test_another_api_process_signs_out_at_the_provider_too(api: Api, settings: Settings, issuer: str) -> None:  # noqa: F811
    """Sessions live in the index: a second API process (a second worker) that never met the provider ends one there
    too, which leaves the provider's session nothing to sign the person in again with."""
    with httpx.Client(timeout=30) as client:
        assert sign_in(client, api, "regulateur", "regulateur").status_code == 303
        csrf = client.get(f"{api.url}/v1/me").json()["csrf_token"]
        with ThreadedServer(create_app(oidc_settings(settings, issuer), api.backend), name="api-2") as other:
            out = client.post(f"{other.url}/auth/signout", headers={"X-CSRF-Token": csrf})
            assert out.status_code == 200, out.text
            ending = out.json()["end_session_url"]
            assert ending and "id_token_hint=" in ending
        assert client.get(f"{api.url}/v1/me").status_code == 401
        bye = client.get(ending, headers={"Cookie": _provider_cookies(client)})
        assert bye.status_code == 302
        again = client.get(f"{api.url}/auth/signin")
        login = client.get(again.headers["location"], headers={"Cookie": _provider_cookies(client)})
        assert 'id="kc-form-login"' in login.text  # the provider asks for the password again
