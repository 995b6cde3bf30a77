"""A minimal PostgreSQL client (frontend/backend protocol 3.0), standard library only.

Supports authentication by trust, cleartext password, md5 and SCRAM-SHA-256 (RFC 5802 /
RFC 7677, the server signature is verified), optional TLS (``sslmode=prefer|require``,
without certificate verification, like libpq's ``require``), and the simple query
protocol: every value comes back as ``str`` or ``None``. Literals are embedded with
:func:`quote_literal`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import ssl
import stringprep
import struct
import unicodedata
from dataclasses import dataclass, field

PROTOCOL_VERSION = 196608  # 3.0
SSL_REQUEST_CODE = 80877103
DEFAULT_TIMEOUT = 5.0


class PgError(Exception):
    """Base class of the errors raised by this module."""


class PgProtocolError(PgError):
    """The server sent something this client does not understand (or closed the connection)."""


class PgAuthError(PgError):
    """Authentication could not be carried out (method unsupported, bad server proof, ...)."""


class PgServerError(PgError):
    """An ErrorResponse from the server; ``fields`` maps the one-letter field codes."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.severity = fields.get("S", "ERROR")
        self.code = fields.get("C", "")
        self.message = fields.get("M", "unknown server error")
        self.detail = fields.get("D")
        super().__init__(f"{self.severity}: {self.message} (SQLSTATE {self.code})")


@dataclass
class Result:
    """The outcome of one statement: column names, rows and the command tag (``INSERT 0 1``)."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str | None, ...]] = field(default_factory=list)
    tag: str = ""

    @property
    def rowcount(self) -> int:
        """The row count of the command tag (``DELETE 3`` -> 3), or the number of rows."""
        last = self.tag.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else len(self.rows)


def quote_literal(value: object) -> str:
    """Return ``value`` as an SQL literal: ``NULL``, a number, or a quoted string.

    Strings containing a backslash use the ``E'...'`` form, so the result is correct
    whatever ``standard_conforming_strings`` is. NUL characters cannot be stored and are
    rejected.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return f"'{value}'::float8"
        return repr(value)
    text = str(value)
    if "\x00" in text:
        raise ValueError("PostgreSQL text cannot contain NUL characters")
    text = text.replace("'", "''")
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\") + "'"
    return "'" + text + "'"


def quote_ident(name: str) -> str:
    """Return ``name`` as a quoted SQL identifier."""
    if "\x00" in name:
        raise ValueError("identifiers cannot contain NUL characters")
    return '"' + name.replace('"', '""') + '"'


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013) as PostgreSQL applies it to SCRAM passwords.

    ASCII passes unchanged; a password SASLprep rejects is used as it is (both libpq and
    the server fall back to the raw bytes), so client and server always agree.
    """
    if text.isascii():
        return text
    mapped = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch))
    normalized = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
        stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
        stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1,
    )  # fmt: skip
    if not normalized or any(test(ch) for ch in normalized for test in prohibited):
        return text
    if any(stringprep.in_table_d1(ch) for ch in normalized) and (
        any(stringprep.in_table_d2(ch) for ch in normalized)
        or not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1]))
    ):
        return text
    return normalized


class ScramSha256:
    """The client side of SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677).

    PostgreSQL ignores the user name in the exchange (the startup message carries it),
    so it defaults to the empty string as libpq sends it.
    """

    MECHANISM = "SCRAM-SHA-256"
    GS2_HEADER = "n,,"

    def __init__(self, password: str, username: str = "", nonce: str | None = None) -> None:
        self._password = saslprep(password).encode("utf-8")
        self._username = username.replace("=", "=3D").replace(",", "=2C")
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self._client_first_bare = f"n={self._username},r={self._nonce}"
        self._server_signature: bytes | None = None
        self._verified = False

    @property
    def completed(self) -> bool:
        """True once the server's signature has been checked."""
        return self._verified

    def client_first(self) -> str:
        return self.GS2_HEADER + self._client_first_bare

    def client_final(self, server_first: str) -> str:
        attrs = _scram_attributes(server_first)
        nonce, salt_b64, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i", "")
        if "e" in attrs:
            raise PgAuthError(f"SCRAM error from server: {attrs['e']}")
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise PgAuthError("SCRAM server nonce does not extend the client nonce")
        if not salt_b64 or not iterations.isdigit() or int(iterations) < 1:
            raise PgAuthError("SCRAM server-first-message lacks salt or iteration count")
        salt = base64.b64decode(salt_b64)
        salted = hashlib.pbkdf2_hmac("sha256", self._password, salt, int(iterations))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        channel = base64.b64encode(self.GS2_HEADER.encode("ascii")).decode("ascii")
        without_proof = f"c={channel},r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        client_signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}"

    def verify_server_final(self, server_final: str) -> None:
        attrs = _scram_attributes(server_final)
        if "e" in attrs:
            raise PgAuthError(f"SCRAM error from server: {attrs['e']}")
        if self._server_signature is None:
            raise PgAuthError("SCRAM server-final-message before client-final-message")
        try:
            signature = base64.b64decode(attrs.get("v", ""), validate=True)
        except ValueError:
            signature = b""
        if not hmac.compare_digest(signature, self._server_signature):
            raise PgAuthError("SCRAM server signature mismatch: the server does not know the password")
        self._verified = True


def _scram_attributes(message: str) -> dict[str, str]:
    attrs = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            attrs[key] = value
    return attrs


def md5_password(user: str, password: str, salt: bytes) -> str:
    """The response to AuthenticationMD5Password: ``md5`` + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode("utf-8")).hexdigest()  # noqa: S324 (protocol-defined)
    return "md5" + hashlib.md5(inner.encode("ascii") + salt).hexdigest()  # noqa: S324


def _cstring(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


class Connection:
    """One PostgreSQL session. Use :func:`connect`; close with :meth:`close` or ``with``."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock: socket.socket | None = sock
        self._timeout = timeout
        self._buffer = bytearray()
        self.parameters: dict[str, str] = {}
        self.backend_pid: int | None = None
        self.transaction_status = "I"

    # -- low level -------------------------------------------------------------------------

    def _send(self, type_code: bytes, payload: bytes) -> None:
        if self._sock is None:
            raise PgProtocolError("connection is closed")
        self._sock.sendall(type_code + struct.pack("!I", len(payload) + 4) + payload)

    def _recv_exact(self, size: int) -> bytes:
        if self._sock is None:
            raise PgProtocolError("connection is closed")
        while len(self._buffer) < size:
            chunk = self._sock.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                raise PgProtocolError("server closed the connection unexpectedly")
            self._buffer.extend(chunk)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _read_message(self) -> tuple[bytes, bytes]:
        header = self._recv_exact(5)
        type_code, length = header[:1], struct.unpack("!I", header[1:])[0]
        if length < 4 or length > 1 << 30:
            raise PgProtocolError(f"invalid message length {length}")
        return type_code, self._recv_exact(length - 4)

    @staticmethod
    def _error_fields(payload: bytes) -> dict[str, str]:
        fields = {}
        for part in payload.split(b"\x00"):
            if part:
                fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
        return fields

    def _handle_async(self, type_code: bytes, payload: bytes) -> bool:
        """Consume messages that may arrive at any time; return True when handled."""
        if type_code == b"S":
            name, value, _ = payload.split(b"\x00", 2)
            self.parameters[name.decode()] = value.decode("utf-8", "replace")
            return True
        return type_code in (b"N", b"A")  # NoticeResponse, NotificationResponse

    # -- start-up --------------------------------------------------------------------------

    def startup(self, user: str, password: str | None, database: str, application_name: str) -> None:
        params = b"".join(
            _cstring(k) + _cstring(v)
            for k, v in (
                ("user", user),
                ("database", database),
                ("application_name", application_name),
                ("client_encoding", "UTF8"),
            )
        )
        body = struct.pack("!I", PROTOCOL_VERSION) + params + b"\x00"
        assert self._sock is not None
        self._sock.sendall(struct.pack("!I", len(body) + 4) + body)
        scram: ScramSha256 | None = None
        while True:
            type_code, payload = self._read_message()
            if type_code == b"R":
                scram = self._authenticate(payload, user, password, scram)
            elif type_code == b"K":
                self.backend_pid = struct.unpack("!I", payload[:4])[0]
            elif type_code == b"Z":
                self.transaction_status = payload.decode("ascii", "replace")
                return
            elif type_code == b"E":
                raise PgServerError(self._error_fields(payload))
            elif not self._handle_async(type_code, payload):
                raise PgProtocolError(f"unexpected message {type_code!r} during start-up")

    def _authenticate(
        self, payload: bytes, user: str, password: str | None, scram: ScramSha256 | None
    ) -> ScramSha256 | None:
        code = struct.unpack("!I", payload[:4])[0]
        data = payload[4:]
        if code == 0:  # AuthenticationOk
            if scram is not None and not scram.completed:
                raise PgAuthError("server ended SCRAM authentication early")
            return scram
        if code in (3, 5, 10) and password is None:
            raise PgAuthError("the server requires a password and none was given")
        if code == 3:  # AuthenticationCleartextPassword
            self._send(b"p", _cstring(password or ""))
            return None
        if code == 5:  # AuthenticationMD5Password
            self._send(b"p", _cstring(md5_password(user, password or "", data[:4])))
            return None
        if code == 10:  # AuthenticationSASL: list of mechanisms
            mechanisms = [m.decode() for m in data.split(b"\x00") if m]
            if ScramSha256.MECHANISM not in mechanisms:
                raise PgAuthError(f"no supported SASL mechanism among {mechanisms}")
            scram = ScramSha256(password or "")
            first = scram.client_first().encode("utf-8")
            self._send(b"p", _cstring(ScramSha256.MECHANISM) + struct.pack("!I", len(first)) + first)
            return scram
        if code == 11:  # AuthenticationSASLContinue
            if scram is None:
                raise PgProtocolError("SASLContinue without SASL start")
            self._send(b"p", scram.client_final(data.decode("utf-8")).encode("utf-8"))
            return scram
        if code == 12:  # AuthenticationSASLFinal
            if scram is None:
                raise PgProtocolError("SASLFinal without SASL start")
            scram.verify_server_final(data.decode("utf-8"))
            return scram
        names = {2: "Kerberos V5", 7: "GSSAPI", 9: "SSPI"}
        raise PgAuthError(f"unsupported authentication method {names.get(code, code)}")

    # -- queries ---------------------------------------------------------------------------

    def execute(self, sql: str) -> list[Result]:
        """Run one or more statements with the simple query protocol; return one Result each.

        On an ErrorResponse the remaining messages are drained up to ReadyForQuery and a
        :class:`PgServerError` is raised, so the connection stays usable.
        """
        self._send(b"Q", _cstring(sql))
        results: list[Result] = []
        current = Result()
        error: PgServerError | None = None
        while True:
            type_code, payload = self._read_message()
            if type_code == b"T":
                current = Result(columns=self._row_description(payload))
            elif type_code == b"D":
                current.rows.append(self._data_row(payload))
            elif type_code == b"C":
                current.tag = payload.rstrip(b"\x00").decode("utf-8", "replace")
                results.append(current)
                current = Result()
            elif type_code == b"I":  # EmptyQueryResponse
                results.append(Result())
            elif type_code == b"E":
                error = PgServerError(self._error_fields(payload))
            elif type_code == b"Z":
                self.transaction_status = payload.decode("ascii", "replace")
                if error is not None:
                    raise error
                return results
            elif type_code in (b"G", b"H"):  # COPY is not supported: abort it
                self._send(b"f", _cstring("COPY is not supported by refapp.pg"))
            elif not self._handle_async(type_code, payload):
                raise PgProtocolError(f"unexpected message {type_code!r} during query")

    def query(self, sql: str) -> Result:
        """Run ``sql`` and return the last statement's Result."""
        results = self.execute(sql)
        return results[-1] if results else Result()

    @staticmethod
    def _row_description(payload: bytes) -> list[str]:
        count = struct.unpack("!H", payload[:2])[0]
        names, offset = [], 2
        for _ in range(count):
            end = payload.index(b"\x00", offset)
            names.append(payload[offset:end].decode("utf-8", "replace"))
            offset = end + 1 + 18  # table oid, column number, type oid, size, modifier, format
        return names

    @staticmethod
    def _data_row(payload: bytes) -> tuple[str | None, ...]:
        count = struct.unpack("!H", payload[:2])[0]
        values: list[str | None] = []
        offset = 2
        for _ in range(count):
            length = struct.unpack("!i", payload[offset : offset + 4])[0]
            offset += 4
            if length < 0:
                values.append(None)
            else:
                values.append(payload[offset : offset + length].decode("utf-8", "replace"))
                offset += length
        return tuple(values)

    # -- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Send Terminate and close the socket (idempotent, never raises)."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.sendall(b"X\x00\x00\x00\x04")
        except OSError:
            pass
        finally:
            sock.close()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    if host.startswith("/"):  # a Unix socket directory, as in libpq
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(f"{host}/.s.PGSQL.{port}")
        except OSError:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _negotiate_tls(sock: socket.socket, host: str, sslmode: str) -> socket.socket:
    sock.sendall(struct.pack("!II", 8, SSL_REQUEST_CODE))
    answer = sock.recv(1)
    if answer == b"S":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # like libpq sslmode=require: encrypt, do not verify
        return context.wrap_socket(sock, server_hostname=None if host.startswith("/") else host)
    if answer == b"N" and sslmode == "prefer":
        return sock
    sock.close()
    raise PgError("server does not accept TLS connections (sslmode=require)")


def connect(
    host: str = "localhost",
    port: int = 5432,
    user: str = "postgres",
    password: str | None = None,
    database: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    sslmode: str = "disable",
    application_name: str = "refapp",
) -> Connection:
    """Open a session. ``timeout`` applies to every socket operation, connecting included.

    ``sslmode`` is ``disable`` (default), ``prefer`` or ``require`` (no certificate check).
    """
    if sslmode not in ("disable", "allow", "prefer", "require"):
        raise PgError(f"sslmode {sslmode!r} is not supported (use disable, prefer or require)")
    sock = _open_socket(host, port, timeout)
    try:
        if sslmode in ("prefer", "require") and not host.startswith("/"):
            sock = _negotiate_tls(sock, host, sslmode)
        conn = Connection(sock, timeout)
    except BaseException:
        sock.close()
        raise
    try:
        conn.startup(user, password, database or user, application_name)
    except BaseException:
        conn.close()
        raise
    return conn
