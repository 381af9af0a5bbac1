"""A TCP proxy that loses one answer: the network failing right after the server acted.

`CutAfterReply(host, port)` forwards every connection made to `127.0.0.1:proxy.port` to the
server. After `arm()`, the next message a client sends still reaches the server, but the
server's answer to it is dropped and that connection is cut: the client cannot tell whether
what it asked for happened (a result write that committed, its reply lost on the way).
`arm(when=b"...")` dooms the next message holding those bytes (a statement's text) instead,
so that something else a client says meanwhile does not take the cut.
"""

from __future__ import annotations

import socket
import threading


class CutAfterReply:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.when = b""
        self.cut = threading.Event()  # set once an answer was dropped and its connection cut
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, when: bytes = b"") -> None:
        self.when = when
        self.armed.set()

    def close(self) -> None:
        with self._lock:
            for sock in [self.listener, *self._sockets]:
                _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            doomed = threading.Event()  # this connection's next answer is dropped
            threading.Thread(target=self._up, args=(client, server, doomed), daemon=True).start()
            threading.Thread(target=self._down, args=(client, server, doomed),
                             daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, doomed: threading.Event) -> None:
        while data := _recv(client):
            with self._lock:
                # one connection only: the first to speak (or to say `when`)
                if self.armed.is_set() and self.when in data:
                    self.armed.clear()
                    doomed.set()
            try:
                server.sendall(data)
            except OSError:
                break
        _close(server)

    def _down(self, client: socket.socket, server: socket.socket,
              doomed: threading.Event) -> None:
        while data := _recv(server):
            if doomed.is_set():  # the server answered, so it acted: drop the answer, cut
                _close(client)
                _close(server)
                self.cut.set()
                return
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
