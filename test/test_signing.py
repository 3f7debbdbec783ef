"""Signed model bundles (core/signing.py) and the planner's loader that enforces them
(workers/model_loader.py): only a bundle signed by a trusted key and newer than the active model
comes in from the topic; a runtime edit rebuilds the active model, whatever its origin."""
from __future__ import annotations

import base64
import json
import os
import stat
import threading

import pytest

from loop_ros.core.bundle import (MANIFEST, MAX_SIGNATURE_BYTES, SIGNATURE, Bundle, BundleError, bundle_from_bytes,
                                  bundle_to_bytes, read_bundle, write_bundle)
from loop_ros.core.config import ConfigError, RuntimeConfig
from loop_ros.core.signing import (BAD_SIGNATURE, NOT_NEWER, UNSIGNED, UNTRUSTED_KEY, BundleRefused, SigningError,
                                   ensure_key_pair, generate_key_pair, key_id, load_private_key, load_public_key,
                                   load_trusted_keys, sign_bundle, sign_bundle_bytes, verify_bundle_trust,
                                   verify_signature)

EXPECTED = {"task": "rc_car", "obs_dim": 6, "act_dim": 2}


@pytest.fixture
def keys(tmp_path):
    """(private key, trusted {id: public key}) of a fresh pair in tmp_path/keys."""
    private_path, public_path = generate_key_pair(tmp_path / "keys")
    return load_private_key(private_path), load_trusted_keys([public_path])


@pytest.fixture
def bundle(export_tiny_bundle):
    return read_bundle(export_tiny_bundle(version=5))


def refusal(bundle: Bundle, trusted, active=None) -> BundleRefused:
    with pytest.raises(BundleRefused) as caught:
        verify_bundle_trust(bundle, trusted, active)
    return caught.value


def with_manifest(bundle: Bundle, **changes) -> Bundle:
    """``bundle`` with manifest fields changed (the manifest bytes rewritten, the signature kept)."""
    manifest = {**bundle.manifest, **changes}
    return Bundle(manifest, {**bundle.files, MANIFEST: json.dumps(manifest, indent=2).encode()}, bundle.signature)


# ---------------------------------------------------------------- keys


def test_a_generated_pair_loads_and_the_private_key_is_private(tmp_path):
    private_path, public_path = generate_key_pair(tmp_path / "keys")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    private, public = load_private_key(private_path), load_public_key(public_path)
    assert key_id(private) == key_id(public) and len(key_id(public)) == 16
    with pytest.raises(SigningError, match="exists already; not overwritten"):
        generate_key_pair(tmp_path / "keys")
    assert ensure_key_pair(tmp_path / "keys") == (private_path, public_path)  # kept, not replaced
    assert load_public_key(public_path).public_bytes_raw() == public.public_bytes_raw()
    public_path.unlink()  # written again from the private key
    assert ensure_key_pair(tmp_path / "keys")[1].is_file() and key_id(load_public_key(public_path)) == key_id(public)


def test_ensure_key_pair_creates_one_in_the_environments_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_ROS_KEYS_DIR", str(tmp_path / "env_keys"))
    private_path, public_path = ensure_key_pair()
    assert private_path.parent == tmp_path / "env_keys" and private_path.is_file() and public_path.is_file()


def test_concurrent_first_uses_agree_on_one_pair(tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_key_pair(tmp_path / "k"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len({key_id(load_public_key(pub)) for _, pub in results}) == 1


@pytest.mark.parametrize("case, message", [
    ("missing", "security.signing_key: no key file at"),
    ("garbage", "is not a PEM private key"),
    ("public", "is not a PEM private key"),
    ("readable", r"is accessible by others \(mode 644\); run chmod 600"),
])
def test_a_bad_private_key_file_is_a_config_error_naming_the_file(tmp_path, case, message):
    private_path, public_path = generate_key_pair(tmp_path / "keys")
    path = tmp_path / "bad.pem"
    if case == "garbage":
        path.write_bytes(b"not a key")
        path.chmod(0o600)
    elif case == "public":
        path.write_bytes(public_path.read_bytes())
        path.chmod(0o600)
    elif case == "readable":
        private_path.chmod(0o644)
        path = private_path
    with pytest.raises(ConfigError, match=message):
        load_private_key(path, "security.signing_key")


def test_a_bad_public_key_file_is_a_config_error(tmp_path):
    private_path, _ = generate_key_pair(tmp_path / "keys")
    with pytest.raises(ConfigError, match="security.trusted_keys: no key file at"):
        load_trusted_keys([tmp_path / "nothing.pem"])
    with pytest.raises(ConfigError, match=r"is not a PEM public key \(that is a private key: give its .pub.pem\)"):
        load_trusted_keys([private_path])
    rsa = tmp_path / "rsa.pem"  # a valid PEM public key of another algorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

    rsa.write_bytes(rsa_keys.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        load_trusted_keys([rsa])


# ---------------------------------------------------------------- signatures


def test_sign_verify_round_trip_through_the_topic_bytes(bundle, keys):
    private, trusted = keys
    data = sign_bundle_bytes(bundle_to_bytes(bundle), private)
    received = bundle_from_bytes(data)
    assert received.files == bundle.files and received.signature is not None
    document = json.loads(received.signature)
    assert document["key_id"] == key_id(private) and document["algorithm"] == "ed25519"
    assert len(base64.b64decode(document["signature"])) == 64
    assert verify_bundle_trust(received, trusted, 4) == key_id(private)
    assert verify_bundle_trust(received, trusted, None) == key_id(private)  # no active model
    assert sign_bundle_bytes(bundle_to_bytes(bundle), private) == data  # Ed25519 is deterministic
    assert bundle_to_bytes(received) == data  # the signature re-serialises unchanged


def test_an_unsigned_bundle_is_refused(bundle, keys):
    error = refusal(bundle, keys[1])
    assert error.reason == UNSIGNED and str(error).startswith("unsigned bundle")


def test_a_signature_from_an_untrusted_key_is_refused(bundle, keys, tmp_path):
    other = load_private_key(generate_key_pair(tmp_path / "other")[0])
    error = refusal(sign_bundle(bundle, other), keys[1])
    assert error.reason == UNTRUSTED_KEY and f"signature from untrusted key {key_id(other)}" in str(error)
    assert refusal(sign_bundle(bundle, keys[0]), {}).reason == UNTRUSTED_KEY  # nothing trusted: nothing accepted


def test_a_tampered_manifest_fails_the_signature(bundle, keys):
    signed = sign_bundle(bundle, keys[0])
    for tampered in (with_manifest(signed, version=999), with_manifest(signed, task="point_mass"),
                     with_manifest(signed, sha256={**bundle.manifest["sha256"], "actor.onnx": "0" * 64})):
        error = refusal(tampered, keys[1])
        assert error.reason == BAD_SIGNATURE and "bad signature: it does not match the manifest" in str(error)
    manifest = bytearray(bundle.files[MANIFEST])  # one flipped bit (a space becomes a tab, the JSON is the same)
    manifest[manifest.index(b" ")] ^= ord(" ") ^ ord("\t")
    reformatted = Bundle(bundle.manifest, {**bundle.files, MANIFEST: bytes(manifest)}, signed.signature)
    assert refusal(reformatted, keys[1]).reason == BAD_SIGNATURE  # the exact bytes are signed


def test_a_tampered_graph_fails_the_hash_of_the_signed_manifest(bundle, keys):
    from loop_ros.workers.model_loader import prepare_bundle

    private, trusted = keys
    flipped = bytearray(bundle.files["critic.onnx"])
    flipped[-10] ^= 0x01
    tampered = sign_bundle(Bundle(bundle.manifest, {**bundle.files, "critic.onnx": bytes(flipped)}), private)
    assert verify_signature(tampered, trusted) == key_id(private)  # the signature is good...
    raw = {kid: key.public_bytes_raw() for kid, key in trusted.items()}
    with pytest.raises(BundleError, match="sha256 mismatch for critic.onnx"):  # ...the graph is not the signed one
        prepare_bundle("bytes", bundle_to_bytes(tampered), EXPECTED, None, (raw, 4))


@pytest.mark.parametrize("change, message", [
    (lambda d: {**d, "signature": base64.b64encode(bytes([d["sig"][0] ^ 1]) + d["sig"][1:]).decode()},
     "does not match the manifest"),
    (lambda d: {**d, "signature": "!!not base64!!"}, "signature is not base64"),
    (lambda d: {**d, "signature": base64.b64encode(d["sig"][:63]).decode()}, "64 bytes, this one 63"),
    (lambda d: {**d, "algorithm": "rsa"}, "algorithm 'rsa', only 'ed25519' is accepted"),
    (lambda d: {**d, "key_id": "../../etc"}, "key_id is not 16 hex digits"),
    (lambda d: {k: v for k, v in d.items() if k != "algorithm"}, "expected exactly key_id, algorithm and signature"),
    (lambda d: ["not", "an", "object"], "expected exactly"),
])
def test_a_tampered_or_malformed_signature_is_refused(bundle, keys, change, message):
    signed = sign_bundle(bundle, keys[0])
    document = json.loads(signed.signature)
    document["sig"] = base64.b64decode(document["signature"])
    changed = change(document)
    if isinstance(changed, dict):
        changed.pop("sig", None)
    error = refusal(Bundle(bundle.manifest, bundle.files, json.dumps(changed).encode()), keys[1])
    assert error.reason == BAD_SIGNATURE and message in str(error) and str(error).startswith("bad signature")
    assert refusal(Bundle(bundle.manifest, bundle.files, b"\xff\xfe"), keys[1]).reason == BAD_SIGNATURE


def test_an_older_or_equal_version_is_refused_after_the_signature(bundle, keys):
    signed = sign_bundle(bundle, keys[0])  # version 5
    for active in (5, 6):
        error = refusal(signed, keys[1], active)
        assert error.reason == NOT_NEWER and str(error) == f"version 5 is not newer than the active version {active}"
    assert refusal(bundle, keys[1], 6).reason == UNSIGNED  # who signed comes first


def test_the_signature_member_is_optional_small_and_single(bundle, keys):
    from test_bundle import tar_of as tar

    data = sign_bundle_bytes(bundle_to_bytes(bundle), keys[0])
    assert bundle_from_bytes(bundle_to_bytes(bundle)).signature is None

    members = [(name, bundle.files[name]) for name in bundle.files]
    too_long = f"'{SIGNATURE}': {MAX_SIGNATURE_BYTES + 1} bytes exceeds {MAX_SIGNATURE_BYTES}"
    with pytest.raises(BundleError, match=too_long):
        bundle_from_bytes(tar(members + [(SIGNATURE, b" " * (MAX_SIGNATURE_BYTES + 1))]))
    signature = bundle_from_bytes(data).signature
    with pytest.raises(BundleError, match=f"'{SIGNATURE}': duplicate"):
        bundle_from_bytes(tar(members + [(SIGNATURE, signature), (SIGNATURE, signature)]))


def test_bundles_on_disk_stay_unsigned(bundle, keys, tmp_path):
    signed = sign_bundle(bundle, keys[0])
    directory = write_bundle(signed, tmp_path / "written")
    assert sorted(os.listdir(directory)) == sorted(bundle.files)  # no signature.json written
    (directory / SIGNATURE).write_bytes(signed.signature)  # one put there is harmless: ignored
    assert read_bundle(directory).signature is None and read_bundle(directory).files == bundle.files


# ---------------------------------------------------------------- the planner's loader


class Loader:
    """A ``ModelLoader`` over a fresh holder, with what it logged and a wait for it to go idle."""

    def __init__(self, trusted):
        from loop_ros.core.runtime import ModelHolder
        from loop_ros.workers.model_loader import ModelLoader

        self.logged: list[tuple[str, str]] = []
        self.holder = ModelHolder()
        self.loader = ModelLoader(self.holder, EXPECTED, lambda: None,
                                  lambda level, text: self.logged.append((level, text)))
        self.loader.trusted_keys = {kid: key.public_bytes_raw() for kid, key in trusted.items()}

    def wait(self, timeout_s: float = 60.0) -> None:
        import time

        end = time.monotonic() + timeout_s
        while self.loader.pending:
            assert time.monotonic() < end, "the loader did not finish"
            time.sleep(0.01)


@pytest.fixture
def loader(keys):
    made = Loader(keys[1])
    yield made
    made.loader.stop()


def test_the_loader_takes_only_signed_newer_bundles_from_the_topic(loader, keys, export_tiny_bundle, tmp_path):
    from loop_ros.workers.model_loader import INVALID

    private, _ = keys
    runtime = RuntimeConfig(intra_op_threads=1)
    loader.loader.load_directory(export_tiny_bundle(version=3, name="shipped"), runtime)  # local: no signature needed
    loader.wait()
    assert loader.holder.version == 3
    other = load_private_key(generate_key_pair(tmp_path / "other")[0])
    v7 = bundle_to_bytes(export_tiny_bundle(version=7, name="v7"))
    cases = [(v7, "unsigned", "unsigned bundle"),
             (sign_bundle_bytes(v7, other), "untrusted_key", f"signature from untrusted key {key_id(other)}"),
             (sign_bundle_bytes(bundle_to_bytes(export_tiny_bundle(version=3, name="v3")), private), "not_newer",
              "version 3 is not newer than the active version 3"),
             (sign_bundle_bytes(bundle_to_bytes(export_tiny_bundle(version=2, name="v2")), private), "not_newer",
              "version 2 is not newer than the active version 3")]
    for data, reason, message in cases:
        before = loader.loader.rejections[reason]
        loader.loader.load_bytes(data, runtime)
        loader.wait()
        assert loader.loader.rejections[reason] == before + 1
        assert loader.loader.last_error == f"bundle from the model topic refused: {message}" or \
            loader.loader.last_error.startswith(f"bundle from the model topic refused: {message} (")
        assert loader.holder.version == 3 and loader.holder.swaps == 1  # the old model keeps running
    corrupt = read_bundle(export_tiny_bundle(version=8, name="v8"))
    corrupt = sign_bundle(Bundle(corrupt.manifest, {**corrupt.files, "actor.onnx": b"junk"}), private)
    loader.loader.load_bytes(bundle_to_bytes(corrupt), runtime)
    loader.wait()
    assert loader.loader.rejections[INVALID] == 1 and "sha256 mismatch for actor.onnx" in loader.loader.last_error
    assert loader.loader.errors == 5 and dict(loader.loader.rejections) == {
        "unsigned": 1, "untrusted_key": 1, "not_newer": 2, "invalid": 1}
    loader.loader.load_bytes(sign_bundle_bytes(v7, private), runtime)
    loader.wait()
    assert loader.holder.version == 7 and loader.holder.swaps == 2 and loader.loader.last_error is None
    assert "model version 7 from the model topic" in loader.loader.status


def test_a_runtime_edit_rebuilds_the_active_model_not_the_shipped_one(loader, keys, export_tiny_bundle):
    one, two = RuntimeConfig(intra_op_threads=1), RuntimeConfig(intra_op_threads=2)
    loader.loader.load_directory(export_tiny_bundle(version=3, name="shipped"), one)
    loader.wait()
    loader.loader.load_bytes(sign_bundle_bytes(bundle_to_bytes(export_tiny_bundle(version=9, name="v9")), keys[0]), one)
    loader.wait()
    trained = loader.holder.current
    assert trained.version == 9 and loader.holder.swaps == 2
    loader.loader.rebuild(two)
    loader.wait()
    rebuilt = loader.holder.current
    assert rebuilt is not trained and rebuilt.version == 9 and rebuilt.bundle.files == trained.bundle.files
    assert rebuilt._runtime_cfg == two and loader.holder.swaps == 3 and loader.loader.errors == 0
    assert "model version 9 from the model topic" in loader.loader.status and "rebuilt" in loader.loader.status
    loader.loader.rebuild(two)  # already built so: nothing to do
    loader.wait()
    assert loader.holder.current is rebuilt and loader.holder.swaps == 3


def test_a_runtime_edit_never_drops_a_model_waiting_to_load(loader, keys, export_tiny_bundle):
    one, two = RuntimeConfig(intra_op_threads=1), RuntimeConfig(intra_op_threads=2)
    loader.loader.load_directory(export_tiny_bundle(version=3, name="shipped"), one)
    loader.loader.load_bytes(sign_bundle_bytes(bundle_to_bytes(export_tiny_bundle(version=9, name="v9")), keys[0]), one)
    loader.loader.rebuild(two)  # while the directory (or v9) is loading: v9 still comes, built for ``two``
    loader.wait()
    assert loader.holder.version == 9 and loader.holder.current._runtime_cfg == two and loader.loader.errors == 0
