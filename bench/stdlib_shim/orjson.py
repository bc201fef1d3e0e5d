"""Stands in for orjson in the "before" variant of bench/hotpath.py: the standard library's json.

Put first on PYTHONPATH (bench/hotpath.py does it for one worker process only)
so that the same code runs with the decoder and encoder it had before.
"""
import json

JSONDecodeError = json.JSONDecodeError


def loads(data):
    return json.loads(data)


def dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
