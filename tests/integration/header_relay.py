"""An HTTP relay before the simulator that garbles rate-limit headers on cue.

What a proxy, a CDN or a provider's bad deploy does to an answer: the body is
right and a quota header is not (``x-ratelimit-remaining: lots``). netsync
must ignore that header for that answer, count it, and go on. The relay
forwards every request to the simulator, puts its own origin into ``Link``
headers (GitHub's pages link to the host that served them), and replaces the
named headers of every ``every``-th answer.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


class HeaderRelay:
    def __init__(self, prefix: str, garble: dict[str, str], every: int = 2):
        self.garble = garble
        self.every = every
        self.answers = self.garbled = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        #: the URL to give netsync as the provider's base (``/github`` under the relay)
        self.url = self._origin + prefix
        #: the simulator's origin (``http://127.0.0.1:8900``): set once it has started
        self.upstream_origin = ""
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_is_garbled(self) -> bool:
        with self._lock:
            self.answers += 1
            garbled = self.answers % self.every == 0
            self.garbled += garbled
            return garbled

    def _handler(self):
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.get(
                    relay.upstream_origin + self.path,
                    headers=headers,
                    timeout=30,
                    allow_redirects=False,
                )
                out = {
                    k: v.replace(relay.upstream_origin, relay._origin)
                    for k, v in answer.headers.items()
                    if k.lower() not in _HOP_BY_HOP
                }
                if relay._next_is_garbled():
                    for name, value in relay.garble.items():
                        out = {k: v for k, v in out.items() if k.lower() != name.lower()}
                        out[name] = value
                self.send_response(answer.status_code)
                for name, value in out.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        return Handler
