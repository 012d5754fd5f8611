"""Priority 0..9 (9 the most urgent) across kinds and sources, and the per-modem concurrency limit, on SQLite and
the real PostgreSQL; with two real PostgreSQL transactions the SKIP LOCKED claim never gives a busy modem a second
order (issue 8 item 2, HES-12).

covers HES-10, HES-12, HES-63
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select, update

from osos.headend import orders
from osos.headend.inventory import register_modem
from osos.store.db import make_engine, migrate
from osos.store.schema import meters, modems
from osos.store.schema import orders as orders_table

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def fleet(conn, modems_n: int, meters_per: int, prefix: str = "GWP") -> list[tuple[int, list[int]]]:
    out = []
    for m in range(modems_n):
        modem_id = register_modem(conn, "OSS", f"{prefix}{m:04d}", now=T0)
        conn.execute(insert(meters), [{"flag": "MKL", "serial": f"{prefix}{m:04d}{k:03d}", "modem_id": modem_id,
                                       "first_seen_at": T0} for k in range(meters_per)])
        ids = conn.execute(select(meters.c.id).where(meters.c.modem_id == modem_id).order_by(meters.c.id)).scalars()
        out.append((modem_id, list(ids)))
    return out


def test_a_priority_9_order_goes_before_1000_queued_low_priority_ones(engine) -> None:
    with engine.begin() as conn:
        targets = [meter for _, ms in fleet(conn, 50, 21) for meter in ms]
        low = targets[:1000]
        for i, meter in enumerate(low):  # low priority, of several kinds and sources
            kind, source = ("read", "schedule") if i % 2 else ("time-set", "api")
            orders.create_order(conn, kind, meter_id=meter, priority=i % 3, source=source, now=T0)
        urgent = orders.create_order(conn, "read", meter_id=targets[1000], priority=9, source="ui", now=T0)
    with engine.begin() as conn:
        assert orders.claim_next(conn, timeout_s=60, now=T0)["id"] == urgent


def test_higher_first_then_older_first(engine) -> None:
    with engine.begin() as conn:
        (_, ms_a), (_, ms_b), (_, ms_c), (_, ms_d) = fleet(conn, 4, 1, "GWQ")
        first5 = orders.create_order(conn, "read", meter_id=ms_a[0], priority=5, now=T0)
        four = orders.create_order(conn, "read", meter_id=ms_b[0], priority=4, now=T0)
        second5 = orders.create_order(conn, "read", meter_id=ms_c[0], priority=5, now=T0)
        seven = orders.create_order(conn, "time-set", meter_id=ms_d[0], priority=7, now=T0)
    claimed = []
    with engine.begin() as conn:
        while (got := orders.claim_next(conn, timeout_s=60, now=T0)) is not None:
            claimed.append(got["id"])
    assert claimed == [seven, first5, second5, four]


def test_priority_outside_0_to_9_is_refused(engine) -> None:
    with engine.begin() as conn:
        (modem_id, _), = fleet(conn, 1, 1, "GWR")
        for bad in (-1, 10):
            with pytest.raises(orders.OrderError, match="9 is the most urgent"):
                orders.create_order(conn, "read", modem_id=modem_id, priority=bad, now=T0)


def test_one_order_at_a_time_per_modem_unless_it_takes_more(engine) -> None:
    with engine.begin() as conn:
        (busy, busy_meters), (other, other_meters) = fleet(conn, 2, 3, "GWC")
        a1 = orders.create_order(conn, "read", meter_id=busy_meters[0], priority=9, now=T0)
        a2 = orders.create_order(conn, "read", meter_id=busy_meters[1], priority=9, now=T0)
        a3 = orders.create_order(conn, "read", meter_id=busy_meters[2], priority=9, now=T0)
        b1 = orders.create_order(conn, "read", meter_id=other_meters[0], priority=1, now=T0)
    with engine.begin() as conn:
        assert orders.claim_next(conn, timeout_s=60, now=T0)["id"] == a1
        # a2 is more urgent than b1, but its modem is busy: the lower-priority order of a free modem goes
        assert orders.claim_next(conn, timeout_s=60, now=T0)["id"] == b1
        assert orders.claim_next(conn, timeout_s=60, now=T0) is None
        conn.execute(update(modems).where(modems.c.id == busy).values(max_concurrent=2))  # its profile says 2
        assert orders.claim_next(conn, timeout_s=60, now=T0)["id"] == a2
        assert orders.claim_next(conn, timeout_s=60, now=T0) is None  # 2 running now
        ref = conn.execute(select(orders_table.c.reference_id).where(orders_table.c.id == a1)).scalar_one()
        orders.finish(conn, ref, succeeded=True, modem_id=busy, now=T0)
        assert orders.claim_next(conn, timeout_s=60, now=T0)["id"] == a3


def test_the_claim_update_recounts_the_modems_running_orders(engine) -> None:
    """The limit holds even for a claimer whose select is stale: the UPDATE itself counts the running orders
    (on SQLite, where there is no row lock, this is what keeps two claimers apart)."""
    with engine.begin() as conn:
        (modem_id, ms), = fleet(conn, 1, 2, "GWS")
        first = orders.create_order(conn, "read", meter_id=ms[0], now=T0)
        second = orders.create_order(conn, "read", meter_id=ms[1], now=T0)
        assert orders.claim_next(conn, timeout_s=60, now=T0)["id"] == first
        # another claimer that selected `second` before `first` was running now tries its update
        assert orders._move(conn, second, "claim", orders._running_on(modem_id) < 1, now=T0) is False
        assert conn.execute(select(orders_table.c.status).where(orders_table.c.id == second)).scalar_one() == "pending"


def test_two_dispatchers_on_postgresql_never_give_a_modem_two_orders(pg_url) -> None:
    """Dispatcher A has claimed modem X's first order and not committed; dispatcher B, claiming at that moment,
    skips X's locked modem row (SKIP LOCKED) and takes the free modem's order; after A commits, X is busy."""
    eng = make_engine(pg_url)
    migrate(eng)
    try:
        with eng.begin() as conn:
            (x, xs), (y, ys) = fleet(conn, 2, 2, "GWK")
            x1 = orders.create_order(conn, "read", meter_id=xs[0], priority=9, now=T0)
            x2 = orders.create_order(conn, "read", meter_id=xs[1], priority=9, now=T0)
            y1 = orders.create_order(conn, "read", meter_id=ys[0], priority=1, now=T0)
        a = eng.connect()
        tx = a.begin()
        assert orders.claim_next(a, timeout_s=60, now=T0)["id"] == x1  # locks x1 and modem X
        with eng.begin() as b:
            got = orders.claim_next(b, timeout_s=60, now=T0)
            assert got is not None and got["id"] == y1  # not x2: X's row is locked by A
        tx.commit()
        a.close()
        with eng.begin() as b:
            assert orders.claim_next(b, timeout_s=60, now=T0) is None  # X runs x1, Y runs y1
        with eng.connect() as conn:
            status = dict(conn.execute(select(orders_table.c.id, orders_table.c.status)).all())
        assert status == {x1: "running", x2: "pending", y1: "running"}
    finally:
        eng.dispose()


def test_bulk_create_skips_open_duplicates_and_claim_batch_keeps_the_rules(engine) -> None:
    """The set-based paths (scheduler groups, bench/orders.py): one INSERT ... SELECT that skips meters with an
    identical open order, and a batch claim with the same priority order and per-modem limit as claim_next."""
    with engine.begin() as conn:
        fleet_rows = fleet(conn, 3, 2, "GWB")
        all_meters = [m for _, ms in fleet_rows for m in ms]
        orders.create_order(conn, "read", meter_id=all_meters[0], priority=1, now=T0)
        group = select(meters.c.id).where(meters.c.serial.like("GWB%"))
        assert orders.bulk_create(conn, "read", group, priority=meters.c.id % 10, now=T0) == 5  # one was open
        assert orders.bulk_create(conn, "read", group, now=T0) == 0  # all open now
        assert orders.submit_order(conn, "read", meter_id=all_meters[1], now=T0)[1] is False  # same keys
        with pytest.raises(orders.OrderError, match="one by one"):
            orders.bulk_create(conn, "relay", group, now=T0)
        prio = dict(conn.execute(select(orders_table.c.meter_id, orders_table.c.priority)).all())
    assert prio == {m: (1 if m == all_meters[0] else m % 10) for m in all_meters}
    modem_of = {m: modem for modem, ms in fleet_rows for m in ms}
    with engine.begin() as conn:
        claimed = orders.claim_batch(conn, limit=100, timeout_s=60, now=T0)
    # expected: per modem, its most urgent order (priority, then id); the batch in priority order
    best: dict[int, int] = {}
    for m in sorted(all_meters, key=lambda m: (-prio[m], m)):
        best.setdefault(modem_of[m], m)
    want = sorted(best.values(), key=lambda m: (-prio[m], m))
    assert [c["meter_id"] for c in claimed] == want
    assert all(c["status"] == "running" and c["attempts"] == 1 for c in claimed)
    with engine.begin() as conn:
        assert orders.claim_batch(conn, limit=100, timeout_s=60, now=T0) == []  # every modem busy
        got = orders.get_order(conn, claimed[0]["id"])
    assert [(a["attempt"], a["outcome"]) for a in got["attempt_log"]] == [(1, None)]
