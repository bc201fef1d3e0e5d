"""facebook-sdk (GraphAPI) against the simulator's /facebook (see _common.py)."""

from __future__ import annotations

import facebook
from _common import main, redirect

REAL = facebook.FACEBOOK_GRAPH_URL  # "https://graph.facebook.com/"
VERSION = "3.1"  # the newest facebook-sdk 3.1.0 accepts; any vNN.N is served


def graph(base, token=None):
    api = facebook.GraphAPI(access_token=token, version=VERSION)
    redirect(api.session, REAL, f"{base}/facebook/")
    return api


def network(base, token, id, limit=25):
    ids = [
        str(friend["id"])
        for friend in graph(base, token).get_all_connections(id, "friends", limit=limit)
    ]
    return {"ids": ids}


def friends_page(base, id, token=None, calls=1):
    api = graph(base, token)
    for _ in range(calls):
        page = api.get_connections(id, "friends", limit=1, summary="total_count")
    return {"total": page.get("summary", {}).get("total_count")}


def raw(base, path, token=None):
    return graph(base, token).request(path)


def describe(exc):
    if isinstance(exc, facebook.GraphAPIError):
        error = exc.result.get("error", {}) if isinstance(exc.result, dict) else {}
        return {
            "code": exc.code,
            "type": exc.type,
            "message": exc.message,
            "subcode": error.get("error_subcode"),
            "is_transient": error.get("is_transient"),
        }
    return {}


if __name__ == "__main__":
    main({"network": network, "friends_page": friends_page, "raw": raw}, describe)
