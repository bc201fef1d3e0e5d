"""A TCP relay between netsync's processes and PostgreSQL that closes connections on cue.

What a connection pooler or a NAT with an idle timeout does to a client: the
connection is closed from the middle (the server's backend sees EOF and ends,
the client's socket reads EOF), and the client only learns it when it next
uses the connection. ``cut_all`` does that to every connection at a moment
the test chooses (a timeout is just such a moment); ``cut_on`` closes the
connection that sends a statement, so the client loses it in the middle of
its transaction.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict


class PostgresRelay:
    def __init__(self, database_url: str):
        self.database_url = database_url
        params = conninfo_to_dict(database_url)
        host, port = params.get("host") or "127.0.0.1", int(params.get("port") or 5432)
        # the embedded server listens on a unix socket (a directory as its host)
        self._upstream = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._markers: list[bytes] = []
        #: connections accepted, closed by ``cut_all``, closed by a ``cut_on`` marker
        self.accepted = self.cut = self.cut_on_marker = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """``database_url`` through the relay (TCP, no TLS: the markers are read in clear)."""
        params = conninfo_to_dict(self.database_url)
        user = quote(params.get("user") or "postgres", safe="")
        password = params.get("password")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        dbname = quote(params.get("dbname") or "postgres", safe="")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}?sslmode=disable"

    def cut_all(self) -> int:
        """Close every relayed connection now; how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)
        self.cut += len(pairs)
        return len(pairs)

    def cut_on(self, marker: bytes) -> None:
        """Close the next connection that sends ``marker``, instead of passing it on (once)."""
        with self._lock:
            self._markers.append(marker)

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut_all()

    # -- relaying ----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            family, address = self._upstream
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(address)
            except OSError:
                _close(client, server)
                continue
            with self._lock:
                self._pairs.append((client, server))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        tail = b""
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            if from_client and self._fires(tail + chunk):
                self.cut_on_marker += 1
                break
            tail = chunk[-256:]
            try:
                sink.sendall(chunk)
            except OSError:
                break
        with self._lock:
            if (source, sink) in self._pairs or (sink, source) in self._pairs:
                self._pairs = [p for p in self._pairs if source not in p]
        _close(source, sink)

    def _fires(self, data: bytes) -> bool:
        with self._lock:
            for marker in self._markers:
                if marker in data:
                    self._markers.remove(marker)
                    return True
        return False


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
