"""Provider credentials, encrypted at rest with Fernet (``TOKEN_ENCRYPTION_KEY``).

Tokens arrive with the login webhook and are read back by the tasks by
(user, provider): they never travel in a Celery message, a log line or an
API response. ``MultiFernet`` gives key rotation: the first key encrypts,
every key decrypts.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass, replace

import redis
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from state.keys import Keys


@dataclass(frozen=True)
class Credential:
    account_id: str
    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None
    token_secret: str | None = None
    #: a federated account's server, the base URL the login named and
    #: ``sync.egress`` checked (None: ``<PROVIDER>_API_URL``, or for Bluesky the PDS
    #: its DID document names): the token is only ever sent there
    instance: str | None = None

    def fingerprint(self) -> str:
        """A non-reversible name for the token: quota scope and log correlation."""
        return hashlib.sha256(self.access_token.encode()).hexdigest()[:16]

    def __repr__(self) -> str:  # never print a token by accident
        return (
            f"Credential(account_id={self.account_id!r}, instance={self.instance!r},"
            f" token=<{self.fingerprint()}>)"
        )


class SecretsInUse:
    """The secret values this process currently handles, for log redaction by value.

    Redaction by pattern (``service.observability.redact``) catches
    ``access_token=…`` and ``Authorization: Bearer …``, but libraries log secrets
    in shapes no pattern knows (oauthlib's signing key, its collected
    parameters). So every credential this process stores or reads, and the
    settings' secrets, are remembered here (the most recent ``capacity``), and
    every log record is scrubbed of them.
    """

    #: shorter values are not treated as secrets (they would redact ordinary words)
    MIN_LENGTH = 8

    def __init__(self, capacity: int = 512):
        self.capacity = capacity
        self._values: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self._lock = threading.Lock()

    def add(self, *values) -> None:
        with self._lock:
            for value in values:
                if isinstance(value, str) and len(value) >= self.MIN_LENGTH:
                    self._values.pop(value, None)
                    self._values[value] = None
            while len(self._values) > self.capacity:
                self._values.pop(next(iter(self._values)))

    def scrub(self, text: str, replacement: str) -> str:
        with self._lock:
            values = list(self._values)
        for value in values:
            if value in text:
                text = text.replace(value, replacement)
        return text


#: this process's secrets in use (see ``SecretsInUse``)
SECRETS_IN_USE = SecretsInUse()


def remember(credential: Credential) -> Credential:
    SECRETS_IN_USE.add(credential.access_token, credential.refresh_token, credential.token_secret)
    return credential


class CredentialError(RuntimeError):
    """No usable credential is stored (never stored, or undecryptable)."""


class CredentialStore:
    def __init__(self, redis_client, prefix: str, keys: tuple[str, ...]):
        self.redis = redis_client
        self.prefix = prefix
        self._keys = Keys(prefix)  # Redis key names (the ``keys`` argument: encryption keys)
        self.fernet = MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])

    def _key(self, provider: str, user_id: str) -> str:
        # Under the user's network hash tag, so a task reads it in the same
        # round trip as its sync record (SyncStore.queue_snapshot).
        return self._keys.user(provider, user_id).credential

    def save(self, provider: str, user_id: str, credential: Credential, batch=None) -> None:
        """Store ``credential`` (encrypted); with ``batch``, queued there (``state.batch``)."""
        remember(credential)
        blob = self.fernet.encrypt(json.dumps(asdict(credential)).encode())
        key = self._key(provider, user_id)
        if batch is None:
            self.redis.set(key, blob)
        else:
            batch.add(lambda pipe: pipe.set(key, blob))

    def load(self, provider: str, user_id: str) -> Credential:
        return self.decode(provider, self.redis.get(self._key(provider, user_id)))

    def decode(self, provider: str, blob: bytes | None) -> Credential:
        """A stored blob (as read from ``:cred``) back to a Credential."""
        if blob is None:
            raise CredentialError(f"no {provider} credential stored for this user")
        try:
            return remember(Credential(**json.loads(self.fernet.decrypt(blob))))
        except (InvalidToken, ValueError, TypeError):
            raise CredentialError(f"stored {provider} credential cannot be decrypted") from None

    def exists(self, provider: str, user_id: str) -> bool:
        return bool(self.redis.exists(self._key(provider, user_id)))

    def rotate_all(self) -> tuple[int, int]:
        """Re-encrypt every stored credential with the first key (``MultiFernet.rotate``).

        Returns (rotated, undecryptable). Run after putting a new key first in
        ``TOKEN_ENCRYPTION_KEY`` (old keys after it); once it reports zero
        undecryptable, the old keys can be dropped.
        """
        rotated = failed = 0
        for key in self.redis.scan_iter(match=self._keys.credential_pattern(), count=1000):
            blob = self.redis.get(key)
            if blob is None:
                continue
            try:
                fresh = self.fernet.rotate(blob)
            except InvalidToken:
                failed += 1
                continue
            # only if nobody wrote a newer credential meanwhile
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    if pipe.get(key) != blob:
                        pipe.reset()
                        continue
                    pipe.multi()
                    pipe.set(key, fresh)
                    pipe.execute()
                    rotated += 1
                except redis.WatchError:
                    continue
        return rotated, failed

    def update_token(self, provider: str, user_id: str, token: dict) -> Credential:
        """Write back a refreshed OAuth2 token (requests-oauthlib's ``token_updater``)."""
        current = self.load(provider, user_id)
        updated = replace(
            current,
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token") or current.refresh_token,
            expires_at=token.get("expires_at"),
        )
        self.save(provider, user_id, updated)
        return updated
