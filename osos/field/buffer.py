"""The gateway's durable outbox: every uplink message is stored before it is published (HES-34, HES-59).

A message leaves the sqlite file only when the broker acknowledged it (QoS 1 PUBACK). While the broker is
unreachable messages pile up and are sent again in their original order, with their original referenceId,
once it is back; the head-end deduplicates by referenceId, so a resend after a lost PUBACK is harmless.
The queue is bounded: past ``max_messages`` the oldest are dropped, with a log line saying how many.
Urgent messages (alarms for the emergency topic, HES-24) form their own lane that is served first, so a
power-loss alarm never waits behind a backlog of load profiles; within each lane the order is kept.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 100_000


@dataclass(frozen=True)
class Queued:
    seq: int
    topic: str
    payload: bytes
    function: str
    reference_id: str
    urgent: bool = False


class Outbox:
    """A FIFO of uplink messages in one sqlite file; safe to use from several threads."""

    def __init__(self, path: Path | str, max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages = max_messages
        self.dropped = 0
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,"
            " function TEXT NOT NULL, reference_id TEXT NOT NULL, created REAL NOT NULL,"
            " urgent INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_lane ON outbox (urgent, seq)")
        # kept in memory: COUNT(*) walks the whole table, too slow per insert when 100k messages wait
        self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def put(self, topic: str, payload: bytes, function: str, reference_id: str, *, urgent: bool = False) -> int:
        """Store one message; returns its sequence number (the send order within its lane)."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO outbox (topic, payload, function, reference_id, created, urgent)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (topic, payload, function, reference_id, time.time(), int(urgent)),
            )
            seq = int(cur.lastrowid or 0)
            self._count += 1
            excess = self._count - self.max_messages
            if excess > 0:
                gone = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (excess,)
                ).rowcount
                self._count -= gone
                self.dropped += gone
                log.warning("outbox full (%d messages): dropped the %d oldest", self.max_messages, excess)
            return seq

    def pending(self, after: int = 0, limit: int = 100, *, urgent: bool | None = None) -> list[Queued]:
        """Messages with seq > ``after``, oldest first; ``urgent`` picks one lane (None: both, in seq order)."""
        lane = "" if urgent is None else f" AND urgent = {int(urgent)}"
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, function, reference_id, urgent FROM outbox"
                f" WHERE seq > ?{lane} ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Queued(int(r[0]), r[1], bytes(r[2]), r[3], r[4], bool(r[5])) for r in rows]

    def ack(self, seq: int) -> None:
        """The broker has the message: forget it."""
        with self._lock:
            self._count -= self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            self._db.close()
