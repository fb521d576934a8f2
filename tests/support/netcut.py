"""A TCP proxy on loopback that can drop a connection part-way (a trap's link failing mid-download)
and counts the bytes it carried back to each client."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_next_after: int | None = None  # response bytes, for the next connection only
        self.response_bytes: list[int] = []  # per connection, in the order they were opened
        self.cut = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                index = len(self.response_bytes)
                self.response_bytes.append(0)
                limit, self.cut_next_after = self.cut_next_after, None
            threading.Thread(target=self._pump, args=(client, upstream, None, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, index, limit), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, index: int | None, limit: int | None) -> None:
        try:
            while block := source.recv(65536):
                if index is not None and limit is not None:
                    block = block[: max(0, limit - self.response_bytes[index])]
                sink.sendall(block)
                if index is not None:
                    with self._lock:
                        self.response_bytes[index] += len(block)
                    if limit is not None and self.response_bytes[index] >= limit:
                        self.cut += 1
                        break
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
