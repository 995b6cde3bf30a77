# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups that prove their own authenticity (issue 20): the keys and the signed records.

Threat: whoever holds the offsite bucket's credentials (every db host has them) can write any object in the
bucket: files, manifests, ``verify.json``. Checksums stored beside the files prove nothing against them. So:

- one secret per backup set, the *backup key* (``encryption.key_file`` on the host, mode 0600; role variable
  ``backup_encryption_key`` from ansible-vault; never uploaded). Two keys are derived from it with
  HMAC-SHA256 under distinct labels (key separation, as HKDF-Expand does): the manifest MAC key and an age
  X25519 identity. One vault secret for the operator to keep; nothing else to generate or rotate in step;
- every manifest and every verification record (``verify.json``) carries ``auth``: HMAC-SHA256 (stdlib
  ``hmac``, checked with ``compare_digest``) over a canonical JSON encoding (sorted keys, no spaces, UTF-8,
  no NaN) of the whole document but ``auth``. The manifest names every stored file with its size and sha256,
  so a changed byte anywhere, a file swapped for another, an item added, a target changed, or a backup copied
  under another id or set fails the check. A record that does not verify is never trusted: no restore, no
  "verified", named in the verify result;
- every stored file is encrypted with ``age`` (Debian package ``age``; X25519 + ChaCha20-Poly1305 in 64 KiB
  authenticated chunks, streamed), not only the items marked ``secret``: an operator expects a database dump
  in a bucket to be unreadable by whoever can list that bucket, and a stream cipher at ~1 GB/s costs a few
  percent of a restore (tests/bench/backup_bench.py). The identity is passed to ``age`` through a pipe
  (``/dev/fd/N``), never written to disk nor put in argv. age is a maintained tool and format; the only code
  here is the key's text encoding (bech32, BIP-173), checked by age itself when it parses the identity.

Backups made before this (format 1: unsigned, secret items in ``openssl enc -aes-256-cbc``) have no
``auth``: they are refused unless the caller opts in explicitly (``allow_unsigned``); a record whose ``auth``
does not verify is refused even then.

Standard library only (shipped to hosts in the ops agent as ``tradeops_agent/backup_auth.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from typing import Any

ALG = "hmac-sha256"
_LABEL_MAC = b"tradeops-backup manifest mac v1"
_LABEL_AGE = b"tradeops-backup age identity v1"
_LABEL_ID = b"tradeops-backup key id v1"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"  # the bech32 alphabet (BIP-173)  # pragma: allowlist secret
MIN_KEY_CHARS = 32


class AuthError(ValueError):
    """A record is unsigned, signed with another key, or altered; the message names it and what to do."""


class Unsigned(AuthError):
    """The record has no ``auth`` at all (made before signing existed, or stripped)."""


def _bech32_polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def bech32(hrp: str, data: bytes) -> str:
    """BIP-173 bech32 of ``data`` (the text form of age keys)."""
    acc = bits = 0
    words: list[int] = []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            words.append((acc >> bits) & 31)
    if bits:
        words.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    pm = _bech32_polymod(expanded + words + [0] * 6) ^ 1
    return hrp + "1" + "".join(_BECH32[d] for d in words + [(pm >> 5 * (5 - i)) & 31 for i in range(6)])


class BackupKey:
    """The backup set's secret and the keys derived from it. ``repr`` never shows key material."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_CHARS:
            raise AuthError(f"the backup key is {len(secret)} bytes long; give at least {MIN_KEY_CHARS} "
                            "(role variable backup_encryption_key, from ansible-vault)")
        self._mac = hmac.new(secret, _LABEL_MAC, hashlib.sha256).digest()
        self._age = hmac.new(secret, _LABEL_AGE, hashlib.sha256).digest()
        self.key_id = hmac.new(secret, _LABEL_ID, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"BackupKey(key_id={self.key_id})"

    @classmethod
    def from_file(cls, path: str) -> BackupKey:
        """The key in ``path``: a regular file of root's (or the caller's), mode 0600, not empty."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise AuthError(f"encryption.key_file: cannot open {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise AuthError(f"encryption.key_file: {path} is not a regular file")
            if st.st_mode & 0o077:
                raise AuthError(f"encryption.key_file: {path} is readable by group or others (mode "
                                f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 {path}")
            secret = handle.read().rstrip(b"\r\n")
        return cls(secret)

    def mac(self, data: bytes) -> str:
        return hmac.new(self._mac, data, hashlib.sha256).hexdigest()

    def age_identity(self) -> str:
        """The derived age X25519 identity (``AGE-SECRET-KEY-1...``): for ``age -e -i`` / ``age -d -i``."""
        return bech32("age-secret-key-", self._age).upper()


def canonical(doc: dict[str, Any]) -> bytes:
    """The bytes a MAC covers: ``doc`` without ``auth``, sorted keys, no whitespace, UTF-8, no NaN."""
    body = {k: v for k, v in doc.items() if k != "auth"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
                      ).encode("utf-8")


def sign(doc: dict[str, Any], key: BackupKey) -> dict[str, Any]:
    """``doc`` with its ``auth`` (a new dict; ``doc`` is not changed)."""
    return {**doc, "auth": {"alg": ALG, "key_id": key.key_id, "mac": key.mac(canonical(doc))}}


def check(doc: Any, key: BackupKey | None, what: str) -> str:
    """Raise AuthError unless ``doc`` carries an ``auth`` that verifies with ``key``; return its MAC.

    ``what`` names the record in the message (``manifest of backup B``). Unsigned raises Unsigned."""
    if not isinstance(doc, dict):
        raise AuthError(f"{what} is not a JSON object: refused")
    auth = doc.get("auth")
    if auth is None:
        raise Unsigned(f"{what} is not signed (made before backups were signed, or its signature was removed): "
                       "refused; to restore a backup made before format 2 on purpose, pass allow_unsigned "
                       "(restore.yml: -e restore_allow_unsigned=true; tradeops-backup --allow-unsigned)")
    if key is None:
        raise AuthError(f"{what} is signed but no encryption.key_file is configured to check it: set "
                        "backup_encryption_key (role backup) to the set's key from the vault")
    if not isinstance(auth, dict) or auth.get("alg") != ALG or not isinstance(auth.get("mac"), str):
        raise AuthError(f"{what} has an unknown signature {auth!r:.80}: refused")
    if auth.get("key_id") != key.key_id:
        raise AuthError(f"{what} is signed with another key (key id {str(auth.get('key_id'))[:16]!r}, this host's "
                        f"is {key.key_id!r}): refused; use the set's own backup_encryption_key")
    try:
        body = canonical(doc)
    except ValueError as exc:
        raise AuthError(f"{what} cannot be encoded canonically ({exc}): refused") from None
    if not hmac.compare_digest(auth["mac"], key.mac(body)):
        raise AuthError(f"{what} does not verify with this set's key: it was altered after it was signed "
                        "(tampered with, or damaged); refused")
    return auth["mac"]
