"""Ports on loopback for the real services tests start."""

from __future__ import annotations

import socket
import threading


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server can listen on ``port`` of 127.0.0.1 now, as Ray's do (gRPC and
    asyncio set SO_REUSEADDR): a connection a killed server left in TIME_WAIT (60 s on
    Linux) does not hold the port for them, a listening socket does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class HungRay:
    """An HTTP server on loopback that accepts connections and never answers, until
    :meth:`release` (the fault switch): then every connection it holds is closed, and no new
    one is accepted (as a Ray that went away)."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.done.is_set():
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                continue

    def release(self) -> None:
        self.done.set()
        self.thread.join(5)
        for conn in self.held:
            conn.close()
        self.listener.close()
