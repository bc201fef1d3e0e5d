"""The server a federated account lives on, for each task run (``sync.context.load``).

- **Mastodon**: the login's ``instance`` (stored in the credential), else
  ``MASTODON_API_URL``.
- **Bluesky**: the login's ``instance`` (the PDS), else the PDS the account's
  DID document names, as AT Protocol clients find it
  (https://atproto.com/specs/did, https://atproto.com/specs/handle): a handle
  is resolved to its DID (``com.atproto.identity.resolveHandle`` at
  ``BLUESKY_API_URL``), a ``did:plc`` document read from ``BLUESKY_PLC_URL``,
  a ``did:web`` one from ``https://<host>/.well-known/did.json``; its
  ``#atproto_pds`` service endpoint is the PDS. The answer is cached in Redis
  (``PDS_CACHE_SECONDS``) and forgotten when the PDS says the account is not
  there (it moved: ``forget_pds``).

The credential and the URL come from the same stored object, so a token only
ever goes to the instance it was given for. A URL from a login or a DID
document is checked by ``sync.egress`` (again at every connection); the
operator's URLs (``<PROVIDER>_API_URL``, ``BLUESKY_PLC_URL``) are trusted.
A resolution that fails leaves ``SyncContext.instance_error``: the call
raises it instead of sending the token anywhere else.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from providers.errors import Action, ErrorRule, ProviderCallError, ProviderError
from providers.provider import Provider
from state.credentials import CredentialError
from state.keys import Keys
from sync import egress, http

log = logging.getLogger(__name__)

#: how long a resolved PDS is trusted before its DID document is read again
PDS_CACHE_SECONDS = 3600
#: the DID document names no PDS, or one netsync may not call
NO_PDS = ErrorRule(Action.FAIL, "pds_not_found")
#: a URL a DID document gave is not public (``sync.egress``)
PDS_NOT_ALLOWED = ErrorRule(Action.FAIL, egress.NOT_ALLOWED)
#: the directory or the handle's server did not answer: try again later
RESOLUTION_DOWN = ErrorRule(Action.BACKOFF, "did_resolution_failed")


class ResolutionError(Exception):
    def __init__(self, error: ProviderError):
        super().__init__(error.message)
        self.error = error


def provider_for(svc, default: Provider, ctx) -> Provider:
    """The provider object for this sync's account: its instance's."""
    try:
        credential = ctx.credential
    except CredentialError:
        return default  # no call will be made: the task ends needs_reauth
    if credential.instance:
        return svc.memory.provider(type(default), credential.instance, user_supplied=True)
    if default.NAME != "bluesky":
        return default
    try:
        pds = resolve_pds(svc, credential.account_id)
    except ResolutionError as exc:
        ctx.instance_error = exc.error
        return default
    return svc.memory.provider(type(default), pds, user_supplied=True)


def pds_key(svc, account: str) -> str:
    return Keys(svc.settings.key_prefix).pds(account)


def resolve_pds(svc, account: str) -> str:
    """The PDS base URL of a Bluesky account (handle or DID), cached."""
    key = pds_key(svc, account)
    cached = svc.redis.get(key)
    if cached:
        return cached.decode()
    did = account if account.startswith("did:") else resolve_handle(svc, account)
    document = did_document(svc, did)
    endpoint = pds_endpoint(document)
    if endpoint is None:
        raise ResolutionError(ProviderError(NO_PDS, 0, "the DID document names no PDS"))
    try:
        checked = egress.check_instance_url(
            endpoint, svc.settings.outbound_allow_private, what="the DID document's PDS"
        )
    except egress.InstanceNotAllowed as exc:
        raise ResolutionError(ProviderError(PDS_NOT_ALLOWED, 0, str(exc))) from None
    svc.redis.set(key, checked.base_url, ex=PDS_CACHE_SECONDS)
    return checked.base_url


def forget_pds(svc, account: str) -> None:
    """The PDS said the account is not there (it moved): read its DID document again."""
    svc.redis.delete(pds_key(svc, account))


def resolve_handle(svc, handle: str) -> str:
    """A handle's DID, by ``com.atproto.identity.resolveHandle`` at ``BLUESKY_API_URL``."""
    base = svc.settings.api_url("bluesky")
    body = _get_json(svc, f"{base}/xrpc/com.atproto.identity.resolveHandle", {"handle": handle})
    did = body.get("did") if isinstance(body, dict) else None
    if not isinstance(did, str) or not did.startswith("did:"):
        raise ResolutionError(ProviderError(NO_PDS, 0, "the handle resolves to no DID"))
    return did


def did_document(svc, did: str) -> dict:
    """The DID document: ``did:plc`` from the PLC directory, ``did:web`` from its host."""
    if did.startswith("did:plc:"):
        base = svc.settings.bluesky_plc_url.rstrip("/")
        return _get_json(svc, f"{base}/{quote(did, safe=':')}")
    if did.startswith("did:web:"):
        host = did.removeprefix("did:web:").replace("%3A", ":")
        try:
            checked = egress.check_instance_url(
                f"https://{host}", svc.settings.outbound_allow_private, what="did:web host"
            )
        except egress.InstanceNotAllowed as exc:
            raise ResolutionError(ProviderError(PDS_NOT_ALLOWED, 0, str(exc))) from None
        guard = frozenset(svc.settings.outbound_allow_private)
        return _get_json(svc, f"{checked.base_url}/.well-known/did.json", guard=guard)
    raise ResolutionError(ProviderError(NO_PDS, 0, "unsupported DID method"))


def pds_endpoint(document) -> str | None:
    """The ``#atproto_pds`` service's endpoint (https://atproto.com/specs/did)."""
    if not isinstance(document, dict):
        return None
    for service in document.get("service") or ():
        if not isinstance(service, dict):
            continue
        ident = str(service.get("id", ""))
        if ident.endswith("#atproto_pds") and service.get("type") == "AtprotoPersonalDataServer":
            endpoint = service.get("serviceEndpoint")
            return endpoint if isinstance(endpoint, str) else None
    return None


def _get_json(svc, url: str, params=None, guard: frozenset | None = None):
    settings = svc.settings
    try:
        answer = http.send(
            "GET",
            url,
            params=params,
            headers={"Accept": "application/json"},
            timeout=(settings.http_connect_timeout, settings.http_read_timeout),
            http=http.session(guard),
        )
    except ProviderCallError as exc:
        raise ResolutionError(exc.error) from None
    if answer.status >= 500 or answer.status == 429:
        raise ResolutionError(ProviderError(RESOLUTION_DOWN, answer.status, "resolver unavailable"))
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise ResolutionError(ProviderError(NO_PDS, answer.status, "DID or handle not found"))
    return answer.body


#: what a PDS answers for an account it no longer holds (it moved to another PDS):
#: its reads find no such actor, its own token checks fail or say deactivated
MOVED_KINDS = frozenset(
    {"not_found", "account_not_found", "account_deactivated", "invalid_token", "unauthorized"}
)
#: the account lives on another PDS now: the call goes again there, at once
ACCOUNT_MOVED = ErrorRule(Action.WAIT, "account_moved")


def after_error(ctx, error: ProviderError) -> ProviderError | None:
    """A PDS found through the DID document that answers as if the account were not
    there: read the document again; if it names another PDS now, the account moved,
    and the call is made again there (``ACCOUNT_MOVED``). Else None: the error stands."""
    provider = ctx.provider
    if provider.NAME != "bluesky" or error.rule.kind not in MOVED_KINDS:
        return None
    try:
        credential = ctx.credential
    except CredentialError:
        return None
    if credential.instance is not None:
        return None  # the login named the PDS: only a new login moves it
    forget_pds(ctx.svc, credential.account_id)
    try:
        pds = resolve_pds(ctx.svc, credential.account_id)
    except ResolutionError:
        return None
    if pds == provider.base_url:
        return None
    log.info("bluesky account moved sync=%s to another PDS", ctx.sync_id)
    return ProviderError(ACCOUNT_MOVED, error.status, "the account moved to another PDS", 0.0)
