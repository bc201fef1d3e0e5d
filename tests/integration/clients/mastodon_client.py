"""Mastodon.py against the simulator's /mastodon (see _common.py)."""

from __future__ import annotations

from _common import main
from mastodon import Mastodon, MastodonError


def client(base, token=None, ratelimit_method="throw"):
    # version_check_mode "none" (the default): no /api/v1/instance probe first
    return Mastodon(
        access_token=token,
        api_base_url=f"{base}/mastodon",
        ratelimit_method=ratelimit_method,
        version_check_mode="none",
    )


def rate(ma):
    return {
        "limit": ma.ratelimit_limit,
        "remaining": ma.ratelimit_remaining,
        "reset": ma.ratelimit_reset,
    }


def network(base, token, id, relation="followers", limit=40):
    ma = client(base, token)
    fetch = ma.account_followers if relation == "followers" else ma.account_following
    first = fetch(id, limit=limit)
    everyone = ma.fetch_remaining(first)
    return {"ids": [str(account.id) for account in everyone], **rate(ma)}


def account(base, id, token=None, calls=1, ratelimit_method="throw"):
    ma = client(base, token, ratelimit_method)
    for _ in range(calls):
        found = ma.account(id)
    return {"id": str(found.id), **rate(ma)}


def me(base, token):
    return {"id": str(client(base, token).account_verify_credentials().id)}


def instance(base, token):
    return dict(client(base, token).instance_v1())


def describe(exc):
    if isinstance(exc, MastodonError):
        return {"args": [a if isinstance(a, (int, str)) else str(a) for a in exc.args]}
    return {}


if __name__ == "__main__":
    main({"network": network, "account": account, "me": me, "instance": instance}, describe)
