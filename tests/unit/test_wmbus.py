"""wM-Bus link, transport and security layers (covers HES-40).

The reference telegram is the mode-5 example of OMS Vol.2 Annex N (also EN 13757-3:2003 Table P.1):
Elster gas meter 12345678, key 01 02 .. 0F 11, plaintext 2F2F 0C14 27048502 (28504.27 m3) 046D
32371F15 (2008-05-31 23:50) 02FD17 0000 (error flags 0). Its format-A form carries published CRCs.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from osos.protocols import wmbus
from osos.protocols.wmbus import WMBusError, crc16_en13757

OMS = bytes.fromhex(
    "2E4493157856341233037A2A0020055923C95AAA26D1B2E7493B013EC4A6F6D3529B520EDFF0EA6DEFC99D6D69EBF3"
)
OMS_A = bytes.fromhex(
    "2E44931578563412330333637A2A0020055923C95AAA26D1B2E7493B2A8B013EC4A6F6D3529B520EDFF0EA6DEFC9"
    "55B29D6D69EBF3EC8A"
)
OMS_PLAIN = bytes.fromhex(
    "2E4493157856341233037A2A0000002F2F0C1427048502046D32371F1502FD1700002F2F2F2F2F2F2F2F2F2F2F2F2F"
)
KEY = bytes.fromhex("0102030405060708090A0B0C0D0E0F11")


def _check_oms(t: wmbus.WMBusTelegram) -> None:
    assert (t.header.manufacturer, t.header.id, t.header.version, t.header.medium) == ("ELS", "12345678", 0x33, 3)
    assert t.c == 0x44 and t.function == "SND_NR" and t.ci == 0x7A
    assert t.access_number == 0x2A and t.status == 0
    volume = t.records[0]
    assert (volume.quantity, volume.unit, volume.data_type) == ("Volume", "m^3", "bcd")
    assert volume.value == Decimal("28504.27")
    assert t.records[1].value == "2008-05-31T23:50:00"
    assert (t.records[2].quantity, t.records[2].value) == ("Error flags", 0)


def test_crc_check_value() -> None:
    # CRC-16/EN-13757 catalogue check value for "123456789"
    assert crc16_en13757(b"123456789") == 0xC2B7


def test_oms_mode5_without_crcs() -> None:
    t = wmbus.decode(OMS, KEY)
    assert (t.configuration, t.security_mode, t.frame_format) == (0x0520, 5, "none")
    _check_oms(t)


def test_oms_mode5_format_a_crcs_checked() -> None:
    t = wmbus.decode(OMS_A, KEY)
    assert t.frame_format == "A"
    _check_oms(t)


def test_oms_unencrypted_variant() -> None:
    t = wmbus.decode(OMS_PLAIN)
    assert t.security_mode == 0
    _check_oms(t)


@pytest.mark.parametrize("index", [10, 11, 28, 29, 46, 47, len(OMS_A) - 1])
def test_corrupted_crc_is_an_error(index: int) -> None:
    bad = bytearray(OMS_A)
    bad[index] ^= 0x01
    with pytest.raises(WMBusError, match="CRC error"):
        wmbus.decode(bytes(bad), KEY, frame_format="A")
    with pytest.raises(WMBusError, match="CRC error"):
        wmbus.decode(bytes(bad), KEY)


def test_corrupted_data_in_crc_frame_is_an_error() -> None:
    bad = bytearray(OMS_A)
    bad[20] ^= 0x80  # inside block 2's ciphertext
    with pytest.raises(WMBusError, match="CRC error in block 2"):
        wmbus.decode(bytes(bad), KEY)


def test_format_b_crcs() -> None:
    # build format B from the plaintext telegram: L counts the CRC, which covers blocks 1+2
    body = bytearray(OMS_PLAIN)
    body[0] = len(body) - 1 + 2
    crc = crc16_en13757(bytes(body))
    frame = bytes(body) + crc.to_bytes(2, "big")
    t = wmbus.decode(frame, frame_format="B")
    assert t.frame_format == "B"
    _check_oms(t)
    assert wmbus.decode(frame).frame_format == "B"
    broken = bytearray(frame)
    broken[-1] ^= 0xFF
    with pytest.raises(WMBusError, match="CRC error"):
        wmbus.decode(bytes(broken), frame_format="B")


def test_wrong_key_is_reported() -> None:
    with pytest.raises(WMBusError, match="wrong key") as info:
        wmbus.decode(OMS, bytes(16))
    assert info.value.position == 15


def test_missing_key_is_reported_or_header_only() -> None:
    with pytest.raises(WMBusError, match="key is needed"):
        wmbus.decode(OMS)
    t = wmbus.decode(OMS, allow_encrypted=True)
    assert t.encrypted and t.records == [] and t.header.id == "12345678"


def test_bad_key_length() -> None:
    with pytest.raises(WMBusError, match="16 bytes"):
        wmbus.decode(OMS, b"\x01" * 15)


def test_long_transport_header_sets_address() -> None:
    # CI 72h: id 87654321, manufacturer ELS, version 1, water (07) behind a repeater's link address
    link = bytes.fromhex("1944" "9315" "78563412" "33" "03")
    tpl = bytes.fromhex("72" "21436587" "9315" "01" "07" "10" "00" "0000")
    app = bytes.fromhex("0413" "39300000")  # 12345 l
    frame = bytearray(link + tpl + app)
    frame[0] = len(frame) - 1
    t = wmbus.decode(bytes(frame))
    assert (t.header.id, t.header.medium, t.link.id) == ("87654321", 7, "12345678")
    assert t.records[0].value == Decimal("12.345") and t.records[0].unit == "m^3"


@pytest.mark.parametrize("raw,reason", [
    (b"", "too short"),
    (bytes.fromhex("0A4493157856341233037A"), "short transport header"),
    (bytes.fromhex("0B44931578563412330379AA"), "compact frame"),
    (bytes.fromhex("0B449315785634123303A0AA"), "unsupported CI"),
    (OMS[:-1], "L field"),
])
def test_bad_telegrams(raw: bytes, reason: str) -> None:
    with pytest.raises(WMBusError, match=reason):
        wmbus.decode(raw)


def test_decode_to_json_hex_text() -> None:
    out = wmbus.decode_to_json(OMS.hex(" ").encode() + b"\n", KEY)
    assert out["header"]["manufacturer"] == "ELS" and out["header"]["id"] == "12345678"
    assert out["header"]["device_type"] == "gas"
    assert out["records"][0] == {
        "value": "28504.27", "unit": "m^3", "function": "instantaneous", "storage": 0, "tariff": 0,
        "subunit": 0, "vif": "14", "description": "Volume", "type": "bcd",
    }


def test_cli_decode_wmbus_with_key(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from osos.cli.main import app

    path = tmp_path / "oms.hex"
    path.write_text(OMS.hex())
    runner = CliRunner()
    ok = runner.invoke(app, ["decode", "--protocol", "wmbus", "--key", KEY.hex(), str(path)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["records"][0]["value"] == "28504.27"
    wrong = runner.invoke(app, ["decode", "--protocol", "wmbus", "--key", "00" * 16, str(path)])
    assert wrong.exit_code == 2 and "wrong key" in wrong.output
