"""An order carries only what its kind permits (issue 7, HES-60): which directives a read may run is checked
against the directive programs themselves (a read program writes nothing to the meter), params are whitelisted
per kind, meter secrets never come from an order, and the gateway lets configured secrets win over a request.

covers HES-6, HES-11, HES-35, HES-56, HES-60
"""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from osos.field.directive_library import directives_for
from osos.field.directives import standard_directives
from osos.headend import orders
from osos.meterlib import load_library
from osos.web.api.schemas import OrderKind

# The classification written out here: every directive the project ships or generates is one of these.
NOT_READS = {"time-set", "relay-connect", "relay-disconnect", "break"}


def _sets() -> list[tuple[str, dict]]:
    out = [("standard", standard_directives())]
    out += [(key, directives_for(key)) for key in sorted(load_library())]
    return out


def _writes(doc: dict) -> list[str]:
    """Steps that change the meter: IEC 62056-21 W (write) / E (execute) commands, DLMS actions and clock sets."""
    found = []
    for step in doc["steps"] + doc.get("finally", []):
        text = step.get("text", "")
        if step["op"] in ("dlms_action", "dlms_set_clock") or (
                step["op"] == "send" and text[:2] in ("\x01W", "\x01E")):
            found.append(step["op"] + ":" + text[:3])
    return found


@pytest.mark.parametrize(("origin", "directives"), _sets(), ids=[o for o, _ in _sets()])
def test_read_directives_write_nothing_and_every_directive_is_classified(origin: str, directives: dict) -> None:
    for name, doc in directives.items():
        assert name in orders.READ_DIRECTIVES | NOT_READS, f"{origin}: {name} is neither a read nor a known action"
        if name in orders.READ_DIRECTIVES:
            assert _writes(doc) == [], f"{origin}: read directive {name} writes: {_writes(doc)}"
        elif name != "break":  # time-set and relay programs do write: the check above can see a write
            assert _writes(doc), f"{origin}: {name} shows no write step"


def test_order_kind_schema_is_the_order_kinds() -> None:
    assert set(typing.get_args(OrderKind)) == set(orders.ORDER_KINDS)


@pytest.mark.parametrize("directive", ["time-set", "relay-connect", "relay-disconnect", "break", "tariff-write",
                                       "set-parameters", "firmware-update", "my-custom"])
def test_a_read_order_runs_no_other_directive(directive: str) -> None:
    with pytest.raises(orders.OrderOverreach, match="not a read directive"):
        orders.validate_request("read", {"directive": directive})


@pytest.mark.parametrize("directive", sorted(orders.READ_DIRECTIVES))
def test_read_directives_are_accepted(directive: str) -> None:
    assert orders.validate_request("read", {"directive": directive}) == {"directive": directive}


@pytest.mark.parametrize("key", ["password", "address", "ek", "ak", "auth", "client_sap", "key", "PASSWORD",
                                 "max_baud", "server_logical"])
def test_params_never_carry_meter_secrets_or_link_settings(key: str) -> None:
    for kind, extra in (("read", {}), ("time-set", {}), ("relay", {"state": "connect"})):
        with pytest.raises(orders.OrderOverreach, match=f"params may not set {key}"):
            orders.validate_request(kind, {**extra, "params": {key: "00000000"}})


def test_params_are_whitelisted_and_checked_per_kind() -> None:
    got = orders.validate_request("read", {"directive": "load-profile", "params": {"start": "2026-03-10T06:00:00"}})
    assert got["params"] == {"start": datetime(2026, 3, 10, 6, tzinfo=UTC).isoformat()}
    with pytest.raises(orders.OrderError, match="takes no param time"):
        orders.validate_request("time-set", {"params": {"time": "00:00:00"}})  # the gateway's clock, not ours
    with pytest.raises(orders.OrderError, match="takes no param now"):
        orders.validate_request("read", {"params": {"now": "2030-01-01T00:00:00"}})
    with pytest.raises(orders.OrderError, match="not an ISO 8601"):
        orders.validate_request("read", {"params": {"start": "yesterday"}})
    with pytest.raises(orders.OrderError, match="ISO 8601"):
        orders.validate_request("read", {"params": {"start": "2026-03-10T06:00:00" + " " * 40}})
    with pytest.raises(orders.OrderError, match="state may only"):
        orders.validate_request("read", {"state": "disconnect"})
    with pytest.raises(orders.OrderError, match="unknown order field"):
        orders.validate_request("read", {"steps": [{"op": "send", "text": "\x01W1"}]})


def test_a_stored_request_is_checked_again_when_sent() -> None:
    with pytest.raises(orders.OrderOverreach):
        orders.directive_request("read", {"directive": "time-set"})
    assert orders.directive_request("read", {}) == {"directive": "readout", "packetClass": "shortRead"}


def test_gateway_keeps_its_configured_secrets_over_request_params(tmp_path: Path) -> None:
    """A read request whose params name another password and address still reads the configured meter with its
    configured password: the simulated Makel meter answers only to its own address and password."""
    from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
    from osos.field.meters.brands import brand
    from osos.field.meters.iec import SimMeter
    from osos.field.meters.model import ConstantLoad, MeterModel
    from osos.field.meters.serve import TcpMeterServer

    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    makel = brand("makel")
    meter = SimMeter(MeterModel("70000001", "kombi", t0, load=ConstantLoad(0), initial_wh=1_000_000), makel,
                     address="70000001")
    with TcpMeterServer([meter], clock=lambda: t0) as server:
        config = MeterConfig(link=f"{server.url}?address=70000001", flag="MKL", serial="70000001",
                             password=meter.password, profile="makel")
        gw = Gateway(GatewayConfig(flag="OSS", serial="GWSECRET", data_dir=tmp_path), [config], clock=lambda: t0)
        try:
            gw._handle_read("ref-1", {"directive": "short-read", "meter": config.identity,
                                      "params": {"password": "99999999", "address": "12345678"}})
            [queued] = gw.outbox.pending()
        finally:
            gw.stop()
    answer = json.loads(queued.payload)
    assert answer["function"] == "read" and answer.get("messageStatus") != "fail", answer
    assert "1.8.0(001000.000" in answer["response"]["data"]["rawData"]
