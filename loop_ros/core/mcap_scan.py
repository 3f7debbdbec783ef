"""The messages of an MCAP file whose writer died, or that is damaged: read record by record.

A killed writer leaves the header and the chunks it closed, possibly a chunk cut off in the
middle, and no summary or footer, so readers that start from the footer (rosbags among
them) refuse the file. Records are ``opcode (u8), length (u64), body``; a chunk's body holds
schema, channel and message records (MCAP spec, https://mcap.dev/spec). Only uncompressed
chunks are read: that is what ``core.replay`` writes (without CRCs, so damage inside a
message's data is not seen here: the replay's decoder refuses such a message).

Every complete record before a damaged one is kept, and a damaged part ends only itself:

* inside a chunk, records are read up to the first one that is malformed (an opcode a
  chunk cannot hold, a length past the chunk's end, a body that does not parse); the
  messages before it are kept. A message whose channel is unknown (defined in a damaged
  part) is skipped and counted;
* at the top level, after a malformed record or a chunk that did not read to its end, the
  scan searches forward for the next intact chunk header (opcode 0x06 whose three length
  fields agree, an empty compression and a first record a chunk can hold) and goes on from
  there. Only the end of the file, a truncation, ends the scan; so does the data-end record
  (the summary after it repeats what the chunks hold).

Nothing raised by a malformed record escapes: the result is what could be read.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

MCAP_MAGIC = b"\x89MCAP0\r\n"
SCHEMA, CHANNEL, MESSAGE, CHUNK, DATA_END = 0x03, 0x04, 0x05, 0x06, 0x0F
RECORD_HEADER = 9  # opcode u8, length u64
CHUNK_FIXED = 40  # start, end, uncompressed size u64; crc u32; compression length u32 (0); records length u64
MESSAGE_HEADER = 22  # channel id u16, sequence u32, log time u64, publish time u64
CHUNK_RECORDS = (SCHEMA, CHANNEL, MESSAGE)
MALFORMED = (struct.error, UnicodeDecodeError, KeyError, ValueError, IndexError)


class McapScan(NamedTuple):
    channels: dict[int, tuple[str, str]]
    """channel id -> (topic, message type)"""
    messages: list[tuple[int, int, bytes]]
    """(channel id, log time ns, data), in file order"""
    damage: list[str]
    """What was skipped besides a cut-off end, one line each (empty for a file that was only truncated)."""


def scan_unfinished_mcap(raw: bytes) -> McapScan:
    """Channels, messages and damage notes of every readable record of an MCAP file (module docstring)."""
    scan = McapScan({}, [], [])
    if not raw.startswith(MCAP_MAGIC):
        scan.damage.append("no MCAP magic")
        return scan
    schemas: dict[int, str] = {}
    unknown_channel = 0
    position = len(MCAP_MAGIC)
    while position + RECORD_HEADER <= len(raw):
        opcode, length = struct.unpack_from("<BQ", raw, position)
        end = position + RECORD_HEADER + length
        layout = _chunk_layout(raw, position) if opcode == CHUNK else None
        if layout is not None:
            stop, intact, cut = layout
            resume, skipped = _scan_records(raw, position + RECORD_HEADER + CHUNK_FIXED, stop, schemas, scan)
            unknown_channel += skipped
            if intact and resume == stop:
                position = end
                continue
            damage = None if cut else f"chunk at byte {position} damaged at byte {resume}"
            skip_from = resume
        elif opcode == DATA_END and end <= len(raw):
            break
        elif 0x01 <= opcode <= 0x0F and end <= len(raw):
            if opcode in CHUNK_RECORDS:  # MCAP allows these outside chunks too
                unknown_channel += _scan_records(raw, position, end, schemas, scan)[1]
            position = end
            continue
        else:  # a record cut off by the end of the file, or garbage
            damage = f"malformed record at byte {position}"
            skip_from = position + 1
        following = _next_chunk(raw, skip_from)
        if following is None:  # nothing intact after it: the file was cut off here
            if damage is not None and end <= len(raw):
                scan.damage.append(damage)
            break
        scan.damage.append(f"{damage or f'cut-off chunk at byte {position}'}; resumed at the chunk at byte {following}")
        position = following
    if unknown_channel:
        scan.damage.append(f"{unknown_channel} messages of unknown channels skipped")
    return scan


def _chunk_layout(raw: bytes, position: int) -> tuple[int, bool, bool] | None:
    """(end of the records to read, intact, cut off) of the uncompressed chunk record at
    ``position``; None when its header is incomplete or names a compression.

    The end is the nearest of what the record length, the records length and the file allow;
    intact: the three length fields agree and the chunk lies within the file; cut off: they
    agree but the file ends inside the chunk."""
    body = position + RECORD_HEADER
    if body + CHUNK_FIXED > len(raw):
        return None
    _, length = struct.unpack_from("<BQ", raw, position)
    uncompressed = struct.unpack_from("<Q", raw, body + 16)[0]
    compression_length, records_length = struct.unpack_from("<IQ", raw, body + 28)
    if compression_length != 0:
        return None
    records = body + CHUNK_FIXED
    end = records + records_length
    agree = length == CHUNK_FIXED + records_length and uncompressed == records_length
    return min(body + length, end, len(raw)), agree and end <= len(raw), agree and end > len(raw)


def _is_chunk_start(raw: bytes, position: int) -> bool:
    """An intact-looking chunk header (possibly cut off by the end of the file) at ``position``."""
    if position + RECORD_HEADER + CHUNK_FIXED + 1 > len(raw) or raw[position] != CHUNK:
        return False
    _, length = struct.unpack_from("<BQ", raw, position)
    body = position + RECORD_HEADER
    uncompressed = struct.unpack_from("<Q", raw, body + 16)[0]
    compression_length, records_length = struct.unpack_from("<IQ", raw, body + 28)
    return (compression_length == 0 and records_length > 0 and length == CHUNK_FIXED + records_length
            and uncompressed == records_length and raw[body + CHUNK_FIXED] in CHUNK_RECORDS)


def _next_chunk(raw: bytes, start: int) -> int | None:
    """Position of the first intact-looking chunk header at or after ``start``, or None."""
    position = raw.find(bytes([CHUNK]), start)
    while position != -1:
        if _is_chunk_start(raw, position):
            return position
        position = raw.find(bytes([CHUNK]), position + 1)
    return None


def _scan_records(raw: bytes, start: int, stop: int, schemas: dict[int, str], scan: McapScan) -> tuple[int, int]:
    """Read schema, channel and message records in ``raw[start:stop]`` until one is malformed or
    cut off; returns (where reading stopped, messages of unknown channels skipped)."""
    position, unknown = start, 0
    while position + RECORD_HEADER <= stop:
        opcode, length = struct.unpack_from("<BQ", raw, position)
        end = position + RECORD_HEADER + length
        if opcode not in CHUNK_RECORDS or end > stop:
            break
        try:
            known = _read_record(opcode, raw[position + RECORD_HEADER:end], schemas, scan)
        except MALFORMED:
            break
        unknown += not known
        position = end
    return position, unknown


def _read_record(opcode: int, body: bytes, schemas: dict[int, str], scan: McapScan) -> bool:
    """Store one schema, channel or message record; False for a message of an unknown channel.
    Raises one of ``MALFORMED`` when the body does not parse."""
    if opcode == SCHEMA:  # id, name, encoding, data
        schema_id, name_length = struct.unpack_from("<HI", body, 0)
        schemas[schema_id] = _text(body, 6, name_length)
    elif opcode == CHANNEL:  # id, schema id, topic, message encoding, metadata
        channel_id, schema_id, topic_length = struct.unpack_from("<HHI", body, 0)
        scan.channels[channel_id] = (_text(body, 8, topic_length), schemas[schema_id])
    else:  # message: channel id, sequence, log time, publish time, data
        channel_id, _, log_time, _ = struct.unpack_from("<HIQQ", body, 0)
        if channel_id not in scan.channels:
            return False
        scan.messages.append((channel_id, log_time, body[MESSAGE_HEADER:]))
    return True


def _text(body: bytes, offset: int, length: int) -> str:
    if offset + length > len(body):
        raise ValueError("string past the end of its record")
    return body[offset:offset + length].decode()
