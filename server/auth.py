"""API keys for REST and short-lived signed client tokens for the realtime WebSocket.

A client token is `base64url(json {"exp": unix_seconds, "nonce": hex}) + "." + base64url(HMAC-SHA256)`.
The HMAC key is `FRAMECAST_TOKEN_SECRET`, or by default derived from the API keys, so every server
process configured with the same keys accepts the same tokens.

A token opens one session: `redeem_token` accepts each nonce once (per server process; a token
that reached another process is still bounded by its expiry), and the session it opened ends
when the token expires.
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
        self._redeemed: dict[str, int] = {}  # nonce -> expires_at, for tokens that opened a session

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
        """Signature and expiry only (see `redeem_token` for opening a session)."""
        if not self.enabled:
            return True
        return self._claims(token, now) is not None

    def redeem_token(self, token: str | None, now: float | None = None) -> int | None:
        """The token's expiry (unix seconds) if it is valid and was never redeemed here, else None.
        With auth off every token is fine and nothing expires (returns 0)."""
        if not self.enabled:
            return 0
        claims = self._claims(token, now)
        if claims is None:
            return None
        expires_at, nonce = claims
        now = time.time() if now is None else now
        self._redeemed = {n: e for n, e in self._redeemed.items() if e > now}  # forget expired tokens
        if nonce in self._redeemed:
            return None
        self._redeemed[nonce] = expires_at
        return expires_at

    def _claims(self, token: str | None, now: float | None) -> tuple[int, str] | None:
        """(expires_at, nonce) of a well-signed, unexpired token; None for anything else."""
        if not token or token.count(".") != 1:
            return None
        payload, signature = token.split(".")
        try:  # compare bytes: str arguments must be ASCII, and a forged token need not be
            if not hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), self._sign(payload).encode()):
                return None
            claims = json.loads(_unb64(payload))
            expires_at, nonce = claims["exp"], claims["nonce"]
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeError):
            return None
        if not isinstance(expires_at, int) or not isinstance(nonce, str):
            return None
        if expires_at <= (time.time() if now is None else now):
            return None
        return expires_at, nonce

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("utf-8", "surrogatepass"), hashlib.sha256).digest())
