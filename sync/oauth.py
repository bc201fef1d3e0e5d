"""Authenticated provider calls with requests-oauthlib, and the one refresh a token gets.

- OAuth 2.0 (Twitter user context, Facebook, LinkedIn, Mastodon): an
  ``OAuth2Session`` per call holding the stored token. Where the provider
  has a refresh endpoint, the credential a refresh token and the app its
  client credentials (``<PROVIDER>_OAUTH_CLIENT``), the session gets
  ``auto_refresh_url`` and a ``token_updater`` that writes the new token
  back to the encrypted credential store. requests-oauthlib refreshes only
  *client-side* (``expires_at`` passed); a 401 from the server is the error
  table's business: REFRESH rows call ``refresh_after_rejection`` once, then
  the task retries, and a second refusal is REAUTH.
- OAuth 1.0a (Twitter with a ``token_secret``): ``OAuth1Session`` signs each
  call with the app's consumer key; there is no refresh.

A token is refreshed at most once, whichever of a sync's page tasks (or
another sync's) notices first: a Redis lock per token fingerprint, and a
task that finds the stored token already newer than the one it used simply
adopts it. A task that finds a refresh in progress parks for a second
(``refresh_in_progress``): no worker waits on another's HTTP call.

Plain HTTP: oauthlib refuses an ``http://`` OAuth 2.0 URL unless the process
runs with ``OAUTHLIB_INSECURE_TRANSPORT`` set (it reads the variable at each
call: ``oauthlib.oauth2.rfc6749.utils.is_secure_transport``). Production talks
https and never sets it: a plain-HTTP URL there fails the sync
(``insecure_transport``). Only the environments whose providers are the local
simulator (``devtools.devstack``, ``make run`` pointed at it, the tests) set it,
once, for the whole process; nothing here changes it.

Tokens never leave this module in a message or a log line.
"""

from __future__ import annotations

import contextlib
import time

import requests
from oauthlib.oauth2 import (
    InsecureTransportError,
    InvalidClientError,
    OAuth2Error,
    ServerError,
    TemporarilyUnavailableError,
    TokenExpiredError,
)
from requests_oauthlib import OAuth1Session, OAuth2Session

from providers.errors import TRANSPORT_ERROR, Action, ErrorRule, ProviderCallError, ProviderError
from providers.provider import Auth
from sync import http

#: seconds a refresh holds its lock (also: how long a refreshed token's old
#: fingerprint keeps saying "already refreshed" to late tasks)
REFRESH_LOCK_S = 30
#: how long a task that met someone else's refresh parks before retrying
REFRESH_BUSY_WAIT_S = 1.0

TOKEN_EXPIRED = ErrorRule(Action.REAUTH, "token_expired")
REFRESH_REJECTED = ErrorRule(Action.REAUTH, "refresh_rejected")
REFRESH_IN_PROGRESS = ErrorRule(Action.WAIT, "refresh_in_progress")
TOKEN_ENDPOINT_DOWN = ErrorRule(Action.BACKOFF, "token_endpoint_unavailable")
TOKEN_ENDPOINT_THROTTLED = ErrorRule(Action.WAIT, "token_endpoint_rate_limited")
OAUTH_CLIENT_INVALID = ErrorRule(Action.FAIL, "oauth_client_invalid")
OAUTH_CLIENT_MISSING = ErrorRule(Action.FAIL, "oauth_client_missing")
INSECURE_TRANSPORT = ErrorRule(Action.FAIL, "insecure_transport")


class RefreshBusy(Exception):
    """Another task is refreshing this token right now."""


# -- the token of one user on one provider ----------------------------------------------
def client_credentials(settings, provider_name: str) -> tuple[str, str] | None:
    """(client id, secret) from ``<PROVIDER>_OAUTH_CLIENT`` ("ID:SECRET"), if configured."""
    raw = settings.oauth_clients.get(provider_name)
    if not raw:
        return None
    client_id, _, secret = raw.partition(":")
    return client_id, secret


def token_dict(credential) -> dict:
    token = {"access_token": credential.access_token, "token_type": "Bearer"}
    if credential.refresh_token:
        token["refresh_token"] = credential.refresh_token
    if credential.expires_at:
        token["expires_at"] = float(credential.expires_at)
    return token


class TokenKeeper:
    """Reads, refreshes (at most once per token) and writes back one user's token."""

    def __init__(self, ctx):
        self.svc = ctx.svc
        self.provider = ctx.provider
        self.user_id = ctx.user_id
        self.used = ctx.credential  # the token this task's call went out with

    @property
    def lock_key(self) -> str:
        keys = self.svc.store.keys.user(self.provider.NAME, self.user_id)
        return keys.refresh_lock(self.used.fingerprint())

    def newer_token(self) -> dict | None:
        """The stored token, if another task already replaced the one we used."""
        stored = self.svc.credentials.load(self.provider.NAME, self.user_id)
        if stored.access_token != self.used.access_token:
            return token_dict(stored)
        return None

    def refresh(self, session: OAuth2Session | None, refresh, **kwargs) -> dict:
        newer = self.newer_token()
        if newer is not None:
            if session is not None:
                session.token = newer
            return newer
        if not self.svc.redis.set(self.lock_key, "1", nx=True, ex=REFRESH_LOCK_S):
            raise RefreshBusy()
        try:
            return refresh(**kwargs)
        except (ProviderCallError, requests.RequestException):
            # The token endpoint was down or throttled: a later attempt may try
            # again. A refused refresh keeps the lock: this token had its one try.
            self.svc.redis.delete(self.lock_key)
            raise

    def save(self, token: dict) -> None:
        """``token_updater``: the new token goes back to the encrypted store."""
        if token.get("access_token") != self.used.access_token:
            self.svc.credentials.update_token(self.provider.NAME, self.user_id, token)


class NetsyncOAuth2Session(OAuth2Session):
    """``OAuth2Session`` whose refreshes go through a ``TokenKeeper``.

    requests-oauthlib's auto-refresh hands the refresh every keyword of the
    request that triggered it; ``params`` and ``allow_redirects`` would end
    up as form fields of the refresh, so only the timeout is passed on.
    """

    def __init__(self, keeper: TokenKeeper, client: tuple[str, str] | None, **kwargs):
        super().__init__(**kwargs)
        self.keeper = keeper
        self.client = client
        self.register_compliance_hook("refresh_token_response", _token_endpoint_status)

    def refresh_token(self, token_url, refresh_token=None, **kwargs):
        auth = None
        if self.client and self.keeper.provider.TOKEN_CLIENT_AUTH == "basic":
            auth = self.client  # confidential client: HTTP Basic (Twitter)
        parent = super().refresh_token
        return self.keeper.refresh(
            self,
            parent,
            token_url=token_url,
            refresh_token=refresh_token,
            auth=auth,
            timeout=kwargs.get("timeout"),
        )


def _token_endpoint_status(response):
    """Before oauthlib parses a refresh answer: a 5xx or 429 is not a refused grant."""
    if response.status_code >= 500:
        raise ProviderCallError(
            ProviderError(TOKEN_ENDPOINT_DOWN, response.status_code, "token endpoint unavailable")
        )
    if response.status_code == 429:
        raise ProviderCallError(
            ProviderError(TOKEN_ENDPOINT_THROTTLED, 429, "token endpoint rate limited")
        )
    return response


def _shared_pool(session, ctx=None):
    """Reuse this thread's connection pool (``sync.http``) instead of a new one per call:
    the guarded one where the provider's URL came from a user (``sync.egress``)."""
    pooled = http.session(egress_guard(ctx))
    for prefix in ("https://", "http://"):
        session.mount(prefix, pooled.get_adapter(prefix + "x"))
    session.headers.update(pooled.headers)
    session.trust_env, session.proxies = pooled.trust_env, dict(pooled.proxies)
    return session


def oauth2_session(ctx) -> NetsyncOAuth2Session:
    provider, credential = ctx.provider, ctx.credential
    client = client_credentials(ctx.svc.settings, provider.NAME)
    keeper = TokenKeeper(ctx)
    refresh_url = provider.token_url() if credential.refresh_token and client else None
    extra = {}
    if client:
        extra = {"client_id": client[0]}
        if provider.TOKEN_CLIENT_AUTH == "body":
            extra["client_secret"] = client[1]  # LinkedIn: client id and secret as form fields
    session = NetsyncOAuth2Session(
        keeper,
        client,
        client_id=client[0] if client else None,
        token=token_dict(credential),
        auto_refresh_url=refresh_url,
        auto_refresh_kwargs=extra,
        token_updater=keeper.save,
    )
    return _shared_pool(session, ctx)


def egress_guard(ctx) -> frozenset | None:
    """``OUTBOUND_ALLOW_PRIVATE`` when this call's URL came from a user, else None."""
    if ctx is None or not ctx.provider.user_supplied:
        return None
    return frozenset(ctx.svc.settings.outbound_allow_private)


#: the credential names another instance than the call's (a re-link moved the account)
INSTANCE_MISMATCH = ErrorRule(Action.FAIL, "instance_mismatch")


def check_instance(ctx) -> None:
    """A token given for an instance goes to that instance only, whatever else happened."""
    given = ctx.credential.instance
    if given is not None and given.rstrip("/") != ctx.provider.base_url:
        message = "the credential belongs to another instance than this call's"
        raise ProviderCallError(ProviderError(INSTANCE_MISMATCH, 0, message))


def session_for(ctx):
    """The session that authenticates this call; None: a plain bearer header will do."""
    provider, credential = ctx.provider, ctx.credential
    if provider.AUTH in (Auth.BEARER, Auth.SESSION):
        return None
    if provider.AUTH is Auth.OAUTH1_OR_OAUTH2 and credential.token_secret:
        client = client_credentials(ctx.svc.settings, provider.NAME)
        if client is None:
            raise ProviderCallError(
                ProviderError(
                    OAUTH_CLIENT_MISSING, 0, f"{provider.NAME.upper()}_OAUTH_CLIENT is not set"
                )
            )
        return _shared_pool(
            OAuth1Session(
                client[0],
                client_secret=client[1],
                resource_owner_key=credential.access_token,
                resource_owner_secret=credential.token_secret,
            ),
            ctx,
        )
    return oauth2_session(ctx)


def send(ctx, call, headers: dict, timeout: tuple[float, float]) -> http.Answer:
    """Send one call with the user's credential; oauthlib's refusals become taxonomy errors."""
    check_instance(ctx)
    session = session_for(ctx)
    headers = {**headers, **call.headers}  # the call's own (a conditional's If-None-Match)
    if session is None:
        headers = {**headers, **ctx.provider.auth_headers(ctx.credential)}
        guard = egress_guard(ctx)
        session = http.session(guard) if guard is not None else None
    with oauth_errors():
        return http.send(
            call.method,
            call.url,
            params=call.params,
            headers=headers,
            timeout=timeout,
            http=session,
        )


def refresh_after_rejection(ctx, timeout: tuple[float, float]) -> str:
    """The server refused the token: refresh it (once). "refreshed", "busy" or "impossible"."""
    provider, credential = ctx.provider, ctx.credential
    if provider.AUTH is Auth.BEARER or credential.token_secret:
        return "impossible"  # bearer tokens and OAuth 1.0a have no refresh
    if provider.AUTH is Auth.SESSION:
        return refresh_session(ctx, timeout)
    session = oauth2_session(ctx)
    if session.auto_refresh_url is None:
        return "refreshed" if session.keeper.newer_token() else "impossible"
    try:
        with oauth_errors():
            try:
                token = session.refresh_token(session.auto_refresh_url, timeout=timeout)
            except RefreshBusy:
                return "busy"
    except ProviderCallError as exc:
        if exc.error.action is Action.REAUTH:
            return "impossible"
        raise
    session.token_updater(token)
    return "refreshed"


class RefreshRefused(Exception):
    """The provider refused the refresh token itself: no refresh can help."""


def refresh_session(ctx, timeout: tuple[float, float]) -> str:
    """AUTH SESSION (Bluesky): renew the session with its refresh token, once.

    The same one-refresh-per-token lock as OAuth (``TokenKeeper``); the new
    tokens (the refresh token rotates) go back to the encrypted store.
    """
    provider, credential = ctx.provider, ctx.credential
    keeper = TokenKeeper(ctx)
    if not credential.refresh_token:
        return "refreshed" if keeper.newer_token() else "impossible"

    def renew() -> dict:
        call = provider.refresh_call(credential.refresh_token)
        answer = http.send(
            call.method,
            call.url,
            params=call.params,
            headers={**provider.request_headers(), **call.headers},
            timeout=timeout,
            http=http.session(egress_guard(ctx)),
        )
        with http.parsing("refresh answer"):
            error = provider.classify_refresh(
                answer.status, answer.body, answer.headers, time.time()
            )
            if error is None:
                return provider.parse_refresh(answer.body)
        if error.action in (Action.REAUTH, Action.REFRESH, Action.FAIL):
            raise RefreshRefused(error.rule.kind)  # keeps the lock: this token had its one try
        raise ProviderCallError(error)  # down or throttled: a later attempt may try again

    try:
        token = keeper.refresh(None, renew)
    except RefreshBusy:
        return "busy"
    except RefreshRefused:
        return "impossible"
    keeper.save(token)
    return "refreshed"


@contextlib.contextmanager
def oauth_errors():
    """oauthlib's exceptions as the taxonomy's errors."""
    try:
        yield
    except (requests.Timeout, requests.ConnectionError) as exc:  # the token endpoint's socket
        raise ProviderCallError(ProviderError(TRANSPORT_ERROR, 0, type(exc).__name__)) from None
    except RefreshBusy:
        raise ProviderCallError(
            ProviderError(
                REFRESH_IN_PROGRESS,
                0,
                "token refresh in progress",
                time.time() + REFRESH_BUSY_WAIT_S,
            )
        ) from None
    except TokenExpiredError:
        raise ProviderCallError(
            ProviderError(TOKEN_EXPIRED, 0, "token expired, no refresh possible")
        ) from None
    except InsecureTransportError:
        raise ProviderCallError(
            ProviderError(INSECURE_TRANSPORT, 0, "OAuth over plain HTTP refused")
        ) from None
    except InvalidClientError:
        raise ProviderCallError(
            ProviderError(OAUTH_CLIENT_INVALID, 0, "client credentials refused")
        ) from None
    except (ServerError, TemporarilyUnavailableError) as exc:
        raise ProviderCallError(ProviderError(TOKEN_ENDPOINT_DOWN, 0, exc.error or "")) from None
    except OAuth2Error as exc:
        # invalid_grant and friends: the refresh token is revoked or expired
        raise ProviderCallError(
            ProviderError(REFRESH_REJECTED, 0, exc.error or "refresh refused")
        ) from None
