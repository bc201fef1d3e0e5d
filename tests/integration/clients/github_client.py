"""PyGithub against the simulator's /github (see _common.py for the protocol)."""

from __future__ import annotations

import github
from _common import main
from github import Auth, Github


def client(base, token=None, per_page=30, retry=None):
    auth = Auth.Token(token) if token else None
    kwargs = {} if retry else {"retry": None}  # retry=True: PyGithub's default GithubRetry
    # no 0.25 s pause between calls (PyGithub's politeness to the real host)
    return Github(
        auth=auth,
        base_url=f"{base}/github",
        per_page=per_page,
        seconds_between_requests=None,
        **kwargs,
    )


def network(base, token, login, relation="followers", per_page=30):
    """Every id of a network, paged by PyGithub (Link headers), and what it read."""
    gh = client(base, token, per_page)
    user = gh.get_user(login)
    listing = user.get_followers() if relation == "followers" else user.get_following()
    ids = [str(person.id) for person in listing]
    remaining, limit = gh.rate_limiting
    return {
        "ids": ids,
        "count": user.followers if relation == "followers" else user.following,
        "url": user.url,
        "followers_url": user.followers_url,
        "rate_limiting": [remaining, limit],
        "resettime": gh.rate_limiting_resettime,
    }


def profile(base, login, token=None, retry=False, calls=1):
    gh = client(base, token, retry=retry)
    for _ in range(calls):
        user = gh.get_user(login)
    return {
        "login": user.login,
        "rate_limiting": list(gh.rate_limiting),
        "resettime": gh.rate_limiting_resettime,
    }


def me(base, token=None):
    return {"login": client(base, token).get_user().login}


def raw_get(base, path, token=None):
    """A path of PyGithub's own choosing is not possible: go through its requester."""
    gh = client(base, token)
    return gh.requester.requestJsonAndCheck("GET", path)[1]


def describe(exc):
    if isinstance(exc, github.GithubException):
        headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
        return {
            "status": exc.status,
            "message": (exc.data or {}).get("message") if isinstance(exc.data, dict) else None,
            "headers": {
                k: v
                for k, v in headers.items()
                if k.startswith("x-ratelimit") or k == "retry-after"
            },
        }
    return {}


if __name__ == "__main__":
    main({"network": network, "profile": profile, "me": me, "raw_get": raw_get}, describe)
