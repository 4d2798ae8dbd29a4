"""A fault-injecting TCP proxy for the tests: a stand-in for toxiproxy (github.com/Shopify/toxiproxy),
which cannot be installed here.

It listens on 127.0.0.1, forwards each connection to a ClickHouse HTTP interface on 127.0.0.1, and
reads the HTTP/1.1 it carries well enough to find the SQL of each request: the ``query=`` parameter of
the request target, and the body when it is text (a form's ``query`` field, or a text/plain body).
One armed fault fires on the first request whose SQL matches a pattern:

- ``Fault.REQUEST_LOST``: the connection is reset before the request is forwarded: the server never
  sees it (toxiproxy's ``reset_peer`` before the request's bytes pass);
- ``Fault.ANSWER_LOST``: the request is forwarded, the server runs it and answers, and the connection
  to the client is reset before any byte of the answer reaches it (``reset_peer`` on the way back);
- ``Fault.ANSWER_CUT``: the server's whole answer is read, about half of it (its headers and half of
  its body) reaches the client, then the connection is closed (``limit_data``). A statement that
  returns no rows answers with its headers and an empty body, whose last bytes are what is cut: the
  client then reads the success it was;
- ``Fault.REQUEST_LATE`` and ``Fault.ANSWER_LATE``: the request, or the answer, is held for ``delay``
  seconds, then passes (``latency``): with a client timeout shorter than that, the client has given
  up before the server ran the statement, or before its answer came. A held request is delivered
  even when its client has gone, as the network delivers bytes already sent.

toxiproxy cannot match a request's content; this proxy can, which is what lets a test break the
connection at one named step of a run. Every other request passes unchanged, each connection on a
connection of its own to the server (keep-alive is kept on both sides). Every request seen is
recorded (its SQL, its connection, whether a fault fired on it), so a test can count how often a
statement was sent: a client's own retry shows as a second request with the same SQL.

Bounded: loopback only on both sides, at most ``MAX_CONNECTIONS`` open connections and ``MAX_MESSAGE``
bytes per message, a connection silent for ``io_timeout`` seconds is closed (a statement that runs
longer without a byte of answer is cut), and the proxy stops by itself ``lifetime`` seconds after it
started, whether or not ``stop`` is called.
"""

from __future__ import annotations

import contextlib
import enum
import re
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

LOOPBACK = "127.0.0.1"
MAX_CONNECTIONS = 256
MAX_MESSAGE = 256 * 1024 * 1024
MAX_HEADERS = 1024 * 1024
_POLL = 0.2
_INSERT = re.compile(r"\s*INSERT\s", re.I)


class Fault(enum.Enum):
    REQUEST_LOST = "request lost"
    ANSWER_LOST = "answer lost"
    ANSWER_CUT = "answer cut"
    REQUEST_LATE = "request late"
    ANSWER_LATE = "answer late"


@dataclass(frozen=True)
class Request:
    """One request the proxy read from a client."""

    number: int
    connection: int
    method: str
    sql: str
    fault: Fault | None = None


class ProxyError(Exception):
    pass


class _Closed(Exception):
    """The peer closed the connection, or the proxy is stopping."""


@dataclass
class _Armed:
    pattern: re.Pattern[str]
    fault: Fault
    skip: int


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` forwards ``proxy.url`` to ClickHouse's HTTP at ``port``."""

    def __init__(
        self, upstream_port: int, *, upstream_host: str = LOOPBACK, lifetime: float = 600.0, io_timeout: float = 120.0
    ) -> None:
        if upstream_host not in (LOOPBACK, "localhost"):
            raise ProxyError(f"the proxy forwards to loopback only, not {upstream_host}")
        self.upstream = (LOOPBACK, upstream_port)
        self.lifetime = lifetime
        self.io_timeout = io_timeout
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._armed: _Armed | None = None
        self._delay = 0.0
        self._answered = threading.Event()
        self._settled = threading.Event()
        self._requests: list[Request] = []
        self._fired: Request | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._connections = 0
        self._accepter = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)

    # -- the test's side ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"clickhouse://{LOOPBACK}:{self.port}"

    def start(self) -> FaultProxy:
        self._deadline = time.monotonic() + self.lifetime
        self._accepter.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        self._accepter.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)
        _close(self._listener)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def arm(self, pattern: str, fault: Fault, *, skip: int = 0, delay: float = 0.0) -> None:
        """Fire ``fault`` on the first request (after ``skip`` of them) whose SQL matches ``pattern``
        (a regular expression, searched, case-insensitive). Once: re-arm for another. ``delay``: how
        long a late request or answer is held."""
        with self._lock:
            self._armed = _Armed(re.compile(pattern, re.I | re.S), fault, skip)
            self._fired = None
            self._delay = delay
            self._answered.clear()
            self._settled.clear()

    def settled(self, timeout: float = 30.0) -> bool:
        """Wait until the connection the fault fired on is done with (a late request delivered and
        answered, an answer lost or cut); False if it is not within ``timeout`` seconds."""
        return self._settled.wait(timeout)

    @property
    def answered(self) -> bool:
        """Whether the server answered the request the fault fired on."""
        return self._answered.is_set()

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    @property
    def fired(self) -> Request | None:
        """The request the armed fault fired on, if it has."""
        with self._lock:
            return self._fired

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def matching(self, pattern: str) -> list[Request]:
        """The requests seen whose SQL matches ``pattern`` (searched, case-insensitive)."""
        found = re.compile(pattern, re.I | re.S)
        return [r for r in self.requests if found.search(r.sql)]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- the proxy ---------------------------------------------------------------------------

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _accept_loop(self) -> None:
        try:
            while self._running():
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                with self._lock:
                    self._threads = [t for t in self._threads if t.is_alive()]
                    self._connections += 1
                    number = self._connections
                    too_many = len(self._threads) >= MAX_CONNECTIONS
                if too_many:
                    _close(client)
                    continue
                thread = threading.Thread(
                    target=self._serve, args=(client, number), name=f"faultproxy-{number}", daemon=True
                )
                with self._lock:
                    self._threads.append(thread)
                thread.start()
        finally:
            self._stop.set()
            _close(self._listener)

    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(_POLL)
        with self._lock:
            self._sockets.add(sock)
        return sock

    def _serve(self, client: socket.socket, connection: int) -> None:
        upstream: socket.socket | None = None
        from_client, from_upstream = _Reader(self._track(client), self), None
        fault: Fault | None = None
        try:
            while self._running():
                head, body = from_client.message(request=True)
                method = head.split(b" ", 1)[0].decode("latin-1")
                fault = self._match(connection, method, _sql(head, body))
                if fault is Fault.REQUEST_LOST:
                    _reset(client)
                    return
                if fault is Fault.REQUEST_LATE:
                    self._stop.wait(self._delay)  # the client may give up meanwhile: the bytes still arrive
                    if upstream is not None:  # on a connection of its own: the server closes one idle that long
                        self._untrack(upstream)
                        upstream = None
                if upstream is None:
                    upstream = self._track(socket.create_connection(self.upstream, timeout=self.io_timeout))
                    from_upstream = _Reader(upstream, self)
                assert from_upstream is not None
                _send(upstream, head + body)
                if fault is None:
                    closing = from_upstream.relay(client, head_request=method == "HEAD")
                    if closing or _wants_close(head):
                        return
                    continue
                answer_head, answer_body = from_upstream.message(request=False, head_request=method == "HEAD")
                self._answered.set()
                if fault is Fault.ANSWER_LOST:
                    _reset(client)
                elif fault is Fault.ANSWER_CUT:
                    # Half of the body; with no body, half of the headers.
                    cut = len(answer_body) // 2
                    _send(client, answer_head + answer_body[:cut] if cut else answer_head[: len(answer_head) // 2])
                    client.shutdown(socket.SHUT_RDWR)
                else:  # late: the request (held above) or the answer (held here)
                    if fault is Fault.ANSWER_LATE:
                        self._stop.wait(self._delay)
                    _send(client, answer_head + answer_body)
                return
        except (_Closed, OSError):
            return
        finally:
            if fault is not None:
                self._settled.set()
            for sock in (client, upstream):
                if sock is not None:
                    self._untrack(sock)

    def _untrack(self, sock: socket.socket) -> None:
        _close(sock)
        with self._lock:
            self._sockets.discard(sock)

    def _match(self, connection: int, method: str, sql: str) -> Fault | None:
        with self._lock:
            fault = None
            armed = self._armed
            if armed is not None and armed.pattern.search(sql):
                if armed.skip:
                    armed.skip -= 1
                else:
                    fault, self._armed = armed.fault, None
            request = Request(len(self._requests) + 1, connection, method, sql, fault)
            self._requests.append(request)
            if fault is not None:
                self._fired = request
            return fault


class _Reader:
    """Reads whole HTTP/1.1 messages from one socket, within the proxy's lifetime."""

    def __init__(self, sock: socket.socket, proxy: FaultProxy) -> None:
        self.sock = sock
        self.proxy = proxy
        self.buffer = b""

    def _more(self) -> bytes:
        idle_until = time.monotonic() + self.proxy.io_timeout
        while self.proxy._running():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if time.monotonic() > idle_until:
                    raise _Closed("idle") from None
                continue
            if not data:
                raise _Closed("closed by the peer")
            return data
        raise _Closed("stopping")

    def _until(self, marker: bytes, limit: int) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise _Closed("message too large")
            self.buffer += self._more()
        end = self.buffer.index(marker) + len(marker)
        found, self.buffer = self.buffer[:end], self.buffer[end:]
        return found

    def _exactly(self, size: int) -> bytes:
        if size > MAX_MESSAGE:
            raise _Closed("message too large")
        while len(self.buffer) < size:
            self.buffer += self._more()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    def _rest(self) -> bytes:
        """Until the peer closes (a response with neither a length nor chunks)."""
        while True:
            try:
                self.buffer += self._more()
            except _Closed:
                found, self.buffer = self.buffer, b""
                return found
            if len(self.buffer) > MAX_MESSAGE:
                raise _Closed("message too large")

    def head(self) -> bytes:
        return self._until(b"\r\n\r\n", MAX_HEADERS)

    def body_parts(self, head: bytes, *, request: bool, head_request: bool = False) -> list[bytes]:
        """The body's raw bytes, as they come (a chunk at a time), ending with the message."""
        headers = _headers(head)
        if not request:
            status = int(head.split(b" ", 2)[1])
            if head_request or status in (204, 304) or 100 <= status < 200:
                return []
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._chunks()
        if "content-length" in headers:
            return [self._exactly(int(headers["content-length"]))]
        return [] if request else [self._rest()]

    def _chunks(self) -> list[bytes]:
        parts = []
        total = 0
        while True:
            line = self._until(b"\r\n", 4096)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                trailer = b""
                while not trailer.endswith(b"\r\n"):
                    trailer = self._until(b"\r\n", 65536)
                    line += trailer
                    if trailer == b"\r\n":
                        break
                parts.append(line)
                return parts
            total += size
            if total > MAX_MESSAGE:
                raise _Closed("message too large")
            parts.append(line + self._exactly(size + 2))

    def message(self, *, request: bool, head_request: bool = False) -> tuple[bytes, bytes]:
        head = self.head()
        return head, b"".join(self.body_parts(head, request=request, head_request=head_request))

    def relay(self, to: socket.socket, *, head_request: bool) -> bool:
        """Forward one answer, its headers then its body once read whole; True when either side
        will close the connection."""
        head = self.head()
        _send(to, head)
        parts = self.body_parts(head, request=False, head_request=head_request)
        for part in parts:
            _send(to, part)
        return _wants_close(head)


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    found = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


def _wants_close(head: bytes) -> bool:
    return "close" in _headers(head).get("connection", "").lower()


def _sql(head: bytes, body: bytes) -> str:
    """The SQL a request carries: its ``query`` parameter, then its body when that is text."""
    target = head.split(b" ", 2)[1].decode("latin-1")
    texts = parse_qs(urlsplit(target).query).get("query", [])
    headers = _headers(head)
    kind = headers.get("content-type", "")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _unchunk(body)
    body = _decoded(body, headers.get("content-encoding", ""))
    if kind.startswith("multipart/form-data"):
        texts += _form_query(kind, body)
    elif kind.startswith("application/x-www-form-urlencoded"):
        texts += parse_qs(body.decode("utf-8", "replace")).get("query", [])
    elif kind.startswith("application/octet-stream"):
        # An insert of rows: the statement leads the body, up to its first newline.
        first = body[:4096].split(b"\n", 1)[0].decode("utf-8", "replace")
        if _INSERT.match(first):
            texts.append(first)
    elif body:
        texts.append(body.decode("utf-8", "replace"))
    return "\n".join(texts)


def _decoded(body: bytes, encoding: str) -> bytes:
    """The body without the compression clickhouse-connect applies to inserts (best effort: the
    statement is all the proxy needs, and a body it cannot read has none it can see)."""
    try:
        if encoding == "lz4":
            import lz4.frame

            out, rest = b"", body
            while rest:
                decompressor = lz4.frame.LZ4FrameDecompressor()
                out += decompressor.decompress(rest)
                rest = decompressor.unused_data
            return out
        if encoding == "zstd":
            from backports import zstd

            return bytes(zstd.decompress(body))
        if encoding == "gzip":
            return zlib.decompress(body, 31)
        if encoding == "deflate":
            return zlib.decompress(body)
    except Exception:
        return b""
    return body


def _unchunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def _form_query(kind: str, body: bytes) -> list[str]:
    found = re.search(r'boundary="?([^";]+)"?', kind)
    if not found:
        return []
    texts = []
    for part in body.split(b"--" + found.group(1).encode()):
        head, sep, value = part.partition(b"\r\n\r\n")
        if sep and b'name="query"' in head:
            texts.append(value.removesuffix(b"\r\n").decode("utf-8", "replace"))
    return texts


def _send(sock: socket.socket, data: bytes, timeout: float = 120.0) -> None:
    view = memoryview(data)
    give_up = time.monotonic() + timeout
    while view:
        try:
            sent = sock.send(view)
        except TimeoutError:
            if time.monotonic() > give_up:
                raise _Closed("the peer does not read") from None
            continue
        view = view[sent:]


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, not an orderly close: a connection that broke."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
