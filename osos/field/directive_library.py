"""The standard directive set of each meter profile, generated from the meter library (AMR-7, HES-44..46).

One set of kinds for every protocol: ``readout``, ``short-read``, ``load-profile`` (a date range in the params
``start``/``end``), ``relay-connect``/``relay-disconnect``, ``time-set``. A kind the meter cannot do (an IEC
meter without a relay, a Modbus analyzer without a clock) is simply absent. IEC 62056-21 directives are the
shipped JSON set with the profile's speed and its short-read registers; DLMS, Modbus and M-Bus directives use
the protocol steps of ``osos.field.protocol_ops``. Every generated directive passes the same schema check as
one sent over MQTT.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from osos.field.directives import standard_directives, validate
from osos.meterlib import CosemRef, MeterProfile, profile

KINDS = ("readout", "short-read", "load-profile", "relay-connect", "relay-disconnect", "time-set")

# COSEM disconnect control (class 70) methods: 1 remote_disconnect, 2 remote_reconnect (Blue Book 4.5.8)
RELAY_METHODS = {"relay-disconnect": 1, "relay-connect": 2}


def _iec(p: MeterProfile) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, doc in standard_directives().items():
        if name == "load-profile-2" and not any(lp.name == "P.02" for lp in p.load_profiles):
            continue
        d = copy.deepcopy(doc)
        d.setdefault("params", {})["max_baud"] = p.max_baud
        out[name] = d
    short = out["short-read"]
    steps = [s for s in short["steps"] if not (s["op"] == "send" and s.get("text", "").startswith("\u0001R1"))
             and not (s["op"] == "expect" and s.get("into") == "data")]
    for i, register in enumerate(p.short_read):
        steps.append({"op": "send", "text": f"\u0001R1\u0002{register}()\u0003", "bcc": True})
        expect: dict[str, Any] = {"op": "expect", "etx_bcc": True, "timeout_ms": 3000, "into": "data"}
        if i:
            expect["append"] = True
        else:
            expect["match"] = "^\u0002"
        steps.append(expect)
    short["steps"] = steps
    short["description"] = f"Index values of a {p.name} meter (HES-36): R1 reads of {', '.join(p.short_read)}."
    return out


def _dlms_params(p: MeterProfile) -> dict[str, Any]:
    params: dict[str, Any] = {
        "dlms_transport": p.dlms["transport"],
        "client_sap": p.dlms["client_sap"],
        "server_logical": p.dlms.get("server_logical", 1),
        "auth": p.auth,  # the password or keys it needs come from the gateway's secret store, never from here
        "start": "",
        "end": "",
    }
    if "server_physical" in p.dlms:
        params["server_physical"] = p.dlms["server_physical"]
    return params


def _doc(name: str, p: MeterProfile, packet_class: str, kind: str, steps: list[dict[str, Any]],
         params: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "description": description, "version": 1, "packetClass": packet_class,
            "params": params, "output": {"id": "ident", "rawData": "data", "kind": kind}, "steps": steps}


def _dlms(p: MeterProfile) -> dict[str, dict[str, Any]]:
    params = _dlms_params(p)
    gets = [{"op": "dlms_get", "obis": ref.obis, "class": ref.class_id, "attr": attr}
            for ref in p.short_read_objects for attr in ref.attributes]
    relay_gets = [{"op": "dlms_get", "obis": p.relay.obis, "class": 70, "attr": a} for a in (2, 3)] \
        if p.relay else []
    out = {
        "short-read": _doc("short-read", p, "shortRead", "dlms", gets, params,
                           f"Index values of a {p.name} meter over DLMS (HES-36)."),
        "readout": _doc("readout", p, "longRead", "dlms", gets + relay_gets, params,
                        f"Registers and relay state of a {p.name} meter over DLMS."),
    }
    if p.load_profiles:
        lp = p.load_profiles[0]
        out["load-profile"] = _doc("load-profile", p, "loadProfile1", "dlms",
                                   [{"op": "dlms_profile", "obis": lp.name, "start": "${start}", "end": "${end}"}],
                                   params, f"Load profile {lp.name} by date range (AMR-5).")
    if p.relay:
        for name, method in RELAY_METHODS.items():
            steps = [{"op": "dlms_action", "obis": p.relay.obis, "class": 70, "method": method}, *relay_gets]
            out[name] = _doc(name, p, "history", "dlms", steps, params,
                             f"Disconnect control method {method}, then its state read back (HES-11).")
    if isinstance(p.clock, CosemRef):
        clock = p.clock
        out["time-set"] = _doc("time-set", p, "history", "dlms", [
            {"op": "dlms_set_clock", "time": "${now}"},
            {"op": "dlms_get", "obis": clock.obis, "class": 8, "attr": 2},  # read back: the answer proves it
        ], params, "Set the meter clock to the gateway's time and read it back (HES-35).")
    return out


def _modbus(p: MeterProfile) -> dict[str, dict[str, Any]]:
    params: dict[str, Any] = {"unit": p.modbus.get("unit", 1)}
    serial = {"op": "serial", "baud": p.max_baud, "bits": p.bits, "parity": p.parity, "stop": p.stop}
    whole = [serial, {"op": "modbus_read_map", "map": p.modbus["map"], "unit": "${unit}"}]
    out = {"readout": _doc("readout", p, "longRead", "modbus", whole, params, f"The whole {p.name} map.")}
    short = [serial, {"op": "modbus_read_map", "map": p.modbus["map"], "unit": "${unit}",
                      "names": ",".join(p.short_read)}] if p.short_read else whole
    out["short-read"] = _doc("short-read", p, "shortRead", "modbus", short, params,
                             f"Index values of a {p.name} (HES-36).")
    return out


def _mbus(p: MeterProfile) -> dict[str, dict[str, Any]]:
    params: dict[str, Any] = {"primary": p.mbus.get("primary", 0)}
    steps = [{"op": "serial", "baud": p.init_baud, "bits": p.bits, "parity": p.parity, "stop": p.stop},
             {"op": "mbus_req_ud2", "address": "${primary}"}]
    doc = _doc("readout", p, "longRead", "mbus", steps, params, "SND_NKE + REQ_UD2 (EN 13757-2/-3).")
    return {"readout": doc, "short-read": {**copy.deepcopy(doc), "name": "short-read", "packetClass": "shortRead"}}


@cache
def directives_for(key: str) -> dict[str, dict[str, Any]]:
    """The generated set of profile ``key``, by directive name (validated)."""
    p = profile(key)
    build = {"iec62056-21": _iec, "dlms": _dlms, "modbus": _modbus, "mbus": _mbus}[p.protocol]
    return {name: validate(doc) for name, doc in build(p).items()}
