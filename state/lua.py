"""The Lua scripts in ``state/lua/``: loaded once, called with named keys and arguments.

One convention for every script:

``KEYS``
    every key the script touches, in the order its header lists them. Python
    passes them by name (``script(keys={"record": ...}, args={...})``) and
    this module puts them in order; the names come from ``state.keys``. A
    script never builds a key name (Redis requires every key a script touches
    to be passed in ``KEYS``: a cluster routes the call by them), so a script
    that works on a user's network gets that network's keys from Python.
``ARGV[1]``
    one JSON object of named arguments, decoded in Lua with
    ``local args = cjson.decode(ARGV[1])``; there is no other ``ARGV``.
    ``None`` values are left out, so they are ``nil`` in Lua. Numbers keep
    their full double both ways (``json`` writes ``repr(float)``, cjson reads
    it back with ``strtod``), but a Lua number handed to ``redis.call`` is
    written with ``%.17g``: a value stored verbatim (the sync record's
    timestamps) travels as text formatted in Python, and the script applies
    ``tonumber`` where it computes with it.

Each file opens with a header of ``--`` comment lines (parsed here and
checked by ``tests/unit/test_lua_scripts.py`` against the script's body and
against what Python passes; every call is also checked against it here)::

    -- name: what the script does (free text)
    -- KEYS[1] record: the sync record (hash)
    -- KEYS[2] seen?: a trailing key Python may leave out (None)
    -- ARGV[1] = JSON object:     (or "= JSON object (plus quota_prelude's arguments):")
    --   cursor: the page's cursor (exactly three spaces before the name)
    --   reason?: may be None (absent in Lua)
    --       longer descriptions go on with deeper indents
    -- needs: quota_prelude
    -- returns: ...

Preludes. Redis scripts cannot ``require``, so code shared by several
scripts lives in a ``<name>_prelude.lua`` file, and a script whose header
says ``-- needs: <name>_prelude`` is sent as prelude + script (Redis
reports line numbers in that combined text). A prelude has a header of its
own; its ``KEYS`` must be the first ``KEYS`` of every script that needs it,
and its arguments are added to the script's. The prelude decodes ``ARGV[1]``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

LUA_DIR = Path(__file__).with_name("lua")

_KEY_LINE = re.compile(r"^-- KEYS\[(\d+)\] (\w+)(\?)?:")
_ARGV_LINE = re.compile(r"^-- ARGV\[1\] = JSON object\b.*:$")
_ARG_LINE = re.compile(r"^--   (\w+)(\?)?:")
_NEEDS_LINE = re.compile(r"^-- needs: (.+)$")
#: json.dumps' defaults (\u-escapes, NaN/Infinity, which cjson also reads), built once
_json_encode = json.JSONEncoder(separators=(",", ":")).encode


def _encode(payload: Mapping) -> bytes | str:
    """The arguments as JSON: orjson (a page of 1,000 connections: ~0.65 -> ~0.04 ms,
    bench/hotpath.py), the json module for what orjson refuses (an int past 64 bits).

    Both write a float as its shortest repr; orjson writes NaN/Infinity as null
    (no script is given one).
    """
    try:
        return orjson.dumps(payload)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _json_encode(payload)


class ScriptCallError(TypeError):
    """Python called a script with other keys or arguments than its header lists."""


@dataclass(frozen=True)
class Header:
    """What a file's header declares."""

    keys: tuple[str, ...]
    optional_keys: frozenset[str]
    args: tuple[str, ...]
    optional_args: frozenset[str]
    needs: tuple[str, ...]


def parse_header(text: str, where: str = "<lua>") -> Header:
    """The header of one ``.lua`` file (its leading ``--`` lines)."""
    keys, optional_keys, args, optional_args, needs = [], set(), [], set(), []
    in_args = False
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if in_args and line.startswith("--   "):
            match = _ARG_LINE.match(line)
            if match:
                args.append(match[1])
                if match[2]:
                    optional_args.add(match[1])
            continue
        in_args = False
        if match := _KEY_LINE.match(line):
            if int(match[1]) != len(keys) + 1:
                raise ValueError(f"{where}: KEYS[{match[1]}] out of order")
            keys.append(match[2])
            if match[3]:
                optional_keys.add(match[2])
        elif _ARGV_LINE.match(line):
            in_args = True
        elif match := _NEEDS_LINE.match(line):
            needs += [name.strip() for name in match[1].split(",")]
    for names in (keys, args):
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: a name is listed twice in {names}")
    return Header(
        tuple(keys), frozenset(optional_keys), tuple(args), frozenset(optional_args), tuple(needs)
    )


@dataclass(frozen=True)
class ScriptSpec:
    """One script as sent to Redis: its full text and what it takes."""

    name: str
    text: str
    header: Header  # the file's own header, before any prelude is merged in
    keys: tuple[str, ...]
    optional_keys: frozenset[str]
    args: tuple[str, ...]
    optional_args: frozenset[str]


def read(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


@functools.cache
def script_spec(name: str) -> ScriptSpec:
    """The script ``state/lua/<name>.lua``, with the preludes it needs (read once)."""
    own_text = read(name)
    own = parse_header(own_text, f"{name}.lua")
    texts, prelude_keys, args = [], (), []
    optional_keys, optional_args = set(own.optional_keys), set(own.optional_args)
    for prelude in own.needs:
        if not prelude.endswith("_prelude"):
            raise ValueError(f"{name}.lua needs {prelude!r}: only *_prelude files are prepended")
        text = read(prelude)
        head = parse_header(text, f"{prelude}.lua")
        prelude_keys += head.keys
        if own.keys[: len(prelude_keys)] != prelude_keys:
            raise ValueError(f"{name}.lua: its first KEYS must be {prelude}'s {head.keys}")
        texts.append(text)
        args += head.args
        optional_keys |= head.optional_keys
        optional_args |= head.optional_args
    texts.append(own_text)
    if twice := set(args) & set(own.args):
        raise ValueError(f"{name}.lua declares its preludes' arguments {sorted(twice)}")
    args += own.args
    return ScriptSpec(
        name,
        "\n".join(texts),
        own,
        own.keys,
        frozenset(optional_keys),
        tuple(args),
        frozenset(optional_args),
    )


class LuaScript:
    """One script registered with a Redis client, called with named keys and arguments."""

    def __init__(self, redis_client, name: str):
        self.spec = script_spec(name)
        self.name = name
        self._key_names = frozenset(self.spec.keys)
        self._arg_names = frozenset(self.spec.args)
        self._required_args = self._arg_names - self.spec.optional_args
        self._script = redis_client.register_script(self.spec.text)

    def __call__(self, keys: Mapping[str, str | None], args: Mapping[str, Any]):
        ordered, payload = self._checked(keys, args)
        return self._script(keys=ordered, args=[payload])

    def queue(
        self,
        batch,
        keys: Mapping[str, str | None],
        args: Mapping[str, Any],
        read: Callable[[Any], Any] = lambda reply: reply,
    ):
        """Queue this call in a ``state.batch.Batch`` (one round trip with other steps).

        Sent as ``EVALSHA``; if the server does not know the script (a
        restarted Redis), it did not run, and the batch runs it alone with its
        text. Returns the step's ``Reply``; its value is ``read(the script's answer)``.
        """
        ordered, payload = self._checked(keys, args)
        sha = self._script.sha
        return batch.add(
            lambda pipe: pipe.evalsha(sha, len(ordered), *ordered, payload),
            read=lambda replies: read(replies[0]),
            retry=lambda: self._script(keys=ordered, args=[payload]),
        )

    def _checked(self, keys: Mapping[str, str | None], args: Mapping[str, Any]):
        """The keys in header order and the JSON argument, or ScriptCallError."""
        if keys.keys() != self._key_names:
            raise ScriptCallError(
                f"{self.name}.lua takes KEYS {list(self.spec.keys)}, not {list(keys)}"
            )
        if args.keys() != self._arg_names:
            raise ScriptCallError(
                f"{self.name}.lua takes arguments {sorted(self.spec.args)}, not {sorted(args)}"
            )
        ordered = [keys[name] for name in self.spec.keys]
        if None in ordered:  # optional trailing keys left out
            first = ordered.index(None)
            left_out = self.spec.keys[first:]
            if any(k is not None for k in ordered[first:]) or not all(
                name in self.spec.optional_keys for name in left_out
            ):
                raise ScriptCallError(f"{self.name}.lua: only trailing optional KEYS may be None")
            ordered = ordered[:first]
        payload = {name: value for name, value in args.items() if value is not None}
        if not self._required_args <= payload.keys():
            missing = sorted(self._required_args - payload.keys())
            raise ScriptCallError(f"{self.name}.lua: {missing} may not be None")
        return ordered, _encode(payload)
