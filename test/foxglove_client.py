"""A Foxglove WebSocket client for the tests (subprotocol foxglove.sdk.v1): subscribes to every
advertised channel and decodes what arrives (JSON to dicts, protobuf to message objects), sends
requests (``getParameters``, ``setParameters``) and keeps the server's other messages
(``parameterValues``, ``status``, ...)."""
from __future__ import annotations

import base64
import itertools
import json
import queue
import re
import socket
import struct
import threading
import time
from collections import defaultdict
from functools import lru_cache

import numpy as np
from ros_helpers import wait_until

MESSAGE_DATA = 0x01  # binary opcode: uint32 subscription id, uint64 log time, payload
ERROR_LEVEL = 2  # of a status message
UNKNOWN_CHANNEL = re.compile(r"Unknown channel ID: (\d+)")


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


def schema_fields(channel: dict) -> set[str]:
    """The top-level fields an advertised channel's JSON schema lists (for a protobuf channel, none:
    its schema is only checked to be there)."""
    assert channel["schemaName"] and channel["schema"], f"{channel['topic']} has no schema"
    if channel["encoding"] != "json":
        return set()
    assert channel["schemaEncoding"] == "jsonschema"
    schema = json.loads(channel["schema"])
    assert schema["type"] == "object" and schema["properties"], f"{channel['topic']}: empty schema"
    return set(schema["properties"])


def layout_paths(layout: dict) -> list[str]:
    """Every message path the panels of a Foxglove layout read (plot series, raw messages, 3D topics)."""
    paths = []
    for config in layout["configById"].values():
        paths += [series["value"] for series in config.get("paths", [])]
        paths += [config["topicPath"]] if "topicPath" in config else []
        paths += list(config.get("topics", {}))
    return paths


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
        self._replies: list[dict] = []
        self._outbox: queue.Queue[dict] = queue.Queue()
        self._ids = itertools.count()
        self.channels: dict[int, dict] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def finished(self) -> bool:
        """The connection ended (closed by the server, refused) or was never made."""
        return not self._thread.is_alive()

    def messages(self, topic: str) -> list:
        with self._lock:
            return [message for t, message in self._messages if t == topic]

    def advertised(self) -> list[dict]:
        """The channels the server advertised so far (``id``, ``topic``, ``encoding``, ``schemaName``, ...)."""
        with self._lock:
            return list(self.channels.values())

    def topics(self) -> set[str]:
        return {channel["topic"] for channel in self.advertised()}

    def errors(self, about: str) -> list[str]:
        """The error statuses the server sent so far that mention ``about``."""
        return [r["message"] for r in self.replies("status") if r["level"] == ERROR_LEVEL and about in r["message"]]

    def replies(self, op: str, request_id: str | None = None) -> list[dict]:
        """The server's ``op`` messages so far (with ``request_id``: only those answering it)."""
        with self._lock:
            return [r for r in self._replies if r["op"] == op and (request_id is None or r.get("id") == request_id)]

    def send(self, op: str, **fields) -> None:
        """Send ``{"op": op, **fields}`` (from the client's thread)."""
        self._outbox.put({"op": op, **fields})

    def request(self, op: str, **fields) -> str:
        """Send ``{"op": op, **fields, "id": <new id>}``; returns the id."""
        request_id = f"{op}-{next(self._ids)}"
        self.send(op, **fields, id=request_id)
        return request_id

    def get_parameters(self, timeout_s: float = 10.0) -> dict[str, dict]:
        """All the server's parameters, ``{name: {"name", "value", "type"}}`` (waits for the answer)."""
        return {p["name"]: p for p in self._answer("getParameters", timeout_s, parameterNames=[])}

    def set_parameters(self, values: dict) -> dict:
        """Set ``{name: value}``; returns the answer, the values after the edit, as ``{name: value}``."""
        answer = self._answer("setParameters", 10.0, parameters=[{"name": n, "value": v} for n, v in values.items()])
        return {p["name"]: p["value"] for p in answer}

    def _answer(self, op: str, timeout_s: float, **fields) -> list[dict]:
        request_id = self.request(op, **fields)
        answer = self.wait_for(lambda: self.replies("parameterValues", request_id), timeout_s, f"the answer to {op}")
        return answer[0]["parameters"]

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
                    self.error = None
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
            while not self._outbox.empty():
                ws.send(json.dumps(self._outbox.get()))
            try:
                frame = ws.recv(timeout=0.05)
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
            with self._lock:
                self._replies.append(message)
            unknown = UNKNOWN_CHANNEL.fullmatch(message.get("message", "")) if message.get("op") == "status" else None
            if unknown and int(unknown[1]) in self.channels:
                # foxglove-sdk 0.30.3 sometimes advertises a new channel to a client before it takes
                # subscriptions to it (seen on 2 busy cores): subscribing again then works
                time.sleep(0.05)
                self._subscribe(ws, [self.channels[int(unknown[1])]])
            return
        new = [c for c in message["channels"] if c["id"] not in self.channels]
        with self._lock:
            self.channels.update({c["id"]: c for c in new})
        self._subscribe(ws, new)

    @staticmethod
    def _subscribe(ws, channels: list[dict]) -> None:
        # subscription id = channel id, so a data frame names its channel
        ws.send(json.dumps({"op": "subscribe", "subscriptions": [{"id": c["id"], "channelId": c["id"]} for c in channels]}))

    @staticmethod
    def _decoded(channel: dict, payload: bytes):
        if channel["encoding"] == "json":
            return json.loads(payload)
        return protobuf_class(channel["schemaName"], base64.b64decode(channel["schema"])).FromString(payload)


def recorded_messages(path) -> dict[str, list[bytes]]:
    """Each topic's messages in an MCAP file, read record by record as the MCAP spec lays them out
    (chunks decompressed with rosbags' decompressors); the file must be finished (closed)."""
    from rosbags.rosbag2.storage_mcap import decompress

    magic, data = b"\x89MCAP0\r\n", path.read_bytes()
    assert data[:8] == magic and data[-8:] == magic, "an unfinished MCAP file"
    topics, messages = {}, defaultdict(list)

    def read(records: bytes) -> None:
        offset = 0
        while offset < len(records):
            op, (length,) = records[offset], struct.unpack_from("<Q", records, offset + 1)
            body, offset = records[offset + 9:offset + 9 + length], offset + 9 + length
            if op == 0x04:  # channel: id, schema id, topic, ...
                channel, _, size = struct.unpack_from("<HHI", body)
                topics[channel] = body[8:8 + size].decode()
            elif op == 0x05:  # message: channel, sequence, log time, publish time, data
                messages[topics[struct.unpack_from("<H", body)[0]]].append(body[22:])
            elif op == 0x06:  # chunk: times, uncompressed size and CRC, compression, records
                _, _, size, crc, name_size = struct.unpack_from("<QQQII", body)
                compression = body[32:32 + name_size].decode()
                (records_size,) = struct.unpack_from("<Q", body, 32 + name_size)
                start = 40 + name_size
                read(decompress(body[start:start + records_size], compression, size, crc))

    read(data[8:-8])
    return dict(messages)

