"""HDLC framing for DLMS (IEC 62056-46) and the meter's sans-I/O link (covers HES-40, HES-42)."""

from __future__ import annotations

import datetime as dt

import pytest

from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter
from osos.field.meters.dlms_server import HdlcLink
from osos.protocols import dlms as D
from osos.protocols import dlms_hdlc as H

# The SNRM every DLMS HDLC trace starts with: public client 0x10 -> server 1, no parameters.
SNRM_PUBLIC = bytes.fromhex("7EA0070321930F017E")


def test_crc_x25_check_value() -> None:
    assert H.crc16(b"123456789") == 0x906E  # CRC-16/X-25 catalogue check value


def test_known_snrm_frame() -> None:
    f = H.parse_frame(SNRM_PUBLIC)
    assert (f.kind, f.destination, f.source, f.poll_final) == ("SNRM", 1, 16, True)
    assert H.u_frame((1, 1), (16, 1), H.SNRM).to_bytes() == SNRM_PUBLIC


@pytest.mark.parametrize(
    ("value", "size", "encoded"),
    [(16, 1, "21"), (1, 1, "03"), ((1 << 7) | 17, 2, "0223"), ((1 << 14) | 0x3FFF, 4, "0002FEFF")],
)
def test_address_encoding(value: int, size: int, encoded: str) -> None:
    assert H.encode_address(value, size) == bytes.fromhex(encoded)
    frame = H.HdlcFrame(value, 16, H.UA | H.PF, b"", False, size, 1).to_bytes()
    back = H.parse_frame(frame)
    assert (back.destination, back.destination_size) == (value, size)


def test_server_address_split() -> None:
    assert H.server_address(1) == (1, 1)
    assert H.server_address(1, 17) == ((1 << 7) | 17, 2)
    assert H.server_address(1, 0x1234) == ((1 << 14) | 0x1234, 4)


def test_i_frame_round_trip_with_sequence_numbers() -> None:
    f = H.i_frame((1, 1), (16, 1), ns=5, nr=3, info=H.LLC_REQUEST + b"\xc0\x01", segmented=True)
    back = H.parse_frame(f.to_bytes())
    assert (back.kind, back.ns, back.nr, back.segmented, back.information) == \
        ("I", 5, 3, True, H.LLC_REQUEST + b"\xc0\x01")
    assert f.to_bytes()[1] & 0x08  # segmentation bit in the format field


def test_corrupted_frames_raise_dlms_errors() -> None:
    good = H.i_frame((1, 1), (16, 1), 0, 0, b"\xe6\xe6\x00\xc0").to_bytes()
    bad_fcs = good[:-3] + bytes([good[-3] ^ 0xFF]) + good[-2:]
    with pytest.raises(D.DLMSError, match="FCS"):
        H.parse_frame(bad_fcs)
    bad_len = good[:2] + bytes([good[2] + 1]) + good[3:]
    with pytest.raises(D.DLMSError, match="length"):
        H.parse_frame(bad_len)
    with pytest.raises(D.DLMSError):
        H.parse_frame(b"\x7e\x7e")


def test_reader_splits_a_stream_with_noise_and_shared_flags() -> None:
    a = H.u_frame((1, 1), (16, 1), H.SNRM).to_bytes()
    b = H.rr_frame((16, 1), (1, 1), 2).to_bytes()
    stream = b"\x00\x55" + a + b[1:] + b"\x7e"  # noise, then b shares a's closing flag
    r = H.FrameReader()
    out = []
    for i in range(0, len(stream), 3):
        out += r.feed(stream[i : i + 3])
    assert [H.parse_frame(f).kind for f in out] == ["SNRM", "RR"]


def test_negotiation_round_trip() -> None:
    info = H.negotiation(128, 256, 1, 1)
    assert info[:3] == b"\x81\x80\x14"
    assert H.parse_negotiation(info) == {5: 128, 6: 256, 7: 1, 8: 1}
    with pytest.raises(D.DLMSError):
        H.parse_negotiation(b"\x81\x80\x05\x05\x02")


def _meter() -> SimulatedDlmsMeter:
    return SimulatedDlmsMeter(lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC), MeterSecrets(password=b"x" * 8))


def test_link_refuses_data_before_snrm_and_answers_disc() -> None:
    link = HdlcLink(_meter())
    out = link.on_frame(H.i_frame((1, 1), (16, 1), 0, 0, H.LLC_REQUEST + b"\x60\x00").to_bytes())
    assert H.parse_frame(out[0]).kind == "DM"
    ua = H.parse_frame(link.on_frame(SNRM_PUBLIC)[0])
    assert ua.kind == "UA" and (ua.destination, ua.source) == (16, 1)
    assert H.parse_negotiation(ua.information)[6] == 128
    assert H.parse_frame(link.on_frame(H.u_frame((1, 1), (16, 1), H.DISC).to_bytes())[0]).kind == "UA"


def test_link_ignores_other_logical_devices_and_corrupt_frames() -> None:
    link = HdlcLink(_meter())
    assert link.on_frame(H.u_frame((5, 1), (16, 1), H.SNRM).to_bytes()) == []
    assert link.on_frame(SNRM_PUBLIC[:-3] + b"\x00\x00\x7e") == []


def test_link_repeated_i_frame_gets_rr_with_expected_number() -> None:
    link = HdlcLink(_meter())
    link.on_frame(SNRM_PUBLIC)
    out = link.on_frame(H.i_frame((1, 1), (16, 1), ns=3, nr=0, info=H.LLC_REQUEST + b"\xc0").to_bytes())
    rr = H.parse_frame(out[0])
    assert rr.kind == "RR" and rr.nr == 0
