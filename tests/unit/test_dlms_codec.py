"""DLMS codec: A-XDR data, xDLMS APDUs, wrapper, suite-0 ciphering (covers HES-40).

Expected bytes are written out by hand from the Green Book / Blue Book encodings, or are the
published Green Book test vectors (the same ones the jDLMS and dlms-cosem test suites use).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from osos.protocols import dlms as D
from osos.protocols.errors import DecodeError

# Green Book ed.7, security examples (Table 40 keys): glo-get-request for the clock's time
EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
GB_TITLE = bytes.fromhex("4D4D4D0000BC614E")
GB_IC = 0x01234567
GB_PLAIN = bytes.fromhex("C0010000080000010000FF0200")
GB_CIPHERED = bytes.fromhex("C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B")


def test_green_book_glo_get_request_vector() -> None:
    out = D.cipher_apdu(GB_PLAIN, system_title=GB_TITLE, invocation_counter=GB_IC, ek=EK, ak=AK)
    assert out == GB_CIPHERED
    c = D.decode_apdu(GB_CIPHERED)
    assert isinstance(c, D.CipheredApdu)
    assert (c.tag, c.security_control, c.invocation_counter) == (0xC8, 0x30, GB_IC)
    assert D.decipher_apdu(c, system_title=GB_TITLE, ek=EK, ak=AK) == GB_PLAIN


def test_green_book_plain_request_is_a_get_of_clock_time() -> None:
    req = D.decode_apdu(GB_PLAIN)
    assert req == D.GetRequest(D.AttributeRef(8, bytes([0, 0, 1, 0, 0, 255]), 2), None, D.InvokeId(0, False, False))
    assert D.encode_apdu(req) == GB_PLAIN


def test_tampered_ciphertext_is_refused() -> None:
    bad = bytearray(GB_CIPHERED)
    bad[10] ^= 1
    c = D.decode_apdu(bytes(bad))
    assert isinstance(c, D.CipheredApdu)
    with pytest.raises(D.DLMSError, match="authentication tag"):
        D.decipher_apdu(c, system_title=GB_TITLE, ek=EK, ak=AK)


def test_green_book_hls_gmac_vector() -> None:
    # Green Book HLS-GMAC example: client title 4D4D4D0000000001, IC 1, StoC "P6wRJ21F"
    tag = D.gmac_tag(bytes.fromhex("503677524A323146"), system_title=bytes.fromhex("4D4D4D0000000001"),
                     invocation_counter=1, ek=EK, ak=AK)
    assert tag == bytes.fromhex("1A52FE7DD3E72748973C1E28")
    f = D.hls_gmac_response(bytes.fromhex("503677524A323146"), system_title=bytes.fromhex("4D4D4D0000000001"),
                            invocation_counter=1, ek=EK, ak=AK)
    assert f == bytes.fromhex("10" "00000001" "1A52FE7DD3E72748973C1E28")


def test_unauthenticated_decryption_with_only_the_encryption_key() -> None:
    c = D.decode_apdu(GB_CIPHERED)
    assert isinstance(c, D.CipheredApdu)
    plain = D.decrypt_unauthenticated(c.ciphertext, system_title=GB_TITLE, invocation_counter=GB_IC, ek=EK)
    assert plain == GB_PLAIN


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        (D.u32(5), "0600000005"),
        (D.i32(-1), "05FFFFFFFF"),
        (D.u16(0x1234), "121234"),
        (D.i16(-180), "10FF4C"),
        (D.i8(-3), "0FFD"),
        (D.u8(255), "11FF"),
        (D.enum(30), "161E"),
        (D.boolean(True), "03FF"),
        (D.null(), "00"),
        (D.octets(b"\x01\x02"), "09020102"),
        (D.visible("AB"), "0A024142"),
        (D.Data(D.DataType.BIT_STRING, "1010000011"), "040AA0C0"),
        (D.Data(D.DataType.LONG64_UNSIGNED, 2**40), "150000010000000000"),
        (D.struct_(D.i8(-1), D.enum(30)), "02020FFF161E"),
        (D.array([D.u8(1), D.u8(2)]), "0102110111 02".replace(" ", "")),
    ],
)
def test_axdr_encodings(data: D.Data, encoded: str) -> None:
    raw = bytes.fromhex(encoded)
    assert D.encode_data(data) == raw
    assert D.decode_data_exact(raw) == data


def test_long_lengths_use_the_multi_byte_form() -> None:
    assert D.encode_length(127) == b"\x7f"
    assert D.encode_length(128) == b"\x81\x80"
    assert D.encode_length(300) == b"\x82\x01\x2c"
    big = D.octets(bytes(300))
    raw = D.encode_data(big)
    assert raw[:4] == b"\x09\x82\x01\x2c"
    assert D.decode_data_exact(raw) == big
    arr = D.array([D.u8(i % 256) for i in range(200)])
    assert D.encode_data(arr)[:3] == b"\x01\x81\xc8"
    assert D.decode_data_exact(D.encode_data(arr)) == arr


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "input ends"),
        ("06000000", "needs 4 bytes"),
        ("0905AABB", "needs 5 bytes"),
        ("0103", "cannot fit"),
        ("07", "unknown data type"),
        ("0A02FF41", "not valid text"),
        ("098500000000", "length-of-length"),
    ],
)
def test_bad_data_raises_dlms_error(raw: str, reason: str) -> None:
    with pytest.raises(D.DLMSError, match=reason) as exc:
        D.decode_data_exact(bytes.fromhex(raw))
    assert isinstance(exc.value, DecodeError)
    assert exc.value.position is not None


def test_deep_nesting_is_bounded() -> None:
    raw = b"\x01\x01" * 100 + b"\x00"
    with pytest.raises(D.DLMSError, match="nested too deeply"):
        D.decode_data_exact(raw)


def test_date_time_deviation_follows_blue_book_sign() -> None:
    # 2026-11-21 14:05:09.50 local UTC+03:00 -> deviation -180 (0xFF4C), Saturday = 6
    when = dt.datetime(2026, 11, 21, 14, 5, 9, 500000, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    raw = D.datetime_to_octets(when)
    assert raw == bytes.fromhex("07EA 0B 15 06 0E 05 09 32 FF4C 00".replace(" ", ""))
    back = D.octets_to_datetime(raw)
    assert back.deviation == -180
    assert back.to_datetime() == when
    naive = D.octets_to_datetime(bytes.fromhex("07EA0B15060E050932800000"))
    assert naive.deviation is None and naive.to_datetime().tzinfo is None


def test_wildcard_date_time_cannot_become_a_datetime() -> None:
    cdt = D.octets_to_datetime(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x80\x00\xff")
    assert cdt.year is None and cdt.hour is None
    with pytest.raises(D.DLMSError):
        cdt.to_datetime()


def test_obis_notations() -> None:
    assert D.obis_bytes("1-0:1.8.0.255") == bytes([1, 0, 1, 8, 0, 255])
    assert D.obis_bytes("1.0.1.8.1.255") == bytes([1, 0, 1, 8, 1, 255])
    assert D.obis_bytes("1-0:99.1.0") == bytes([1, 0, 99, 1, 0, 255])
    assert D.obis_str(bytes([0, 0, 96, 3, 10, 255])) == "0-0:96.3.10.255"
    with pytest.raises(ValueError):
        D.obis_bytes("1.0.1.8.300.255")


def test_scaler_is_exact() -> None:
    assert D.scaled(152142340, -1) == Decimal("15214234.0")
    assert D.scaled(15, 3) == Decimal("15000")
    assert D.scaled(15214234, -3) == Decimal("15214.234")


def test_get_request_with_range_descriptor_layout() -> None:
    # selector 1: structure{restricting object, from, to, selected values}
    start = dt.datetime(2026, 11, 21, 10, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    params = D.struct_(D.struct_(D.u16(8), D.octets(bytes([0, 0, 1, 0, 0, 255])), D.i8(2), D.u16(0)),
                       D.octets(D.datetime_to_octets(start)), D.octets(D.datetime_to_octets(start)), D.array([]))
    req = D.GetRequest(D.AttributeRef(7, bytes([1, 0, 99, 1, 0, 255]), 2), D.AccessSelection(1, params))
    raw = D.encode_apdu(req)
    assert raw[:12] == bytes.fromhex("C001C1" "0007" "0100630100FF" "02")
    assert raw[12:15] == b"\x01\x01\x02"  # access selection present, selector 1, structure
    assert D.decode_apdu(raw) == req


@pytest.mark.parametrize(
    "apdu",
    [
        D.GetRequestNext(7, D.InvokeId(3)),
        D.GetRequestWithList(((D.AttributeRef(8, bytes([0, 0, 1, 0, 0, 255]), 2), None),
                              (D.AttributeRef(7, bytes([1, 0, 99, 1, 0, 255]), 2),
                               D.AccessSelection(2, D.struct_(D.u32(1), D.u32(2), D.u16(1), D.u16(0)))))),
        D.GetResponseWithList((D.u32(1), D.DataAccessResult.OBJECT_UNDEFINED, D.octets(b"x"))),
        D.GetResponse(D.u32(1234), None, D.InvokeId(2)),
        D.GetResponse(None, D.DataAccessResult.OBJECT_UNDEFINED),
        D.GetResponseBlock(False, 1, b"\x01\x02\x03"),
        D.GetResponseBlock(True, 4, None, D.DataAccessResult.DATA_BLOCK_NUMBER_INVALID),
        D.SetRequest(D.AttributeRef(8, bytes([0, 0, 1, 0, 0, 255]), 2), D.octets(bytes(12))),
        D.SetResponse(D.DataAccessResult.READ_WRITE_DENIED),
        D.ActionRequest(D.AttributeRef(70, bytes([0, 0, 96, 3, 10, 255]), 1), D.i8(0)),
        D.ActionRequest(D.AttributeRef(70, bytes([0, 0, 96, 3, 10, 255]), 2), None),
        D.ActionResponse(D.ActionResult.SUCCESS),
        D.ActionResponse(D.ActionResult.SUCCESS, D.octets(bytes(17))),
        D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED, D.ServiceError.INVOCATION_COUNTER_ERROR, 99),
        D.ExceptionResponse(D.StateError.SERVICE_UNKNOWN, D.ServiceError.OTHER_REASON),
        D.DataNotification(D.struct_(D.u32(1)), 5, D.datetime_to_octets(dt.datetime(2026, 1, 1))),
        D.DataNotification(D.u8(1)),
    ],
)
def test_apdu_round_trip(apdu: D.Apdu) -> None:
    assert D.decode_apdu(D.encode_apdu(apdu)) == apdu


def test_known_apdu_bytes() -> None:
    # get-response-normal, invoke 0xC1, data = double-long-unsigned 5
    assert D.encode_apdu(D.GetResponse(D.u32(5))) == bytes.fromhex("C401C1000600000005")
    # set-response-normal success
    assert D.encode_apdu(D.SetResponse(D.DataAccessResult.SUCCESS)) == bytes.fromhex("C501C100")
    # action-request remote_disconnect(integer 0) on the disconnector
    assert D.encode_apdu(D.ActionRequest(D.AttributeRef(70, bytes([0, 0, 96, 3, 10, 255]), 1), D.i8(0))) == \
        bytes.fromhex("C301C1" "0046" "00006003 0AFF".replace(" ", "") + "01" + "01" + "0F00")
    # exception-response with invocation-counter-error carries the expected counter
    assert D.encode_apdu(D.ExceptionResponse(1, 6, 0x10)) == bytes.fromhex("D8010600000010")


def test_with_list_bytes() -> None:
    # get-request-with-list: 2 attributes (clock time, 1.8.0 value), no access selection
    req = D.GetRequestWithList(((D.AttributeRef(8, bytes([0, 0, 1, 0, 0, 255]), 2), None),
                                (D.AttributeRef(3, bytes([1, 0, 1, 8, 0, 255]), 2), None)))
    assert D.encode_apdu(req) == bytes.fromhex("C003C102" "0008 0000010000FF 02 00" "0003 0100010800FF 02 00"
                                               .replace(" ", ""))
    # get-response-with-list: data 5, then object-undefined (4)
    resp = D.GetResponseWithList((D.u32(5), D.DataAccessResult.OBJECT_UNDEFINED))
    assert D.encode_apdu(resp) == bytes.fromhex("C403C102" "00 0600000005" "01 04".replace(" ", ""))


def test_wrapper_round_trip_and_checks() -> None:
    frame = D.wrap(GB_PLAIN, 16, 1)
    assert frame[:8] == bytes.fromhex("0001 0010 0001 000D".replace(" ", ""))
    assert D.unwrap(frame) == D.WrapperFrame(16, 1, GB_PLAIN)
    with pytest.raises(D.DLMSError, match="version"):
        D.unwrap(b"\x00\x02" + frame[2:])
    with pytest.raises(D.DLMSError, match="carries"):
        D.unwrap(frame[:-1])


def test_acse_errors_are_dlms_errors() -> None:
    with pytest.raises(D.DLMSError):
        D.decode_apdu(bytes.fromhex("6003A10100"))
    with pytest.raises(D.DLMSError, match="length"):
        D.decode_apdu(bytes.fromhex("60FF"))


def test_decode_to_json_of_ciphered_frame_with_keys() -> None:
    general = D.cipher_apdu(GB_PLAIN, system_title=GB_TITLE, invocation_counter=GB_IC, ek=EK, ak=AK, general=True)
    out = D.decode_to_json(D.wrap(general, 1, 16), EK + AK)
    assert out["apdu"] == "general-glo-cipher"
    assert out["transport"] == "wrapper"
    assert out["system_title"] == GB_TITLE.hex()
    assert out["authenticated"] is True
    assert out["decrypted"]["apdu"] == "get-request-normal"
    assert out["decrypted"]["attribute"] == {"class_id": 8, "obis": "0-0:1.0.0.255", "index": 2}
    one_key = D.decode_to_json(general, EK)
    assert one_key["authenticated"] is False and one_key["decrypted"] == out["decrypted"]
    with pytest.raises(D.DLMSError, match="authentication tag"):
        D.decode_to_json(general, EK + bytes(16))


def test_decode_to_json_typed_values() -> None:
    resp = D.GetResponse(D.struct_(D.i8(-1), D.enum(30)))
    out = D.decode_to_json(D.encode_apdu(resp), None)
    assert out == {"apdu": "get-response-normal", "invoke_id": 1, "error": None, "transport": "none",
                   "data": {"type": "structure", "value": [{"type": "integer", "value": -1},
                                                           {"type": "enum", "value": 30}]}}


def test_decode_ciphered_aarq_shows_the_initiate_request() -> None:
    from dlms_cosem import enumerations as E
    from dlms_cosem.protocol import acse, xdlms
    from dlms_cosem.protocol.xdlms.conformance import Conformance
    from dlms_cosem.security import SecurityControlField

    initiate = xdlms.InitiateRequest(proposed_conformance=Conformance(get=True, selective_access=True),
                                     client_max_receive_pdu_size=512)
    title = bytes.fromhex("4D4D4D0000000001")
    ct = D.encrypt(initiate.to_bytes(), system_title=title, invocation_counter=7, ek=EK, ak=AK)
    aarq = acse.ApplicationAssociationRequest(
        user_information=acse.UserInformation(content=xdlms.GlobalCipherInitiateRequest(
            security_control=SecurityControlField(0, authenticated=True, encrypted=True),
            invocation_counter=7, ciphered_text=ct)),
        system_title=title, authentication=E.AuthenticationMechanism.HLS_GMAC, ciphered=True,
        authentication_value=b"K56iVagY")
    out = D.decode_to_json(bytes(aarq.to_bytes()), EK + AK)
    assert (out["apdu"], out["ciphered"], out["authentication"]) == ("aarq", True, "hls_gmac")
    assert out["invocation_counter"] == 7 and out["authenticated"] is True
    assert out["decrypted"] == {"apdu": "InitiateRequest", "conformance": ["get", "selective_access"],
                                "max_receive_pdu_size": 512}
    with pytest.raises(D.DLMSError, match="authentication tag"):
        D.decode_to_json(bytes(aarq.to_bytes()), EK + bytes(16))
