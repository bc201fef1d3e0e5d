"""Shadows hiredis for the "before" variant of bench/hotpath.py: redis-py falls back to its Python parser."""
raise ImportError("hiredis hidden by bench/stdlib_shim")
