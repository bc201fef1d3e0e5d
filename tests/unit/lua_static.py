"""A static reading of Lua scripts: is every key a command touches taken from KEYS?

Used by ``test_lua_scripts.py``. The rule is conservative: in every
``redis.call``/``pcall`` the command is a string literal, and each argument
in a *key position* of that command (``KEY_POSITIONS``, which the test checks
against the server's ``COMMAND INFO``) is ``KEYS[n]`` or a local bound once
to ``KEYS[n]``: never reassigned, never shadowed by a parameter or a loop
variable. Anything else in a key position (a ``..`` concatenation, a
function's parameter, a table field, ``unpack``) is reported, as is a command
missing from ``KEY_POSITIONS``. Fields, scores and members may be built
freely (``'s' .. idx .. ':' .. cls`` is a hash field).
"""

from __future__ import annotations

import re

#: command → (first key, last key, step) as COMMAND INFO gives them (-1: the last argument)
KEY_POSITIONS = {
    "GET": (1, 1, 1),
    "SET": (1, 1, 1),
    "DEL": (1, -1, 1),
    "EXISTS": (1, -1, 1),
    "RENAME": (1, 2, 1),
    "PEXPIRE": (1, 1, 1),
    "HGET": (1, 1, 1),
    "HSET": (1, 1, 1),
    "HMGET": (1, 1, 1),
    "HSETNX": (1, 1, 1),
    "HDEL": (1, 1, 1),
    "HEXISTS": (1, 1, 1),
    "HLEN": (1, 1, 1),
    "HINCRBY": (1, 1, 1),
    "HGETALL": (1, 1, 1),
    "ZADD": (1, 1, 1),
    "ZCARD": (1, 1, 1),
    "ZREM": (1, 1, 1),
    "ZRANGEBYSCORE": (1, 1, 1),
    "ZREMRANGEBYSCORE": (1, 1, 1),
    "ZDIFFSTORE": (1, 1, 1),
}
#: commands with more keys than COMMAND INFO's range: argument index of their numkeys
MOVABLE_NUMKEYS = {"ZDIFFSTORE": 2}


# -- a small Lua tokenizer ---------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>--\[(?P<ceq>=*)\[.*?\](?P=ceq)\]|--[^\n]*)
  | (?P<long>\[(?P<leq>=*)\[.*?\](?P=leq)\])
  | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
  | (?P<number>0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<op>\.\.\.|\.\.|==|~=|<=|>=|[-+*/%^#<>=(){}\[\];:,.])
""",
    re.VERBOSE | re.DOTALL,
)


def tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) of every token but spaces and comments; kind: name, string, number, op."""
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        assert match, f"cannot read Lua at {text[pos : pos + 40]!r}"
        kind = match.lastgroup  # the outermost group: nested ones close first
        if kind not in ("space", "comment"):
            out.append(("string" if kind == "long" else kind, match.group()))
        pos = match.end()
    return out


def split_args(toks, start):
    """The comma-separated arguments of the call whose '(' is at ``start``; and the end."""
    depth, args, current, i = 0, [], [], start
    while True:
        kind, text = toks[i]
        if text in "([{" and kind == "op":
            depth += 1
            if depth > 1:
                current.append(toks[i])
        elif text in ")]}" and kind == "op":
            depth -= 1
            if depth == 0:
                if current:
                    args.append(current)
                return args, i
            current.append(toks[i])
        elif text == "," and kind == "op" and depth == 1:
            args.append(current)
            current = []
        else:
            current.append(toks[i])
        i += 1


def is_keys_ref(arg) -> int | None:
    """n if the argument is exactly ``KEYS[n]``."""
    if (
        len(arg) == 4
        and arg[0] == ("name", "KEYS")
        and arg[1] == ("op", "[")
        and arg[2][0] == "number"
        and arg[3] == ("op", "]")
    ):
        return int(arg[2][1])
    return None


def key_aliases(toks) -> dict[str, int]:
    """Locals bound to KEYS[n] (``local a, b = KEYS[1], KEYS[2]``) → n."""
    aliases = {}
    for i, tok in enumerate(toks):
        if tok != ("name", "local"):
            continue
        names, j = [], i + 1
        while toks[j][0] == "name":
            names.append(toks[j][1])
            if toks[j + 1] != ("op", ","):
                break
            j += 2
        if toks[j + 1] != ("op", "="):
            continue
        j += 2
        for name in names:
            n = is_keys_ref(toks[j : j + 4])
            if n is None:
                break
            aliases[name] = n
            if toks[j + 4] != ("op", ","):
                break
            j += 5
    return aliases


def bindings(toks, name: str) -> int:
    """How often ``name`` is bound or assigned (local, parameter, loop variable, ``=``)."""
    count = 0
    for i, tok in enumerate(toks):
        if tok != ("name", name) or toks[i - 1] == ("op", "."):  # t.name is a field
            continue
        j = i - 1  # walk back over a name list: "local a, name" / "for k, name" / "(a, name"
        while toks[j] == ("op", ",") and toks[j - 1][0] == "name":
            j -= 2
        before = toks[j]
        parameter = before == ("op", "(") and ("name", "function") in (toks[j - 1], toks[j - 2])
        if parameter or before in (("name", "local"), ("name", "for"), ("name", "function")):
            count += 1
            continue
        k = i + 1  # forward over the rest of an assignment list: "name, b = ..."
        while toks[k] == ("op", ",") and toks[k + 1][0] == "name":
            k += 2
        if toks[k] == ("op", "="):
            count += 1
    return count


# -- the rule -----------------------------------------------------------------------------
def key_problems(text: str) -> list[str]:
    """Every key position of every redis.call/pcall that is not KEYS[n] or a local bound to it."""
    toks = tokens(text)
    aliases = key_aliases(toks)
    problems = [
        f"the key alias {alias!r} is bound again" for alias in aliases if bindings(toks, alias) != 1
    ]
    aliases = {a: n for a, n in aliases.items() if bindings(toks, a) == 1}
    calls = 0
    for i, tok in enumerate(toks):
        member = toks[i + 2][1] if tok == ("name", "redis") and toks[i + 1] == ("op", ".") else None
        if member not in ("call", "pcall"):
            continue
        if toks[i + 3] != ("op", "("):
            problems.append(f"redis.{member} used other than called directly")
            continue
        args, _ = split_args(toks, i + 3)
        calls += 1
        if not (len(args[0]) == 1 and args[0][0][0] == "string"):
            problems.append(f"the command of redis.{member} must be a string literal: {args[0]}")
            continue
        command = args[0][0][1].strip("'\"").upper()
        if command not in KEY_POSITIONS:
            problems.append(f"add {command}'s key positions to KEY_POSITIONS")
            continue
        first, last, step = KEY_POSITIONS[command]
        rest = args[1:]
        positions = list(range(first - 1, len(rest) if last == -1 else last, step))
        if command in MOVABLE_NUMKEYS:
            start = MOVABLE_NUMKEYS[command]
            numkeys = rest[start - 1]
            if not (len(numkeys) == 1 and numkeys[0][0] == "number"):
                problems.append(f"{command}: numkeys must be a literal")
                continue
            positions += range(start, start + int(numkeys[0][1]))
        for pos in positions:
            arg = rest[pos] if pos < len(rest) else []
            if is_keys_ref(arg) is None and not (len(arg) == 1 and arg[0][1] in aliases):
                problems.append(
                    f"{command} argument {pos + 1} is a key and must be KEYS[n] or a "
                    f"local bound to it, not {' '.join(t[1] for t in arg)!r}"
                )
    if not calls:
        problems.append("no redis.call found (is the tokenizer reading it?)")
    return problems
