"""Ed25519 signatures of model bundles: what the planner trusts from the ``model`` topic.

Why Ed25519 (RFC 8032, from the ``cryptography`` package): small keys (32 bytes) and
signatures (64 bytes), so a signature adds a few hundred bytes to a bundle; deterministic
signatures, so no per-signature random number can be weak or reused (the flaw that has
leaked ECDSA keys); fast verification (about 0.1 ms, nothing next to ``verify_bundle``);
and no parameters to get wrong: curve, hash and encoding are fixed by the algorithm, so
there is no padding, curve or hash choice to misconfigure.

What is signed: the exact bytes of ``manifest.json``. The manifest holds the sha256 of every
graph, the version and the task, so one signature covers every file: a changed manifest
fails the signature, a changed graph fails ``verify_bundle``'s hash check against the signed
manifest. The signature travels as the optional tar member ``signature.json``
(``{"key_id": ..., "algorithm": "ed25519", "signature": <base64>}``) in the bundle bytes on
the ``model`` topic. Bundles on disk stay unsigned: a directory the user configured
(``task.bundle``) is trusted as it is.

The planner accepts a bundle from the topic only when it carries a valid signature from one
of its trusted public keys (``security.trusted_keys``) and a version strictly newer than the
active model's (``verify_bundle_trust``); every refusal is a ``BundleRefused`` whose
``reason`` is one of ``REFUSALS``.

Keys are PEM files: the private key unencrypted PKCS#8, mode 0600 (the load refuses one that
others may read, as ssh does); the public key SubjectPublicKeyInfo beside it. A key id is the
first 16 hex digits of the sha256 of the raw 32-byte public key. No rclpy here.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from loop_ros.core.bundle import MANIFEST, Bundle, BundleError, bundle_from_bytes, bundle_to_bytes
from loop_ros.core.config import ConfigError

ALGORITHM = "ed25519"
PRIVATE_KEY_FILE = "loop_ros_signing.pem"
PUBLIC_KEY_FILE = "loop_ros_signing.pub.pem"
DEFAULT_KEYS_DIR = "~/.ros/loop_ros/keys"
"""Where ``loop-ros up`` and the launch file keep their key pair (beside the default replay)."""
KEYS_DIR_ENV = "LOOP_ROS_KEYS_DIR"
"""Overrides ``DEFAULT_KEYS_DIR`` (the tests point it at a temporary directory)."""
MAX_KEY_FILE_BYTES = 16 << 10

UNSIGNED, UNTRUSTED_KEY, BAD_SIGNATURE, NOT_NEWER = "unsigned", "untrusted_key", "bad_signature", "not_newer"
REFUSALS = (UNSIGNED, UNTRUSTED_KEY, BAD_SIGNATURE, NOT_NEWER)
"""Reasons a well-formed bundle from the topic is refused before it is verified."""
_KEY_ID = re.compile(r"[0-9a-f]{16}")


class SigningError(ConfigError):
    """A key file that cannot be used (missing, not an Ed25519 PEM, readable by others); a
    ``ConfigError``, so a node configured with one stops at start with this message (exit 2)."""


class BundleRefused(BundleError):
    """A bundle from the topic refused for trust (``reason`` in ``REFUSALS``), not for its content."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # picklable with its reason (multiprocessing)
        return type(self), (self.reason, str(self))


# ---------------------------------------------------------------- keys


def default_keys_dir() -> Path:
    """``$LOOP_ROS_KEYS_DIR``, else ``~/.ros/loop_ros/keys``."""
    return Path(os.environ.get(KEYS_DIR_ENV) or DEFAULT_KEYS_DIR).expanduser()


def key_paths(directory: str | os.PathLike) -> tuple[Path, Path]:
    """(private key PEM, public key PEM) of the key pair in ``directory``."""
    directory = Path(directory).expanduser()
    return directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE


def generate_key_pair(directory: str | os.PathLike) -> tuple[Path, Path]:
    """Create a new key pair in ``directory`` (made 0700 if new): the private key PEM (mode
    0600) and the public key PEM beside it. An existing private key is never overwritten
    (``SigningError``)."""
    private_path, public_path = key_paths(directory)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(private_path, pem, 0o600)
        _write_public(public_path, key.public_key())
    except FileExistsError as error:
        raise SigningError(f"{private_path} exists already; not overwritten") from error
    except OSError as error:
        raise SigningError(f"cannot create a key pair in {private_path.parent}: {error}") from error
    return private_path, public_path


def ensure_key_pair(directory: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The key pair in ``directory`` (default ``default_keys_dir()``), created if absent; the
    public key is written again from the private one if it is missing. Safe when two
    processes race: the private key is linked into place whole, once."""
    private_path, public_path = key_paths(default_keys_dir() if directory is None else directory)
    if not private_path.exists():
        if public_path.exists() and not private_path.exists():  # (another process may have just made both)
            raise SigningError(f"{public_path} exists without its private key {private_path}: move it away to "
                               "create a new pair, or put the private key back")
        try:
            return generate_key_pair(private_path.parent)
        except SigningError:
            if not private_path.exists():
                raise  # else another process has just created it
    key = load_private_key(private_path)
    if not public_path.exists():
        try:
            _write_public(public_path, key.public_key())
        except OSError as error:
            raise SigningError(f"cannot write the public key {public_path}: {error}") from error
    return private_path, public_path


def load_private_key(path: str | os.PathLike, setting: str = "signing key") -> Ed25519PrivateKey:
    """The Ed25519 private key of a PEM file; ``SigningError`` naming ``setting`` and the file
    when it is missing, readable by group or others, encrypted, or not an Ed25519 key."""
    path = Path(path).expanduser()
    data = _read_key_file(path, setting)
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningError(f"{setting}: {path} is accessible by others (mode {stat.S_IMODE(mode):o}); "
                           f"run chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as error:  # a password-protected key
        raise SigningError(f"{setting}: {path} is encrypted; an unencrypted PKCS#8 PEM is needed") from error
    except (ValueError, UnsupportedAlgorithm) as error:
        raise SigningError(f"{setting}: {path} is not a PEM private key ({error})") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{setting}: {path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike, setting: str = "public key") -> Ed25519PublicKey:
    """The Ed25519 public key of a PEM file; ``SigningError`` naming ``setting`` and the file otherwise."""
    path = Path(path).expanduser()
    data = _read_key_file(path, setting)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as error:
        hint = " (that is a private key: give its .pub.pem)" if b"PRIVATE KEY" in data else ""
        raise SigningError(f"{setting}: {path} is not a PEM public key{hint} ({error})") from error
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{setting}: {path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_trusted_keys(paths: Iterable[str | os.PathLike], setting: str = "security.trusted_keys"
                      ) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key of every PEM in ``paths`` (``SigningError`` on the first bad one)."""
    keys = {}
    for path in paths:
        key = load_public_key(path, setting)
        keys[key_id(key)] = key
    return keys


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key (of a private key: of its public key)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return hashlib.sha256(public_key_bytes(key)).hexdigest()[:16]


def _read_key_file(path: Path, setting: str) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_FILE_BYTES:
            raise SigningError(f"{setting}: {path} is too large for a key file")
        return path.read_bytes()
    except FileNotFoundError as error:
        raise SigningError(f"{setting}: no key file at {path}") from error
    except IsADirectoryError as error:
        raise SigningError(f"{setting}: {path} is a directory, not a key file") from error
    except OSError as error:
        raise SigningError(f"{setting}: cannot read {path}: {error.strerror}") from error


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole or not at all, failing with FileExistsError when it exists."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.link(tmp, path)  # atomic, and never replaces an existing file
    finally:
        os.unlink(tmp)


def _write_public(path: Path, key: Ed25519PublicKey) -> None:
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)


# ---------------------------------------------------------------- bundles


def signature_document(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The ``signature.json`` of the exact ``manifest`` bytes."""
    signature = base64.b64encode(key.sign(manifest)).decode("ascii")
    return json.dumps({"key_id": key_id(key), "algorithm": ALGORITHM, "signature": signature}).encode()


def sign_bundle(bundle: Bundle, key: Ed25519PrivateKey) -> Bundle:
    """``bundle`` with the signature of its manifest (any previous signature replaced)."""
    return dataclasses.replace(bundle, signature=signature_document(bundle.files[MANIFEST], key))


def sign_bundle_bytes(data: bytes, key: Ed25519PrivateKey) -> bytes:
    """``bundle_to_bytes`` output -> the same bundle's bytes with ``signature.json`` added."""
    return bundle_to_bytes(sign_bundle(bundle_from_bytes(data), key))


def verify_signature(bundle: Bundle, trusted: Mapping[str, Ed25519PublicKey | bytes]) -> str:
    """The id of the trusted key whose valid signature of the manifest ``bundle`` carries;
    ``BundleRefused`` (unsigned, untrusted_key or bad_signature) otherwise. ``trusted`` maps key
    ids to public keys (objects or raw bytes)."""
    if bundle.signature is None:
        raise BundleRefused(UNSIGNED, "unsigned bundle (its publisher has no security.signing_key)")
    document = _parse_signature(bundle.signature)
    kid = document["key_id"]
    if kid not in trusted:
        raise BundleRefused(UNTRUSTED_KEY, f"signature from untrusted key {kid} "
                                           f"(security.trusted_keys: {sorted(trusted) or 'none'})")
    key = trusted[kid]
    if isinstance(key, (bytes, bytearray)):
        key = Ed25519PublicKey.from_public_bytes(bytes(key))
    try:
        key.verify(document["signature"], bundle.files[MANIFEST])
    except InvalidSignature as error:
        raise BundleRefused(BAD_SIGNATURE, f"bad signature: it does not match the manifest (key {kid})") from error
    return kid


def check_newer(version: int, active_version: int | None) -> None:
    """``BundleRefused`` (not_newer) unless ``version`` is above the active model's (None: no model)."""
    if active_version is not None and version <= active_version:
        raise BundleRefused(NOT_NEWER, f"version {version} is not newer than the active version {active_version}")


def verify_bundle_trust(bundle: Bundle, trusted: Mapping[str, Ed25519PublicKey | bytes],
                        active_version: int | None) -> str:
    """The checks of a bundle from the topic, before ``verify_bundle``: a valid signature from a
    trusted key, then a version newer than ``active_version``; returns the key id."""
    kid = verify_signature(bundle, trusted)
    check_newer(bundle.version, active_version)
    return kid


def _parse_signature(raw: bytes) -> dict:
    """``signature.json`` as {key_id, algorithm, signature (64 raw bytes)}; ``BundleRefused`` if malformed."""
    def malformed(why: str) -> BundleRefused:
        return BundleRefused(BAD_SIGNATURE, f"bad signature: malformed signature.json ({why})")

    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise malformed("not JSON") from error
    if not isinstance(document, dict) or set(document) != {"key_id", "algorithm", "signature"}:
        raise malformed("expected exactly key_id, algorithm and signature")
    if document["algorithm"] != ALGORITHM:
        raise BundleRefused(BAD_SIGNATURE, f"bad signature: algorithm {str(document['algorithm'])[:20]!r}, "
                                           f"only {ALGORITHM!r} is accepted")
    if not isinstance(document["key_id"], str) or not _KEY_ID.fullmatch(document["key_id"]):
        raise malformed("key_id is not 16 hex digits")
    try:
        signature = base64.b64decode(document["signature"], validate=True)
    except (TypeError, ValueError, binascii.Error) as error:
        raise malformed("signature is not base64") from error
    if len(signature) != 64:
        raise malformed(f"an Ed25519 signature has 64 bytes, this one {len(signature)}")
    return {**document, "signature": signature}
