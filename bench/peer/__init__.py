"""The peer: the sync most teams write first, to compare netsync with (bench/peer/app.py)."""
