"""A minimal Redis client speaking RESP2, standard library only.

Connects, authenticates (``AUTH password`` or ``AUTH username password``), selects the
database, and runs commands; an error reply raises :class:`RedisReplyError`.
"""

from __future__ import annotations

import socket

DEFAULT_TIMEOUT = 5.0

Reply = bytes | int | str | list["Reply"] | None


class RedisError(Exception):
    """Base class of the errors raised by this module."""


class RedisProtocolError(RedisError):
    """The server sent something that is not RESP2, or closed the connection."""


class RedisReplyError(RedisError):
    """An error reply (``-ERR ...``, ``-WRONGPASS ...``); ``kind`` is its first word."""

    def __init__(self, message: str) -> None:
        self.kind = message.split(" ", 1)[0]
        super().__init__(message)


def encode_command(*args: object) -> bytes:
    """Encode a command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, int | float):
            data = str(arg).encode("ascii")
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Redis:
    """One connection. Use :func:`connect`; close with :meth:`close` or ``with``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._reader = sock.makefile("rb")

    def execute(self, *args: object) -> Reply:
        """Send one command and return its decoded reply (bulk strings stay bytes)."""
        if self._sock is None:
            raise RedisError("connection is closed")
        self._sock.sendall(encode_command(*args))
        return self._read_reply()

    def _read_line(self) -> bytes:
        line = self._reader.readline(1 << 20)
        if not line:
            raise RedisProtocolError("server closed the connection unexpectedly")
        if not line.endswith(b"\r\n"):
            raise RedisProtocolError("reply line is not terminated by CRLF")
        return line[:-2]

    def _read_reply(self) -> Reply:
        line = self._read_line()
        prefix, rest = line[:1], line[1:]
        if prefix == b"+":
            return rest.decode("utf-8", "replace")
        if prefix == b"-":
            raise RedisReplyError(rest.decode("utf-8", "replace"))
        if prefix == b":":
            return int(rest)
        if prefix == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self._reader.read(length + 2)
            if len(data) != length + 2:
                raise RedisProtocolError("server closed the connection inside a bulk string")
            return data[:-2]
        if prefix == b"*":
            count = int(rest)
            return None if count < 0 else [self._read_reply() for _ in range(count)]
        raise RedisProtocolError(f"unknown reply type {prefix!r}")

    # -- commands --------------------------------------------------------------------------

    def auth(self, password: str, username: str | None = None) -> None:
        if username:
            self.execute("AUTH", username, password)
        else:
            self.execute("AUTH", password)

    def select(self, db: int) -> None:
        self.execute("SELECT", db)

    def ping(self) -> str:
        reply = self.execute("PING")
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def set(self, key: str, value: str | bytes | int, ex: int | None = None) -> bool:
        args: list[object] = ["SET", key, value]
        if ex is not None:
            args += ["EX", ex]
        return self.execute(*args) == "OK"

    def get(self, key: str) -> bytes | None:
        reply = self.execute("GET", key)
        assert reply is None or isinstance(reply, bytes)
        return reply

    def incr(self, key: str) -> int:
        reply = self.execute("INCR", key)
        assert isinstance(reply, int)
        return reply

    def dbsize(self) -> int:
        reply = self.execute("DBSIZE")
        assert isinstance(reply, int)
        return reply

    def close(self) -> None:
        """Close the socket (idempotent, never raises)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                self._reader.close()
            finally:
                sock.close()

    def __enter__(self) -> Redis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    host: str = "localhost",
    port: int = 6379,
    password: str | None = None,
    username: str | None = None,
    db: int = 0,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Redis:
    """Connect, authenticate when a password is given, and select ``db`` when not 0."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = Redis(sock)
    try:
        if password is not None:
            client.auth(password, username)
        if db:
            client.select(db)
    except BaseException:
        client.close()
        raise
    return client
