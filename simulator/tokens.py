"""Access and refresh tokens: who they belong to, whether they still work.

Tokens come from the scenario's accounts and from the OAuth refresh
endpoints. Faults revoke or expire them; ``restore`` undoes what faults did
(``POST /_sim/reset``). Token strings are fake and readable: a refreshed
token is the account's token plus ``.r<generation>``, so a test can predict
it and find it in ``/_sim/stats``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AccessToken:
    value: str
    provider: str
    account_id: str  # normalized account id
    expires_at: float | None
    refresh_token: str | None = None
    origin: str = "scenario"  # or "refresh"
    generation: int = 0
    revoked_row: str | None = None  # error row every later call gets
    original_expires_at: float | None = None

    def to_json(self) -> dict:
        return {
            "token": self.value,
            "provider": self.provider,
            "account": self.account_id,
            "expires_at": self.expires_at,
            "refresh_token": self.refresh_token,
            "origin": self.origin,
            "generation": self.generation,
            "revoked": self.revoked_row is not None,
        }


@dataclass
class RefreshGrant:
    value: str
    provider: str
    account_id: str
    base_access: str
    root: str = ""  # the scenario's refresh token that started this chain
    generation: int = 0
    used: bool = False
    revoked: bool = False


class TokenRegistry:
    """Every token the simulator knows, keyed by (provider, token string)."""

    def __init__(self) -> None:
        self.access: dict[tuple[str, str], AccessToken] = {}
        self.refresh: dict[tuple[str, str], RefreshGrant] = {}

    def register_account(self, account, account_id: str) -> None:
        """Add (or reset) the scenario token and refresh token of an account."""
        if account.token:
            self.access[(account.provider, account.token)] = AccessToken(
                account.token,
                account.provider,
                account_id,
                account.expires_at,
                account.refresh_token,
                original_expires_at=account.expires_at,
            )
        for value in account.tokens:
            self.access[(account.provider, value)] = AccessToken(
                value, account.provider, account_id, None
            )
        if account.refresh_token:
            self.refresh[(account.provider, account.refresh_token)] = RefreshGrant(
                account.refresh_token,
                account.provider,
                account_id,
                base_access=account.token or f"{account.provider}-{account_id}-at",
                root=account.refresh_token,
            )

    def forget_account(self, provider: str, account_id: str) -> None:
        for table in (self.access, self.refresh):
            for key in [
                k for k, v in table.items() if v.provider == provider and v.account_id == account_id
            ]:
                del table[key]

    def get(self, provider: str, token: str | None) -> AccessToken | None:
        return self.access.get((provider, token)) if token else None

    def problem(self, provider: str, token: str, now: float) -> str | None:
        """``None`` if the token works, else "unknown", "expired" or "revoked"."""
        record = self.access.get((provider, token))
        if record is None:
            return "unknown"
        if record.revoked_row is not None:
            return "revoked"
        if record.expires_at is not None and record.expires_at <= now:
            return "expired"
        return None

    def revoke(self, provider: str, token: str, row: str) -> bool:
        """Revoke an access token and its refresh grant; later calls get ``row``."""
        record = self.access.get((provider, token))
        if record is None:
            return False
        record.revoked_row = row
        grant = self.refresh.get((provider, record.refresh_token or ""))
        if grant:
            grant.revoked = True
        return True

    def expire(self, provider: str, token: str, now: float) -> bool:
        record = self.access.get((provider, token))
        if record is None:
            return False
        record.expires_at = now - 1
        return True

    def redeem(
        self, provider: str, refresh_token: str, now: float, ttl_s: float, rotate: bool
    ) -> AccessToken | None:
        """Exchange a refresh token for a new access token living ``ttl_s`` (``None``:
        refused). ``rotate``: the refresh token is replaced, the old one dies on use
        (Twitter, Bluesky); else it is handed back until it expires (LinkedIn). The
        provider's class says which (``ProviderSim.redeem``)."""
        grant = self.refresh.get((provider, refresh_token))
        if grant is None or grant.used or grant.revoked:
            return None
        generation = grant.generation + 1
        new_refresh = refresh_token
        if rotate:
            grant.used = True
            new_refresh = f"{grant.root}.r{generation}"
            self.refresh[(provider, new_refresh)] = RefreshGrant(
                new_refresh, provider, grant.account_id, grant.base_access, grant.root, generation
            )
        else:
            grant.generation = generation
        token = AccessToken(
            f"{grant.base_access}.r{generation}",
            provider,
            grant.account_id,
            now + ttl_s,
            new_refresh,
            origin="refresh",
            generation=generation,
        )
        token.original_expires_at = token.expires_at
        self.access[(provider, token.value)] = token
        return token

    def restore(self) -> None:
        """Undo fault effects: un-revoke, and put expiries back."""
        for record in self.access.values():
            record.revoked_row = None
            record.expires_at = record.original_expires_at
        for grant in self.refresh.values():
            grant.revoked = False

    def listing(self, provider: str | None = None, account: str | None = None) -> list[dict]:
        return [
            t.to_json()
            for t in self.access.values()
            if (provider is None or t.provider == provider)
            and (account is None or t.account_id == account)
        ]
