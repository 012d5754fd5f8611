"""The gateway outbox: durable, ordered, bounded (HES-34 buffering while the broker is away)."""

from __future__ import annotations

import logging

import pytest

from osos.field.buffer import Outbox
from osos.field.readings import bcc_ok, split_frames
from osos.protocols import iec62056_21 as iec


def test_fifo_order_and_ack(tmp_path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    seqs = [box.put("t", f"m{i}".encode(), "read", f"r{i}") for i in range(5)]
    assert seqs == sorted(seqs)
    assert [q.reference_id for q in box.pending()] == ["r0", "r1", "r2", "r3", "r4"]
    box.ack(seqs[1])
    box.ack(seqs[1])  # a second PUBACK for the same message changes nothing
    assert [q.payload for q in box.pending()] == [b"m0", b"m2", b"m3", b"m4"]
    assert [q.reference_id for q in box.pending(after=seqs[2], limit=1)] == ["r3"]
    assert len(box) == 4


def test_survives_a_restart(tmp_path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.put("mass/device/X/1/to_server", b"payload", "alarm", "ref-1")
    box.close()
    again = Outbox(tmp_path / "o.sqlite3")
    (item,) = again.pending()
    assert (item.topic, item.payload, item.function, item.reference_id) == (
        "mass/device/X/1/to_server", b"payload", "alarm", "ref-1")
    assert len(again) == 1
    assert again.put("t", b"next", "read", "ref-2") > item.seq  # numbering continues after the restart
    assert len(again) == 2


def test_bounded_oldest_dropped_with_a_log_line(tmp_path, caplog) -> None:
    box = Outbox(tmp_path / "o.sqlite3", max_messages=3)
    with caplog.at_level(logging.WARNING, logger="osos.field.buffer"):
        for i in range(5):
            box.put("t", b"x", "read", f"r{i}")
    assert [q.reference_id for q in box.pending()] == ["r2", "r3", "r4"]
    assert box.dropped == 2 and len(box) == 3
    assert "dropped the 1 oldest" in caplog.text
    with pytest.raises(ValueError):
        Outbox(tmp_path / "p.sqlite3", max_messages=0)


def test_frame_splitting_and_bcc_check() -> None:
    a = iec.build_data_message("0.9.1(10:00:00)")
    b = iec.build_data_message("1.8.0(000001.000*kWh)")
    assert split_frames(a + iec.ACK + b) == [a, iec.ACK, b]
    assert bcc_ok(a + b)
    broken = a[:-1] + bytes([a[-1] ^ 1])
    assert not bcc_ok(broken + b)
    assert not bcc_ok(b"")


def test_urgent_lane_is_separate_and_ordered(tmp_path) -> None:  # covers HES-24
    box = Outbox(tmp_path / "o.sqlite3")
    box.put("t", b"a", "read", "n1")
    box.put("e", b"b", "alarm", "u1", urgent=True)
    box.put("t", b"c", "read", "n2")
    box.put("e", b"d", "alarm", "u2", urgent=True)
    assert [q.reference_id for q in box.pending(urgent=True)] == ["u1", "u2"]
    assert [q.reference_id for q in box.pending(urgent=False)] == ["n1", "n2"]
    assert [q.reference_id for q in box.pending()] == ["n1", "u1", "n2", "u2"]
    assert all(q.urgent for q in box.pending(urgent=True))
