"""What finds a Bluesky account's PDS: the PLC directory and handle resolution.

- ``GET /bluesky/plc/<did>``: the account's DID document, as the PLC
  directory (https://web.plc.directory/api/redoc) serves it: ``id``,
  ``alsoKnownAs`` (``at://<handle>``), ``verificationMethod`` and ``service``
  with the ``#atproto_pds`` entry (``AtprotoPersonalDataServer``) whose
  ``serviceEndpoint`` is the PDS: ``/bluesky/<instance>`` for an account on an
  instance, ``/bluesky`` otherwise. An unknown DID: 404 ``DID not registered``.
- ``GET /bluesky/xrpc/com.atproto.identity.resolveHandle?handle=``: the
  handle's DID (https://docs.bsky.app/docs/api/com-atproto-identity-resolve-handle);
  an unknown handle: 400 ``{"error": "InvalidRequest", "message": "Unable to
  resolve handle"}``.

Neither counts against an instance's limits nor appears in ``/_sim/calls`` or
``/_sim/stats`` (the directory is its own service, not the Bluesky API).
"""

from __future__ import annotations

from aiohttp import web

from .providers.base import origin
from .providers.bluesky import account_did, account_handle

PLC_PATH = "/bluesky/plc/{did}"
RESOLVE_HANDLE_PATH = "/bluesky/xrpc/com.atproto.identity.resolveHandle"


def add_routes(app: web.Application, sim) -> None:
    app.router.add_get(PLC_PATH, _did_document(sim))
    app.router.add_get(RESOLVE_HANDLE_PATH, _resolve_handle(sim))


def _bluesky_accounts(sim):
    return [a for (provider, _), a in sim.accounts.items() if provider == "bluesky"]


def _did_document(sim):
    async def handle(request: web.Request) -> web.Response:
        did = request.match_info["did"]
        account = next((a for a in _bluesky_accounts(sim) if account_did(a) == did), None)
        if account is None:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)
        pds = origin(request) + "/bluesky" + (f"/{account.instance}" if account.instance else "")
        document = {
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/multikey/v1",
                "https://w3id.org/security/suites/secp256k1-2019/v1",
            ],
            "id": did,
            "alsoKnownAs": [f"at://{account_handle(account)}"],
            "verificationMethod": [
                {
                    "id": f"{did}#atproto",
                    "type": "Multikey",
                    "controller": did,
                    "publicKeyMultibase": "zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF",
                }
            ],
            "service": [
                {
                    "id": "#atproto_pds",
                    "type": "AtprotoPersonalDataServer",
                    "serviceEndpoint": pds,
                }
            ],
        }
        return web.json_response(document)

    return handle


def _resolve_handle(sim):
    async def handle(request: web.Request) -> web.Response:
        wanted = (request.query.get("handle") or "").lower()
        account = next(
            (a for a in _bluesky_accounts(sim) if wanted and account_handle(a) == wanted), None
        )
        if account is None:
            body = {"error": "InvalidRequest", "message": "Unable to resolve handle"}
            return web.json_response(body, status=400)
        return web.json_response({"did": account_did(account)})

    return handle
