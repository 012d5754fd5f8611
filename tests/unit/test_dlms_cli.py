"""`osos decode --protocol dlms` (covers HES-13: raw and parsed shown apart, HES-40)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from osos.cli.main import app

GB_CIPHERED = "C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B"  # Green Book ed.7
GB_KEYS = "4D4D4D0000BC614E" "000102030405060708090A0B0C0D0E0F" "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"


def test_decode_ciphered_binary_file_with_title_and_keys(tmp_path: Path) -> None:
    f = tmp_path / "glo.bin"
    f.write_bytes(bytes.fromhex(GB_CIPHERED))
    res = CliRunner().invoke(app, ["decode", "--protocol", "dlms", "--key", GB_KEYS, str(f)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["apdu"] == "glo-get-request"
    assert out["invocation_counter"] == 0x01234567
    assert out["authenticated"] is True
    assert out["decrypted"]["attribute"] == {"class_id": 8, "obis": "0-0:1.0.0.255", "index": 2}


def test_decode_hex_text_hdlc_frame(tmp_path: Path) -> None:
    f = tmp_path / "snrm.hex"
    f.write_text("7E A0 07 03 21 93 0F 01 7E\n")
    res = CliRunner().invoke(app, ["decode", "--protocol", "dlms", str(f)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"apdu": None, "transport": "hdlc", "frame": "SNRM", "destination": 1,
                                      "source": 16, "segmented": False}


def test_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.bin"
    f.write_bytes(bytes.fromhex("C401C1000600"))  # double-long-unsigned cut after 1 byte
    res = CliRunner().invoke(app, ["decode", "--protocol", "dlms", str(f)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "double_long_unsigned" in lines[0]


def test_wrong_key_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "glo.bin"
    f.write_bytes(bytes.fromhex(GB_CIPHERED))
    res = CliRunner().invoke(app, ["decode", "--protocol", "dlms", "--key", GB_KEYS[:-2] + "00", str(f)])
    assert res.exit_code == 2
    assert "authentication tag" in res.output
