"""OpenID Connect against a real provider: Keycloak, started by `make test` (`scripts/keycloak.sh`) with the realm of
`scripts/keycloak/` (users carrying Pro Santé Connect's claims) and named by `DISPO_OIDC_ISSUER`. The authorization
code flow with PKCE and a nonce gives an ID token whose claims name the person; a token tampered with, for another
client, from another issuer, expired, or answering another sign-in, is refused."""

from __future__ import annotations

import html
import os
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.oidc import (
    InvalidIdToken,
    authorization_request,
    discover,
    exchange_code,
    keys,
    validate_id_token,
)

CLIENT, SECRET = "dispo", "dispo-test-secret"  # the realm file's client
REDIRECT = "http://127.0.0.1:9/auth/callback"  # never opened: the test reads the code from the redirection


@pytest.fixture(scope="module")
def issuer() -> str:
    named = os.environ.get("DISPO_OIDC_ISSUER")
    if not named:
        if os.environ.get("DISPO_REQUIRE_OIDC") == "1":
            pytest.fail("DISPO_REQUIRE_OIDC=1 but DISPO_OIDC_ISSUER is not set: the provider's tests must run")
        pytest.skip("no provider: set DISPO_OIDC_ISSUER (make test starts Keycloak, scripts/keycloak.sh)")
    return named


def sign_in(issuer: str, username: str, password: str) -> tuple[str, str]:
    """The ID token a person's sign-in gives, and the nonce it was asked with: the browser's part played by httpx
    (the provider's login form filled in, its redirection read)."""
    with httpx.Client(timeout=30) as client:
        provider = discover(issuer, client)
        request = authorization_request(provider, CLIENT, REDIRECT, "openid profile")
        page = client.get(request.url, follow_redirects=True)
        action = html.unescape(re.search(r'<form[^>]*id="kc-form-login"[^>]*action="([^"]+)"', page.text).group(1))
        # The provider marks its cookies Secure, which a browser sends back to a loopback address over plain HTTP
        # (a secure context) and httpx does not: they are sent by hand.
        cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
        form = {"username": username, "password": password}
        answer = client.post(action, data=form, headers={"Cookie": cookies}, follow_redirects=False)
        assert answer.status_code == 302, answer.text[:500]
        back = parse_qs(urlsplit(answer.headers["location"]).query)
        assert back["state"] == [request.state]
        code = back["code"][0]
        return exchange_code(provider, client, CLIENT, SECRET, code, REDIRECT, request.verifier), request.nonce


def test_the_code_flow_names_the_person_by_their_idnps(issuer: str) -> None:
    id_token, nonce = sign_in(issuer, "regulateur", "regulateur")
    with httpx.Client() as client:
        key_set = keys(discover(issuer, client), client)
    claims = validate_id_token(id_token, key_set, issuer, CLIENT, nonce)
    assert claims["SubjectNameID"] == "810100050075" and claims["SubjectRefPro"] == "10"
    assert (claims["given_name"], claims["family_name"]) == ("Pauline", "RICART")


def test_a_wrong_password_gives_no_code(issuer: str) -> None:
    with pytest.raises(AssertionError, match="assert 200 == 302"):  # the login form again, no redirection
        sign_in(issuer, "regulateur", "wrong")


def test_tokens_that_must_not_be_believed_are_refused(issuer: str) -> None:
    id_token, nonce = sign_in(issuer, "medecin", "medecin")
    with httpx.Client() as client:
        key_set = keys(discover(issuer, client), client)
    header, payload, signature = id_token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    cases = {
        "signature": (tampered, issuer, CLIENT, nonce, None),
        "another client": (id_token, issuer, "another-client", nonce, None),
        "another provider": (id_token, issuer + "-other", CLIENT, nonce, None),
        "nonce": (id_token, issuer, CLIENT, "another-sign-in", None),
        "expired": (id_token, issuer, CLIENT, nonce, datetime.now(UTC) + timedelta(hours=2)),
    }
    for what, (token, iss, client_id, expected_nonce, now) in cases.items():
        with pytest.raises(InvalidIdToken):
            validate_id_token(token, key_set, iss, client_id, expected_nonce, now)
            pytest.fail(f"a token with the wrong {what} was believed")
