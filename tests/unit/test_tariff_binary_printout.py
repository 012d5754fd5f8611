"""Parameter printout (text and PDF) and the `osos tariff encode|decode|print` commands (TAX-5, TAX-9)."""

from __future__ import annotations

import io
import json
import struct

import pytest
from typer.testing import CliRunner

from osos.cli.main import app
from osos.tariff import binary
from osos.tariff.library import load_taxi_tariff
from osos.tariff.printout import activation_text, render_pdf, render_text


def _crc_bitwise(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _pdf_text(data: bytes) -> str:
    pypdf = pytest.importorskip("pypdf")  # test-only, BSD licence: an independent PDF reader
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def test_text_printout_lists_code_crc_parameters_tiers_and_activations() -> None:
    ts = load_taxi_tariff("berlin-2015")
    image = binary.encode(ts)
    crc = _crc_bitwise(image[:-2])  # S3 Fig. 4.29: the CRC over all loaded tariffs
    text = render_text(ts)
    lines = text.splitlines()
    assert all(len(line) <= 40 for line in lines)
    assert any(line.startswith("TARIFF CODE") and line.endswith("1101") for line in lines)
    assert any(line.startswith("CRC") and line.endswith(f"{crc:04X}") for line in lines)
    assert "TARIFF 1  Tarifstufe 1 (Kurzstrecke)" in lines
    assert any("OPENING FARE" in line and line.endswith("5.00") for line in lines)
    assert any("UNIT DISTANCE" in line and line.endswith("133.33 m") for line in lines)
    assert " k2000 DIST >= 2000 m -> TARIFF 2" in lines
    assert " N ALWAYS" in lines


def test_narrow_printer_width_is_respected() -> None:
    text = render_text(load_taxi_tariff("ireland-2015"), width=32)
    assert all(len(line) <= 32 for line in text.splitlines())


def test_unencodable_tariff_prints_without_crc_and_says_why() -> None:
    text = render_text(load_taxi_tariff("manchester-2023"))
    assert "CRC" in text and "----" in text
    assert "NOT IN S3 FORMAT" in text and "31.57" in text


def test_activation_text_in_s3_notation() -> None:
    ts = load_taxi_tariff("ireland-2015")
    special = ts.tariff("3")
    assert activation_text(special.activation) == "HN 24/12 20:00 - 26/12 08:00"
    assert activation_text(ts.tariff("1").activation).startswith("W MO 08:00-20:00 TU 08:00-20:00")
    sd = ts.tariff("2").also_active[3]
    assert activation_text(sd) == "SD 04/05/15-04/05/15 00:00-24:00"


def test_pdf_printout_contains_the_printed_text() -> None:
    ts = load_taxi_tariff("milan-2023")
    data = render_pdf(ts)
    assert data.startswith(b"%PDF-")
    text = _pdf_text(data)
    crc = _crc_bitwise(binary.encode(ts)[:-2])
    assert "TARIFF PARAMETERS" in text
    assert f"{crc:04X}" in text
    assert "prog2 SPEED > 50 km/h FOR 60 s" in text
    assert "Diurno festivo" in text


def test_cli_encode_decode_print_round_trip(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "tehran.bin"
    res = runner.invoke(app, ["tariff", "encode", "tehran-2015", "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data[:4] == b"S3TF" and struct.unpack("<H", data[-2:])[0] == _crc_bitwise(data[:-2])
    assert f"CRC {_crc_bitwise(data[:-2]):04X}" in res.output
    res = runner.invoke(app, ["tariff", "decode", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["tariff_code"] == 9821 and doc["currency"] == "IRR"
    assert [t["opening_fare"] for t in doc["tariffs"]] == ["32400", "38880"]
    pdf = tmp_path / "tehran.pdf"
    res = runner.invoke(app, ["tariff", "print", str(out), "--pdf", str(pdf)])
    assert res.exit_code == 0, res.output
    assert "TARIFF CODE" in res.output and "2901.6" in res.output
    assert "TARIFF CODE" in _pdf_text(pdf.read_bytes())
    res = runner.invoke(app, ["decode", "--protocol", "s3-tariff", str(out)])
    assert res.exit_code == 0 and json.loads(res.output)["tariff_code"] == 9821


def test_cli_reports_bad_input_with_exit_2(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["tariff", "encode", "manchester-2023", "-o", str(tmp_path / "m.bin")])
    assert res.exit_code == 2 and "unit_time_s = 31.57" in res.output
    assert not (tmp_path / "m.bin").exists()
    damaged = tmp_path / "bad.bin"
    good = binary.encode(load_taxi_tariff("ljubljana-2013"))
    damaged.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    res = runner.invoke(app, ["tariff", "decode", str(damaged)])
    assert res.exit_code == 2 and "CRC mismatch" in res.output
    res = runner.invoke(app, ["tariff", "print", "no-such-city-1999"])
    assert res.exit_code == 2
