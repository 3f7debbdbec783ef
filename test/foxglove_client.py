"""A Foxglove WebSocket client for the tests (subprotocol foxglove.sdk.v1): subscribes to every
advertised channel and decodes what arrives (JSON to dicts, protobuf to message objects)."""
from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
from functools import lru_cache

import numpy as np
from ros_helpers import wait_until

MESSAGE_DATA = 0x01  # binary opcode: uint32 subscription id, uint64 log time, payload


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@lru_cache(maxsize=None)
def protobuf_class(schema_name: str, file_descriptor_set: bytes):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(file_descriptor_set).file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))


def decode_foxglove(message) -> object:
    """A foxglove.messages object as the protobuf message a viewer decodes from its bytes."""
    schema = message.get_schema()
    return protobuf_class(schema.name, bytes(schema.data)).FromString(message.encode())


# ---------------------------------------------------------------- reading the /scene of foxglove_scene

def entities(scene) -> dict:
    return {entity.id: entity for entity in scene.entities}


def xy(line) -> np.ndarray:
    return np.array([(p.x, p.y) for p in line.points])


def circle_of(points: np.ndarray, center=(0.0, 0.0)) -> tuple[float, float]:
    """(smallest, largest) distance of ``points`` from ``center``."""
    distances = np.hypot(points[:, 0] - center[0], points[:, 1] - center[1])
    return float(distances.min()), float(distances.max())


def keep_in_radius(scene) -> float | None:
    """Radius of the scene's keep-in circle (the first constraint line), None when there is none."""
    lines = entities(scene)["constraints"].lines
    return circle_of(xy(lines[0]))[1] if lines else None


class FoxgloveClient:
    """Connects (retrying until ``connect_timeout_s``) in a thread and keeps every message."""

    def __init__(self, port: int, connect_timeout_s: float = 30.0):
        self.port, self._connect_timeout_s = port, connect_timeout_s
        self._lock = threading.Lock()
        self._messages: list[tuple[str, object]] = []
        self.channels: dict[int, dict] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def messages(self, topic: str) -> list:
        with self._lock:
            return [message for t, message in self._messages if t == topic]

    def wait_for(self, predicate, timeout_s: float, what: str):
        """Poll ``predicate()`` until truthy; returns its value or fails naming ``what``."""
        try:
            return wait_until(predicate, timeout_s, what, lambda: time.sleep(0.05))
        except AssertionError as error:
            raise AssertionError(f"{error} (client error: {self.error!r})") from None

    def _run(self) -> None:
        from websockets.sync.client import connect

        end = time.monotonic() + self._connect_timeout_s
        while not self._stop.is_set():
            try:
                with connect(f"ws://127.0.0.1:{self.port}", subprotocols=["foxglove.sdk.v1"], open_timeout=5) as ws:
                    self._receive(ws)
                return
            except OSError as error:  # the server is not up yet
                self.error = error
                if time.monotonic() > end:
                    return
                time.sleep(0.2)
            except Exception as error:  # closed by the server, or a protocol error: kept for the assertion
                self.error = error
                return

    def _receive(self, ws) -> None:
        while not self._stop.is_set():
            try:
                frame = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            if isinstance(frame, str):
                self._on_text(ws, json.loads(frame))
            elif frame[0] == MESSAGE_DATA:
                subscription, _log_time = struct.unpack_from("<IQ", frame, 1)
                channel = self.channels[subscription]
                with self._lock:
                    self._messages.append((channel["topic"], self._decoded(channel, frame[13:])))

    def _on_text(self, ws, message: dict) -> None:
        if message.get("op") != "advertise":
            return
        new = [c for c in message["channels"] if c["id"] not in self.channels]
        self.channels.update({c["id"]: c for c in new})
        # subscription id = channel id, so a data frame names its channel
        ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": c["id"], "channelId": c["id"]} for c in new]}))

    @staticmethod
    def _decoded(channel: dict, payload: bytes):
        if channel["encoding"] == "json":
            return json.loads(payload)
        return protobuf_class(channel["schemaName"], base64.b64decode(channel["schema"])).FromString(payload)
