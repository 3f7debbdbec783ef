"""Signed models through a real planner process: what it takes from the ``model`` topic, what it
refuses (and counts by reason), that a runtime edit keeps the model it runs, and that a bad key
file stops a node at start."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
from ros_helpers import BUNDLE_VERSION, NodeProcess, Probe, domain_id, export_test_bundle, params_file, ros_environment

from loop_ros.core.bundle import MANIFEST, Bundle, bundle_to_bytes, read_bundle
from loop_ros.core.signing import generate_key_pair, load_private_key, sign_bundle

TRAINED = BUNDLE_VERSION + 7  # the version of the "online-trained" model the test publishes


@pytest.fixture(scope="module")
def planner(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signing")
    private, public = generate_key_pair(tmp / "keys")
    shipped = read_bundle(export_test_bundle(tmp / "bundle"))
    params = params_file(tmp / "params.yaml", **{"task.bundle": str(tmp / "bundle"),
                                                 "security.trusted_keys": [str(public)]})
    domain = domain_id(21)
    node = NodeProcess("planner", "planner", params, domain, tmp)
    probe = Probe(domain)
    yield probe, node, shipped, load_private_key(private), tmp
    probe.close()
    assert node.stop() == 0, node.log()


def versioned(bundle: Bundle, version: int) -> Bundle:
    manifest = {**bundle.manifest, "version": version}
    return Bundle(manifest, {**bundle.files, MANIFEST: json.dumps(manifest).encode()})


def latest(diagnostics, key):
    return diagnostics[-1][key] if diagnostics else None


def test_only_a_signed_newer_model_comes_in_and_a_runtime_edit_keeps_it(planner):
    from rclpy.parameter import Parameter
    from std_msgs.msg import UInt8MultiArray

    from loop_ros.nodes.trainer import MODEL_QOS

    probe, node, shipped, key, tmp = planner
    diagnostics = probe.diagnostics("/planner")
    probe.wait_for(lambda: latest(diagnostics, "model_version") == str(BUNDLE_VERSION), 30.0, "the shipped model")
    publisher = probe.node.create_publisher(UInt8MultiArray, "model", MODEL_QOS)

    def rejections() -> dict:
        return ast.literal_eval(latest(diagnostics, "bundle_rejections") or "{}")

    def publish(bundle: Bundle) -> None:
        publisher.publish(UInt8MultiArray(data=bundle_to_bytes(bundle)))

    publish(sign_bundle(versioned(shipped, TRAINED), key))
    probe.wait_for(lambda: latest(diagnostics, "model_version") == str(TRAINED), 20.0, "the signed newer model")
    stranger = load_private_key(generate_key_pair(tmp / "stranger")[0])
    for bundle, reason in ((versioned(shipped, TRAINED + 1), "unsigned"),
                           (sign_bundle(versioned(shipped, TRAINED + 1), stranger), "untrusted_key"),
                           (sign_bundle(versioned(shipped, TRAINED), key), "not_newer")):
        publish(bundle)
        probe.wait_for(lambda: rejections().get(reason) == 1, 10.0, f"a {reason} refusal")
    assert rejections() == {"unsigned": 1, "untrusted_key": 1, "not_newer": 1}
    assert latest(diagnostics, "model_version") == str(TRAINED) and latest(diagnostics, "bundle_errors") == "3"
    assert "version 10 is not newer than the active version 10" in latest(diagnostics, "bundle_last_error")
    log = node.log()
    assert "bundle from the model topic refused: unsigned bundle" in log
    assert "bundle from the model topic refused: signature from untrusted key" in log

    # A runtime edit rebuilds the sessions of the model in use: it stays the trained one.
    client = probe.parameter_client("/planner")
    swaps = int(latest(diagnostics, "model_swaps"))
    result = probe.call(client.set_parameters([Parameter("runtime.intra_op_threads", value=2)])).results[0]
    assert result.successful, result.reason
    probe.wait_for(lambda: int(latest(diagnostics, "model_swaps")) == swaps + 1, 20.0, "the rebuilt model")
    probe.spin_for(2.5)  # time for a (wrong) reload of the directory to land too
    assert latest(diagnostics, "model_version") == str(TRAINED) and "rebuilt" in latest(diagnostics, "model_status")
    assert latest(diagnostics, "bundle_errors") == "3"

    # Choosing a bundle directory is the user's call: it loads, whatever its version.
    result = probe.call(client.set_parameters([Parameter("task.bundle", value=str(tmp / "bundle"))])).results[0]
    assert result.successful, result.reason  # the same path: nothing to reload
    probe.spin_for(2.5)
    assert latest(diagnostics, "model_version") == str(TRAINED)
    (tmp / "copy").mkdir()
    for name, data in shipped.files.items():
        (tmp / "copy" / name).write_bytes(data)
    result = probe.call(client.set_parameters([Parameter("task.bundle", value=str(tmp / "copy"))])).results[0]
    assert result.successful, result.reason
    probe.wait_for(lambda: latest(diagnostics, "model_version") == str(BUNDLE_VERSION), 20.0, "the chosen directory")

    # The trust settings cannot be edited over DDS.
    result = probe.call(client.set_parameters(
        [Parameter("security.trusted_keys", value=[str(tmp / "stranger" / "loop_ros_signing.pub.pem")])])).results[0]
    assert not result.successful and "read-only" in result.reason
    probe.node.destroy_publisher(publisher)


def test_the_trainers_first_version_is_above_the_planners_starting_bundle(tmp_path):
    from loop_ros.nodes.trainer import first_version

    shipped = export_test_bundle(tmp_path / "shipped")  # BUNDLE_VERSION
    assert first_version(tmp_path / "no_bundle_yet", shipped) == BUNDLE_VERSION + 1
    assert first_version(tmp_path / "no_bundle_yet", tmp_path / "none") == 1
    published = tmp_path / "published"
    published.mkdir()
    (published / MANIFEST).write_text(json.dumps({"version": 120}))
    assert first_version(published, shipped) == 121


@pytest.mark.parametrize("module, setting, message", [
    ("planner", "security.trusted_keys:=[/no/such/key.pub.pem]",
     "invalid settings: security.trusted_keys: no key file at /no/such/key.pub.pem"),
    ("trainer", "security.signing_key:=/no/such/key.pem",
     "invalid settings: security.signing_key: no key file at /no/such/key.pem"),
])
def test_a_bad_key_file_stops_the_node_at_start_with_one_line(tmp_path, module, setting, message):
    params = params_file(tmp_path / "params.yaml", **{"trainer.data_dir": str(tmp_path / "replay")})
    command = [sys.executable, "-m", f"loop_ros.nodes.{module}", "--ros-args", "--params-file", str(params),
               "-p", setting]
    done = subprocess.run(command, env=ros_environment(domain_id(22)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
