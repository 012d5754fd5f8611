"""The order lifecycle as one table of moves, each a conditional UPDATE (HES-10, HES-12, HES-63), on SQLite and the
real PostgreSQL: every move from the statuses it may start from and from none other, an expiry never overwriting
an answer committed first (also raced for real on PostgreSQL), a late answer never reviving an expired order, and
the dispatcher's second check of TLS-only kinds (HES-54).

covers HES-10, HES-12, HES-54, HES-63
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from osos.config import Settings
from osos.headend import orders
from osos.headend.inventory import register_modem
from osos.headend.service import HeadEnd
from osos.store.db import make_engine, migrate
from osos.store.schema import log_records, meters, modems
from osos.store.schema import orders as orders_table

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(seconds=61)  # after a 60 s deadline


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def modem(engine) -> int:
    with engine.begin() as conn:
        modem_id = register_modem(conn, "OSS", "GWLIFE1", by="test", now=T0)
        conn.execute(meters.insert().values(flag="MKL", serial="1", modem_id=modem_id, first_seen_at=T0))
    return modem_id


def new_order(engine, modem_id: int, kind: str = "read", request: dict | None = None,
              max_attempts: int | None = 1) -> tuple[int, str]:
    """An order sent once (no retries) unless told otherwise: the retry rules have their own tests."""
    with engine.begin() as conn:
        oid = orders.create_order(conn, kind, modem_id=modem_id, request=request, max_attempts=max_attempts, now=T0)
        ref = conn.execute(select(orders_table.c.reference_id).where(orders_table.c.id == oid)).scalar_one()
    return oid, ref


def status(engine, oid: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(orders_table.c.status).where(orders_table.c.id == oid)).scalar_one()


def set_status(engine, oid: int, value: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(orders_table).where(orders_table.c.id == oid).values(status=value))


def test_the_moves_table() -> None:
    """Written out here: which statuses each move starts from, and where it ends."""
    assert {
        "claim": ({"pending"}, "running"),
        "succeed": ({"pending", "running"}, "succeeded"),
        "fail": ({"pending", "running"}, "failed"),
        "expire": ({"running"}, "failed"),
        "retry": ({"running"}, "pending"),
        "lapse": ({"pending", "running"}, "expired"),
        "cancel": ({"pending", "running"}, "cancelled"),
    } == orders.MOVES


@pytest.mark.parametrize("move", ["claim", "succeed", "fail", "expire", "retry", "lapse", "cancel"])
@pytest.mark.parametrize("start", ["pending", "running", "succeeded", "failed", "expired", "cancelled"])
def test_each_move_only_from_its_statuses(engine, modem, move: str, start: str) -> None:
    allowed = {"claim": {"pending"}, "succeed": {"pending", "running"}, "fail": {"pending", "running"},
               "expire": {"running"}, "retry": {"running"}, "lapse": {"pending", "running"},
               "cancel": {"pending", "running"}}[move]
    target = {"claim": "running", "succeed": "succeeded", "fail": "failed", "expire": "failed", "retry": "pending",
              "lapse": "expired", "cancel": "cancelled"}[move]
    oid, _ = new_order(engine, modem)
    set_status(engine, oid, start)
    with engine.begin() as conn:
        moved = orders._move(conn, oid, move, now=T0)
    assert moved is (start in allowed)
    assert status(engine, oid) == (target if start in allowed else start)


def test_claim_then_answer(engine, modem) -> None:
    oid, ref = new_order(engine, modem)
    with engine.begin() as conn:
        claimed = orders.claim_next(conn, timeout_s=60, now=T0)
        assert claimed is not None and claimed["id"] == oid and claimed["modem_transport"] is None
        assert orders.claim_next(conn, timeout_s=60, now=T0) is None
        assert orders.finish(conn, ref, succeeded=True, result={"ok": 1}, modem_id=modem, now=T0) == oid
        assert orders.finish(conn, ref, succeeded=False, error="again", now=T0) is None  # closed stays closed
    assert status(engine, oid) == "succeeded"


def test_an_answer_closes_only_an_order_sent_to_its_modem(engine, modem) -> None:
    with engine.begin() as conn:
        other = register_modem(conn, "OSS", "GWOTHER", now=T0)
    oid, ref = new_order(engine, modem)
    with engine.begin() as conn:
        assert orders.finish(conn, ref, succeeded=True, modem_id=other, now=T0) is None
    assert status(engine, oid) == "pending"


def test_expire_then_a_late_answer_leaves_it_failed(engine, modem) -> None:
    oid, ref = new_order(engine, modem)
    with engine.begin() as conn:
        orders.claim_next(conn, timeout_s=60, now=T0)
    with engine.begin() as conn:
        assert orders.expire(conn, now=T0 + timedelta(seconds=59)) == []  # not yet
        assert orders.expire(conn, now=LATER) == [oid]
    with engine.begin() as conn:
        assert orders.finish(conn, ref, succeeded=True, result={"late": True}, now=LATER) is None
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
    assert (order["status"], order["result"], order["error"]) == ("failed", None, "no answer before the deadline")


def test_expire_never_overrides_an_answer_committed_between_its_select_and_update(engine, modem) -> None:
    oid, ref = new_order(engine, modem)
    with engine.begin() as conn:
        orders.claim_next(conn, timeout_s=60, now=T0)
    with engine.begin() as conn:
        late = orders.late_orders(conn, now=LATER)  # expire's select ...
    assert late == [oid]
    with engine.begin() as conn:  # ... then the answer commits ...
        assert orders.finish(conn, ref, succeeded=True, result={"v": 1}, now=LATER) == oid
    with engine.begin() as conn:  # ... then expire's update finds nothing to move
        assert orders._move(conn, oid, "expire", orders_table.c.deadline_at < LATER, now=LATER) is False
        assert orders.expire(conn, now=LATER) == []
    assert status(engine, oid) == "succeeded"


def test_expire_racing_an_open_answer_transaction_on_postgresql(pg_url) -> None:
    """The real race: the answer's transaction has updated the row but not committed when expire runs. Expire's
    select still sees "running"; its update waits on the row lock, then re-checks the status and moves nothing."""
    engine = make_engine(pg_url)
    migrate(engine)
    try:
        with engine.begin() as conn:
            modem_id = register_modem(conn, "OSS", "GWRACE1", now=T0)
            oid = orders.create_order(conn, "read", modem_id=modem_id, max_attempts=1, now=T0)
            ref = orders.claim_next(conn, timeout_s=60, now=T0)["reference_id"]
        answer = engine.connect()
        tx = answer.begin()
        assert orders.finish(answer, ref, succeeded=True, result={"v": 1}, now=LATER) == oid  # row locked
        expired: list[list[int]] = []
        worker = threading.Thread(target=lambda: expired.append(_expire(engine)))
        worker.start()
        deadline = time.monotonic() + 10
        with engine.connect() as probe:  # wait until expire is really blocked on the answer's row lock
            while not probe.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one():
                assert time.monotonic() < deadline, "expire never reached the locked row"
                time.sleep(0.05)
        tx.commit()
        answer.close()
        worker.join(10)
        assert expired == [[]]
        assert status(engine, oid) == "succeeded"
    finally:
        engine.dispose()


def _expire(engine) -> list[int]:
    with engine.begin() as conn:
        return orders.expire(conn, now=LATER)


def test_dispatcher_fails_a_tls_only_order_for_a_plain_session(engine, modem, tmp_path) -> None:
    """Checked again at dispatch (HES-54): the modem was on TLS when the relay order was made, then came back over
    the plain listener; the order fails with the reason and nothing is sent."""
    with engine.begin() as conn:
        conn.execute(update(modems).where(modems.c.id == modem).values(transport="tls"))
        meter_id = conn.execute(select(meters.c.id)).scalar_one()
        oid = orders.create_order(conn, "relay", meter_id=meter_id, request={"state": "disconnect"}, now=T0)
        conn.execute(update(modems).where(modems.c.id == modem).values(transport="plain"))
    headend = HeadEnd(Settings(data_dir=tmp_path, device_tls=True), engine)  # not started: nothing to connect
    assert headend._dispatch_one() is True
    assert headend.stats.orders_sent == 0
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
        logged = conn.execute(select(log_records.c.message).where(log_records.c.category == "orders")).scalars().all()
    assert order["status"] == "failed"
    assert order["error"] == ("a relay order needs a TLS session to the modem (HES-54); its last session was "
                              "plain")
    assert logged == [f"order {oid} not sent: {order['error']}"]


def test_dispatcher_fails_an_order_whose_request_oversteps_its_kind(engine, modem, tmp_path) -> None:
    """An order row written by other means than the API (e.g. an old row, a direct insert) is checked again."""
    oid, _ = new_order(engine, modem)
    with engine.begin() as conn:
        conn.execute(update(orders_table).where(orders_table.c.id == oid)
                     .values(request={"directive": "readout", "params": {"password": "00000000"}}))
    headend = HeadEnd(Settings(data_dir=tmp_path), engine)
    assert headend._dispatch_one() is True and headend.stats.orders_sent == 0
    with engine.connect() as conn:
        order = orders.get_order(conn, oid)
    assert order["status"] == "failed" and "password" in order["error"]
