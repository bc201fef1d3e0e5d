"""Deterministic connection identities: (provider, account, relation, index) -> person.

An account's network is the index range ``start .. start + size - 1``. Each
index maps to a provider-native id through a keyed bijection, so ids are
unique within an account, stable when ``start``/``size`` move (that is how
tests change the truth), and cost nothing until a page asks for them: an
account of a million followers is two integers and a hash key.
"""

from __future__ import annotations

import hashlib

_MULT_A = 0x9E3779B97F4A7C15  # odd: multiplication mod 2**k is a bijection
_MULT_B = 0xBF58476D1CE4E5B9  # odd

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Every two-character base62 string, so encoding takes half the divisions.
_BASE62_PAIRS = tuple(a + b for a in _BASE62 for b in _BASE62)

FIRST_NAMES = (
    "Ada",
    "Alan",
    "Barbara",
    "Brian",
    "Carol",
    "Dennis",
    "Edsger",
    "Frances",
    "Grace",
    "Guido",
    "Hedy",
    "Ivan",
    "Joan",
    "Ken",
    "Linus",
    "Margaret",
    "Niklaus",
    "Olga",
    "Radia",
    "Rob",
    "Shafi",
    "Sophie",
    "Tim",
    "Yukihiro",
)
LAST_NAMES = (
    "Allen",
    "Backus",
    "Cerf",
    "Dijkstra",
    "Engelbart",
    "Floyd",
    "Goldberg",
    "Hopper",
    "Iverson",
    "Jobs",
    "Knuth",
    "Lamport",
    "Liskov",
    "McCarthy",
    "Naur",
    "Ousterhout",
    "Perlman",
    "Ritchie",
    "Stroustrup",
    "Thompson",
    "Ullman",
    "Wirth",
    "Yao",
    "Zuse",
)
_FIRST_LOWER = tuple(name.lower() for name in FIRST_NAMES)
_LAST_LOWER = tuple(name.lower() for name in LAST_NAMES)


def account_key(provider: str, account_id: str, relation: str) -> int:
    """64-bit key of one (provider, account, relation) id space."""
    digest = hashlib.blake2b(
        f"{provider}\0{account_id}\0{relation}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def own_numeric_id(provider: str, account_id: str) -> int:
    """A scenario account's own numeric id (GitHub's user id) when the scenario gives
    none: derived from its (normalized) id, below 2**27."""
    return 1 + account_key(provider, account_id, "self") % (1 << 27)


def permute(value: int, bits: int, key: int) -> int:
    """A keyed bijection on ``[0, 2**bits)``: distinct inputs give distinct outputs.

    Every step (xor with a constant, multiply by an odd constant, xor with a
    right shift of itself) is invertible modulo ``2**bits``.
    """
    mask = (1 << bits) - 1
    shift = max(1, bits // 2)
    x = (value ^ key) & mask
    x = (x * _MULT_A) & mask
    x ^= x >> shift
    x = (x * _MULT_B) & mask
    x ^= x >> shift
    return x


def base62_fixed(n: int, width: int) -> str:
    """``n`` in ``width`` base62 digits (``width`` even; high digits beyond it dropped)."""
    pairs = []
    for _ in range(width // 2):
        n, r = divmod(n, 3844)
        pairs.append(_BASE62_PAIRS[r])
    return "".join(reversed(pairs))


def person_name(n: int) -> tuple[str, str]:
    """A (first, last) display name picked from an id value."""
    return FIRST_NAMES[n % len(FIRST_NAMES)], LAST_NAMES[(n // 31) % len(LAST_NAMES)]


def first_lower(n: int) -> str:
    """The lower-case first name of ``person_name(n)``: the stem of handles."""
    return _FIRST_LOWER[n % len(_FIRST_LOWER)]


def last_lower(n: int) -> str:
    return _LAST_LOWER[(n // 31) % len(_LAST_LOWER)]


class ConnectionSpace:
    """The network of one account for one relation: indices ``start .. start+size-1``.

    ``native(index)`` gives the provider's raw id value for an absolute index;
    the provider modules turn it into their id form (integer, numeric string,
    URN) and handle.
    """

    __slots__ = (
        "provider",
        "account_id",
        "relation",
        "start",
        "size",
        "key",
        "_native",
        "overrides",
    )

    def __init__(
        self, provider: str, account_id: str, relation: str, start: int, size: int, native
    ) -> None:
        self.provider = provider
        self.account_id = account_id
        self.relation = relation
        self.start = start
        self.size = size
        self.key = account_key(provider, account_id, relation)
        self._native = native
        #: absolute index → native id of another scenario account (``connections_include``)
        self.overrides: dict[int, int] = {}

    @property
    def end(self) -> int:
        """One past the last index."""
        return self.start + self.size

    def native(self, index: int) -> int:
        if index in self.overrides:
            return self.overrides[index]
        return self._native(index, self.key)

    def natives(self, lo: int, hi: int) -> list[int]:
        """Native ids of indices ``lo .. hi-1`` (the hot path of every page)."""
        out = self._native.many(lo, hi, self.key)
        for index, native in self.overrides.items():
            if lo <= index < hi:
                out[index - lo] = native
        return out

    def clamp(self, index: int) -> int:
        """An absolute index forced into ``[start, end]``."""
        return min(max(index, self.start), self.end)


# --- id spaces: index -> native integer, unique per key ------------------------
# Each provider's class names its own (``ProviderSim.NATIVE_IDS``).


class PermutedIds:
    """Ids ``offset + permute(index, bits, key)``: unique per account key."""

    __slots__ = ("bits", "offset")

    def __init__(self, bits: int, offset: int) -> None:
        self.bits = bits
        self.offset = offset

    def __call__(self, index: int, key: int) -> int:
        return self.offset + permute(index, self.bits, key)

    def many(self, lo: int, hi: int, key: int) -> list[int]:
        """``permute`` inlined over a range: pages are the hot path, and a
        function call per item costs as much as the arithmetic."""
        mask = (1 << self.bits) - 1
        shift = max(1, self.bits // 2)
        offset, mult_a, mult_b = self.offset, _MULT_A, _MULT_B
        out = []
        append = out.append
        for index in range(lo, hi):
            x = ((index ^ key) & mask) * mult_a & mask
            x ^= x >> shift
            x = x * mult_b & mask
            x ^= x >> shift
            append(offset + x)
        return out


class TwitterIds:
    """Twitter ids: one in four is an old small id (< 2**33), the rest are
    snowflakes above 2**60 (well beyond 2**53: they break float JSON parsers)."""

    __slots__ = ()

    def __call__(self, index: int, key: int) -> int:
        group, slot = divmod(index, 4)
        if slot == 0:
            return 1_000_000 + permute(group, 32, key)
        return (1 << 60) + permute(3 * group + slot - 1, 59, key)

    def many(self, lo: int, hi: int, key: int) -> list[int]:
        return [self(index, key) for index in range(lo, hi)]
