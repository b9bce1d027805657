"""Device identity proofs: the Ed25519 signature a device puts in `connect.params.device`.

Both sides live here so the stub verifies exactly what the fake clients sign
(packages/gateway-client/src/device-auth.ts, handshake-auth-helpers.ts). The v3 payload is
``v3|deviceId|clientId|mode|role|scopes,csv|ts|token|nonce|platform|family``; v2 is the same with
prefix ``v2`` and without ``platform|family``. The key's id is the hex SHA-256 of its raw 32 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class DeviceProofError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def proof_payload(
    version: str,
    *,
    device_id: str,
    client: Mapping[str, Any],
    role: str,
    scopes: Sequence[str],
    signed_at_ms: int,
    token: str,
    nonce: str,
) -> str:
    fields = [version, device_id, str(client["id"]), str(client["mode"]), role, ",".join(scopes),
              str(signed_at_ms), token, nonce]
    if version == "v3":
        fields += [str(client.get("platform", "")).lower(), str(client.get("deviceFamily", "")).lower()]
    return "|".join(fields)


@dataclass(frozen=True)
class DeviceIdentity:
    """A fake device's keypair; what the real client keeps in its state dir."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def device_id(self) -> str:
        return hashlib.sha256(self.public_key_raw).hexdigest()

    def sign_connect(
        self,
        *,
        client: Mapping[str, Any],
        role: str,
        scopes: Sequence[str],
        token: str,
        nonce: str,
        signed_at_ms: int,
        version: str = "v3",
    ) -> dict[str, Any]:
        payload = proof_payload(version, device_id=self.device_id, client=client, role=role, scopes=scopes,
                                signed_at_ms=signed_at_ms, token=token, nonce=nonce)
        signature = self.private_key.sign(payload.encode("utf-8"))
        return {
            "id": self.device_id,
            "publicKey": b64url(self.public_key_raw),
            "signature": b64url(signature),
            "signedAt": signed_at_ms,
            "nonce": nonce,
        }


def verify_device_proof(
    device: Mapping[str, Any],
    *,
    client: Mapping[str, Any],
    role: str,
    scopes: Sequence[str],
    token: str,
    challenge_nonce: str,
    now_ms: int,
    skew_ms: int,
) -> str:
    """Return the verified device id, or raise DeviceProofError saying what is wrong."""
    try:
        raw_key = _b64url_decode(device["publicKey"])
        signature = _b64url_decode(device["signature"])
    except (binascii.Error, ValueError):
        raise DeviceProofError("DEVICE_AUTH_INVALID", "device identity invalid: bad base64url") from None
    if len(raw_key) != 32:
        raise DeviceProofError("DEVICE_AUTH_INVALID", "device identity invalid: public key must be 32 bytes")
    if hashlib.sha256(raw_key).hexdigest() != device["id"]:
        raise DeviceProofError("DEVICE_AUTH_ID_MISMATCH", "device identity mismatch")
    if device["nonce"] != challenge_nonce:
        raise DeviceProofError("DEVICE_AUTH_NONCE_MISMATCH", "device nonce mismatch")
    if abs(now_ms - int(device["signedAt"])) > skew_ms:
        raise DeviceProofError("DEVICE_AUTH_SIGNATURE_EXPIRED", "device signature expired")
    public_key = Ed25519PublicKey.from_public_bytes(raw_key)
    for version in ("v3", "v2"):
        payload = proof_payload(version, device_id=device["id"], client=client, role=role, scopes=scopes,
                                signed_at_ms=int(device["signedAt"]), token=token, nonce=challenge_nonce)
        try:
            public_key.verify(signature, payload.encode("utf-8"))
            return str(device["id"])
        except InvalidSignature:
            continue
    raise DeviceProofError("DEVICE_AUTH_SIGNATURE_INVALID", "device signature invalid")
