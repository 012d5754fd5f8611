"""Transparent reading from the head-end side (HES-42, HES-43): ask a gateway over MASS ``configuration`` to bind
a TCP port to one of its serial ports, then speak the meter's own protocol through that socket.

The gateway (``osos.field.transparent``) relays raw bytes for a TCP-attached meter and RFC 2217 for a serial one.
Over the open socket the head-end runs an IEC 62056-21 directive with the field interpreter (same code as in
the gateway, so mode C works the same through the modem) or a DLMS association with ``osos.field.dlms_client``.
This client uses its own short MQTT session; a running head-end also stores the configuration answer (harmless).
"""

from __future__ import annotations

import json
import queue
import uuid
from pathlib import Path
from typing import Any

from osos.protocols import mass


class TransparentError(RuntimeError):
    """The gateway refused or did not answer, or the port it reported cannot be used."""


class TransparentClient:
    """Opens and closes a gateway's transparent ports through MASS ``configuration`` requests."""

    def __init__(self, broker_host: str, broker_port: int, topics: mass.Topics, device: mass.Device,
                 *, timeout_s: float = 10.0, legacy: bool = False, username: str | None = None,
                 password: str | None = None, ca: str | Path | None = None) -> None:
        self.broker = (broker_host, broker_port)
        self.username, self.password, self.ca = username, password, ca  # the head-end's account, TLS CA (HES-52)
        self.topics, self.device, self.timeout_s, self.legacy = topics, device, timeout_s, legacy

    def configure(self, port_id: int, transparent_port: int) -> list[dict[str, Any]]:
        """Move serial port ``port_id``'s transparent socket to ``transparent_port`` (0 closes it); returns the
        gateway's list of serial ports after the change."""
        import paho.mqtt.client as mqtt

        inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        ref = f"transparent-{uuid.uuid4()}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"osos-tr-{uuid.uuid4().hex[:12]}")

        def on_message(c: Any, u: Any, msg: Any) -> None:
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            if not isinstance(body, dict) or body.get("referenceId") != ref:
                return
            if body.get("function") != "ack" or body.get("messageStatus") == "fail":  # the answer, or a refusal
                inbox.put(body)

        client.on_message = on_message
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.ca:
            client.tls_set(ca_certs=str(self.ca))
        client.connect(*self.broker)
        uplink = self.topics.legacy_uplink if self.legacy else self.topics.uplink(self.device)
        downlink = self.topics.legacy_downlink if self.legacy else self.topics.downlink(self.device)
        client.subscribe(uplink, qos=1)
        client.loop_start()
        try:
            request = {"serialPorts": [{"id": port_id, "transparentPort": transparent_port}]}
            message = mass.make("configuration", self.device, reference_id=ref, request=request)
            client.publish(downlink, mass.encode(message), qos=1).wait_for_publish(self.timeout_s)
            try:
                answer = inbox.get(timeout=self.timeout_s)
            except queue.Empty:
                raise TransparentError(f"{self.device.key}: no configuration answer in {self.timeout_s} s") from None
        finally:
            client.loop_stop()
            client.disconnect()
        body = answer.get("response") or {}
        if answer.get("messageStatus") == "fail":
            raise TransparentError(f"{self.device.key} refused: {body.get('failCode')} {body.get('failDescrition')}")
        ports = body.get("serialPorts")
        if not isinstance(ports, list):
            raise TransparentError(f"{self.device.key}: configuration answer without serialPorts")
        return ports

    def open(self, port_id: int, transparent_port: int) -> int:
        """Open the socket and return the TCP port the gateway reports for ``port_id``."""
        ports = self.configure(port_id, transparent_port)
        entry = next((p for p in ports if isinstance(p, dict) and p.get("id") == port_id), None)
        if entry is None or not isinstance(entry.get("transparentPort"), int):
            raise TransparentError(f"{self.device.key}: serial port {port_id} has no transparent socket")
        return int(entry["transparentPort"])

    def close(self, port_id: int) -> None:
        self.configure(port_id, 0)


def iec_readout(host: str, port: int, *, address: str = "", max_baud: int = 19200) -> dict[str, Any]:
    """Run the standard IEC 62056-21 readout through a transparent socket; returns the MASS-style read body
    (``data.rawData`` exactly as read and the parsed ``values``)."""
    from datetime import UTC, datetime

    from osos.field.directives import Interpreter, standard_directives
    from osos.field.links import TcpLink
    from osos.field.readings import read_response

    directive = standard_directives()["readout"]
    link = TcpLink(host, port)
    link.open()
    try:
        result = Interpreter().run(directive, link, {"address": address, "max_baud": str(max_baud)})
    finally:
        link.close()
    return read_response(meter={}, directive=directive, result=result, read_date=datetime.now(UTC))
