"""HDLC framing for DLMS (IEC 62056-46 / Green Book 8.4): frames, addresses, CRC, reassembly.

Pure: bytes in, frames out. The link state machines (SNRM/UA, I-frame sequence numbers, RR for
segments, DISC) sit with their users: the meter's server and the field client. dlms-cosem 21.3.2
has client-side frame classes only (it cannot parse an SNRM or build a UA as a meter must), so the
frame codec is here; the CRC is CRC-16/X-25 (check value 0x906E for "123456789").

Frame: 7E | format(2: 0xA, segmentation bit, 11-bit length) | destination | source | control |
[HCS(2) | information] | FCS(2) | 7E. Length counts everything between the flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from osos.protocols.dlms import DLMSError

FLAG = 0x7E
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"
MAX_FRAME = 2048  # 11-bit length field

# control field values (P/F bit = 0x10)
SNRM, UA, DISC, DM, FRMR, UI = 0x83, 0x63, 0x43, 0x0F, 0x87, 0x03
PF = 0x10


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/X-25 (HDLC FCS): reflected 0x1021, init 0xFFFF, final xor 0xFFFF."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFF


def _crc_bytes(data: bytes) -> bytes:
    return crc16(data).to_bytes(2, "little")  # sent least significant byte first


def encode_address(value: int, size: int) -> bytes:
    """HDLC extended address of 1, 2 or 4 bytes; the low bit of the last byte is 1."""
    if size == 1:
        if not 0 <= value < 0x80:
            raise ValueError("1-byte HDLC address is 7 bits")
        return bytes([(value << 1) | 1])
    if size == 2:
        upper, lower = value >> 7, value & 0x7F
        return bytes([upper << 1, (lower << 1) | 1])
    if size == 4:
        upper, lower = value >> 14, value & 0x3FFF
        return bytes([(upper >> 7) << 1, (upper & 0x7F) << 1, (lower >> 7) << 1, ((lower & 0x7F) << 1) | 1])
    raise ValueError("HDLC address size is 1, 2 or 4")


def server_address(logical: int, physical: int | None = None) -> tuple[int, int]:
    """(value, size) of a server address: upper = logical device, lower = physical device."""
    if physical is None:
        return logical, 1
    if logical < 0x80 and physical < 0x80:
        return (logical << 7) | physical, 2
    return (logical << 14) | physical, 4


def _decode_address(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(value, size, next position)."""
    raw = bytearray()
    while True:
        if pos >= len(buf):
            raise DLMSError("HDLC address runs past the frame", pos)
        raw.append(buf[pos])
        pos += 1
        if raw[-1] & 1:
            break
        if len(raw) == 4:
            raise DLMSError("HDLC address longer than 4 bytes", pos)
    if len(raw) == 3:
        raise DLMSError("HDLC address of 3 bytes", pos)
    if len(raw) == 1:
        return raw[0] >> 1, 1, pos
    if len(raw) == 2:
        return ((raw[0] >> 1) << 7) | (raw[1] >> 1), 2, pos
    upper = ((raw[0] >> 1) << 7) | (raw[1] >> 1)
    lower = ((raw[2] >> 1) << 7) | (raw[3] >> 1)
    return (upper << 14) | lower, 4, pos


@dataclass(frozen=True)
class HdlcFrame:
    destination: int
    source: int
    control: int
    information: bytes = b""
    segmented: bool = False
    destination_size: int = 1
    source_size: int = 1

    @property
    def kind(self) -> str:
        c = self.control
        if c & 0x01 == 0:
            return "I"
        if c & 0x03 == 0x01:
            return {0x01: "RR", 0x05: "RNR"}.get(c & 0x0F, "S?")
        return {SNRM: "SNRM", UA: "UA", DISC: "DISC", DM: "DM", FRMR: "FRMR", UI: "UI"}.get(c & ~PF & 0xFF, "U?")

    @property
    def poll_final(self) -> bool:
        return bool(self.control & PF)

    @property
    def ns(self) -> int:
        return (self.control >> 1) & 0x07

    @property
    def nr(self) -> int:
        return (self.control >> 5) & 0x07

    def to_bytes(self) -> bytes:
        head = (encode_address(self.destination, self.destination_size)
                + encode_address(self.source, self.source_size) + bytes([self.control]))
        length = 2 + len(head) + 2 + (len(self.information) + 2 if self.information else 0)
        if length > MAX_FRAME - 1:
            raise ValueError("HDLC frame too long")
        fmt = (0xA000 | (0x0800 if self.segmented else 0) | length).to_bytes(2, "big")
        body = fmt + head
        if self.information:
            body += _crc_bytes(body)
            body += self.information
        body += _crc_bytes(body)
        return bytes([FLAG]) + body + bytes([FLAG])


def i_frame(dst: tuple[int, int], src: tuple[int, int], ns: int, nr: int, info: bytes, *,
            final: bool = True, segmented: bool = False) -> HdlcFrame:
    control = ((nr & 7) << 5) | (PF if final else 0) | ((ns & 7) << 1)
    return HdlcFrame(dst[0], src[0], control, info, segmented, dst[1], src[1])


def rr_frame(dst: tuple[int, int], src: tuple[int, int], nr: int) -> HdlcFrame:
    return HdlcFrame(dst[0], src[0], ((nr & 7) << 5) | PF | 0x01, b"", False, dst[1], src[1])


def u_frame(dst: tuple[int, int], src: tuple[int, int], control: int, info: bytes = b"") -> HdlcFrame:
    return HdlcFrame(dst[0], src[0], control | PF, info, False, dst[1], src[1])


def parse_frame(data: bytes) -> HdlcFrame:
    """Parse one frame including both 7E flags; HCS and FCS are checked."""
    data = bytes(data)
    if len(data) < 9 or data[0] != FLAG or data[-1] != FLAG:
        raise DLMSError("an HDLC frame starts and ends with 0x7E and has at least 9 bytes", 0)
    body = data[1:-1]
    fmt = int.from_bytes(body[0:2], "big")
    if fmt >> 12 != 0xA:
        raise DLMSError(f"HDLC frame format type {fmt >> 12:#x}, expected 0xA", 1)
    length = fmt & 0x07FF
    if length != len(body):
        raise DLMSError(f"HDLC length field says {length}, frame has {len(body)}", 1)
    if crc16(body[:-2]) != int.from_bytes(body[-2:], "little"):
        raise DLMSError("HDLC FCS does not match", len(data) - 3)
    dst, dsize, p = _decode_address(body, 2)
    src, ssize, p = _decode_address(body, p)
    if p >= len(body) - 2:
        raise DLMSError("HDLC frame has no control field", p + 1)
    control = body[p]
    p += 1
    info = b""
    if p < len(body) - 2:  # an information field: HCS first
        if p + 2 > len(body) - 2:
            raise DLMSError("HDLC frame too short for its HCS", p + 1)
        if crc16(body[:p]) != int.from_bytes(body[p : p + 2], "little"):
            raise DLMSError("HDLC HCS does not match", p + 1)
        info = body[p + 2 : -2]
    return HdlcFrame(dst, src, control, info, bool(fmt & 0x0800), dsize, ssize)


class FrameReader:
    """Split a byte stream into frames (uses the length field; tolerates flag sharing and noise)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames: list[bytes] = []
        while True:
            while self.buf and self.buf[0] != FLAG:
                del self.buf[0]  # noise before a frame
            while len(self.buf) >= 2 and self.buf[1] == FLAG:
                del self.buf[0]  # empty frame / shared flags
            if len(self.buf) < 3:
                return frames
            length = int.from_bytes(self.buf[1:3], "big") & 0x07FF
            if (self.buf[1] >> 4) != 0xA or length < 7:
                del self.buf[0]
                continue
            if len(self.buf) < length + 2:
                return frames
            candidate = bytes(self.buf[: length + 2])
            if candidate[-1] != FLAG:
                del self.buf[0]
                continue
            frames.append(candidate)
            del self.buf[: length + 1]  # keep the closing flag: it may open the next frame
            if len(self.buf) == 1:
                self.buf.clear()


# SNRM/UA information field (Green Book 8.4.5.3.2): format 0x81, group 0x80, then parameters
def negotiation(max_info_tx: int, max_info_rx: int, window_tx: int = 1, window_rx: int = 1) -> bytes:
    params = (bytes([0x05, 2]) + max_info_tx.to_bytes(2, "big") + bytes([0x06, 2]) + max_info_rx.to_bytes(2, "big")
              + bytes([0x07, 4]) + window_tx.to_bytes(4, "big") + bytes([0x08, 4]) + window_rx.to_bytes(4, "big"))
    return bytes([0x81, 0x80, len(params)]) + params


def parse_negotiation(info: bytes) -> dict[int, int]:
    """{parameter id: value}; empty when no information field was sent (defaults apply)."""
    if not info:
        return {}
    if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80 or info[2] != len(info) - 3:
        raise DLMSError("bad HDLC parameter negotiation field", 0)
    out = {}
    p = 3
    while p < len(info):
        if p + 2 > len(info):
            raise DLMSError("truncated HDLC parameter", p)
        pid, n = info[p], info[p + 1]
        if p + 2 + n > len(info) or n > 4:
            raise DLMSError("HDLC parameter runs past its field", p)
        out[pid] = int.from_bytes(info[p + 2 : p + 2 + n], "big")
        p += 2 + n
    return out
