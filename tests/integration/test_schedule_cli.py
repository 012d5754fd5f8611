"""`osos schedule add|list|remove|tag` as real processes on a SQLite data dir (HES-10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from osos.store.db import make_engine, migrate, sqlite_url
from osos.store.schema import meters, modems

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def osos(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OSOS_")}
    return subprocess.run([sys.executable, "-m", "osos.cli.main", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=60, env=clean)


def test_add_list_tag_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    engine = make_engine(sqlite_url(data))
    migrate(engine)
    with engine.begin() as conn:
        modem = conn.execute(insert(modems).values(flag="OSS", serial="GWCLI", registered_at=NOW,
                                                   topic_style="device")).inserted_primary_key[0]
        meter = conn.execute(insert(meters).values(flag="MKL", serial="9", modem_id=modem,
                                                   first_seen_at=NOW)).inserted_primary_key[0]
    engine.dispose()

    res = osos(data, "schedule", "tag", str(meter), "north", "feeder-7")
    assert res.returncode == 0, res.stderr
    assert "feeder-7, north" in res.stdout

    res = osos(data, "schedule", "add", "nightly", "--cron", "0 2 * * *", "--tag", "north", "--modem", "GWCLI",
               "--modem", str(modem), "--priority", "3", "--json")
    assert res.returncode == 0, res.stderr
    made = json.loads(res.stdout)
    assert (made["name"], made["kind"], made["cron"], made["priority"]) == ("nightly", "read", "0 2 * * *", 3)
    assert made["group"] == {"modems": ["GWCLI", modem], "tags": ["north"]}
    # 02:00 in Istanbul (UTC+3) is 23:00 UTC
    assert datetime.fromisoformat(made["next_run_at"]).astimezone(UTC).hour == 23

    res = osos(data, "schedule", "add", "quarter", "--every", "15")
    assert res.returncode == 0, res.stderr
    assert osos(data, "schedule", "add", "quarter", "--every", "15").returncode == 1
    bad = osos(data, "schedule", "add", "bad", "--every", "7")
    assert bad.returncode == 1 and "divide" in bad.stderr

    listed = osos(data, "schedule", "list", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["nightly", "quarter"]
    text = osos(data, "schedule", "list").stdout
    assert "nightly" in text and "every 15 min" in text

    assert osos(data, "schedule", "remove", "nightly").returncode == 0
    assert osos(data, "schedule", "remove", str(made["id"])).returncode == 1
    assert [s["name"] for s in json.loads(osos(data, "schedule", "list", "--json").stdout)] == ["quarter"]
