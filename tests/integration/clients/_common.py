"""What every client script shares: the op loop, exception capture, host rewriting.

A client script runs in the clients' virtualenv (``.venv-clients``), never in
the service's. It reads ``{"base": SIMULATOR_URL, "ops": [{"op": NAME, ...}]}``
as JSON on stdin, runs each op with the provider's own client library and
prints ``{"results": [...]}``: per op ``{"value": ...}`` or, when the library
raised, ``{"raised": {"class", "module", "bases", ...details}}``.
"""

from __future__ import annotations

import json
import sys
import traceback

import requests
from requests.adapters import HTTPAdapter


class ToSimulator(HTTPAdapter):
    """For libraries whose API host is fixed (tweepy, facebook-sdk): send what they
    address to ``real`` (e.g. ``https://api.twitter.com``) to ``local`` instead.
    Mounted on the library's own ``requests.Session``, so the library's code runs
    unchanged: only the socket goes elsewhere."""

    def __init__(self, real: str, local: str) -> None:
        super().__init__()
        self.real, self.local = real, local

    def send(self, request, **kwargs):
        if request.url.startswith(self.real):
            request.url = self.local + request.url[len(self.real) :]
        return super().send(request, **kwargs)


def redirect(session: requests.Session, real: str, local: str) -> None:
    session.mount(real, ToSimulator(real, local))


def raised(exc: BaseException, **details) -> dict:
    cls = type(exc)
    return {
        "raised": {
            "class": cls.__name__,
            "module": cls.__module__,
            "bases": [c.__name__ for c in cls.__mro__],
            "text": str(exc)[:300],
            **details,
        }
    }


def main(ops: dict, describe=None) -> None:
    """Run the request on stdin with ``ops`` (name -> function(base, **args) -> value).

    ``describe(exc)`` adds library-specific details of an exception it raised.
    """
    request = json.load(sys.stdin)
    results = []
    for op in request["ops"]:
        args = {k: v for k, v in op.items() if k != "op"}
        try:
            results.append({"value": ops[op["op"]](request["base"], **args)})
        except Exception as exc:  # noqa: BLE001 - the library's exception is the result
            details = describe(exc) if describe else {}
            results.append(raised(exc, **details, trace=traceback.format_exc()[-1500:]))
    json.dump({"results": results}, sys.stdout)
