"""Short, secret-free descriptions of network errors for logs and health responses."""

from __future__ import annotations

import socket
import ssl


def describe(exc: BaseException) -> str:
    """``connection refused``, ``timed out``, ``name resolution failed: ...`` or the message.

    A client library's error raised while handling a network error (redis-py's
    ConnectionError and TimeoutError) is described by that network error."""
    cause = exc.__cause__ or exc.__context__
    if not isinstance(exc, OSError) and isinstance(cause, OSError):
        return describe(cause)
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc) or type(exc).__name__
