"""API keys for REST and short-lived signed client tokens for the realtime WebSocket.

A client token is `base64url(json {"exp": unix_seconds, "nonce": hex}) + "." + base64url(HMAC-SHA256)`.
The HMAC key is `FRAMECAST_TOKEN_SECRET`, or by default derived from the API keys, so every server
process configured with the same keys accepts the same tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Checks API keys and mints / verifies client tokens. `enabled` False = everything allowed."""

    def __init__(self, api_keys: list[str], *, token_ttl_s: int, secret: str | None = None):
        self.api_keys = list(api_keys)
        self.token_ttl_s = token_ttl_s
        material = secret if secret else "framecast-client-token\0" + "\0".join(sorted(self.api_keys))
        self._key = hashlib.sha256(material.encode()).digest()

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys)

    def check_api_key(self, key: str | None) -> bool:
        if not self.enabled:
            return True
        if not key:
            return False
        return any(hmac.compare_digest(key.encode(), k.encode()) for k in self.api_keys)

    def check_bearer(self, authorization: str | None) -> bool:
        """Validate an `Authorization: Bearer KEY` header value."""
        if not self.enabled:
            return True
        scheme, _, key = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.check_api_key(key.strip())

    def mint_token(self, now: float | None = None) -> tuple[str, int]:
        """(token, expires_at unix seconds)."""
        expires_at = int((time.time() if now is None else now) + self.token_ttl_s)
        payload = _b64(json.dumps({"exp": expires_at, "nonce": secrets.token_hex(8)}).encode())
        return payload + "." + self._sign(payload), expires_at

    def check_token(self, token: str | None, now: float | None = None) -> bool:
        if not self.enabled:
            return True
        if not token or token.count(".") != 1:
            return False
        payload, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return False
        try:
            expires_at = json.loads(_unb64(payload))["exp"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            return False
        return isinstance(expires_at, int) and expires_at > (time.time() if now is None else now)

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
