"""netsync's provider simulator: GitHub, Twitter/X, Facebook, LinkedIn, Mastodon
and Bluesky on one local port, with the real wire formats, quotas and faults.

Run it with ``python -m simulator --port 8900 --scenario FILE.json`` and point
the service at ``http://127.0.0.1:8900/<provider>``; in-process, use
``simulator.app.make_app(scenario)`` or ``simulator.testing.run_simulator``.
The scenario, fault and ``/_sim/`` control formats are in ``simulator/README.md``.
Each provider is one class (``simulator/providers/<name>.py``), registered by
one line in ``simulator.providers.REGISTRY``.
"""
