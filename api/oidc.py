"""OpenID Connect with Pro Santé Connect (or any provider speaking it): the authorization code flow with PKCE and a
nonce, and the ID token's validation — signature by a key of the provider's JWKS, issuer, audience, expiry and the
nonce sent — before anything in it is believed."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

ALGORITHMS = ["RS256", "PS256", "ES256"]  # what Pro Santé Connect and Keycloak sign with; never "none" nor HMAC


class InvalidIdToken(ValueError):
    """An ID token that must not be believed, and why."""


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


def discover(issuer: str, client: httpx.Client) -> Provider:
    """The provider's endpoints from its discovery document, which must name the issuer asked for."""
    found = client.get(issuer.rstrip("/") + "/.well-known/openid-configuration")
    found.raise_for_status()
    doc = found.json()
    if doc.get("issuer") != issuer.rstrip("/"):
        raise InvalidIdToken(f"the provider says it is {doc.get('issuer')!r}, not {issuer!r}")
    return Provider(
        doc["issuer"],
        doc["authorization_endpoint"],
        doc["token_endpoint"],
        doc["jwks_uri"],
        doc.get("end_session_endpoint"),
    )


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser, and what to keep (server side) until it comes back."""

    url: str
    state: str
    nonce: str
    verifier: str


def authorization_request(provider: Provider, client_id: str, redirect_uri: str, scopes: str) -> AuthorizationRequest:
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    return AuthorizationRequest(f"{provider.authorization_endpoint}?{urlencode(query)}", state, nonce, verifier)


def exchange_code(
    provider: Provider,
    client: httpx.Client,
    client_id: str,
    client_secret: str | None,
    code: str,
    redirect_uri: str,
    verifier: str,
) -> str:
    """The ID token the provider gives for an authorization code; raises InvalidIdToken when it gives none."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    auth = (client_id, client_secret) if client_secret else None
    answer = client.post(provider.token_endpoint, data=form, auth=auth)
    if answer.status_code != 200:
        raise InvalidIdToken(f"the provider refused the code (HTTP {answer.status_code})")
    id_token = answer.json().get("id_token")
    if not isinstance(id_token, str):
        raise InvalidIdToken("the provider's answer holds no ID token")
    return id_token


def keys(provider: Provider, client: httpx.Client) -> KeySet:
    found = client.get(provider.jwks_uri)
    found.raise_for_status()
    return KeySet.import_key_set(found.json())


def validate_id_token(
    id_token: str, key_set: KeySet, issuer: str, client_id: str, nonce: str, now: datetime | None = None
) -> dict[str, Any]:
    """The ID token's claims once its signature, issuer, audience, expiry and nonce are what they must be."""
    moment = int((now or datetime.now(UTC)).timestamp())
    try:
        token = jwt.decode(id_token, key_set, algorithms=ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise InvalidIdToken(f"the signature does not hold ({type(exc).__name__})") from exc
    claims = token.claims
    if claims.get("iss") != issuer:
        raise InvalidIdToken("issued by another provider")
    audience = claims.get("aud")
    if client_id not in (audience if isinstance(audience, list) else [audience]):
        raise InvalidIdToken("issued for another client")
    expires = claims.get("exp")
    if not isinstance(expires, int) or expires <= moment - 30:  # 30 s for clocks apart
        raise InvalidIdToken("expired")
    issued = claims.get("iat")
    if isinstance(issued, int) and issued > moment + 30:
        raise InvalidIdToken("issued in the future")
    if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
        raise InvalidIdToken("not the answer to this sign-in (nonce)")
    return dict(claims)
