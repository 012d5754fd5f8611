"""Wired M-Bus frames and records built from the rules of EN 13757-2/-3 (covers HES-40, HES-38).

Expected values are computed here from the standard's field layouts (checksum = byte sum of C..data,
DIF/DIFE bit positions, type F/G date bits, BCD sign nibble), not taken from the decoder's output.
"""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from osos.cli.main import app
from osos.protocols import mbus
from osos.protocols.mbus import MBusApplicationError, MBusError
from osos.protocols.mbus_records import decode_records


def long_frame(c: int, a: int, ci: int, data: bytes) -> bytes:
    body = bytes([c, a, ci]) + data
    return bytes([0x68, len(body), len(body), 0x68]) + body + bytes([sum(body) & 0xFF, 0x16])


HEADER = bytes.fromhex("78563412" "2D2C" "01" "07" "55" "00" "0000")  # id 12345678, KAM, v1, water


def test_single_character_ack() -> None:
    assert mbus.decode(b"\xe5").frame.function == "ACK"


@pytest.mark.parametrize("c,a,name", [(0x40, 5, "SND_NKE"), (0x5B, 1, "REQ_UD2"), (0x7B, 254, "REQ_UD2")])
def test_short_frames(c: int, a: int, name: str) -> None:
    frame = bytes([0x10, c, a, (c + a) & 0xFF, 0x16])
    t = mbus.decode(frame)
    assert (t.frame.kind, t.frame.function, t.frame.a) == ("short", name, a)


def test_secondary_address_selection_frame() -> None:
    # SND_UD to address 253 with CI 52h: id 12345678, manufacturer KAM (2C2D), version 1, water
    frame = long_frame(0x53, 0xFD, 0x52, bytes.fromhex("78563412" "2D2C" "01" "07"))
    t = mbus.decode(frame)
    assert t.frame.address == "secondary (253)"
    assert t.header is not None
    assert (t.header.id, t.header.manufacturer, t.header.version, t.header.medium) == ("12345678", "KAM", 1, 7)
    assert t.header.secondary_address == "123456782D2C0107"


def test_manufacturer_letters() -> None:
    # KAM: K=11, A=1, M=13 -> 11*1024 + 1*32 + 13 = 0x2C2D
    frame = long_frame(0x08, 1, 0x72, HEADER)
    assert mbus.decode(frame).header.manufacturer == "KAM"


def test_records_storage_tariff_subunit() -> None:
    # DIF CCh: ext, storage LSB 1, BCD 8 digits; DIFE 51h: storage bits 1.. = 1, tariff 1, subunit 1
    data = HEADER + bytes.fromhex("CC51" "13" "78563412")
    t = mbus.decode(long_frame(0x08, 1, 0x72, data))
    r = t.records[0]
    assert (r.storage, r.tariff, r.subunit) == (1 | (1 << 1), 1, 1)
    assert (r.quantity, r.unit, r.value) == ("Volume", "m^3", Decimal("12345.678"))


def test_function_field() -> None:
    data = HEADER + bytes.fromhex("01 2B 05" "11 2B 06" "21 2B 07" "31 2B 08")
    records = mbus.decode(long_frame(0x08, 1, 0x72, data)).records
    assert [r.function for r in records] == ["instantaneous", "maximum", "minimum", "error"]
    assert [r.value for r in records] == [5, 6, 7, 8]


def test_integer_real_and_negative_bcd() -> None:
    real = struct.pack("<f", 1.5)
    payload = bytes.fromhex("02 2B 18FC") + b"\x05\x2b" + real + bytes.fromhex("0C 13 123456F0")
    records, more = decode_records(payload)
    assert not more
    assert records[0].value == -1000  # 0xFC18 signed
    assert records[1].value == Decimal("1.5") and records[1].data_type == "real"
    assert records[2].value == Decimal("-563.412")  # F in the top nibble = minus


def test_corrections_and_plain_text_vif() -> None:
    # VIF 93h (m3 1e-3) + VIFE 75h (x 10^(5-6)); plain-text VIF "%RH" (sent reversed) + VIFE 74h
    payload = bytes.fromhex("04 93 75 10270000" "01 FC 03 485225 74 37")
    records, _ = decode_records(payload)
    assert records[0].value == Decimal("1")  # 10000 * 0.001 * 0.1
    assert (records[1].quantity, records[1].value) == ("%RH", Decimal("0.55"))


def test_fd_fb_tables_and_text() -> None:
    payload = bytes.fromhex("02 FD 48 DC08" "0D FD 0C 03 434241" "04 FB 00 01000000")
    records, _ = decode_records(payload)
    assert (records[0].quantity, records[0].unit, records[0].value) == ("Voltage", "V", Decimal("226.8"))
    assert (records[1].quantity, records[1].value, records[1].data_type) == ("Model / Version", "ABC", "text")
    assert (records[2].quantity, records[2].value) == ("Energy", 100000)  # FBh 00h: 0.1 MWh units


def test_type_f_and_g_dates() -> None:
    year, month, day, hour, minute = 24, 3, 15, 13, 45
    f = bytes([minute, hour, day | ((year & 7) << 5), month | ((year >> 3) << 4)])
    g = bytes([day | ((year & 7) << 5), month | ((year >> 3) << 4)])
    records, _ = decode_records(b"\x04\x6d" + f + b"\x02\x6c" + g + b"\x04\x6d" + bytes([0x80, 0, 0, 0]))
    assert records[0].value == "2024-03-15T13:45:00"
    assert records[1].value == "2024-03-15"
    assert records[2].value is None  # IV bit: time invalid


def test_manufacturer_block_and_more_records() -> None:
    records, more = decode_records(bytes.fromhex("2F 01 2B 01 1F AABB"))
    assert more and records[-1].function == "more_records" and records[-1].value == "AABB"
    records, more = decode_records(bytes.fromhex("0F 0102"))
    assert not more and records[0].function == "manufacturer" and records[0].raw == b"\x01\x02"


@pytest.mark.parametrize("frame,reason", [
    (bytes.fromhex("1040054616"), "checksum"),
    (bytes.fromhex("1040054517"), "stop byte"),
    (bytes.fromhex("68030468"), "L fields"),
    (long_frame(0x08, 1, 0x72, HEADER)[:-1], "premature end"),
    (long_frame(0x08, 1, 0x72, HEADER) + b"\x00", "after the end"),
    (long_frame(0x08, 1, 0x72, HEADER)[:-2] + b"\x00\x16", "checksum"),
    (long_frame(0x08, 1, 0x99, b""), "unsupported CI"),
    (long_frame(0x08, 1, 0x72, HEADER + bytes.fromhex("0D 13 CA")), "reserved LVAR"),
    (long_frame(0x08, 1, 0x72, HEADER + bytes.fromhex("3F 13")), "reserved special-function DIF"),
    (b"\x42", "unknown start byte"),
    (long_frame(0x08, 1, 0x73, bytes(5)), "fixed data structure needs 16 bytes"),
])
def test_malformed_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(MBusError, match=reason) as info:
        mbus.decode(frame)
    assert info.value.position is not None


def test_application_error_code() -> None:
    with pytest.raises(MBusApplicationError) as info:
        mbus.decode(long_frame(0x08, 1, 0x70, b"\x03"))
    assert info.value.code == 3 and "Too many records" in info.value.reason


def test_read_input_hex_and_raw() -> None:
    frame = long_frame(0x08, 1, 0x72, HEADER)
    assert mbus.read_input(frame.hex(" ").upper().encode() + b"\r\n") == frame
    assert mbus.read_input(frame) == frame


runner = CliRunner()


def test_cli_decode_mbus(tmp_path) -> None:
    path = tmp_path / "frame.hex"
    path.write_text(long_frame(0x08, 1, 0x72, HEADER + bytes.fromhex("0C13 78563412")).hex(" "))
    result = runner.invoke(app, ["decode", "--protocol", "mbus", str(path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["header"]["id"] == "12345678" and out["header"]["manufacturer"] == "KAM"
    assert out["records"] == [{"value": "12345.678", "unit": "m^3", "function": "instantaneous", "storage": 0,
                               "tariff": 0, "subunit": 0, "vif": "13", "description": "Volume", "type": "bcd"}]


def test_cli_bad_input_exits_2(tmp_path) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes.fromhex("68 03 03 68 08 01 70 79 16"))
    result = runner.invoke(app, ["decode", "--protocol", "mbus", str(path)])
    assert result.exit_code == 2
    assert "application error" in result.output and len(result.output.strip().splitlines()) == 1
