"""People's sign-in through Pro Santé Connect (any OpenID Connect provider): `/auth/signin` sends the browser to the
provider, `/auth/callback` checks what comes back and opens a session in a cookie, `/auth/signout` ends it here and
at the provider. What the browser must keep between the two first steps (state, nonce, PKCE verifier, where to go
back) travels in a short-lived encrypted cookie bound to this browser: nothing is stored before the person is
known."""

from __future__ import annotations

import base64
import contextlib
import hmac
import html
import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import orjson
from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from access import accounts, sessions
from access.roles import IDNPS, Principal, Role
from api.deps import COOKIE, SECURE_COOKIE, public, require
from api.oidc import InvalidIdToken, Provider, authorization_request, discover, exchange_code, keys, validate_id_token
from api.problems import Problem
from core.secrets import derive, server_key
from core.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", tags=["sign-in"], include_in_schema=False)
PENDING = "dispo_signin"
PENDING_LIFETIME_S = 600  # the time a person has to sign in at the provider
LOCAL_PATH = re.compile(r"^/(?![/\\])[A-Za-z0-9/_.~?=&%+-]*$")  # where to go back: this site's pages only
DEFAULT_TIMEOUT = httpx.Timeout(10.0)


class OidcClient:
    """The provider's endpoints and keys, fetched at first use and kept; the keys fetched again when a token is
    signed by one not known yet (the provider rotates them)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.oidc_issuer is not None
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self._provider: Provider | None = None
        self._keys: Any = None
        self._lock = threading.Lock()

    def provider(self, client: httpx.Client) -> Provider:
        with self._lock:
            if self._provider is None:
                self._provider = discover(self.issuer, client)
            return self._provider

    def end_session_endpoint(self) -> str | None:
        """Where the provider ends its own session; this process may not have met the provider yet (another worker
        signed the person in), and None when it cannot be asked now."""
        try:
            with httpx.Client(timeout=DEFAULT_TIMEOUT) as client:
                return self.provider(client).end_session_endpoint
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def claims(self, client: httpx.Client, id_token: str, nonce: str) -> dict[str, Any]:
        provider = self.provider(client)
        for attempt in (1, 2):
            with self._lock:
                if self._keys is None or attempt == 2:
                    self._keys = keys(provider, client)
                key_set = self._keys
            try:
                return validate_id_token(id_token, key_set, self.issuer, self.settings.oidc_client_id, nonce)
            except InvalidIdToken as exc:
                if attempt == 2 or "signature" not in str(exc):
                    raise
        raise AssertionError("unreachable")


def _cipher(settings: Settings) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derive(server_key(settings), "sign-in")))


def base_url(request: Request, settings: Settings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


def secure(request: Request, settings: Settings) -> bool:
    return base_url(request, settings).startswith("https://")


def page(status: int, title: str, text: str) -> HTMLResponse:
    """A short French page for a browser that came here by a redirection."""
    body = (
        '<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Dispo — connexion</title></head>'
        f'<body><main><h1>{html.escape(title)}</h1><p role="alert">{html.escape(text)}</p>'
        '<p><a href="/">Revenir à l\'accueil</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _oidc(request: Request) -> OidcClient | None:
    return request.app.state.oidc


@router.get("/signin")
def signin(
    request: Request, _: Annotated[None, Depends(public("starts a sign-in at the provider"))], return_to: str = "/"
) -> Response:
    settings: Settings = request.app.state.settings
    oidc = _oidc(request)
    if oidc is None:
        return page(
            404,
            "Connexion indisponible",
            "La connexion par Pro Santé Connect n'est pas configurée ici : utilisez un jeton d'accès.",
        )
    try:
        with httpx.Client(timeout=DEFAULT_TIMEOUT) as client:
            provider = oidc.provider(client)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        log.warning("sign-in: the provider does not answer (%s)", type(exc).__name__)
        return page(503, "Pro Santé Connect ne répond pas", "Réessayez dans un instant, ou utilisez un jeton d'accès.")
    redirect = base_url(request, settings) + "/auth/callback"
    asked = authorization_request(provider, settings.oidc_client_id, redirect, settings.oidc_scopes)
    back = return_to if LOCAL_PATH.fullmatch(return_to) else "/"
    pending = orjson.dumps({"state": asked.state, "nonce": asked.nonce, "verifier": asked.verifier, "back": back})
    response = RedirectResponse(asked.url, status_code=303)
    response.set_cookie(
        PENDING,
        _cipher(settings).encrypt(pending).decode(),
        max_age=PENDING_LIFETIME_S,
        path="/auth",
        httponly=True,
        secure=secure(request, settings),
        samesite="lax",
    )
    return response


@router.get("/callback")
def callback(
    request: Request,
    _: Annotated[None, Depends(public("the provider's redirection back; checked against the browser's own cookie"))],
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    settings: Settings = request.app.state.settings
    oidc = _oidc(request)
    if oidc is None:
        return page(404, "Connexion indisponible", "La connexion par Pro Santé Connect n'est pas configurée ici.")
    answer = _callback(request, settings, oidc, code, state, error)
    answer.delete_cookie(PENDING, path="/auth", httponly=True, secure=secure(request, settings), samesite="lax")
    return answer


def _callback(
    request: Request, settings: Settings, oidc: OidcClient, code: str | None, state: str | None, error: str | None
) -> Response:
    if error:
        return page(400, "Connexion refusée", f"Pro Santé Connect n'a pas accepté la connexion ({error[:80]}).")
    try:
        pending = orjson.loads(_cipher(settings).decrypt(request.cookies.get(PENDING, ""), ttl=PENDING_LIFETIME_S))
    except (InvalidToken, orjson.JSONDecodeError, TypeError):
        pending = None
    if not pending or not state or not code or not hmac.compare_digest(state.encode(), pending["state"].encode()):
        return page(
            400,
            "Connexion expirée",
            "Cette connexion a expiré ou n'a pas été commencée dans ce navigateur : recommencez.",
        )
    redirect = base_url(request, settings) + "/auth/callback"
    secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
    try:
        with httpx.Client(timeout=DEFAULT_TIMEOUT) as client:
            provider = oidc.provider(client)
            id_token = exchange_code(
                provider, client, settings.oidc_client_id, secret, code, redirect, pending["verifier"]
            )
            claims = oidc.claims(client, id_token, pending["nonce"])
    except InvalidIdToken as exc:
        log.warning("sign-in refused: %s", exc)
        return page(400, "Connexion refusée", "La réponse de Pro Santé Connect n'a pas pu être vérifiée : recommencez.")
    except httpx.HTTPError as exc:
        log.warning("sign-in: the provider does not answer (%s)", type(exc).__name__)
        return page(503, "Pro Santé Connect ne répond pas", "Réessayez dans un instant.")
    backend = request.app.state.backend
    idnps = claims.get(settings.oidc_idnps_claim)
    idnps = idnps if isinstance(idnps, str) and IDNPS.fullmatch(idnps) else None
    account = accounts.find_account(backend, idnps, claims.get("sub"))
    if account is None or not account.get("grants"):
        who = f"IDNPS {idnps}" if idnps else "sans IDNPS"
        return page(
            403,
            "Aucun rôle dans Dispo",
            f"Votre compte ({who}) n'a aucun rôle dans Dispo : demandez-en un à "
            "l'administrateur de votre territoire SAS.",
        )
    now = datetime.now(UTC)
    sessions.purge(backend, now)
    hint = _cipher(settings).encrypt(id_token.encode()).decode()
    opened = sessions.open_session(
        backend,
        account["account_id"],
        timedelta(seconds=settings.session_lifetime_s),
        timedelta(seconds=settings.session_idle_s),
        now,
        logout_hint=hint,
    )
    profession = claims.get(settings.oidc_profession_claim)
    accounts.signed_in(backend, account["account_id"], now, profession if isinstance(profession, str) else None)
    log.info("signed in: account %s", account["account_id"])
    response = RedirectResponse(pending["back"], status_code=303)
    is_secure = secure(request, settings)
    response.set_cookie(
        SECURE_COOKIE if is_secure else COOKIE,
        opened.value,
        max_age=int(settings.session_lifetime_s),
        path="/",
        httponly=True,
        secure=is_secure,
        samesite="lax",
    )
    return response


@router.post("/signout")
def signout(
    request: Request, principal: Annotated[Principal, Depends(require(*Role, narrowed="one's own session"))]
) -> Response:
    """End the session here, and give the provider's address that ends it there (the page goes to it)."""
    if principal.session is None:
        raise Problem(
            400, "Not signed in", "A token is not a session: there is nothing to sign out of.", "invalid-request"
        )
    settings: Settings = request.app.state.settings
    backend = request.app.state.backend
    stored = backend.get(sessions.KIND, principal.session) or {}
    sessions.close(backend, principal.session)
    end: str | None = None
    oidc = _oidc(request)
    ending = oidc.end_session_endpoint() if oidc is not None else None
    if ending:
        query = {"client_id": settings.oidc_client_id, "post_logout_redirect_uri": base_url(request, settings) + "/"}
        with contextlib.suppress(InvalidToken):
            query["id_token_hint"] = _cipher(settings).decrypt(stored.get("logout_hint", "").encode()).decode()
        end = f"{ending}?{urlencode(query)}"
    response = JSONResponse({"signed_out": True, "end_session_url": end}, headers={"Cache-Control": "no-store"})
    is_secure = secure(request, settings)
    response.delete_cookie(
        SECURE_COOKIE if is_secure else COOKIE, path="/", httponly=True, secure=is_secure, samesite="lax"
    )
    return response
