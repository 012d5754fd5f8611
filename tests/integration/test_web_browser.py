"""The meter page in a real headless Chromium (skipped when chromium is not installed): log in through the form,
press "Read now", let a dispatcher (played here with the real order-queue functions) answer the order, and check
that the page's own JavaScript polled the order and refreshed the register grid.

covers AMR-9 (a reading can be started from the page), HES-13
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, update

from osos.auth import create_user
from osos.config import Settings
from osos.headend.orders import claim_next, finish
from osos.store.db import make_engine, migrate, utcnow
from osos.store.schema import meters, modems, raw_messages, readings, register_latest
from osos.web.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [pytest.mark.integration, pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")]

PASSWORD = "Browser-test-2026"
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed(engine: Engine) -> int:
    with engine.begin() as conn:
        modem_id = conn.execute(insert(modems).values(flag="ABC", serial="MDM0001", topic_style="device",
                                                      registered_at=T0)).inserted_primary_key[0]
        meter_id = conn.execute(insert(meters).values(flag="MKL", serial="12345678", modem_id=modem_id,
                                                      first_seen_at=T0)).inserted_primary_key[0]
        raw_id = conn.execute(insert(raw_messages).values(dedup_key="k0", received_at=T0, topic="t", payload=b"x",
                                                          status="ok")).inserted_primary_key[0]
        conn.execute(insert(readings).values(raw_id=raw_id, meter_id=meter_id, obis="1.8.0", value="015214.234",
                                             unit="kWh", read_at=T0))
        conn.execute(insert(register_latest).values(meter_id=meter_id, obis="1.8.0", value="015214.234", unit="kWh",
                                                    read_at=T0, raw_id=raw_id))
        create_user(conn, "op", PASSWORD, "operator", now=T0)
    return int(meter_id)


def dispatcher(engine: Engine, stop: threading.Event, handled: list[int]) -> None:
    """What the head-end does with a read order, minus MQTT: claim it, store the new value, finish it."""
    while not stop.is_set():
        with engine.begin() as conn:
            order = claim_next(conn, timeout_s=30)
        if order is None:
            stop.wait(0.2)
            continue
        now = utcnow()
        with engine.begin() as conn:
            raw_id = conn.execute(insert(raw_messages).values(
                dedup_key=f"k{order['id']}", received_at=now, topic="t", reference_id=order["reference_id"],
                payload=b"1.8.0(015299.999*kWh)", status="ok")).inserted_primary_key[0]
            conn.execute(insert(readings).values(raw_id=raw_id, meter_id=order["meter_id"], obis="1.8.0",
                                                 value="015299.999", unit="kWh", read_at=now))
            conn.execute(update(register_latest).where(register_latest.c.meter_id == order["meter_id"])
                         .values(value="015299.999", read_at=now, raw_id=raw_id))
            handled.append(int(order["id"]))  # before the commit: once the page sees success, this is recorded
            finish(conn, order["reference_id"], succeeded=True, result={"values": 1})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, int, list[int]]]:
    import uvicorn

    engine = make_engine(f"sqlite:///{tmp_path / 'osos.db'}")
    migrate(engine)
    meter_id = seed(engine)
    port = free_port()
    app = create_app(Settings(data_dir=tmp_path / "data"), engine)
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    web_thread = threading.Thread(target=web.run, daemon=True)
    web_thread.start()
    stop, handled = threading.Event(), []
    worker = threading.Thread(target=dispatcher, args=(engine, stop, handled), daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while not web.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}", meter_id, handled
    finally:
        stop.set()
        web.should_exit = True
        web_thread.join(10)
        worker.join(10)
        engine.dispose()


class Page:
    """The few Chrome DevTools Protocol calls this test needs."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.n = ws, 0

    async def cmd(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        my_id = self.n
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == my_id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    async def js(self, expression: str) -> Any:
        result = await self.cmd("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 20) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")


def test_read_now_in_a_real_browser(server: tuple[str, int, list[int]], tmp_path: Path) -> None:
    import websockets

    base, meter_id, handled = server
    port = free_port()
    chromium = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
         f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        target = None
        while target is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as res:
                    target = next((t for t in json.load(res) if t["type"] == "page"), None)
            except OSError:
                time.sleep(0.2)
        assert target is not None, "chromium did not open its debugging port"

        async def scenario() -> dict[str, Any]:
            async with websockets.connect(target["webSocketDebuggerUrl"], max_size=2**25) as ws:
                page = Page(ws)
                await page.cmd("Page.enable")
                await page.cmd("Page.navigate", url=f"{base}/meters/{meter_id}")
                await page.wait_for("location.pathname === '/login' && !!document.querySelector('[name=password]')")
                await page.js(
                    "document.querySelector('[name=username]').value = 'op';"
                    f"document.querySelector('[name=password]').value = '{PASSWORD}';"
                    "document.querySelector('form.stack').submit(); true"
                )
                await page.wait_for(
                    f"location.pathname === '/meters/{meter_id}' && !!document.getElementById('read-now')"
                )
                before = await page.js("document.querySelector('#registers tbody td:nth-child(3)').textContent")
                await page.js("document.getElementById('read-now').click(); true")
                status = await page.wait_for(
                    "(s => s.includes('finished') || s.includes('failed') || s.includes('Could not') ? s : '')"
                    "(document.getElementById('order-status').textContent)"
                )
                after = await page.wait_for(
                    "(v => v !== '015214.234' ? v : '')"
                    "(document.querySelector('#registers tbody td:nth-child(3)').textContent)", timeout_s=10
                )
                shot = await page.cmd("Page.captureScreenshot", format="png")
                return {"before": before, "status": status, "after": after, "png": base64.b64decode(shot["data"])}

        seen = asyncio.run(scenario())
    finally:
        chromium.terminate()
        chromium.wait(10)
    (tmp_path / "meter-page.png").write_bytes(seen["png"])
    assert seen["before"] == "015214.234"
    assert seen["status"] == "Reading finished; values updated."
    assert seen["after"] == "015299.999"  # the grid was reloaded from the server after the order succeeded
    assert len(handled) == 1  # exactly one order was created by the button
    assert seen["png"][:8] == b"\x89PNG\r\n\x1a\n"
