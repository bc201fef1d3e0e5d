"""tweepy 4 (Client, API v2) against the simulator's /twitter (see _common.py)."""

from __future__ import annotations

import requests
import tweepy
from _common import main, redirect

REAL = "https://api.twitter.com"


def client(base, token=None, oauth1=False, **kwargs):
    if oauth1:  # OAuth 1.0a user context: tweepy signs with requests-oauthlib
        made = tweepy.Client(
            consumer_key="ck",
            consumer_secret="cs",
            access_token=token,
            access_token_secret="ts",
            **kwargs,
        )
    else:
        made = tweepy.Client(bearer_token=token, **kwargs)
    redirect(made.session, REAL, f"{base}/twitter")
    return made


def network(base, token, id, relation="followers", max_results=100, oauth1=False):
    tw = client(base, token, oauth1)
    method = tw.get_users_followers if relation == "followers" else tw.get_users_following
    ids, pages = [], 0
    for response in tweepy.Paginator(method, id, max_results=max_results, user_auth=oauth1):
        pages += 1
        ids += [str(user.id) for user in response.data or []]
    return {"ids": ids, "pages": pages}


def headers(base, token, id):
    """The raw answer (return_type=requests.Response) for its rate headers."""
    response = client(base, token, return_type=requests.Response).get_user(id=id)
    return {k: v for k, v in response.headers.items() if k.lower().startswith("x-rate-limit")}


def user(base, token, id, calls=1, wait_on_rate_limit=False, oauth1=False):
    tw = client(base, token, oauth1, wait_on_rate_limit=wait_on_rate_limit)
    for _ in range(calls):
        response = tw.get_user(id=id, user_auth=oauth1)
    return {"data": response.data.data if response.data else None, "errors": response.errors}


def raw_get(base, token, path):
    return client(base, token).request("GET", path).json()


def describe(exc):
    if isinstance(exc, tweepy.HTTPException):
        out = {
            "status": exc.response.status_code,
            "api_codes": exc.api_codes,
            "api_messages": exc.api_messages,
        }
        if isinstance(exc, tweepy.TooManyRequests):
            out["reset_time"] = exc.reset_time
            out["headers"] = {
                k: v
                for k, v in exc.response.headers.items()
                if k.lower().startswith("x-rate-limit")
            }
        return out
    return {}


if __name__ == "__main__":
    main({"network": network, "headers": headers, "user": user, "raw_get": raw_get}, describe)
