"""Device groups (issue 8 item 5, HES-10): selection by modem, tag, meter kind and brand, on SQLite and the real
PostgreSQL; the expected sets are written out here from the fleet built below.

covers HES-10
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from osos.headend.groups import GroupError, get_tags, group_meters, normalize_group, set_tags
from osos.headend.inventory import register_modem
from osos.store.db import make_engine, migrate
from osos.store.schema import meters

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def fleet(engine) -> dict[str, int]:
    """Two modems; GWA has m1 (MKL three-phase), m2 (LGZ single-phase), GWB has m3 (MKL single-phase), m4 (no
    brand). Tags: m1 {north, industrial}, m3 {north}."""
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        ids["A"] = register_modem(conn, "OSS", "GWA", by="test", now=T0)
        ids["B"] = register_modem(conn, "OSS", "GWB", by="test", now=T0)
        for name, modem, brand, kind in (("m1", "A", "MKL", "three-phase"), ("m2", "A", "LGZ", "single-phase"),
                                         ("m3", "B", "mkl", "single-phase"), ("m4", "B", None, None)):
            ids[name] = conn.execute(meters.insert().values(flag="MKL", serial=name, modem_id=ids[modem], brand=brand,
                                                            kind=kind, first_seen_at=T0)).inserted_primary_key[0]
        set_tags(conn, ids["m1"], ["north", "industrial", "north"])
        set_tags(conn, ids["m3"], ["north"])
    return ids


def select(engine, group: dict) -> set[int]:
    with engine.connect() as conn:
        return set(group_meters(conn, group))


def test_empty_group_is_every_meter(engine, fleet) -> None:
    assert select(engine, {}) == {fleet["m1"], fleet["m2"], fleet["m3"], fleet["m4"]}


def test_by_modem_id_serial_or_flag_serial(engine, fleet) -> None:
    assert select(engine, {"modems": [fleet["A"]]}) == {fleet["m1"], fleet["m2"]}
    assert select(engine, {"modems": ["GWB"]}) == {fleet["m3"], fleet["m4"]}
    assert select(engine, {"modems": ["OSSGWB", fleet["A"]]}) == {fleet["m1"], fleet["m2"], fleet["m3"], fleet["m4"]}
    assert select(engine, {"modems": ["NOPE"]}) == set()


def test_by_tag_any_of(engine, fleet) -> None:
    assert select(engine, {"tags": ["north"]}) == {fleet["m1"], fleet["m3"]}
    assert select(engine, {"tags": ["industrial", "absent"]}) == {fleet["m1"]}


def test_by_kind_and_brand_case_insensitive(engine, fleet) -> None:
    assert select(engine, {"brand": "MKL"}) == {fleet["m1"], fleet["m3"]}
    assert select(engine, {"kind": "Single-Phase"}) == {fleet["m2"], fleet["m3"]}


def test_keys_combine_with_and(engine, fleet) -> None:
    assert select(engine, {"tags": ["north"], "kind": "single-phase"}) == {fleet["m3"]}
    assert select(engine, {"modems": [fleet["A"]], "brand": "mkl"}) == {fleet["m1"]}
    assert select(engine, {"modems": [fleet["B"]], "tags": ["industrial"]}) == set()


def test_paging_yields_every_meter_once(engine, fleet) -> None:
    with engine.connect() as conn:
        got = list(group_meters(conn, {}, batch=1))
    assert got == sorted([fleet["m1"], fleet["m2"], fleet["m3"], fleet["m4"]])


def test_tags_replace_and_read_back(engine, fleet) -> None:
    with engine.begin() as conn:
        assert get_tags(conn, fleet["m1"]) == ["industrial", "north"]
        assert set_tags(conn, fleet["m1"], ["south"]) == ["south"]
        assert get_tags(conn, fleet["m1"]) == ["south"]
        with pytest.raises(GroupError):
            set_tags(conn, 999999, ["x"])


@pytest.mark.parametrize("bad", [
    [], {"zone": "x"}, {"modems": []}, {"modems": [True]}, {"modems": [1.5]}, {"tags": "north"}, {"tags": [""]},
    {"kind": 3}, {"brand": "x" * 65},
])
def test_bad_groups_are_refused(bad) -> None:
    with pytest.raises(GroupError):
        normalize_group(bad)


def test_normal_form() -> None:
    assert normalize_group({"tags": ["b", "a", "b"], "modems": [3, " GW1 "], "kind": " kombi "}) == {
        "tags": ["a", "b"], "modems": [3, "GW1"], "kind": "kombi"}
    assert normalize_group(None) == {}
