"""IEC 62056-21 (ex IEC 1107, "FLAG"/D0) codec: sans-I/O, bytes in, values out.

Covers what a head-end and a simulated meter both need (AMR-1, AMR-2, HES-27, and the framing
that HES-44..46 directives drive): the sign-on / identification / option-select handshake of
modes A, B, C and E, the readout data block with its BCC, programming-mode commands (P/W/R/E/B)
and the meter's answers, and the VDEW-style load profile (``P.01``) that EMH, Landis+Gyr and
Turkish meters return for an R5 read. No sockets, no clock: the caller owns both.

Values are kept exactly as the meter wrote them (leading zeros and the decimal point survive),
because the raw text is what the head-end stores and bills from (HES-5, AMR-2).
Every malformed input raises :class:`IECError` (or :class:`BCCError`) with ``reason`` and
``position``; nothing else escapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from osos.protocols.errors import DecodeError

__all__ = [
    "ACK", "BAUD_RATES", "CRLF", "EOT", "ETX", "NAK", "SOH", "STX",
    "AckOption", "BCCError", "Command", "DataBlock", "DataLine", "DataMessage", "DataValue",
    "IECError", "Identification", "LoadProfile", "LoadProfileBlock", "MeterErrorReply",
    "ack_option", "baud_char_for", "bcc", "break_command", "build_command", "build_data_block",
    "build_data_message", "build_identification", "build_load_profile", "decode_to_json",
    "format_data_line", "load_profile_request", "parse_ack_option", "parse_command",
    "parse_data_block", "parse_data_line", "parse_data_lines", "parse_data_message",
    "parse_identification", "parse_load_profile", "parse_lp_timestamp", "parse_reply",
    "parse_sign_on", "password", "read_request", "sign_on", "write_request",
]

SOH = b"\x01"
STX = b"\x02"
ETX = b"\x03"
EOT = b"\x04"
ACK = b"\x06"
NAK = b"\x15"
CRLF = b"\r\n"

# Baud-rate characters. Mode C/E digits (IEC 62056-21 6.3.14); '7' = 38400 is not in the
# standard's table but the Turkish optical-port spec asks for 38400 (AMR-1), so accept it.
# Mode B letters 'A'..'F'; 'G'..'I' are reserved and carry no rate.
BAUD_RATES: dict[str, int] = {
    "0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200, "7": 38400,
    "A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200,
}
_MODE_B_CHARS = "ABCDEFGHI"

# Option-select mode control character Y (IEC 62056-21 6.3.14, "Y").
_OPTIONS: dict[str, str] = {"readout": "0", "programming": "1", "binary": "2", "manufacturer": "6"}
_OPTION_NAMES: dict[str, str] = {v: k for k, v in _OPTIONS.items()}

# Programming-mode command identifiers the codec accepts: letter + type digit.
# P0 seed/operand, P1 password, P2 secured-algorithm result; W/R/E 1 ASCII, 2 formatted,
# 3/4 partial block; R5/R6/W5/W6 are used by manufacturers (EMH, L+G: load profiles, logs);
# B0 complete sign-off, B1 sign-off for battery devices.
_COMMAND_TYPES: dict[str, str] = {"P": "012", "W": "123456", "R": "123456", "E": "1234", "B": "01"}

_MAX_ADDRESS = 32  # sign-on device address (6.3.1)


class IECError(DecodeError):
    """Malformed IEC 62056-21 input (frame, line, command or load profile)."""


class BCCError(IECError):
    """The block check character does not match the frame's contents."""

    def __init__(self, expected: int, actual: int, position: int | None = None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"BCC mismatch: frame carries 0x{actual:02X}, computed 0x{expected:02X}", position)


# --------------------------------------------------------------------------------------------
# helpers


def _as_bytes(frame: object, what: str) -> bytes:
    if isinstance(frame, bytes | bytearray | memoryview):
        return bytes(frame)
    raise IECError(f"{what}: expected bytes, got {type(frame).__name__}", 0)


def _ascii(frame: bytes, what: str, base: int = 0) -> str:
    """Decode 7-bit ASCII (the standard's ISO 646 alphabet); anything above 0x7F is an error."""
    if frame.isascii():
        return frame.decode("ascii")
    i = next(i for i, b in enumerate(frame) if b > 0x7F)
    raise IECError(f"{what}: byte 0x{frame[i]:02X} is not 7-bit ASCII", base + i)


_BAD_CHAR: dict[str, re.Pattern[str]] = {}


def _printable(text: str, what: str, forbidden: str, base: int) -> None:
    """Only printable ASCII (0x20..0x7E) minus ``forbidden``; one regex scan (this is the hot path)."""
    pattern = _BAD_CHAR.get(forbidden)
    if pattern is None:
        pattern = _BAD_CHAR[forbidden] = re.compile("[^ -~]" + (f"|[{re.escape(forbidden)}]" if forbidden else ""))
    bad = pattern.search(text)
    if bad is not None:
        raise IECError(f"{what}: character {bad.group()!r} not allowed", base + bad.start())


_START = re.compile(rb"[\x01\x02]")
_END = re.compile(rb"[\x03\x04]")
_CONTROL = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")  # CR and LF are the only ones allowed in data


def _digit(ch: str) -> bool:
    return len(ch) == 1 and "0" <= ch <= "9"


def _digits(text: str) -> bool:
    return bool(text) and all("0" <= ch <= "9" for ch in text)


def bcc(data: bytes) -> int:
    """Block check character: XOR of the bytes after the first SOH/STX up to and including ETX/EOT.

    Without a SOH/STX the XOR starts at byte 0; without an ETX/EOT it runs to the end, so the
    function also serves a body that is being assembled.
    """
    data = _as_bytes(data, "bcc")
    first = _START.search(data)
    start = first.end() if first else 0
    last = _END.search(data, start)
    body = data[start : last.end() if last else len(data)]
    # XOR of all bytes by folding one big integer in halves: the same value as a byte loop, faster.
    value, width = int.from_bytes(body, "little"), len(body)
    while width > 1:
        half = (width + 1) // 2
        value = (value & ((1 << (8 * half)) - 1)) ^ (value >> (8 * half))
        width = half
    return value


# --------------------------------------------------------------------------------------------
# sign-on and identification


def sign_on(address: str = "") -> bytes:
    """Request message ``/?<address>!CRLF``; the address (optional) selects one meter on a bus."""
    if len(address) > _MAX_ADDRESS:
        raise IECError(f"device address longer than {_MAX_ADDRESS} characters", 2)
    for i, ch in enumerate(address):
        if not (ch.isascii() and (ch.isalnum() or ch == " ")):
            raise IECError(f"device address: character {ch!r} not allowed", 2 + i)
    return b"/?" + address.encode("ascii") + b"!\r\n"


def parse_sign_on(frame: bytes) -> str:
    """Return the device address of a request message (empty string when none)."""
    frame = _as_bytes(frame, "sign-on")
    if not frame.startswith(b"/?"):
        raise IECError("sign-on must start with '/?'", 0)
    if not frame.endswith(b"!\r\n"):
        raise IECError("sign-on must end with '!' CR LF", max(len(frame) - 1, 0))
    address = _ascii(frame[2:-3], "sign-on", 2)
    if len(address) > _MAX_ADDRESS:
        raise IECError(f"device address longer than {_MAX_ADDRESS} characters", 2)
    for i, ch in enumerate(address):
        if not (ch.isalnum() or ch == " "):
            raise IECError(f"device address: character {ch!r} not allowed", 2 + i)
    return address


@dataclass(frozen=True)
class Identification:
    """The meter's identification message ``/XXXZ[\\W]Ident CRLF``.

    ``flag`` is the 3-letter manufacturer code, ``baud_char`` the Z character, ``enhanced``
    the W character(s) of mode E's escape sequence (``"2"`` = HDLC/DLMS capable), ``baud``
    the rate Z announces (None in mode A, where the rate stays at 300 Bd, or for reserved
    characters).
    """

    flag: str
    baud_char: str
    ident: str
    mode: str
    enhanced: str | None = None
    baud: int | None = None

    @property
    def short_reaction(self) -> bool:
        """A lower-case third flag letter announces a 20 ms minimum reaction time (6.3.2)."""
        return self.flag[2].islower()


def _mode_for(baud_char: str, enhanced: str | None) -> str:
    if enhanced is not None and "2" in enhanced:
        return "E"
    if _digit(baud_char):
        return "C"
    if baud_char in _MODE_B_CHARS:
        return "B"
    return "A"


def _check_ident_parts(flag: str, baud_char: str, ident: str, enhanced: str | None, ident_pos: int = 5) -> None:
    bad_flag = next((i for i, c in enumerate(flag) if not (c.isascii() and c.isalpha())), None)
    if len(flag) != 3 or bad_flag is not None:
        raise IECError("manufacturer flag must be 3 ASCII letters", 1 + (bad_flag or 0))
    if len(baud_char) != 1 or not (" " < baud_char <= "~") or baud_char in "/!\\":
        raise IECError("baud-rate character must be one printable character except / ! \\", 4)
    if enhanced is not None:
        if not enhanced:
            raise IECError("empty enhanced identification", 5)
        _printable(enhanced, "enhanced identification", "/!\\", 6)
    if not ident:
        raise IECError("identification text is empty", ident_pos)
    if len(ident) > 32:
        raise IECError("identification text longer than 32 characters", ident_pos)
    _printable(ident, "identification", "/!\\", ident_pos)


def parse_identification(line: bytes) -> Identification:
    """Parse ``/XXXZ Ident CRLF`` (with mode E's ``\\W`` escape sequence(s) right after Z)."""
    line = _as_bytes(line, "identification")
    if not line.startswith(b"/"):
        raise IECError("identification must start with '/'", 0)
    if not line.endswith(b"\r\n"):
        raise IECError("identification must end with CR LF", max(len(line) - 1, 0))
    text = _ascii(line[:-2], "identification")
    if len(text) < 6:
        raise IECError("identification too short (needs /XXXZ and an ident)", len(text))
    flag, baud_char, rest = text[1:4], text[4], text[5:]
    enhanced_chars = []
    pos = 5
    while rest.startswith("\\"):
        if len(rest) < 2:
            raise IECError("escape '\\' without enhanced identification character", pos)
        enhanced_chars.append(rest[1])
        rest = rest[2:]
        pos += 2
    enhanced = "".join(enhanced_chars) or None
    _check_ident_parts(flag, baud_char, rest, enhanced, pos)
    mode = _mode_for(baud_char, enhanced)
    baud = None if mode == "A" else BAUD_RATES.get(baud_char)
    return Identification(flag, baud_char, rest, mode, enhanced, baud)


def build_identification(flag: str, baud_char: str, ident: str, enhanced: str | None = None) -> bytes:
    """The meter side of :func:`parse_identification`."""
    _check_ident_parts(flag, baud_char, ident, enhanced)
    escape = "".join("\\" + c for c in enhanced) if enhanced else ""
    return ("/" + flag + baud_char + escape + ident).encode("ascii") + CRLF


def baud_char_for(rate: int, mode: str = "C") -> str:
    """Baud-rate character announcing ``rate`` in mode C/E (digits) or mode B (letters)."""
    if mode not in ("B", "C", "E"):
        raise IECError(f"mode {mode!r} has no baud-rate characters (use B, C or E)")
    for ch, r in BAUD_RATES.items():
        if r == rate and (_digit(ch) if mode in ("C", "E") else ch.isalpha()):
            return ch
    raise IECError(f"no mode {mode} baud-rate character for {rate} Bd")


@dataclass(frozen=True)
class AckOption:
    """Acknowledgement/option select ``ACK V Z Y CRLF`` sent by the reader after the identification."""

    protocol_char: str
    baud_char: str
    option: str  # "readout", "programming", "binary", "manufacturer" or the raw Y character


def ack_option(baud_char: str, option: str = "readout", protocol_char: str = "0") -> bytes:
    """``ACK V Z Y CRLF``: V protocol control ('0' normal, '1' secondary, '2' HDLC), Z baud, Y option."""
    y = _OPTIONS.get(option, option)
    if len(y) != 1 or not _digit(y):
        raise IECError(f"unknown option {option!r}", 3)
    if len(protocol_char) != 1 or not _digit(protocol_char):
        raise IECError("protocol control character must be one digit", 1)
    if len(baud_char) != 1 or not (" " < baud_char <= "~"):
        raise IECError("baud-rate character must be one printable character", 2)
    return ACK + (protocol_char + baud_char + y).encode("ascii") + CRLF


def parse_ack_option(frame: bytes) -> AckOption:
    """Parse ``ACK V Z Y CRLF``."""
    frame = _as_bytes(frame, "option select")
    if not frame.startswith(ACK):
        raise IECError("option select must start with ACK", 0)
    if len(frame) != 6 or not frame.endswith(CRLF):
        raise IECError("option select must be ACK V Z Y CR LF (6 bytes)", min(len(frame), 6) - 1)
    v, z, y = _ascii(frame[1:4], "option select", 1)
    if not _digit(v):
        raise IECError("protocol control character must be a digit", 1)
    if not (" " < z <= "~"):
        raise IECError("baud-rate character must be printable", 2)
    if not _digit(y):
        raise IECError("mode control character must be a digit", 3)
    return AckOption(v, z, _OPTION_NAMES.get(y, y))


# --------------------------------------------------------------------------------------------
# data sets and lines


@dataclass(frozen=True)
class DataValue:
    """One ``(value*unit)`` group; ``unit`` is None when the group has no ``*``."""

    value: str
    unit: str | None = None


@dataclass(frozen=True)
class DataLine:
    """An address and its value groups, e.g. ``1.6.0(00.123*kW)(21-06-22 10:15)``."""

    address: str
    values: tuple[DataValue, ...]

    @property
    def value(self) -> str:
        return self.values[0].value

    @property
    def unit(self) -> str | None:
        return self.values[0].unit


_ADDRESS_FORBIDDEN = "()!/"
_VALUE_FORBIDDEN = "()*!"
_UNIT_FORBIDDEN = "()*!"  # "/" occurs in real units (EMH "Imp/kWh") though the standard bars it


def _char_class(forbidden: str) -> str:
    return "[" + "".join(re.escape(chr(c)) for c in range(0x20, 0x7F) if chr(c) not in forbidden) + "]"


_FAST_LINE = re.compile(
    f"({_char_class(_ADDRESS_FORBIDDEN)}{{0,32}})"
    f"((?:\\({_char_class(_VALUE_FORBIDDEN)}*(?:\\*{_char_class(_UNIT_FORBIDDEN)}*)?\\))+)"
)
_FAST_GROUP = re.compile(f"\\(({_char_class(_VALUE_FORBIDDEN)}*)(?:(\\*)({_char_class(_UNIT_FORBIDDEN)}*))?\\)")


def _split_sets(text: str, base: int) -> list[DataLine]:
    """Split one text line into data sets: address followed by one or more ``(...)`` groups.

    The common well-formed single-set line takes one regex match; anything else (several sets,
    or an error to locate) goes through :func:`_split_sets_slow`, which gives the same result.
    """
    m = _FAST_LINE.fullmatch(text)
    if m is not None:
        groups = _FAST_GROUP.findall(m.group(2))
        return [DataLine(m.group(1), tuple(DataValue(v, u if star else None) for v, star, u in groups))]
    return _split_sets_slow(text, base)


def _split_sets_slow(text: str, base: int) -> list[DataLine]:
    out: list[DataLine] = []
    i, n = 0, len(text)
    if n == 0:
        raise IECError("empty data line", base)
    while i < n:
        start = i
        i = text.find("(", i)
        if i < 0:
            i = n
        address = text[start:i]
        _printable(address, "address", _ADDRESS_FORBIDDEN, base + start)
        if len(address) > 32:
            raise IECError("address longer than 32 characters", base + start)
        if i == n:
            raise IECError(f"address {address!r} has no '(' value group", base + i)
        values: list[DataValue] = []
        while i < n and text[i] == "(":
            close = text.find(")", i + 1)
            if close < 0:
                raise IECError("value group not closed by ')'", base + i)
            body = text[i + 1 : close]
            star = body.find("*")
            if star >= 0:
                value, unit = body[:star], body[star + 1 :]
                _printable(value, "value", _VALUE_FORBIDDEN, base + i + 1)
                _printable(unit, "unit", _UNIT_FORBIDDEN, base + i + 2 + star)
            else:
                value, unit = body, None
                _printable(value, "value", _VALUE_FORBIDDEN, base + i + 1)
            values.append(DataValue(value, unit))
            i = close + 1
        out.append(DataLine(address, tuple(values)))
    return out


def parse_data_line(text: str) -> DataLine:
    """Parse one data set ``address(value*unit)(...)``; the address may be empty (answers, rows)."""
    if not isinstance(text, str):
        raise IECError(f"data line: expected str, got {type(text).__name__}", 0)
    text = text.removesuffix("\r\n")
    sets = _split_sets(text, 0)
    if len(sets) != 1:
        raise IECError("more than one data set on the line", len(format_data_line(sets[0])))
    return sets[0]


def _check_line(line: DataLine) -> None:
    if not isinstance(line, DataLine) or not line.values:
        raise IECError("a data line needs at least one value group")
    if not isinstance(line.address, str):
        raise IECError("address must be a str")
    _printable(line.address, "address", _ADDRESS_FORBIDDEN, 0)
    for v in line.values:
        if not isinstance(v, DataValue) or not isinstance(v.value, str) or not isinstance(v.unit, str | None):
            raise IECError(f"value group must be a DataValue of str, not {v!r}")
        _printable(v.value, "value", _VALUE_FORBIDDEN, 0)
        if v.unit is not None:
            _printable(v.unit, "unit", _UNIT_FORBIDDEN, 0)


def format_data_line(line: DataLine) -> str:
    """Inverse of :func:`parse_data_line` (no CRLF)."""
    _check_line(line)
    groups = "".join("(" + v.value + ("" if v.unit is None else "*" + v.unit) + ")" for v in line.values)
    return line.address + groups


def _iter_text_lines(text: str, base: int) -> Iterable[tuple[int, str]]:
    """(offset, line) pairs; lines end at LF, one CR before it is dropped (CRLF or bare LF)."""
    pos = 0
    for raw in text.split("\n"):
        body = raw[:-1] if raw.endswith("\r") else raw
        yield base + pos, body
        pos += len(raw) + 1


def parse_data_lines(text: str, base: int = 0) -> list[DataLine]:
    """Parse a data set without STX/ETX (e.g. a MASS ``rawData``): CRLF or LF separated lines.

    Blank lines are skipped and a final ``!`` line ends the data. Several data sets on one
    line become several :class:`DataLine` objects.
    """
    if not isinstance(text, str):
        raise IECError(f"data lines: expected str, got {type(text).__name__}", 0)
    out: list[DataLine] = []
    ended = False
    for pos, body in _iter_text_lines(text, base):
        if ended:
            if body:
                raise IECError("data after the '!' end mark", pos)
            continue
        if body == "!":
            ended = True
            continue
        if body:
            out.extend(_split_sets(body, pos))
    return out


# --------------------------------------------------------------------------------------------
# readout data block


@dataclass(frozen=True)
class DataBlock:
    """A readout ``STX data ! CRLF ETX BCC``."""

    lines: tuple[DataLine, ...]
    bcc_ok: bool
    bcc: int


def _data_text(lines: Iterable[DataLine] | str) -> str:
    if isinstance(lines, str):
        parse_data_lines(lines)  # validates
        body = [b for _, b in _iter_text_lines(lines, 0) if b]
        if body and body[-1] == "!":
            body.pop()
        return "".join(b + "\r\n" for b in body)
    return "".join(format_data_line(line) + "\r\n" for line in lines)


def _frame(text: str, end: bytes = ETX) -> bytes:
    body = STX + text.encode("ascii") + end
    return body + bytes([bcc(body)])


def build_data_block(lines: Iterable[DataLine] | str) -> bytes:
    """``STX`` + CRLF-terminated lines + ``!`` CRLF + ``ETX`` + BCC (the readout of mode A-C)."""
    return _frame(_data_text(lines) + "!\r\n")


def _unframe(frame: bytes, what: str, verify_bcc: bool) -> tuple[str, bool, int, bool]:
    """Check ``STX ... ETX|EOT BCC``; return (text, bcc_ok, bcc, final)."""
    frame = _as_bytes(frame, what)
    if not frame.startswith(STX):
        raise IECError(f"{what} must start with STX", 0)
    stop = _END.search(frame, 1)
    end = stop.start() if stop else len(frame)
    nested = _START.search(frame, 1, end)
    if nested is not None:
        raise IECError(f"{what}: unexpected control byte 0x{frame[nested.start()]:02X}", nested.start())
    if stop is None:
        raise IECError(f"{what} has no ETX/EOT", len(frame))
    if len(frame) < end + 2:
        raise IECError(f"{what}: BCC missing after ETX/EOT", end + 1)
    if len(frame) > end + 2:
        raise IECError(f"{what}: {len(frame) - end - 2} unexpected byte(s) after the BCC", end + 2)
    carried = frame[end + 1]
    computed = bcc(frame[: end + 1])
    ok = carried == computed
    if verify_bcc and not ok:
        raise BCCError(computed, carried, end + 1)
    text = _ascii(frame[1:end], what, 1)
    control = _CONTROL.search(text)
    if control is not None:
        raise IECError(f"{what}: control character 0x{ord(control.group()):02X} in data", 1 + control.start())
    return text, ok, carried, frame[end] == 0x03


def parse_data_block(frame: bytes, verify_bcc: bool = True) -> DataBlock:
    """Parse a readout data block; raises :class:`BCCError` on mismatch unless ``verify_bcc`` is False."""
    text, ok, carried, final = _unframe(frame, "data block", verify_bcc)
    if not final:
        raise IECError("readout data block must end with ETX, not EOT", len(text) + 1)
    if not (text == "!\r\n" or text.endswith("\r\n!\r\n")):
        raise IECError("data block must end with a line '!' CR LF before ETX", len(text) + 1)
    lines = parse_data_lines(text[:-3], base=1)
    return DataBlock(tuple(lines), ok, carried)


# --------------------------------------------------------------------------------------------
# programming mode


@dataclass(frozen=True)
class Command:
    """A programming-mode command ``SOH C D STX data ETX BCC`` (``final`` False when ended by EOT)."""

    command: str
    data: str = ""
    final: bool = True


def _check_command(command: str) -> None:
    if len(command) != 2 or command[0] not in _COMMAND_TYPES or command[1] not in _COMMAND_TYPES[command[0]]:
        raise IECError(f"unknown command {command!r}", 1)


def build_command(command: str, data: str = "", final: bool = True) -> bytes:
    """``SOH C D STX data ETX BCC``; B0/B1 without data are ``SOH C D ETX BCC``."""
    _check_command(command)
    _printable(data, "command data", "", 4)
    end = ETX if final else EOT
    if command[0] == "B" and not data:
        body = SOH + command.encode("ascii") + end
    else:
        body = SOH + command.encode("ascii") + STX + data.encode("ascii") + end
    return body + bytes([bcc(body)])


def parse_command(frame: bytes, verify_bcc: bool = True) -> Command:
    """Parse a command message; raises :class:`BCCError` on a wrong BCC."""
    frame = _as_bytes(frame, "command")
    if not frame.startswith(SOH):
        raise IECError("command must start with SOH", 0)
    if len(frame) < 5:
        raise IECError("command too short", len(frame))
    command = _ascii(frame[1:3], "command", 1)
    _check_command(command)
    end = -1
    for i in range(3, len(frame)):
        if frame[i] in (0x03, 0x04):
            end = i
            break
    if end < 0:
        raise IECError("command has no ETX/EOT", len(frame))
    if len(frame) != end + 2:
        raise IECError("command must end with ETX/EOT and one BCC byte", min(len(frame), end + 2))
    carried, computed = frame[end + 1], bcc(frame[: end + 1])
    if verify_bcc and carried != computed:
        raise BCCError(computed, carried, end + 1)
    if end == 3:
        if command[0] != "B":
            raise IECError(f"command {command} needs STX and data", 3)
        data = ""
    else:
        if frame[3] != 0x02:
            raise IECError("STX expected after the command identifier", 3)
        data = _ascii(frame[4:end], "command data", 4)
        _printable(data, "command data", "", 4)
    return Command(command, data, frame[end] == 0x03)


def password(pw: str, level: str = "P1") -> bytes:
    """``SOH P1 STX (password) ETX BCC`` (P2 for a secured-algorithm result)."""
    if level not in ("P0", "P1", "P2"):
        raise IECError(f"password level must be P0, P1 or P2, not {level!r}", 1)
    _printable(pw, "password", "()", 5)
    return build_command(level, "(" + pw + ")")


def read_request(address: str, command: str = "R1") -> bytes:
    """``SOH R1 STX address() ETX BCC``; an address may already carry its own ``(...)`` argument."""
    if command[:1] != "R":
        raise IECError(f"read command must be R1..R6, not {command!r}", 1)
    data = address if "(" in address else address + "()"
    _split_sets(data, 4)
    return build_command(command, data)


def write_request(address: str, value: str, command: str = "W1") -> bytes:
    """``SOH W1 STX address(value) ETX BCC``."""
    if command[:1] != "W":
        raise IECError(f"write command must be W1..W6, not {command!r}", 1)
    data = format_data_line(DataLine(address, (DataValue(value),)))
    return build_command(command, data)


def break_command() -> bytes:
    """``SOH B0 ETX BCC``: complete sign-off, the meter returns to its initial state."""
    return build_command("B0")


@dataclass(frozen=True)
class DataMessage:
    """A meter's answer ``STX data ETX|EOT BCC`` in programming mode; ``final`` False for a partial block."""

    lines: tuple[DataLine, ...]
    final: bool = True

    @property
    def error(self) -> str | None:
        """The ``ERxx`` code when the meter answered with an error message ``(ERxx)``."""
        if len(self.lines) == 1 and not self.lines[0].address and len(self.lines[0].values) == 1:
            v = self.lines[0].values[0]
            if v.unit is None and re.fullmatch(r"ER[0-9A-Za-z]{1,4}", v.value):
                return v.value
        return None


@dataclass(frozen=True)
class MeterErrorReply:
    """Not a frame type on the wire: returned by :func:`parse_reply` for ``(ERxx)`` answers."""

    code: str


def build_data_message(lines: Iterable[DataLine] | str, final: bool = True) -> bytes:
    """``STX data ETX BCC`` (EOT instead of ETX for a partial block); lines joined with CRLF.

    A str is sent as given (after validation) so a load-profile text keeps its exact layout.
    """
    if isinstance(lines, str):
        parse_data_lines(lines)
        text = lines
    else:
        text = "\r\n".join(format_data_line(line) for line in lines)
    return _frame(text, ETX if final else EOT)


def parse_data_message(frame: bytes, verify_bcc: bool = True) -> DataMessage:
    """Parse a programming-mode answer (``(value)``, ``address(value*unit)``, ``(ERxx)``, lines)."""
    text, _ok, _bcc, final = _unframe(frame, "data message", verify_bcc)
    lines = parse_data_lines(text, base=1)
    if not lines:
        raise IECError("data message carries no data set", 1)
    return DataMessage(tuple(lines), final)


def parse_reply(frame: bytes, verify_bcc: bool = True) -> str | DataMessage | Command | MeterErrorReply:
    """Classify a meter's answer in programming mode: "ACK", "NAK", a data message, an
    ``(ERxx)`` error, or a command (the meter's own P0 password request)."""
    frame = _as_bytes(frame, "reply")
    if frame == ACK:
        return "ACK"
    if frame == NAK:
        return "NAK"
    if frame.startswith(SOH):
        return parse_command(frame, verify_bcc)
    if frame.startswith(STX):
        msg = parse_data_message(frame, verify_bcc)
        err = msg.error
        return MeterErrorReply(err) if err else msg
    raise IECError("reply must be ACK, NAK, SOH... or STX...", 0)


# --------------------------------------------------------------------------------------------
# load profile (VDEW 2.x / EMH / Landis+Gyr / Turkish meters, R5 "P.01")

_LP_STAMP = re.compile(r"[0-9]{10,13}")


def parse_lp_timestamp(stamp: str) -> tuple[datetime, str | None]:
    """Parse a profile time stamp; returns (naive local datetime, season digit or None).

    Lengths: 10 ``YYMMDDhhmm`` (Turkish meters), 11 ``ZYYMMDDhhmm`` (VDEW: Z season 0 winter,
    1 summer, 2 UTC), 12 ``YYMMDDhhmmss``, 13 ``ZYYMMDDhhmmss``.
    """
    if not isinstance(stamp, str) or not _LP_STAMP.fullmatch(stamp):
        raise IECError(f"load-profile time stamp {stamp!r} is not 10..13 digits", 0)
    season = None
    if len(stamp) in (11, 13):
        season, stamp = stamp[0], stamp[1:]
    try:
        when = datetime(
            2000 + int(stamp[0:2]), int(stamp[2:4]), int(stamp[4:6]),
            int(stamp[6:8]), int(stamp[8:10]), int(stamp[10:12]) if len(stamp) == 12 else 0,
        )
    except ValueError as exc:
        raise IECError(f"load-profile time stamp {stamp!r}: {exc}", 0) from None
    return when, season


def _check_range_stamp(stamp: str, pos: int) -> None:
    if stamp and not _LP_STAMP.fullmatch(stamp):
        raise IECError(f"range limit {stamp!r} must be empty or 10..13 digits", pos)
    if stamp:
        parse_lp_timestamp(stamp)


def load_profile_request(profile: int, start: str, end: str, command: str = "R5") -> bytes:
    """``SOH R5 STX P.01(start;end) ETX BCC``.

    ``start``/``end`` are written as the meter expects them: ``YYMMDDhhmm`` (Turkish meters,
    MASS), ``ZYYMMDDhhmm`` with the VDEW season digit (EMH LZQJ, L+G ZMD), or empty for an
    open range (``P.01(;)`` = everything stored).
    """
    if not isinstance(profile, int) or not 1 <= profile <= 99:
        raise IECError("profile number must be 1..99", 4)
    if command not in ("R5", "R6", "R1"):
        raise IECError(f"load profiles are read with R5 (or R6/R1), not {command!r}", 1)
    _check_range_stamp(start, 9)
    _check_range_stamp(end, 10 + len(start))
    return build_command(command, f"P.{profile:02d}({start};{end})")


@dataclass(frozen=True)
class LoadProfileBlock:
    """One header ``P.nn(stamp)(status)(period)(n)(obis)(unit)...`` and the rows that follow it.

    ``stamp`` is the time of the first row; row *i* is at ``stamp + i * period_min``.
    """

    profile: int
    stamp: str
    status: str
    period_min: int
    channels: tuple[tuple[str, str], ...]  # (OBIS code, unit) per column
    rows: tuple[tuple[DataValue, ...], ...]

    @property
    def start(self) -> datetime:
        return parse_lp_timestamp(self.stamp)[0]

    @property
    def season(self) -> str | None:
        return parse_lp_timestamp(self.stamp)[1]

    def entries(self) -> list[tuple[datetime, tuple[DataValue, ...]]]:
        """Rows with their time stamps (period arithmetic only; no clock is read)."""
        step = timedelta(minutes=self.period_min)
        return [(self.start + i * step, row) for i, row in enumerate(self.rows)]


@dataclass(frozen=True)
class LoadProfile:
    """A load-profile answer: one block per header (a new header follows a status change or gap)."""

    blocks: tuple[LoadProfileBlock, ...]

    def entries(self) -> list[tuple[datetime, tuple[DataValue, ...]]]:
        return [e for block in self.blocks for e in block.entries()]


def _lp_header(line: DataLine, pos: int) -> LoadProfileBlock:
    m = re.fullmatch(r"P\.([0-9]{1,2})", line.address)
    if not m:
        raise IECError(f"load-profile header address {line.address!r} is not P.nn", pos)
    v = line.values
    if len(v) < 4:
        raise IECError("load-profile header needs (stamp)(status)(period)(channels)", pos)
    stamp, status, period, count = (x.value for x in v[:4])
    parse_lp_timestamp(stamp)
    if not _digits(period) or int(period) == 0:
        raise IECError(f"load-profile period {period!r} is not a positive number of minutes", pos)
    if not _digits(count):
        raise IECError(f"load-profile channel count {count!r} is not a number", pos)
    n = int(count)
    rest = v[4:]
    if len(rest) != 2 * n:
        raise IECError(f"load-profile header announces {n} channels but lists {len(rest) // 2}", pos)
    channels = tuple((rest[2 * i].value, rest[2 * i + 1].value) for i in range(n))
    return LoadProfileBlock(int(m.group(1)), stamp, status, int(period), channels, ())


def parse_load_profile(text: str | bytes, verify_bcc: bool = True) -> LoadProfile:
    """Parse a load-profile answer: header lines ``P.01(...)...`` each followed by rows ``(v)(v)...``.

    Accepts the data text or the whole ``STX ... ETX BCC`` message.
    """
    base = 0
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if raw.startswith(STX):
            text, _ok, _bcc, _final = _unframe(raw, "load profile", verify_bcc)
            base = 1
        else:
            text = _ascii(raw, "load profile")
    if not isinstance(text, str):
        raise IECError(f"load profile: expected str or bytes, got {type(text).__name__}", 0)
    blocks: list[LoadProfileBlock] = []
    current: LoadProfileBlock | None = None
    rows: list[tuple[DataValue, ...]] = []
    ended = False
    for pos, body in _iter_text_lines(text, base):
        if not body:
            continue
        if ended:
            raise IECError("data after the '!' end mark", pos)
        if body == "!":
            ended = True
            continue
        lines = _split_sets(body, pos)
        if len(lines) != 1:
            raise IECError("one header or row per line expected", pos)
        line = lines[0]
        if line.address:
            if current is not None:
                blocks.append(_with_rows(current, rows))
            current, rows = _lp_header(line, pos), []
            continue
        if current is None:
            err = DataMessage((line,)).error
            if err:
                raise IECError(f"meter answered {err} instead of a load profile", pos)
            raise IECError("load-profile row before any P.nn header", pos)
        if len(line.values) != len(current.channels):
            raise IECError(
                f"row has {len(line.values)} values, header announces {len(current.channels)}", pos
            )
        rows.append(line.values)
    if current is None:
        raise IECError("no load-profile header found", base)
    blocks.append(_with_rows(current, rows))
    return LoadProfile(tuple(blocks))


def _with_rows(block: LoadProfileBlock, rows: list[tuple[DataValue, ...]]) -> LoadProfileBlock:
    return LoadProfileBlock(block.profile, block.stamp, block.status, block.period_min, block.channels,
                            tuple(rows))


def build_load_profile(
    profile: int,
    start: datetime | str,
    period_min: int,
    channels: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[str | DataValue]],
    status: str = "00",
    season: str | None = None,
) -> str:
    """The text of one load-profile block (header + rows, CRLF-terminated) for a simulated meter.

    ``start`` is a datetime (written ``YYMMDDhhmm``, prefixed by ``season`` when given) or a
    ready stamp string. Wrap it with :func:`build_data_message` to send it.
    """
    if isinstance(start, datetime):
        if not 2000 <= start.year <= 2099:
            raise IECError("load-profile start year must be 2000..2099")
        stamp = (season or "") + start.strftime("%y%m%d%H%M")
    else:
        stamp = start
    parse_lp_timestamp(stamp)
    if not isinstance(profile, int) or not 1 <= profile <= 99:
        raise IECError("profile number must be 1..99")
    if not isinstance(period_min, int) or period_min <= 0:
        raise IECError("period must be a positive number of minutes")
    head: list[DataValue] = [DataValue(stamp), DataValue(status), DataValue(str(period_min)),
                             DataValue(str(len(channels)))]
    for obis, unit in channels:
        head += [DataValue(obis), DataValue(unit)]
    out = [format_data_line(DataLine(f"P.{profile:02d}", tuple(head)))]
    for row in rows:
        values = tuple(v if isinstance(v, DataValue) else DataValue(v) for v in row)
        if len(values) != len(channels):
            raise IECError(f"row has {len(values)} values for {len(channels)} channels")
        out.append(format_data_line(DataLine("", values)))
    return "".join(line + "\r\n" for line in out)


# --------------------------------------------------------------------------------------------
# `osos decode --protocol iec62056-21`


def _value_json(v: DataValue) -> dict[str, str | None]:
    return {"value": v.value, "unit": v.unit}


def decode_to_json(data: bytes, key: bytes | None = None) -> dict:
    """Decode a capture: optional sign-on, identification, option select, then a readout block.

    Output: ``{"identification": {...} | None, "registers": {address: {"value", "unit", ...}},
    "bcc_ok": True, "lines": [...]}``. A register with several value groups also carries
    ``"values"`` (all groups) and, for two groups where the second has no unit (maximum demand
    and its time), ``"timestamp"``. A BCC mismatch raises :class:`BCCError`.
    """
    data = _as_bytes(data, "capture")
    ident: Identification | None = None
    block: DataBlock | None = None
    pos = 0
    n = len(data)
    while pos < n:
        here = pos
        try:
            if data[pos] in (0x0D, 0x0A, 0x20):
                pos += 1
            elif block is not None:
                if not data.startswith(SOH, pos):
                    raise IECError("unexpected bytes after the data block", 0)
                end = _frame_end(data, pos, "break command")
                parse_command(data[pos:end])
                pos = end
            elif data.startswith(b"/?", pos):
                end = data.find(b"!\r\n", pos)
                if end < 0:
                    raise IECError("sign-on without '!' CR LF", 0)
                parse_sign_on(data[pos : end + 3])
                pos = end + 3
            elif data.startswith(b"/", pos):
                end = data.find(CRLF, pos)
                if end < 0:
                    raise IECError("identification without CR LF", 0)
                ident = parse_identification(data[pos : end + 2])
                pos = end + 2
            elif data.startswith(ACK, pos):
                if data.startswith(CRLF, pos + 4):
                    parse_ack_option(data[pos : pos + 6])
                    pos += 6
                else:  # a bare ACK (e.g. the meter acknowledging a command)
                    pos += 1
            elif data.startswith(STX, pos):
                end = _frame_end(data, pos, "data block")
                block = parse_data_block(data[pos:end])
                pos = end
            else:
                raise IECError(f"unexpected byte 0x{data[pos]:02X}", 0)
        except BCCError as exc:
            raise BCCError(exc.expected, exc.actual, here + (exc.position or 0)) from None
        except IECError as exc:
            raise IECError(exc.reason, here + (exc.position or 0)) from None
    if block is None:
        raise IECError("no data block (STX ... ETX BCC) in the capture", n)
    registers: dict[str, dict] = {}
    for line in block.lines:
        if not line.address or line.address in registers:
            continue
        entry: dict = _value_json(line.values[0])
        if len(line.values) > 1:
            entry["values"] = [_value_json(v) for v in line.values]
            if len(line.values) == 2 and line.values[1].unit is None:
                entry["timestamp"] = line.values[1].value
        registers[line.address] = entry
    ident_json = None
    if ident is not None:
        ident_json = {
            "flag": ident.flag, "baud": ident.baud, "ident": ident.ident,
            "baud_char": ident.baud_char, "mode": ident.mode, "enhanced": ident.enhanced,
        }
    return {
        "identification": ident_json,
        "registers": registers,
        "bcc_ok": block.bcc_ok,
        "lines": [{"address": ln.address, "values": [_value_json(v) for v in ln.values]} for ln in block.lines],
    }


def _frame_end(data: bytes, pos: int, what: str) -> int:
    """Index just past the BCC of the STX/SOH frame starting at ``pos`` (error positions relative to it)."""
    stop = _END.search(data, pos + 1)
    if stop is None:
        raise IECError(f"{what} has no ETX", len(data) - pos)
    if stop.end() >= len(data):
        raise IECError(f"{what}: BCC missing after ETX", stop.end() - pos)
    return stop.end() + 1
