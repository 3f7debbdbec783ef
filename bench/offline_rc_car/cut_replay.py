"""Copy the messages of the first N steps of a `train --record` bag (its clock starts at 0 and
advances one control period a step: 20 ms at the car's 50 Hz, 50 ms at the gymnasium tasks' 20 Hz):
the medium-replay dataset up to the medium checkpoint.

    python bench/offline_rc_car/cut_replay.py SRC_BAG DST_BAG STEPS [CONTROL_RATE_HZ (default 50)]
"""
import sys
from pathlib import Path
from rosbags.rosbag2 import Reader, Writer, StoragePlugin
from loop_ros.core.transitions import typestore
src, dst, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
period_ns = int(round(1e9 / float(sys.argv[4]))) if len(sys.argv) > 4 else 20_000_000
end_ns = steps * period_ns + 3  # the last step's state, its record and the next first state
with Reader(src) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
    conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=typestore()) for c in reader.connections}
    n = 0
    for c, t, data in reader.messages():
        if t <= end_ns:
            writer.write(conns[c.id], t, data); n += 1
print(n, "messages")
