"""Wireless M-Bus (EN 13757-4 link layer, EN 13757-7 / OMS Vol.2 transport and security) decoder.

Sans-I/O: one telegram's bytes (+ the meter's AES key if encrypted) in, dataclasses out.
- link layer: L, C, M (3-letter manufacturer), A (id, version, device type), CI;
  CRC blocks of frame format A or B are checked (a bad CRC is an error) and stripped;
  telegrams already stripped of CRCs (as most receivers deliver them) are accepted too.
- extended link layer CI 8Ch/8Dh (unencrypted ELL), transport layer CI 7Ah (short: ACC, status,
  configuration word), 72h (long: plus id/manufacturer/version/type), 78h (none).
- security mode 5: AES-128-CBC, IV = M + A + 8 x ACC, decrypted data must start with 2F2Fh.
The application layer goes through the same record decoder as wired M-Bus (covers HES-40).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from osos.protocols.mbus import MBusHeader, bcd_id, read_input
from osos.protocols.mbus_records import MBusError, Record, decode_records, record_to_json
from osos.protocols.mbus_tables import device_type, manufacturer_code

__all__ = ["WMBusError", "WMBusTelegram", "crc16_en13757", "decode", "decode_to_json", "strip_crcs"]

_C_NAMES = {0x44: "SND_NR", 0x46: "SND_IR", 0x47: "ACC_NR", 0x48: "ACC_DMD", 0x08: "RSP_UD",
            0x06: "ACK", 0x40: "SND_NKE", 0x53: "SND_UD", 0x73: "SND_UD"}
_FIRST_BLOCK = 10  # L C M M A A A A A A
_BLOCK = 16


class WMBusError(MBusError):
    """Malformed, corrupted (CRC) or undecryptable wM-Bus telegram."""


@dataclass(frozen=True)
class WMBusTelegram:
    """A decoded wM-Bus telegram. ``header`` is the link-layer address (or the long TPL address
    when CI 72h carries one); ``link`` keeps the link-layer address if they differ."""

    c: int
    header: MBusHeader
    link: MBusHeader
    ci: int
    access_number: int | None
    status: int | None
    configuration: int | None
    security_mode: int
    frame_format: str  # "A", "B" or "none" (CRCs already removed by the receiver)
    records: list[Record] = field(default_factory=list)
    encrypted: bool = False  # True when the payload stays encrypted (no key given)
    decrypted_upstream: bool = False  # mode 5/7 announced but payload already clear (2F2F)

    @property
    def function(self) -> str:
        return _C_NAMES.get(self.c, f"C=0x{self.c:02X}")


def crc16_en13757(data: bytes) -> int:
    """CRC of EN 13757-4 (poly 3D65h, init 0, final complement)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x3D65) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc ^ 0xFFFF


def _check(block: bytes, crc: bytes, position: int, what: str) -> None:
    if crc16_en13757(block) != int.from_bytes(crc, "big"):
        raise WMBusError(f"CRC error in {what}", position)


def _strip_a(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    size = _FIRST_BLOCK
    number = 1
    while i < len(data):
        size = min(size, len(data) - i - 2)
        if size <= 0:
            raise WMBusError("frame format A: block without its CRC", i)
        block = data[i : i + size]
        _check(block, data[i + size : i + size + 2], i + size, f"block {number} (format A)")
        out += block
        i += size + 2
        size = _BLOCK
        number += 1
    return bytes(out)


def _format_a_length(length: int) -> int:
    payload = length - 9  # bytes after the first block
    blocks = 1 + (payload + _BLOCK - 1) // _BLOCK if payload > 0 else 1
    return length + 1 + 2 * blocks


def _strip_b(data: bytes) -> bytes:
    """Format B: L counts CRCs; block 2 holds up to 115 data bytes + CRC over blocks 1-2."""
    if len(data) <= 128:
        _check(data[:-2], data[-2:], len(data) - 2, "block 2 (format B)")
        return data[:-2]
    _check(data[:126], data[126:128], 126, "block 2 (format B)")
    _check(data[128:-2], data[-2:], len(data) - 2, "block 3 (format B)")
    return data[:126] + data[128:-2]


def strip_crcs(data: bytes, frame_format: str = "auto") -> tuple[bytes, str]:
    """Remove and verify the link-layer CRCs. Returns the telegram without CRCs (L corrected)
    and the format found. ``auto``: a length matching format A means format A (CRCs checked);
    a length of exactly L+1 is format B if its CRCs hold, otherwise a telegram without CRCs."""
    if len(data) < 11:
        raise WMBusError(f"telegram too short ({len(data)} bytes) for the link-layer header", len(data))
    length = data[0]
    if frame_format in ("auto", "A") and len(data) == _format_a_length(length) and len(data) != length + 1:
        body = _strip_a(data)
        return bytes([len(body) - 1]) + body[1:], "A"
    if frame_format == "A":
        raise WMBusError(f"frame format A with L={length} needs {_format_a_length(length)} bytes, "
                         f"got {len(data)}", len(data))
    if len(data) != length + 1:
        raise WMBusError(f"L field says {length + 1} bytes, got {len(data)}", 0)
    if frame_format == "B":
        body = _strip_b(data)
        return bytes([len(body) - 1]) + body[1:], "B"
    if frame_format == "auto" and len(data) >= 13:
        try:
            body = _strip_b(data)
        except WMBusError:
            return bytes(data), "none"
        return bytes([len(body) - 1]) + body[1:], "B"
    return bytes(data), "none"


def _aes_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _address(raw: bytes) -> MBusHeader:
    """M (2 bytes) + A (id 4, version, type) as found in link layer and long TPL."""
    return MBusHeader(id=bcd_id(raw[2:6]), manufacturer=manufacturer_code(int.from_bytes(raw[0:2], "little")),
                      version=raw[6], medium=raw[7])


def decode(data: bytes, key: bytes | None = None, frame_format: str = "auto",
           allow_encrypted: bool = False) -> WMBusTelegram:
    """Decode one wM-Bus telegram. Raises WMBusError on bad input, bad CRC, wrong or missing key
    (unless ``allow_encrypted``: then the header comes back with ``encrypted=True``, no records)."""
    if key is not None and len(key) != 16:
        raise WMBusError(f"AES-128 key must be 16 bytes, got {len(key)}", None)
    tel, fmt = strip_crcs(bytes(data), frame_format)
    c = tel[1]
    link = _address(tel[2:10])
    header = link
    i = _FIRST_BLOCK
    ci = tel[i]
    access = status = config = None
    if ci in (0x8C, 0x8D):  # extended link layer: CC, ACC [, SN(4), payload CRC(2)]
        access = tel[i + 2] if i + 2 < len(tel) else None
        if ci == 0x8C:
            i += 3
        else:
            if len(tel) < i + 9:
                raise WMBusError("extended link layer (CI 8Dh) too short", len(tel))
            sn = int.from_bytes(tel[i + 3 : i + 7], "little")
            payload_crc = int.from_bytes(tel[i + 7 : i + 9], "little")
            rest = tel[i + 9 :]
            if sn >> 29 and crc16_en13757(rest) != payload_crc:
                raise WMBusError("ELL session encryption (AES-CTR) is not supported", i)
            if crc16_en13757(rest) != payload_crc:
                raise WMBusError("ELL payload CRC mismatch", i + 7)
            i += 9
        if i >= len(tel):
            raise WMBusError("no CI field after the extended link layer", i)
        ci = tel[i]
    if ci == 0x90:  # authentication and fragmentation layer: skip it (its MAC serves mode 7)
        if i + 1 >= len(tel) or i + 2 + tel[i + 1] >= len(tel):
            raise WMBusError("authentication and fragmentation layer (CI 90h) runs past the end", i)
        i += 2 + tel[i + 1]
        ci = tel[i]
    base = i + 1
    if ci == 0x7A:
        if len(tel) < base + 4:
            raise WMBusError("short transport header (CI 7Ah) needs 4 bytes", len(tel))
        access, status = tel[base], tel[base + 1]
        config = int.from_bytes(tel[base + 2 : base + 4], "little")
        iv_address = tel[2:10]
        payload_at = base + 4
    elif ci == 0x72:
        if len(tel) < base + 12:
            raise WMBusError("long transport header (CI 72h) needs 12 bytes", len(tel))
        # long header: id(4) M(2) version type ACC status CFG(2); IV uses this address
        raw = tel[base : base + 12]
        iv_address = raw[4:6] + raw[0:4] + raw[6:8]
        header = _address(iv_address)
        access, status = raw[8], raw[9]
        config = int.from_bytes(raw[10:12], "little")
        payload_at = base + 12
    elif ci == 0x78:
        iv_address = tel[2:10]
        payload_at = base
    elif ci == 0x79:
        raise WMBusError("compact frame (CI 79h) needs the meter's full-frame format: not supported", i)
    else:
        raise WMBusError(f"unsupported CI field 0x{ci:02X}", i)
    mode = (config >> 8) & 0x1F if config is not None else 0
    payload = tel[payload_at:]
    result = dict(c=c, header=header, link=link, ci=ci, access_number=access, status=status,
                  configuration=config, security_mode=mode, frame_format=fmt)
    upstream = key is None and mode in (5, 7) and payload[:2] == b"\x2f\x2f"
    if upstream:
        # the receiver already decrypted it (the configuration word still names the mode):
        # 2F2F cannot be told from ciphertext with certainty (1 in 65536), so it is flagged
        result["decrypted_upstream"] = True
    elif mode == 5:
        blocks = (config >> 4) & 0x0F if config is not None else 0
        size = 16 * blocks
        if size == 0 or size > len(payload):
            raise WMBusError(f"mode 5 says {blocks} encrypted blocks, {len(payload)} bytes present", payload_at)
        if key is None:
            if allow_encrypted:
                return WMBusTelegram(**result, encrypted=True)
            raise WMBusError("telegram is encrypted (security mode 5): a key is needed", payload_at)
        iv = bytes(iv_address) + bytes([access or 0]) * 8
        clear = _aes_cbc_decrypt(key, iv, bytes(payload[:size]))
        if clear[:2] != b"\x2f\x2f":
            raise WMBusError("decryption check failed (no 2F2F after decryption): wrong key or "
                             "corrupted telegram", payload_at)
        payload = clear + payload[size:]
    elif mode != 0:
        raise WMBusError(f"security mode {mode} is not supported", base)
    try:
        records, _more = decode_records(payload, payload_at)
    except WMBusError:
        raise
    except MBusError as exc:
        raise WMBusError(exc.reason, exc.position) from None
    return WMBusTelegram(**result, records=records)


def telegram_to_json(t: WMBusTelegram) -> dict:
    header = {"c": f"{t.c:02X}", "function": t.function, "ci": f"{t.ci:02X}", **t.header.to_json(),
              "frame_format": t.frame_format, "security_mode": t.security_mode}
    header.pop("secondary_address", None)
    header["device_type"] = device_type(t.header.medium)[1]
    if t.access_number is not None:
        header["access_number"] = t.access_number
    if t.status is not None:
        header["status"] = f"{t.status:02X}"
    if t.configuration is not None:
        header["configuration"] = f"{t.configuration:04X}"
    if t.link != t.header:
        header["link_address"] = t.link.to_json()
    if t.encrypted:
        header["encrypted"] = True
    if t.decrypted_upstream:
        header["decrypted_upstream"] = True
    return {"header": header, "records": [record_to_json(r) for r in t.records]}


def decode_to_json(data: bytes, key: bytes | None = None) -> dict:
    """`osos decode --protocol wmbus [--key HEX]`: JSON with header and records."""
    return telegram_to_json(decode(read_input(data), key))
