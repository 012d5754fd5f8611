"""Property tests of the S3 binary image (covers TAX-3, TAX-4, TAX-5).

decode(encode(x)) == x for generated tariff sets in the image's own terms, and decoding arbitrary
or corrupted bytes only ever raises TariffBinaryError (a TariffError and a DecodeError).
"""

from __future__ import annotations

import struct
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osos.tariff.binary import TariffBinaryError, crc16, decode, encode
from osos.tariff.calendar import Activation, MonthDay
from osos.tariff.model import Source, TaxiTariff, TaxiTariffSet, Tier

NOS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
KINDS = ("distance", "time", "amount", "speed")
PREFIX = {"distance": "d", "time": "t", "amount": "a", "speed": "s"}
CAP = {"distance": 5, "time": 3, "amount": 3, "speed": 3}  # small tables keep the run fast
FLAG_WIDTH = {"distance": 16, "time": 8, "amount": 8, "speed": 8}


def dec(n: int, scale: int) -> Decimal:
    return Decimal(n) / Decimal(scale)


steps = st.integers(0, 96)


@st.composite
def activations(draw: st.DrawFn) -> Activation:
    kind = draw(st.sampled_from(("N", "D", "W", "HN", "HD", "HW", "SN", "SD", "SW")))
    kw: dict = {}
    if kind[-1] == "W":
        kw["weekdays"] = tuple((draw(steps), draw(steps)) for _ in range(7))
    elif kind != "N":
        kw["start_step"], kw["end_step"] = draw(steps), draw(steps)
    if kind[0] == "H":
        kw["from_date"] = MonthDay(draw(st.integers(1, 12)), draw(st.integers(1, 28)))
        kw["to_date"] = MonthDay(draw(st.integers(1, 12)), draw(st.integers(1, 28)))
    elif kind[0] == "S":
        first = date(2000, 1, 1) + timedelta(days=draw(st.integers(0, 60000)))
        kw["from_date"], kw["to_date"] = first, first + timedelta(days=draw(st.integers(0, 5000)))
    return Activation(kind, **kw)


@st.composite
def tier(draw: st.DrawFn, kind: str, index: int, tenth: int, minor: int) -> Tier:
    """A tier as the image holds it. Tier fares (1000..9999 tenths) and units (above 300 m / 512 s) are
    drawn from ranges the base tariffs never use, so every slot really changes something."""
    limit = {
        "distance": lambda: Decimal(draw(st.integers(0, 2**32 - 1))),
        "time": lambda: Decimal(draw(st.integers(0, 0xFFFF))),
        "amount": lambda: dec(draw(st.integers(0, 2**32 - 1)), tenth),
        "speed": lambda: Decimal(draw(st.integers(0, 255))),
    }[kind]()
    kw: dict = {}
    if draw(st.booleans()):  # a new monetary step (both unit fares) with both units stated
        step = dec(draw(st.integers(20, 199)) * 5, minor)
        kw.update(monetary_step=step, unit_distance_fare=step, unit_time_fare=step,
                  unit_distance=dec(draw(st.integers(30001, 55535)), 100),
                  unit_time_s=dec(draw(st.integers(32769, 55535)), 64))
    else:
        side_d = draw(st.sampled_from(("keep", "fare", "unit")))
        side_t = draw(st.sampled_from(("keep", "fare", "unit")))
        if side_d == "fare":
            kw["unit_distance_fare"] = dec(draw(st.integers(1000, 9999)), tenth)
        elif side_d == "unit":
            kw["unit_distance"] = dec(draw(st.integers(30001, 55535)), 100)
        if side_t == "fare":
            kw["unit_time_fare"] = dec(draw(st.integers(1000, 9999)), tenth)
        elif side_t == "unit":
            kw["unit_time_s"] = dec(draw(st.integers(32769, 55535)), 64)
    return Tier(
        id=f"{PREFIX[kind]}{index}", kind=kind, limit=limit,  # type: ignore[arg-type]
        dwell_s=draw(st.integers(0, 255)) if kind == "speed" else 0,
        switch_to=draw(st.one_of(st.none(), st.sampled_from(NOS))), **kw,
    )


@st.composite
def tariff_sets(draw: st.DrawFn) -> TaxiTariffSet:
    decimals = draw(st.sampled_from((0, 2)))
    minor, tenth = 10**decimals, 10 ** (decimals + 1)
    tiers: list[Tier] = []
    for kind in KINDS:
        for i in range(1, draw(st.integers(0, CAP[kind])) + 1):
            tiers.append(draw(tier(kind, i, tenth, minor)))
    nos = draw(st.lists(st.sampled_from(NOS), min_size=1, max_size=4, unique=True))
    tariffs = []
    for no in nos:
        refs = [t.id for t in tiers if draw(st.booleans())]
        acts = draw(st.lists(activations(), min_size=1, max_size=3))
        crossover = draw(st.integers(0, 0xFFFF))
        tariffs.append(TaxiTariff(
            no=no, name=f"Tariff {no}", mode=draw(st.sampled_from(("S", "D"))),
            charge=draw(st.sampled_from(("completed", "started"))),
            opening_fare=dec(draw(st.integers(0, 0xFFFF)), minor),
            opening_distance=dec(draw(st.integers(0, 0xFFFF)), 10),
            opening_time_s=dec(draw(st.integers(0, 0xFFFF)), 16),
            unit_distance_fare=dec(draw(st.integers(1, 999)), tenth),
            unit_distance=dec(draw(st.integers(1, 30000)), 100),
            unit_time_fare=dec(draw(st.integers(0, 999)), tenth),
            unit_time_s=dec(draw(st.integers(1, 32768)), 64),
            extra_fare=dec(draw(st.integers(0, 0xFFFF)), tenth),
            max_extras=draw(st.integers(0, 255)),
            minimum_fare=dec(draw(st.integers(0, 0xFFFF)), minor),
            crossover_kmh=dec(crossover, 100) if crossover else None,
            tiers=tuple(refs),
            activation=acts[0],
            also_active=tuple(acts[1:]),
        ))
    code = draw(st.integers(0, 0xFFFF))
    return TaxiTariffSet(
        name=f"s3-image-{code}", city="", country="", year=draw(st.integers(1900, 2100)),
        currency=draw(st.sampled_from(("EUR", "TRY", "GBP", "IRR"))), decimals=decimals,
        distance_unit=draw(st.sampled_from(("m", "yd"))),
        source=Source(url="", title="decoded from an S3 binary tariff image", accessed=""),
        tariffs=tuple(tariffs), tiers=tuple(tiers), tariff_code=code,
        only_one_active=draw(st.booleans()), dst_switch=draw(st.booleans()),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariff_sets())
def test_decode_of_encode_is_identity(ts: TaxiTariffSet) -> None:
    data = encode(ts)
    assert decode(data) == ts
    assert encode(decode(data)) == data


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_decode_of_random_bytes_raises_only_tariff_binary_error(data: bytes) -> None:
    try:
        decode(data)
    except TariffBinaryError as exc:
        assert exc.reason
    for payload in (b"S3TF" + data, b"S3TF\x01" + data):  # past the magic, with a valid CRC
        framed = payload + struct.pack("<H", crc16(payload))
        try:
            decode(framed)
        except TariffBinaryError as exc:
            assert exc.reason


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariff_sets(), st.data())
def test_corrupted_images_with_a_fixed_crc_decode_or_raise_tariff_binary_error(ts: TaxiTariffSet,
                                                                                data: st.DataObject) -> None:
    body = bytearray(encode(ts)[:-2])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    framed = bytes(body) + struct.pack("<H", crc16(bytes(body)))
    try:
        back = decode(framed)
    except TariffBinaryError as exc:
        assert exc.reason
    else:  # whatever decodes is a valid image again and round-trips
        assert decode(encode(back)) == back


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariff_sets(), st.data())
def test_long_fuzz_of_corrupted_images(ts: TaxiTariffSet, data: st.DataObject) -> None:
    test_corrupted_images_with_a_fixed_crc_decode_or_raise_tariff_binary_error.hypothesis.inner_test(ts, data)
