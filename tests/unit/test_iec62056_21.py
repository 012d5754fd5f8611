"""IEC 62056-21 codec against published frames and independently computed BCCs.

Sources of expected values (never the codec's own output):
- LEM EM4TII+ manual V1.0 (2020), sections 4.2.1 and 4.2.9 (an EMH-built meter): a complete
  readout and a programming session printed with their BCC characters.
- The MASS reference readout of erdem-aydemir/mass-simulator ("/LGZ5\\2ZMG405000b.P07").
- S1 (Fırat Univ. thesis 2019): "ACK 050" option select, table 3.7 value formats.
- BCCs recomputed here with functools.reduce over XOR.
# covers AMR-1, AMR-2, AMR-5, HES-27, HES-44, HES-45, HES-46
"""

from __future__ import annotations

from datetime import datetime
from functools import reduce

import pytest

from osos.protocols import iec62056_21 as iec
from osos.protocols.errors import DecodeError

MASS_RAW = "0.0.0(23660088)\r\n0.9.2(2021-06-22)\r\n0.9.1(10:18:42)\r\n1.8.0(0000004891.722)\r\n"
MASS_ID = b"/LGZ5\\2ZMG405000b.P07\r\n"

# LEM EM4TII+ manual, 4.2.9 example 1: readout table 1, printed as "... !<CR><LF><ETX>+"
EM4_ID = b"/EMH5\\@D4EM4TIIW001--\r\n"
EM4_LINES = [
    "1-0:1.8.0*255(000000000.0*kWh)", "1-0:2.8.0*255(000000000.0*kWh)",
    "1-0:3.8.0*255(000000000.0*kvarh)", "1-0:4.8.0*255(000000000.0*kvarh)",
    "0-0:F.F.0*255(00000000)", "1-0:0.0.1*255()", "1-0:0.2.0*255(10600000)",
    "1-0:0.9.1*255(140253)", "1-0:0.9.2*255(121221)", "0-0:C.1.0*255(03878504)",
    "0-0:C.72.1*255()", "0-0:C.72.2*255()", "1-0:0.8.4*255(5*min)", "1-0:0.3.0*255(6.00*Imp/kWh)",
    "1-0:0.2.1*1(121120??)", "1-0:0.2.1*50(121120??)", "0-0:C.90.2*255(9F139CC2)",
    "1-0:C.1.9*255(Point-ID)",
]
EM4_BLOCK = b"\x02" + "".join(ln + "\r\n" for ln in EM4_LINES).encode() + b"!\r\n\x03+"


def xor(data: bytes) -> int:
    return reduce(lambda a, b: a ^ b, data, 0)


# ------------------------------------------------------------------------------------- BCC


def test_published_em4tii_readout_block_bcc_is_plus() -> None:
    assert xor(EM4_BLOCK[1:-1]) == ord("+")  # the manual's BCC agrees with plain XOR
    assert iec.bcc(EM4_BLOCK[:-1]) == ord("+")
    assert iec.build_data_block("\r\n".join(EM4_LINES)) == EM4_BLOCK
    block = iec.parse_data_block(EM4_BLOCK)
    assert block.bcc_ok and block.bcc == ord("+")
    assert [iec.format_data_line(ln) for ln in block.lines] == EM4_LINES


@pytest.mark.parametrize(
    ("frame", "published_bcc"),
    [
        (b"\x01P0\x02()\x03", "`"),
        (b"\x01P1\x02(00000000)\x03", "a"),
        (b"\x01R5\x020.9.2()\x03", "\\"),
        (b"\x01R5\x020.9.1()\x03", "_"),
        (b"\x01W5\x021-0:0.9.129*255(1301031605000002)(00000000)\x03", "^"),
        (b"\x02" + b"0.9.2(130103)\x03", "9"),
        (b"\x02" + b"0.9.1(101415)\x03", ":"),
        (b"\x01B0\x03", "q"),
    ],
)
def test_published_em4tii_programming_bccs(frame: bytes, published_bcc: str) -> None:
    assert xor(frame[1:]) == ord(published_bcc)
    assert iec.bcc(frame) == ord(published_bcc)


def test_bcc_starts_after_first_soh_or_stx_and_stops_at_etx() -> None:
    assert iec.bcc(b"\x01AB\x02C\x03trailing") == xor(b"AB\x02C\x03")
    assert iec.bcc(b"noise\x02XY\x04") == xor(b"XY\x04")
    assert iec.bcc(b"XY") == xor(b"XY")  # no start char: whole body


def test_programming_builders_reproduce_the_published_session() -> None:
    assert iec.build_command("P0", "()") == b"\x01P0\x02()\x03`"
    assert iec.password("00000000") == b"\x01P1\x02(00000000)\x03a"
    assert iec.read_request("0.9.2", command="R5") == b"\x01R5\x020.9.2()\x03\\"
    assert iec.break_command() == b"\x01B0\x03q"
    assert iec.write_request("1-0:0.9.129*255", "1301031605000002", "W5")[:-1] == (
        b"\x01W5\x021-0:0.9.129*255(1301031605000002)\x03"
    )
    assert iec.build_data_message("0.9.2(130103)") == b"\x020.9.2(130103)\x039"


# ------------------------------------------------------------------- sign-on / identification


def test_sign_on() -> None:
    assert iec.sign_on() == b"/?!\r\n"
    assert iec.sign_on("12345678") == b"/?12345678!\r\n"
    assert iec.parse_sign_on(b"/?!\r\n") == ""
    assert iec.parse_sign_on(b"/?12345678!\r\n") == "12345678"
    with pytest.raises(iec.IECError):
        iec.sign_on("a!b")
    with pytest.raises(iec.IECError):
        iec.parse_sign_on(b"/?123")


def test_mass_identification_mode_e() -> None:
    ident = iec.parse_identification(MASS_ID)
    assert (ident.flag, ident.baud_char, ident.ident) == ("LGZ", "5", "ZMG405000b.P07")
    assert ident.enhanced == "2" and ident.mode == "E" and ident.baud == 9600
    assert not ident.short_reaction
    assert iec.build_identification("LGZ", "5", "ZMG405000b.P07", "2") == MASS_ID


def test_em4tii_identification_with_non_hdlc_enhanced_char_is_mode_c() -> None:
    ident = iec.parse_identification(EM4_ID)
    assert ident == iec.Identification("EMH", "5", "D4EM4TIIW001--", "C", "@", 9600)


@pytest.mark.parametrize(
    ("line", "mode", "baud"),
    [
        (b"/ABC4METER\r\n", "C", 4800),
        (b"/ABC6METER\r\n", "C", 19200),
        (b"/ABC7METER\r\n", "C", 38400),  # AMR-1 optical port up to 38400
        (b"/ABCEMETER\r\n", "B", 9600),
        (b"/ABCAMETER\r\n", "B", 600),
        (b"/ABCGMETER\r\n", "B", None),  # reserved mode B character
        (b"/ABCZMETER\r\n", "A", None),  # mode A: no baud switch
    ],
)
def test_identification_modes(line: bytes, mode: str, baud: int | None) -> None:
    ident = iec.parse_identification(line)
    assert ident.mode == mode and ident.baud == baud


def test_short_reaction_flag() -> None:
    assert iec.parse_identification(b"/ABc5X\r\n").short_reaction
    assert not iec.parse_identification(b"/ABC5X\r\n").short_reaction


@pytest.mark.parametrize(
    ("line", "position"),
    [
        (b"ABC5X\r\n", 0),  # no '/'
        (b"/ABC5X", 5),  # no CRLF
        (b"/A1C5X\r\n", 2),  # flag not letters
        (b"/ABC5\\2\r\n", 7),  # enhanced id but no ident after it
        (b"/ABC5\\2X\x07\r\n", 8),  # control character after an escape sequence
        (b"/ABC5\r\n", 5),  # no ident
        (b"/ABC5\\\r\n", 5),  # dangling escape
        (b"/ABC5X\x80\r\n", 6),  # not 7-bit
        (b"/ABC5X/Y\r\n", 6),  # '/' not allowed in ident
    ],
)
def test_bad_identification_positions(line: bytes, position: int) -> None:
    with pytest.raises(iec.IECError) as err:
        iec.parse_identification(line)
    assert err.value.position == position
    assert err.value.reason


def test_baud_rate_characters() -> None:
    assert iec.BAUD_RATES["0"] == 300 and iec.BAUD_RATES["5"] == 9600 and iec.BAUD_RATES["6"] == 19200
    assert iec.baud_char_for(9600) == "5"
    assert iec.baud_char_for(9600, mode="B") == "E"
    assert iec.baud_char_for(38400) == "7"
    with pytest.raises(iec.IECError):
        iec.baud_char_for(115200)


def test_ack_option_s1_ack_050() -> None:
    # S1: "ACK 050" = continue at 9600 Bd (Z = 5) with a data readout (Y = 0)
    assert iec.ack_option("5") == b"\x06050\r\n"
    assert iec.ack_option("5", "programming") == b"\x06051\r\n"
    assert iec.ack_option("5", "binary", protocol_char="2") == b"\x06252\r\n"
    assert iec.parse_ack_option(b"\x06051\r\n") == iec.AckOption("0", "5", "programming")
    assert iec.parse_ack_option(b"\x06056\r\n").option == "manufacturer"
    with pytest.raises(iec.IECError):
        iec.parse_ack_option(b"\x06050")
    with pytest.raises(iec.IECError):
        iec.ack_option("5", "dance")


# ---------------------------------------------------------------------------------- data lines


def test_data_line_keeps_digits_exactly_s1_format() -> None:
    # S1 table 3.7: energy with 3 decimals and leading zeros, "015214.234*kWh"
    line = iec.parse_data_line("1.8.0(015214.234*kWh)")
    assert line == iec.DataLine("1.8.0", (iec.DataValue("015214.234", "kWh"),))
    assert iec.format_data_line(line) == "1.8.0(015214.234*kWh)"


def test_max_demand_line_has_two_value_groups() -> None:
    line = iec.parse_data_line("1.6.0(00.123*kW)(21-06-22 10:15)")
    assert line.address == "1.6.0"
    assert line.values == (iec.DataValue("00.123", "kW"), iec.DataValue("21-06-22 10:15", None))


def test_empty_value_unit_and_address() -> None:
    assert iec.parse_data_line("1-0:0.0.1*255()").values == (iec.DataValue("", None),)
    assert iec.parse_data_line("C.1.0(1*)").values == (iec.DataValue("1", ""),)
    assert iec.parse_data_line("(ER02)") == iec.DataLine("", (iec.DataValue("ER02"),))


def test_several_data_sets_on_one_line() -> None:
    lines = iec.parse_data_lines("1.8.1(1*kWh)1.8.2(2*kWh)\r\n")
    assert [ln.address for ln in lines] == ["1.8.1", "1.8.2"]
    with pytest.raises(iec.IECError):
        iec.parse_data_line("1.8.1(1*kWh)1.8.2(2*kWh)")


def test_mass_raw_data_without_units_and_lf_only() -> None:
    lines = iec.parse_data_lines(MASS_RAW.replace("\r\n", "\n"))
    assert [(ln.address, ln.value, ln.unit) for ln in lines] == [
        ("0.0.0", "23660088", None), ("0.9.2", "2021-06-22", None),
        ("0.9.1", "10:18:42", None), ("1.8.0", "0000004891.722", None),
    ]


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("1.8.0", 5),  # no value group
        ("1.8.0(12", 5),  # unclosed
        ("1.8.0(1*k*W)", 9),  # second '*'
        ("1.8.0(1)x", 9),  # address without group
        ("1.8\x070(1)", 3),  # control char
        ("", 0),
    ],
)
def test_bad_data_lines(text: str, position: int) -> None:
    with pytest.raises(iec.IECError) as err:
        iec.parse_data_line(text)
    assert err.value.position == position


# ---------------------------------------------------------------------------------- data block


def test_mass_readout_block() -> None:
    frame = iec.build_data_block(MASS_RAW)
    body = b"\x02" + MASS_RAW.encode() + b"!\r\n\x03"
    assert frame == body + bytes([xor(body[1:])])
    block = iec.parse_data_block(frame)
    assert block.bcc_ok
    assert block.lines[3].values == (iec.DataValue("0000004891.722", None),)
    assert iec.build_data_block(block.lines) == frame


def test_bcc_mismatch() -> None:
    bad = EM4_BLOCK[:-1] + b"-"
    with pytest.raises(iec.BCCError) as err:
        iec.parse_data_block(bad)
    assert err.value.expected == ord("+") and err.value.actual == ord("-")
    assert err.value.position == len(bad) - 1
    relaxed = iec.parse_data_block(bad, verify_bcc=False)
    assert relaxed.bcc_ok is False and len(relaxed.lines) == len(EM4_LINES)


@pytest.mark.parametrize(
    "frame",
    [
        b"1.8.0(1)\r\n!\r\n\x03\x00",  # no STX
        b"\x021.8.0(1)\r\n!\r\n",  # no ETX
        b"\x021.8.0(1)\r\n!\r\n\x03",  # no BCC
        b"\x021.8.0(1)\r\n\x03" + bytes([xor(b"1.8.0(1)\r\n\x03")]),  # no '!' end line
        b"\x021.8.0(1)!\r\n\x03" + bytes([xor(b"1.8.0(1)!\r\n\x03")]),  # '!' not on its own line
        b"\x021.8.0(1)\r\n!\r\n\x03" + bytes([xor(b"1.8.0(1)\r\n!\r\n\x03")]) + b"x",  # trailing
    ],
)
def test_bad_blocks(frame: bytes) -> None:
    with pytest.raises(iec.IECError):
        iec.parse_data_block(frame)


def test_empty_readout_block() -> None:
    frame = iec.build_data_block([])
    assert frame == b"\x02!\r\n\x03" + bytes([xor(b"!\r\n\x03")])
    assert iec.parse_data_block(frame).lines == ()


# ---------------------------------------------------------------------------- programming mode


def test_command_round_trip_and_b0_forms() -> None:
    assert iec.parse_command(iec.password("secret")) == iec.Command("P1", "(secret)")
    assert iec.parse_command(b"\x01B0\x03q") == iec.Command("B0", "")
    with_data = b"\x01B0\x02()\x03"
    assert iec.parse_command(with_data + bytes([xor(with_data[1:])])) == iec.Command("B0", "()")
    partial = iec.build_command("W2", "C.1.0(12)", final=False)
    assert partial[-2] == 0x04 and partial[-1] == xor(partial[1:-1])
    assert iec.parse_command(partial).final is False


@pytest.mark.parametrize("command", ["X1", "P9", "R0", "B5", "R", "R12"])
def test_unknown_commands(command: str) -> None:
    with pytest.raises(iec.IECError):
        iec.build_command(command, "1.8.0()")


def test_meter_replies() -> None:
    assert iec.parse_reply(iec.ACK) == "ACK"
    assert iec.parse_reply(iec.NAK) == "NAK"
    assert iec.parse_reply(iec.build_data_message("(ER04)")) == iec.MeterErrorReply("ER04")
    msg = iec.parse_reply(b"\x020.9.1(101415)\x03:")
    assert isinstance(msg, iec.DataMessage)
    assert msg.lines[0] == iec.DataLine("0.9.1", (iec.DataValue("101415"),)) and msg.error is None
    p0 = iec.parse_reply(b"\x01P0\x02()\x03`")
    assert p0 == iec.Command("P0", "()")
    with pytest.raises(iec.BCCError):
        iec.parse_reply(b"\x020.9.1(101415)\x03;")


# ------------------------------------------------------------------------------- load profile


def test_load_profile_request_variants() -> None:
    # VDEW/EMH with season digit, as printed in the EM4TII+ manual 4.2.1
    frame = iec.load_profile_request(1, "01301310800", "01302010800")
    assert frame[:-1] == b"\x01R5\x02P.01(01301310800;01302010800)\x03"
    assert frame[-1] == xor(frame[1:-1])
    # Turkish meters: no season digit; open range = everything stored
    assert iec.parse_command(iec.load_profile_request(2, "2106220000", "2106230000")).data == (
        "P.02(2106220000;2106230000)"
    )
    assert iec.parse_command(iec.load_profile_request(1, "", "")).data == "P.01(;)"
    with pytest.raises(iec.IECError):
        iec.load_profile_request(1, "21-06-22", "")
    with pytest.raises(iec.IECError):
        iec.load_profile_request(0, "", "")


def test_load_profile_em4tii_header_layout() -> None:
    # EM4TII+ manual 4.2.6: 12-digit stamp, hex status, empty units for non-energy channels
    text = (
        "P.01(121015061841)(00000040)(5)(3)(C.5.1)()(1.29.0)(kWh)(2.29.0)(kWh)\r\n"
        "(000000)(0.012)(0.000)\r\n"
        "(000000)(0.010)(0.000)\r\n"
    )
    lp = iec.parse_load_profile(text)
    (block,) = lp.blocks
    assert block.profile == 1 and block.period_min == 5 and block.status == "00000040"
    assert block.channels == (("C.5.1", ""), ("1.29.0", "kWh"), ("2.29.0", "kWh"))
    assert block.start == datetime(2012, 10, 15, 6, 18, 41)
    assert [t for t, _ in lp.entries()] == [datetime(2012, 10, 15, 6, 18, 41), datetime(2012, 10, 15, 6, 23, 41)]
    assert lp.entries()[0][1][1] == iec.DataValue("0.012")


def test_load_profile_build_parse_turkish_and_vdew_stamps() -> None:
    rows = [("0.120", "0.000"), ("0.130", "0.001"), ("0.125", "0.000")]
    text = iec.build_load_profile(1, datetime(2021, 6, 22, 0, 15), 15, [("1.5.0", "kW"), ("2.5.0", "kW")], rows)
    assert text.splitlines()[0] == "P.01(2106220015)(00)(15)(2)(1.5.0)(kW)(2.5.0)(kW)"
    assert text.splitlines()[1] == "(0.120)(0.000)"
    parsed = iec.parse_load_profile(iec.build_data_message(text))
    entries = parsed.entries()
    assert [t.strftime("%H:%M") for t, _ in entries] == ["00:15", "00:30", "00:45"]
    assert [tuple(v.value for v in row) for _, row in entries] == rows
    vdew = iec.build_load_profile(1, datetime(2013, 1, 31, 8, 0), 15, [("1.5.0", "kW")], [("1.0",)], season="0")
    block = iec.parse_load_profile(vdew).blocks[0]
    assert block.stamp == "01301310800" and block.season == "0"


def test_load_profile_several_blocks() -> None:
    first = iec.build_load_profile(1, "2106220015", 15, [("1.5.0", "kW")], [("1",), ("2",)])
    second = iec.build_load_profile(1, "2106220200", 15, [("1.5.0", "kW")], [("3",)], status="80")
    lp = iec.parse_load_profile(first + second + "!\r\n")
    assert len(lp.blocks) == 2 and lp.blocks[1].status == "80"
    assert [t.strftime("%H:%M") for t, _ in lp.entries()] == ["00:15", "00:30", "02:00"]


@pytest.mark.parametrize(
    "text",
    [
        "(1)(2)\r\n",  # row before header
        "P.01(2106220015)(00)(15)(2)(1.5.0)(kW)\r\n",  # announces 2 channels, lists 1
        "P.01(2106220015)(00)(15)(1)(1.5.0)(kW)\r\n(1)(2)\r\n",  # row too wide
        "P.01(2106320015)(00)(15)(1)(1.5.0)(kW)\r\n",  # 32nd day
        "P.01(2106220015)(00)(0)(1)(1.5.0)(kW)\r\n",  # zero period
        "X.01(2106220015)(00)(15)(1)(1.5.0)(kW)\r\n",  # not P.nn
        "(ER03)\r\n",  # meter error
        "",
    ],
)
def test_bad_load_profiles(text: str) -> None:
    with pytest.raises(iec.IECError):
        iec.parse_load_profile(text)


# ------------------------------------------------------------------------------ decode_to_json


def test_decode_to_json_full_capture() -> None:
    capture = iec.sign_on() + MASS_ID + iec.ack_option("5") + iec.build_data_block(MASS_RAW) + iec.break_command()
    out = iec.decode_to_json(capture)
    assert out["identification"] == {
        "flag": "LGZ", "baud": 9600, "ident": "ZMG405000b.P07", "baud_char": "5", "mode": "E", "enhanced": "2",
    }
    assert out["registers"]["1.8.0"] == {"value": "0000004891.722", "unit": None}
    assert out["registers"]["0.9.1"]["value"] == "10:18:42"
    assert out["bcc_ok"] is True


def test_decode_to_json_published_em4tii_exchange() -> None:
    out = iec.decode_to_json(b"/?!\r\n" + EM4_ID + b"\x06050\r\n" + EM4_BLOCK + b"\x01B0\x03q")
    assert out["identification"]["flag"] == "EMH"
    assert out["registers"]["1-0:1.8.0*255"] == {"value": "000000000.0", "unit": "kWh"}
    assert out["registers"]["1-0:0.3.0*255"] == {"value": "6.00", "unit": "Imp/kWh"}
    assert len(out["lines"]) == len(EM4_LINES)


def test_decode_to_json_block_only_and_demand_timestamp() -> None:
    frame = iec.build_data_block("1.8.0(015214.234*kWh)\r\n1.6.0(178.417*kW)(19-01-15 10:15)\r\n")
    out = iec.decode_to_json(frame)
    assert out["identification"] is None
    assert out["registers"]["1.6.0"]["value"] == "178.417"
    assert out["registers"]["1.6.0"]["timestamp"] == "19-01-15 10:15"
    assert out["registers"]["1.6.0"]["values"][1] == {"value": "19-01-15 10:15", "unit": None}


@pytest.mark.parametrize(
    "capture",
    [
        b"",
        b"/?!\r\n",  # sign-on only
        MASS_ID,  # identification only
        b"hello",
        MASS_ID + b"\x02" + MASS_RAW.encode() + b"!\r\n\x03",  # BCC missing
    ],
)
def test_decode_to_json_rejects(capture: bytes) -> None:
    with pytest.raises(iec.IECError):
        iec.decode_to_json(capture)


def test_decode_to_json_bcc_mismatch_is_an_error_with_capture_position() -> None:
    frame = bytearray(iec.build_data_block(MASS_RAW))
    frame[-1] ^= 0x01
    with pytest.raises(iec.BCCError) as err:
        iec.decode_to_json(MASS_ID + bytes(frame))
    assert err.value.position == len(MASS_ID) + len(frame) - 1
    assert isinstance(err.value, DecodeError)


def test_decode_to_json_error_positions_are_capture_offsets() -> None:
    block = iec.build_data_block(MASS_RAW)
    with pytest.raises(iec.IECError) as err:
        iec.decode_to_json(b"/?!\r\n/A1C5X\r\n" + block)
    assert err.value.position == 5 + 2  # after the 5-byte sign-on, the '1' of the flag
    with pytest.raises(iec.IECError) as err:
        iec.decode_to_json(block + b"\x01B0\x03r")  # break command with a wrong BCC
    assert isinstance(err.value, iec.BCCError) and err.value.position == len(block) + 4
    with pytest.raises(iec.IECError) as err:
        iec.decode_to_json(block + b"junk")
    assert err.value.position == len(block)


def test_decoder_is_registered_for_the_cli() -> None:
    from osos.cli.decode import DECODERS

    assert DECODERS["iec62056-21"] == "osos.protocols.iec62056_21"
