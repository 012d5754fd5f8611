"""No duplicates, no contradictions (HES-12, issue 8 item 3) on SQLite and the real PostgreSQL: an identical open
order (same kind, target and normalised request) is answered instead of a new one; a relay connect and disconnect
for one meter are never both open (the later wins, the earlier is cancelled "superseded by order N"); two
PostgreSQL transactions creating the same order at once end with one order.

covers HES-12
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select

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


@pytest.fixture
def ids(engine) -> dict[str, int]:
    with engine.begin() as conn:
        modem_id = register_modem(conn, "OSS", "GWDUP", now=T0)
        conn.execute(modems.update().where(modems.c.id == modem_id).values(transport="tls"))
        out = {"modem": modem_id}
        for name in ("m1", "m2"):
            out[name] = conn.execute(insert(meters).values(flag="MKL", serial=f"DUP{name}", modem_id=modem_id,
                                                           first_seen_at=T0)).inserted_primary_key[0]
    return out


def submit(engine, kind: str, **kwargs) -> tuple[int, bool]:
    with engine.begin() as conn:
        return orders.submit_order(conn, kind, now=T0, **kwargs)


def state(engine, oid: int) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(select(orders_table.c.status, orders_table.c.error).where(orders_table.c.id == oid)).one()
    return row.status, row.error


def test_an_identical_open_order_is_answered_instead_of_a_new_one(engine, ids) -> None:
    lp = {"start": "2026-03-10T06:00:00+03:00", "end": "2026-03-10T09:00:00+03:00"}
    first, created = submit(engine, "load-profile", meter_id=ids["m1"], request=lp)
    assert created
    # the same range written in UTC, another user, another source, another priority: the same work
    same_in_utc = {"start": "2026-03-10T03:00:00+00:00", "end": "2026-03-10T06:00:00Z"}
    assert submit(engine, "load-profile", meter_id=ids["m1"], request=same_in_utc, created_by="bob",
                  source="schedule", priority=9) == (first, False)
    # other work: another range, another meter, the whole modem, another kind
    assert submit(engine, "load-profile", meter_id=ids["m1"],
                  request={**lp, "end": "2026-03-10T10:00:00+03:00"})[1] is True
    assert submit(engine, "load-profile", meter_id=ids["m2"], request=lp)[1] is True
    assert submit(engine, "load-profile", modem_id=ids["modem"], request=lp)[1] is True
    assert submit(engine, "read", meter_id=ids["m1"])[1] is True
    # a read with a different directive is other work; the same directive again is not
    short, created = submit(engine, "read", meter_id=ids["m1"], request={"directive": "short-read"})
    assert created and submit(engine, "read", meter_id=ids["m1"], request={"directive": "short-read"}) == (short,
                                                                                                         False)


def test_once_the_order_is_closed_the_same_ask_is_a_new_order(engine, ids) -> None:
    first, _ = submit(engine, "read", meter_id=ids["m1"])
    with engine.begin() as conn:
        orders.cancel(conn, first, "test", now=T0)
    again, created = submit(engine, "read", meter_id=ids["m1"])
    assert created and again != first


def test_the_later_relay_order_wins(engine, ids) -> None:
    connect, _ = submit(engine, "relay", meter_id=ids["m1"], request={"state": "connect"})
    other_meter, _ = submit(engine, "relay", meter_id=ids["m2"], request={"state": "connect"})
    disconnect, created = submit(engine, "relay", meter_id=ids["m1"], request={"state": "disconnect"}, priority=9)
    assert created
    assert state(engine, connect) == ("cancelled", f"superseded by order {disconnect}")
    assert state(engine, other_meter) == ("pending", None)  # another meter: no contradiction
    assert submit(engine, "relay", meter_id=ids["m1"], request={"state": "disconnect"}) == (disconnect, False)

    # a running one is superseded too (its answer, if it comes, is ignored)
    with engine.begin() as conn:
        running = orders.claim_next(conn, timeout_s=60, now=T0)
    assert running["id"] == disconnect
    reconnect, _ = submit(engine, "relay", meter_id=ids["m1"], request={"state": "connect"})
    assert state(engine, disconnect) == ("cancelled", f"superseded by order {reconnect}")
    with engine.begin() as conn:
        assert orders.finish(conn, running["reference_id"], succeeded=True, now=T0) is None
    with engine.connect() as conn:
        open_relays = conn.execute(select(func.count()).select_from(orders_table).where(
            orders_table.c.kind == "relay", orders_table.c.meter_id == ids["m1"],
            orders_table.c.status.in_(("pending", "running")))).scalar_one()
    assert open_relays == 1


def test_two_transactions_creating_the_same_order_on_postgresql_end_with_one(pg_url) -> None:
    eng = make_engine(pg_url)
    migrate(eng)
    try:
        with eng.begin() as conn:
            modem_id = register_modem(conn, "OSS", "GWRACE", now=T0)
        a = eng.connect()
        tx = a.begin()
        first, created = orders.submit_order(a, "read", modem_id=modem_id, now=T0)  # not committed yet
        assert created
        got: list[tuple[int, bool]] = []

        def second() -> None:
            with eng.begin() as b:
                got.append(orders.submit_order(b, "read", modem_id=modem_id, now=T0))

        worker = threading.Thread(target=second)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive()  # waiting on the open-order unique index for A's row
        tx.commit()
        a.close()
        worker.join(10)
        assert got == [(first, False)]
        with eng.connect() as conn:
            assert conn.execute(select(func.count()).select_from(orders_table)).scalar_one() == 1
    finally:
        eng.dispose()
