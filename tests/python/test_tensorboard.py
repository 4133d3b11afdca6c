"""A finished job's TensorBoard event file, downloaded with its checkpoint
and read back by an independent reader: the record framing with both CRCs
of every record checked with python3-crc32c, the events decoded by
protobuf from TensorBoard's field numbers (tfevent.proto, compiled here)."""

import glob
import importlib
import os
import struct
import subprocess
import sys

import crc32c

HERE = os.path.dirname(os.path.abspath(__file__))


def masked(data):
    c = crc32c.crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    """Every record's data; asserts both CRCs and that nothing trails."""
    out = []
    with open(path, "rb") as f:
        blob = f.read()
    pos = 0
    while pos < len(blob):
        header = blob[pos:pos + 8]
        assert len(header) == 8, f"truncated length at byte {pos}"
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        assert length_crc == masked(header), f"length CRC at byte {pos}"
        data = blob[pos + 12:pos + 12 + length]
        assert len(data) == length, f"truncated record at byte {pos}"
        (data_crc,) = struct.unpack(
            "<I", blob[pos + 12 + length:pos + 16 + length])
        assert data_crc == masked(data), f"data CRC at byte {pos}"
        out.append(data)
        pos += 16 + length
    return out


def event_class(scratch):
    out = os.path.join(scratch, "tfevent")
    os.makedirs(out, exist_ok=True)
    subprocess.run(["protoc", f"--proto_path={HERE}", f"--python_out={out}",
                    "tfevent.proto"], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("tfevent_pb2").Event


def test_the_event_file_reads_back(finished, scratch):
    job, events = finished
    dest = os.path.join(scratch, "tb")
    cp = job.download(dest, checkpoint="latest")
    files = glob.glob(os.path.join(dest, "runs", "*tfevents*"))
    assert len(files) == 1, os.listdir(dest)
    assert any(f.name.startswith("runs/") for f in cp.files)
    Event = event_class(scratch)
    decoded = []
    for data in read_records(files[0]):
        e = Event()
        e.ParseFromString(data)
        decoded.append(e)
    assert decoded[0].file_version == "brain.Event:2"
    scalars = {}
    for e in decoded[1:]:
        assert e.wall_time > 1.6e9  # seconds since 1970, this decade
        for v in e.summary.value:
            scalars.setdefault(v.tag, []).append((e.step, v.simple_value))
    # Every training report of the run, in order, with its loss.
    train = [(ev.train.step, ev.train.loss) for ev in events
             if ev.HasField("train") and ev.train.step > 0]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in train]
    for (_, got), (_, want) in zip(scalars["train/loss"], train):
        assert abs(got - want) <= 1e-5 * max(1.0, abs(want))
    assert "train/learning_rate" in scalars
    # The last evaluation is the job's reported metrics.
    step, acc = scalars["eval/accuracy"][-1]
    assert step == cp.step
    assert abs(acc - job.eval_metrics["accuracy"]) < 1e-6
