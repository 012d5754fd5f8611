"""IEC 62056-21 codec: frames from the standard's structure and published examples.

Expected BCCs are computed here independently (functools.reduce over XOR) or taken from
widely published captures; never from the codec under test.  # covers AMR-1, AMR-2, HES-27
"""

from __future__ import annotations

from functools import reduce

import pytest

from osos.protocols import iec62056_21 as iec

# MASS reference readout (erdem-aydemir/mass-simulator "rawData") and its identification.
MASS_RAW = "0.0.0(23660088)\r\n0.9.2(2021-06-22)\r\n0.9.1(10:18:42)\r\n1.8.0(0000004891.722)\r\n"
MASS_ID = b"/LGZ5\\2ZMG405000b.P07\r\n"


def xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


def test_bcc_of_break_command_is_the_published_0x71() -> None:
    # SOH 'B' '0' ETX BCC = 01 42 30 03 71, the sign-off seen in every IEC 62056-21 capture
    assert iec.break_command() == bytes.fromhex("0142300371")
    assert iec.bcc(b"\x01B0\x03") == 0x71


def test_password_p1_frame() -> None:
    # SOH P1 STX (00000000) ETX BCC; BCC = XOR of "P1" STX "(00000000)" ETX = 0x61 ('a')
    frame = iec.password("00000000")
    assert frame == b"\x01P1\x02(00000000)\x03a"
    assert frame[-1] == xor(frame[1:-1])


def test_sign_on_and_identification_mass_example() -> None:
    assert iec.sign_on() == b"/?!\r\n"
    assert iec.sign_on("12345678") == b"/?12345678!\r\n"
    assert iec.parse_sign_on(b"/?12345678!\r\n") == "12345678"
    ident = iec.parse_identification(MASS_ID)
    assert (ident.flag, ident.baud_char, ident.ident) == ("LGZ", "5", "ZMG405000b.P07")
    assert ident.enhanced == "2" and ident.mode == "E" and ident.baud == 9600
    assert iec.build_identification("LGZ", "5", "ZMG405000b.P07", "2") == MASS_ID


def test_ack_option_readout_at_9600_is_ack_0_5_0() -> None:
    # AMR-1: "ACK 0 5 0" = switch to 9600 baud, data readout
    assert iec.ack_option("5") == b"\x06050\r\n"
    opt = iec.parse_ack_option(b"\x06051\r\n")
    assert opt == iec.AckOption("0", "5", "programming")


def test_mass_readout_block_round_trip() -> None:
    frame = iec.build_data_block(MASS_RAW)
    body = b"\x02" + MASS_RAW.encode() + b"!\r\n\x03"
    assert frame == body + bytes([xor(body[1:])])
    block = iec.parse_data_block(frame)
    assert block.bcc_ok
    assert [ln.address for ln in block.lines] == ["0.0.0", "0.9.2", "0.9.1", "1.8.0"]
    assert block.lines[3].values == (iec.DataValue("0000004891.722", None),)


def test_decode_to_json_full_capture() -> None:
    capture = (
        iec.sign_on() + MASS_ID + iec.ack_option("5") + iec.build_data_block(MASS_RAW) + iec.break_command()
    )
    out = iec.decode_to_json(capture)
    assert out["identification"]["flag"] == "LGZ"
    assert out["identification"]["baud"] == 9600
    assert out["identification"]["ident"] == "ZMG405000b.P07"
    assert out["registers"]["1.8.0"] == {"value": "0000004891.722", "unit": None}
    assert out["registers"]["0.9.1"]["value"] == "10:18:42"
    assert out["bcc_ok"] is True


def test_decode_to_json_bcc_mismatch_is_an_error() -> None:
    frame = bytearray(iec.build_data_block(MASS_RAW))
    frame[-1] ^= 0x01
    with pytest.raises(iec.BCCError):
        iec.decode_to_json(bytes(frame))
