"""`osos modbus maps/decode` and `osos decode --protocol modbus` (covers HES-13 raw vs parsed, HES-40)."""

from __future__ import annotations

import json
import struct

from typer.testing import CliRunner

from osos.cli.main import app
from osos.protocols import modbus as M

runner = CliRunner()


def rtu(frame: bytes) -> bytes:
    """Append the CRC computed by pymodbus (an independent implementation of CRC-16/MODBUS)."""
    from pymodbus.framer import FramerRTU

    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def test_crc_matches_the_published_example() -> None:
    # the read-holding-registers request 01 03 00 00 00 0A is sent with CRC bytes C5 CD
    assert M.crc16_modbus(bytes.fromhex("01030000000A")).to_bytes(2, "little") == bytes.fromhex("C5CD")


def test_maps_lists_sources() -> None:
    out = runner.invoke(app, ["modbus", "maps"])
    assert out.exit_code == 0
    assert "eastron-sdm630" in out.stdout and "carlo-gavazzi-em21" in out.stdout
    assert "2008-04-07" in out.stdout  # EM21 protocol V1R0 date


def test_decode_rtu_response_with_map_names_the_words() -> None:
    raw = struct.pack(">ff", 230.1, 229.8)  # SDM630 30001/30003, float32 ABCD
    frame = rtu(bytes([7, 4, len(raw)]) + raw)
    out = runner.invoke(app, ["modbus", "decode", "--map", "eastron-sdm630", "--address", "0x0000", "--hex"],
                        input=frame.hex())
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["framing"] == "rtu" and doc["unit"] == 7 and doc["function"] == 4
    assert doc["values"] == {"voltage_l1_n": "230.1", "voltage_l2_n": "229.8"}


def test_decode_tcp_response_through_osos_decode() -> None:
    pdu = bytes.fromhex("0306022B00000064")  # Modbus spec example: 555, 0, 100
    mbap = (1).to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + b"\x11"
    out = runner.invoke(app, ["decode", "--protocol", "modbus"], input=mbap + pdu)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {"framing": "tcp", "unit": 17, "function": 3, "words": [555, 0, 100]}


def test_bad_frames_exit_2() -> None:
    frame = rtu(bytes([1, 4, 2, 0, 10]))
    broken = frame[:-1] + bytes([frame[-1] ^ 1])
    out = runner.invoke(app, ["decode", "--protocol", "modbus"], input=broken)
    assert out.exit_code == 2 and "CRC" in out.output
    out = runner.invoke(app, ["modbus", "decode", "--map", "nope", "--address", "0"], input=frame)
    assert out.exit_code == 2 and "unknown register map" in out.output
    exception = rtu(bytes([1, 0x84, 2]))
    out = runner.invoke(app, ["decode", "--protocol", "modbus"], input=exception)
    assert out.exit_code == 2 and "exception response" in out.output
