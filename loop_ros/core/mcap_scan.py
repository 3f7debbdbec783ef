"""The messages of an MCAP file whose writer died: read record by record up to the cut.

A killed writer leaves the header and the chunks it closed, possibly a chunk cut off in the
middle, and no summary or footer, so readers that start from the footer (rosbags among
them) refuse the file. Records are ``opcode (u8), length (u64), body``; a chunk's body holds
schema, channel and message records (MCAP spec, https://mcap.dev/spec). Only uncompressed
chunks are read: that is what ``core.replay`` writes.
"""
from __future__ import annotations

import struct
from typing import Iterator

MCAP_MAGIC = b"\x89MCAP0\r\n"


def scan_unfinished_mcap(raw: bytes) -> tuple[dict[int, tuple[str, str]], list[tuple[int, int, bytes]]]:
    """Channels {id: (topic, type)} and messages [(channel id, log time, data)] of every
    complete uncompressed chunk of an MCAP file, up to where the file is cut off."""
    channels: dict[int, tuple[str, str]] = {}
    messages: list[tuple[int, int, bytes]] = []
    schemas: dict[int, str] = {}
    if not raw.startswith(MCAP_MAGIC):
        return channels, messages
    for opcode, body in _records(raw, len(MCAP_MAGIC)):
        if opcode == 0x06:  # chunk: start, end, uncompressed size, crc, compression, records
            compression_len = struct.unpack_from("<I", body, 28)[0]
            if body[32:32 + compression_len]:
                continue  # only uncompressed chunks are written here
            for inner, record in _records(body, 32 + compression_len + 8):
                _scan_chunk_record(inner, record, schemas, channels, messages)
    return channels, messages


def _scan_chunk_record(opcode: int, body: bytes, schemas: dict, channels: dict, messages: list) -> None:
    if opcode == 0x03:  # schema: id, name, encoding, data
        schema_id, name_len = struct.unpack_from("<HI", body, 0)
        schemas[schema_id] = body[6:6 + name_len].decode()
    elif opcode == 0x04:  # channel: id, schema id, topic, message encoding, metadata
        channel_id, schema_id, topic_len = struct.unpack_from("<HHI", body, 0)
        channels[channel_id] = (body[8:8 + topic_len].decode(), schemas[schema_id])
    elif opcode == 0x05:  # message: channel id, sequence, log time, publish time, data
        channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
        messages.append((channel_id, log_time, body[22:]))


def _records(raw: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """(opcode, body) of each complete record from ``start``; stops at the first cut-off one."""
    position = start
    while position + 9 <= len(raw):
        opcode, length = struct.unpack_from("<BQ", raw, position)
        if position + 9 + length > len(raw):
            return
        yield opcode, raw[position + 9:position + 9 + length]
        position += 9 + length
