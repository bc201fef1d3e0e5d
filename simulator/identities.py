"""Deterministic connection identities: (provider, account, relation, index) -> person.

An account's network is the index range ``start .. start + size - 1``. Each
index maps to a provider-native id through a keyed bijection, so ids are
unique within an account, stable when ``start``/``size`` move (that is how
tests change the truth), and cost nothing until a page asks for them: an
account of a million followers is two integers and a hash key.
"""

from __future__ import annotations

import bisect
import hashlib

_MULT_A = 0x9E3779B97F4A7C15  # odd: multiplication mod 2**k is a bijection
_MULT_B = 0xBF58476D1CE4E5B9  # odd

#: Rank of the first connection added to an oldest-first list: after every base index.
ADDED_RANK = 1 << 62

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


def unpermute(value: int, bits: int, key: int) -> int:
    """The inverse of ``permute``: ``unpermute(permute(v, bits, key), bits, key) == v``."""
    mask = (1 << bits) - 1
    shift = max(1, bits // 2)
    x = _unshift(value & mask, shift)
    x = (x * pow(_MULT_B, -1, 1 << bits)) & mask
    x = _unshift(x, shift)
    x = (x * pow(_MULT_A, -1, 1 << bits)) & mask
    return (x ^ key) & mask


def _unshift(y: int, shift: int) -> int:
    """The x with ``x ^ (x >> shift) == y``."""
    x, t = y, y >> shift
    while t:
        x ^= t
        t >>= shift
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
    """The network of one account for one relation, in the provider's list order.

    The base network is the index range ``start .. start+size-1``; ``native(index)``
    gives an index's provider-native id (the provider modules turn it into their id
    form and handle). Changes made at run time (``POST /_sim/changes``) are kept as
    an overlay, the only per-connection storage: connections added (newest last)
    and base indices removed.

    Every connection has a *rank*: its place in the list, ascending. A base index
    is its own rank; a connection added is the newest, so it ranks before every
    base index when the list is newest first (``newest_first``: Mastodon, Bluesky,
    X) and after all of them otherwise (GitHub's observed oldest-first order).
    Keyset cursors (Mastodon follow ids, Bluesky ``sortAt``, X and Facebook
    cursors) are ranks, so they stay valid when the list changes; positional
    paging (GitHub ``page``, LinkedIn ``start``) shifts, as it does for real.
    """

    __slots__ = (
        "provider",
        "account_id",
        "relation",
        "start",
        "base_size",
        "key",
        "_native",
        "overrides",
        "newest_first",
        "added",
        "added_at",
        "live_added",
        "removed",
        "removed_set",
        "generated",
    )

    def __init__(
        self,
        provider: str,
        account_id: str,
        relation: str,
        start: int,
        size: int,
        native,
        newest_first: bool = True,
    ) -> None:
        self.provider = provider
        self.account_id = account_id
        self.relation = relation
        self.start = start
        self.base_size = size
        self.key = account_key(provider, account_id, relation)
        self._native = native
        self.newest_first = newest_first
        #: absolute index → native id of another scenario account (``connections_include``)
        self.overrides: dict[int, int] = {}
        #: natives added at run time, oldest first (``k`` is the place here)
        self.added: list[int] = []
        #: native → its latest ``k`` in ``added``
        self.added_at: dict[int, int] = {}
        #: the ``k`` of added connections still there, ascending
        self.live_added: list[int] = []
        #: base indices removed, sorted (and as a set)
        self.removed: list[int] = []
        self.removed_set: set[int] = set()
        #: ids made up for ``add: <n>`` so far (taken from the top of the id space)
        self.generated = 0

    # --- the base range ---------------------------------------------------------

    @property
    def end(self) -> int:
        """One past the last base index."""
        return self.start + self.base_size

    def native(self, index: int) -> int:
        """The native id of base index ``index``."""
        if index in self.overrides:
            return self.overrides[index]
        return self._native(index, self.key)

    def natives(self, lo: int, hi: int) -> list[int]:
        """Native ids of base indices ``lo .. hi-1`` (the hot path of every page)."""
        out = self._native.many(lo, hi, self.key)
        for index, native in self.overrides.items():
            if lo <= index < hi:
                out[index - lo] = native
        return out

    # --- the list as served -----------------------------------------------------

    @property
    def size(self) -> int:
        """How many connections the list holds now."""
        return self.base_size - len(self.removed) + len(self.live_added)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def added_rank(self, k: int) -> int:
        return -(k + 1) if self.newest_first else ADDED_RANK + k

    def _added_ranks(self) -> list[int]:
        """Ranks of the live added connections, ascending."""
        if self.newest_first:
            return [-(k + 1) for k in reversed(self.live_added)]
        return [ADDED_RANK + k for k in self.live_added]

    def slice(self, lo: int, hi: int) -> tuple[list[int], list[int]]:
        """(ranks, natives) of the connections at list positions ``lo .. hi-1``."""
        lo, hi = max(0, lo), min(self.size, hi)
        if hi <= lo:
            return [], []
        if not self.changed:
            return list(range(self.start + lo, self.start + hi)), self.natives(
                self.start + lo, self.start + hi
            )
        ranks: list[int] = []
        natives: list[int] = []
        n_added, n_base = len(self.live_added), self.base_size - len(self.removed)
        # the two segments in list order: (first position, length, reader)
        if self.newest_first:
            segments = ((0, n_added, self._added_slice), (n_added, n_base, self._base_slice))
        else:
            segments = ((0, n_base, self._base_slice), (n_base, n_added, self._added_slice))
        for first, length, read in segments:
            a, b = max(lo, first), min(hi, first + length)
            if a < b:
                part_ranks, part_natives = read(a - first, b - first)
                ranks += part_ranks
                natives += part_natives
        return ranks, natives

    def _added_slice(self, lo: int, hi: int) -> tuple[list[int], list[int]]:
        ranks = self._added_ranks()[lo:hi]
        if self.newest_first:
            return ranks, [self.added[-r - 1] for r in ranks]
        return ranks, [self.added[r - ADDED_RANK] for r in ranks]

    def _base_slice(self, lo: int, hi: int) -> tuple[list[int], list[int]]:
        """Ranks and natives of the live base connections ``lo .. hi-1`` (in live order)."""
        if not self.removed:
            return list(range(self.start + lo, self.start + hi)), self.natives(
                self.start + lo, self.start + hi
            )
        index = self._base_index_at(lo)
        ranks = []
        while len(ranks) < hi - lo and index < self.end:
            if index not in self.removed_set:
                ranks.append(index)
            index += 1
        return ranks, [self.native(i) for i in ranks]

    def _base_index_at(self, q: int) -> int:
        """The base index of the ``q``-th live base connection."""
        index = self.start + q
        while True:
            candidate = self.start + q + bisect.bisect_right(self.removed, index)
            if candidate == index:
                return index
            index = candidate

    def count_below(self, rank: int) -> int:
        """How many connections rank before ``rank``: the list position it would have."""
        if self.newest_first:  # added ranks are -(k+1): below ``rank`` when k >= -rank
            added = len(self.live_added) - bisect.bisect_left(self.live_added, -rank)
        else:
            added = bisect.bisect_left(self.live_added, rank - ADDED_RANK)
        top = min(max(rank, self.start), self.end)
        base = top - self.start - bisect.bisect_left(self.removed, top)
        return max(0, added) + base

    def window(
        self,
        limit: int,
        after: int | None = None,
        before: int | None = None,
        nearest: bool = False,
    ) -> tuple[int, int]:
        """List positions ``(lo, hi)`` of at most ``limit`` connections ranked after
        ``after`` and before ``before`` (keyset paging): the first ones, or with
        ``nearest`` the ones just before ``before`` (Mastodon's ``min_id``)."""
        lo = 0 if after is None else self.count_below(after + 1)
        hi = self.size if before is None else self.count_below(before)
        if hi <= lo:
            return lo, lo
        if nearest:
            lo = max(lo, hi - limit)
        return lo, min(hi, lo + limit)

    # --- changes ------------------------------------------------------------------

    def rank_of(self, native: int) -> int | None:
        """The rank of a connection now in the list, or None."""
        k = self.added_at.get(native)
        if k is not None:
            at = bisect.bisect_left(self.live_added, k)
            if at < len(self.live_added) and self.live_added[at] == k:
                return self.added_rank(k)
        for index, value in self.overrides.items():
            if value == native:
                return index if self._base_live(index) else None
        index = self._native.index_of(native, self.key)
        if index is None or index in self.overrides or not self._base_live(index):
            return None
        return index

    def _base_live(self, index: int) -> bool:
        return self.start <= index < self.end and index not in self.removed_set

    def fresh_natives(self, count: int) -> list[int]:
        """``count`` natives not in the list, made up deterministically from the top of
        the id space (``ids.capacity``), far above any base index."""
        out: list[int] = []
        taken: set[int] = set()
        while len(out) < count:
            native = self._native(self._native.capacity - 1 - self.generated, self.key)
            self.generated += 1
            if native not in taken and self.rank_of(native) is None:
                out.append(native)
                taken.add(native)
        return out

    def add(self, native: int) -> None:
        """``native`` follows now: the newest connection."""
        k = len(self.added)
        self.added.append(native)
        self.added_at[native] = k
        self.live_added.append(k)

    def remove(self, native: int) -> bool:
        """``native`` is gone from the list; False if it was not in it."""
        rank = self.rank_of(native)
        if rank is None:
            return False
        if self.start <= rank < self.end:
            bisect.insort(self.removed, rank)
            self.removed_set.add(rank)
        else:
            self.live_added.remove(self.added_at[native])
        return True


# --- id spaces: index -> native integer, unique per key ------------------------
# Each provider's class names its own (``ProviderSim.NATIVE_IDS``).


class PermutedIds:
    """Ids ``offset + permute(index, bits, key)``: unique per account key."""

    __slots__ = ("bits", "offset", "capacity")

    def __init__(self, bits: int, offset: int) -> None:
        self.bits = bits
        self.offset = offset
        #: how many distinct indices (and ids) the space has
        self.capacity = 1 << bits

    def __call__(self, index: int, key: int) -> int:
        return self.offset + permute(index, self.bits, key)

    def index_of(self, native: int, key: int) -> int | None:
        """The index whose id is ``native`` (None: not an id of this space)."""
        value = native - self.offset
        if not 0 <= value < self.capacity:
            return None
        return unpermute(value, self.bits, key)

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

    #: slot 0 of each group of four takes a 32-bit permutation of the group
    capacity = 1 << 34

    def __call__(self, index: int, key: int) -> int:
        group, slot = divmod(index, 4)
        if slot == 0:
            return 1_000_000 + permute(group, 32, key)
        return (1 << 60) + permute(3 * group + slot - 1, 59, key)

    def index_of(self, native: int, key: int) -> int | None:
        if 1_000_000 <= native < 1_000_000 + (1 << 32):
            return 4 * unpermute(native - 1_000_000, 32, key)
        if 1 << 60 <= native < (1 << 60) + (1 << 59):
            group, slot = divmod(unpermute(native - (1 << 60), 59, key), 3)
            return 4 * group + slot + 1 if 4 * group + slot + 1 < self.capacity else None
        return None

    def many(self, lo: int, hi: int, key: int) -> list[int]:
        return [self(index, key) for index in range(lo, hi)]
