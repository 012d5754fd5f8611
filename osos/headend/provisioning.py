"""Device identity on the broker: one MQTT account and one ACL role per modem (HES-4, HES-5, HES-52, HES-56).

Mechanism: Mosquitto's dynamic-security plugin, driven by an admin MQTT client that sends commands on
``$CONTROL/dynamic-security/v1`` and checks every response for an error. Why dynsec rather than password/ACL files:

* no file to rewrite and no SIGHUP to send: a change takes effect at once, and a disabled client is disconnected
  by the broker immediately;
* it works the same for a broker on another machine (only an MQTT connection with admin rights is needed);
* it has per-client roles, which a pattern ACL file cannot express here: dynsec has no ``%u``/``%c`` substitution,
  so each device gets its own role naming its own topics.

Scale limit: the plugin keeps the whole configuration in one JSON file and rewrites it on every change, so
provisioning slows down linearly with the fleet (fine for thousands, not for millions of devices). A larger
deployment swaps this module for a database-backed auth plugin (mosquitto-go-auth) or EMQX's built-in
authentication; the interface OSOS needs is small: create, disable, enable, rotate password (and delete).

ACLs (see docs/protocol.md for the topic layout; ``ROOT`` is the topic root):

* device ``FLAGSERIAL`` (non-legacy): publish ``ROOT/device/FLAG/SERIAL/to_server`` and ``.../emergency``,
  subscribe to and receive ``ROOT/server/FLAG/SERIAL/to_device``; nothing else (deny by default, receiving too).
  A legacy-marked device gets the shared ``ROOT/device/to_server`` / ``ROOT/server/to_device`` instead (its
  header is then checked by the head-end).
* ``osos-headend``: subscribe to and receive every uplink/emergency filter, publish every downlink.

Each rule exists twice, plain and with the ``plain/`` mount point, because Mosquitto checks ACLs against the
mounted topic for clients of the plain listener (HES-54: the head-end tells TLS from plain sessions by it).
The password is never stored by OSOS: the broker keeps a PBKDF2-SHA512 hash; the inventory keeps the username.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osos.protocols import mass

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
PLAIN_MOUNT = "plain/"
HEADEND_ROLE = "osos-headend"
ADMIN_ROLE = "osos-admin"
DEVICE_ROLE_PREFIX = "device-"
PBKDF2_ITERATIONS = 101  # what mosquitto_ctrl itself writes; the salt and the 64-byte digest make it unique
SALT_BYTES = 12


class ProvisioningError(RuntimeError):
    """The broker refused a dynamic-security command, or did not answer."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def generate_password() -> str:
    """A broker password for a device: 32 random bytes, URL-safe (no shell or URL quoting problems)."""
    return secrets.token_urlsafe(32)


def pbkdf2_entry(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> dict[str, Any]:
    """The password fields of a dynsec client: PBKDF2-HMAC-SHA512, base64 hash and salt."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": iterations}


def _both(topics: list[str]) -> list[str]:
    return [t for topic in topics for t in (topic, PLAIN_MOUNT + topic)]


def device_acls(topics: mass.Topics, device: mass.Device, legacy: bool) -> list[dict[str, Any]]:
    """What one device may do: send on its own uplink/emergency, subscribe to its own downlink."""
    if legacy:
        send, sub = [topics.legacy_uplink], [topics.legacy_downlink]
    else:
        send, sub = [topics.uplink(device), topics.emergency(device)], [topics.downlink(device)]
    acls = [{"acltype": "publishClientSend", "topic": t, "priority": 0, "allow": True} for t in _both(send)]
    acls += [{"acltype": acltype, "topic": t, "priority": 0, "allow": True}
             for acltype in ("subscribePattern", "publishClientReceive") for t in _both(sub)]
    return acls


def headend_acls(topics: mass.Topics) -> list[dict[str, Any]]:
    """The head-end: all uplink and emergency filters (plain, mounted, shared), all downlinks."""
    filters = _both([*topics.uplink_filters, topics.emergency_filter])
    subs = filters + [f"$share/+/{f}" for f in filters]
    acls = [{"acltype": "subscribePattern", "topic": t, "priority": 0, "allow": True} for t in subs]
    acls += [{"acltype": "publishClientReceive", "topic": t, "priority": 0, "allow": True} for t in filters]
    acls += [{"acltype": "publishClientSend", "topic": t, "priority": 0, "allow": True}
             for t in _both([f"{topics.root}/server/#"])]
    return acls


def admin_acls() -> list[dict[str, Any]]:
    return [
        {"acltype": "publishClientSend", "topic": "$CONTROL/dynamic-security/#", "priority": 0, "allow": True},
        {"acltype": "publishClientReceive", "topic": "$CONTROL/dynamic-security/#", "priority": 0, "allow": True},
        {"acltype": "subscribePattern", "topic": "$CONTROL/dynamic-security/#", "priority": 0, "allow": True},
    ]


# Deny by default, receiving included: Mosquitto checks "receive" for each subscriber at delivery time, so even a
# client that takes over another account's session (same client id, its persisted subscriptions) gets nothing it
# is not granted itself.
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}


def write_initial_config(path: Path, admin_username: str, admin_password: str) -> None:
    """The dynsec file for a broker OSOS starts itself: only the admin account, everything else denied by default.
    Written once (0600); afterwards the plugin owns the file and OSOS changes it through commands."""
    config = {
        "defaultACLAccess": DEFAULT_ACL_ACCESS,
        "clients": [{"username": admin_username, "textname": "OSOS broker administration",
                     "roles": [{"rolename": ADMIN_ROLE}], **pbkdf2_entry(admin_password)}],
        "groups": [],
        "roles": [{"rolename": ADMIN_ROLE, "acls": admin_acls()}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)


class DynSecAdmin:
    """An MQTT client with the broker's admin account, sending dynamic-security commands synchronously."""

    def __init__(self, host: str, port: int, username: str, password: str, *, ca: str | Path | None = None,
                 cert: str | Path | None = None, key: str | Path | None = None, tls: bool = False,
                 timeout_s: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        self.timeout_s = timeout_s
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._refused: str | None = None
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"osos-admin-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        if tls or ca:
            self.client.tls_set(ca_certs=str(ca) if ca else None, certfile=str(cert) if cert else None,
                                keyfile=str(key) if key else None)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._ready.set()
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def __enter__(self) -> DynSecAdmin:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise ProvisioningError(f"cannot reach the broker at {self.host}:{self.port}: {exc}") from exc
        self.client.loop_start()
        if not self._ready.wait(self.timeout_s):
            self.client.loop_stop()
            raise ProvisioningError(self._refused or f"no admin session with the broker at {self.host}:{self.port}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self._refused = f"the broker refused the admin login: {reason_code}"
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            for response in responses:
                if isinstance(response, dict) and "correlationData" in response:
                    self._responses[str(response["correlationData"])] = response
            self._cond.notify_all()

    def run(self, command: str, ok_errors: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
        """Send one command and return its response; raise on an error not listed in ``ok_errors``."""
        correlation = uuid.uuid4().hex
        payload = {"commands": [{"command": command, "correlationData": correlation, **fields}]}
        self.client.publish(CONTROL_TOPIC, json.dumps(payload), qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: correlation in self._responses, self.timeout_s):
                raise ProvisioningError(f"the broker did not answer {command}")
            response = self._responses.pop(correlation)
        error = response.get("error")
        if error and not any(ok in str(error) for ok in ok_errors):
            raise ProvisioningError(f"{command} refused by the broker: {error}")
        return response

    # -- the small interface OSOS needs ----------------------------------------------------------------------
    def ensure_headend(self, topics: mass.Topics, username: str, password: str) -> None:
        """The head-end's account and role for this topic root; idempotent (sets the password again). Also
        (re)asserts deny-by-default, for a broker whose dynsec file was written by someone else."""
        acl_access = [{"acltype": k, "allow": v} for k, v in DEFAULT_ACL_ACCESS.items()]
        self.run("setDefaultACLAccess", acls=acl_access)
        self.run("createRole", ok_errors=("already exists",), rolename=HEADEND_ROLE)
        for acl in headend_acls(topics):
            self.run("addRoleACL", ok_errors=("already exists",), rolename=HEADEND_ROLE, **acl)
        made = self.run("createClient", ok_errors=("already exists",), username=username, password=password,
                        textname="OSOS head-end", roles=[{"rolename": HEADEND_ROLE}])
        if made.get("error"):
            self.run("setClientPassword", username=username, password=password)
            client = self.run("getClient", username=username).get("data", {}).get("client", {})
            if HEADEND_ROLE not in {r.get("rolename") for r in client.get("roles", [])}:
                self.run("addClientRole", username=username, rolename=HEADEND_ROLE)
            self.run("enableClient", username=username)

    def add_device(self, topics: mass.Topics, device: mass.Device, *, legacy: bool = False,
                   password: str | None = None, replace: bool = False, client_id: str | None = None) -> Credentials:
        """Create the device's role and account; ``replace`` first deletes an existing one (tests reuse names).
        ``client_id`` binds the account to that MQTT client id: the device cannot then use another one, so it
        cannot take over (and knock off) another device's session."""
        check_identity(device.flag, device.serial)
        username, role = device.key, DEVICE_ROLE_PREFIX + device.key
        if replace:
            self.delete_device(device)
        password = password or generate_password()
        acls = device_acls(topics, device, legacy)
        self.run("createRole", rolename=role, textname=f"topics of {username}", acls=acls)
        try:
            bound = {"clientid": client_id} if client_id else {}
            self.run("createClient", username=username, password=password, textname=f"modem {username}",
                     roles=[{"rolename": role}], **bound)
        except ProvisioningError:
            self.run("deleteRole", ok_errors=("not found",), rolename=role)
            raise
        return Credentials(username, password)

    def delete_device(self, device: mass.Device) -> None:
        self.run("deleteClient", ok_errors=("not found",), username=device.key)
        self.run("deleteRole", ok_errors=("not found",), rolename=DEVICE_ROLE_PREFIX + device.key)

    def disable(self, username: str) -> None:
        """Refuse new connections and disconnect the live one."""
        self.run("disableClient", username=username)

    def enable(self, username: str) -> None:
        self.run("enableClient", username=username)

    def rotate_password(self, username: str) -> str:
        password = generate_password()
        self.run("setClientPassword", username=username, password=password)
        return password


def admin_from_settings(settings: Any, timeout_s: float = 10.0) -> DynSecAdmin:
    """The admin client for the broker named in Settings (same host, port and TLS as the head-end)."""
    password = settings.broker_admin_password
    if not password:
        raise ProvisioningError("no broker admin password: set OSOS_BROKER_ADMIN_PASSWORD(_FILE), or run against "
                                "the data dir of an `osos demo`")
    return DynSecAdmin(settings.mqtt_host, settings.mqtt_port, settings.broker_admin_username, password,
                       ca=settings.mqtt_ca, cert=settings.mqtt_cert, key=settings.mqtt_key, tls=settings.mqtt_tls,
                       timeout_s=timeout_s)


FLAG_RE = re.compile(r"^[A-Za-z]{3}$")  # as the MASS envelope schema: no MQTT wildcard or level separator can
SERIAL_RE = re.compile(r"^[A-Za-z0-9._-]{1,32}$")  # slip into an ACL topic or a username
RESERVED_USERNAMES = frozenset({"osos-headend", "osos-admin"})


CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def check_identity(flag: str, serial: str) -> None:
    if not FLAG_RE.match(flag) or not SERIAL_RE.match(serial):
        raise ProvisioningError("flag must be 3 letters and serial 1-32 of A-Z a-z 0-9 . _ -")
    if f"{flag}{serial}" in RESERVED_USERNAMES:
        raise ProvisioningError(f"{flag}{serial} is reserved for OSOS itself")


def _audit(conn: Any, message: str, by: str, now: Any, **detail: Any) -> None:
    from osos.headend.ingest import write_log

    write_log(conn, "security", "info", message, detail={"by": by, **detail}, now=now)


def provision_modem(engine: Any, admin: DynSecAdmin, topics: mass.Topics, flag: str, serial: str, *,
                    legacy: bool = False, by: str, now: Any, replace: bool = False,
                    client_id: str | None = None) -> Credentials:
    """Inventory row and broker account together: the row commits only when the broker accepted the account."""
    from osos.headend.inventory import register_modem

    check_identity(flag, serial)
    if client_id is not None and not CLIENT_ID_RE.match(client_id):
        raise ProvisioningError("client id must be 1-64 of A-Z a-z 0-9 . _ : -")
    device = mass.Device(flag, serial)
    with engine.begin() as conn:
        register_modem(conn, flag, serial, legacy=legacy, by=by, now=now)
        _audit(conn, f"modem {device.key} provisioned{' (legacy topics)' if legacy else ''}", by, now,
               modem=device.key)
        return admin.add_device(topics, device, legacy=legacy, replace=replace, client_id=client_id)


def _modem_row(conn: Any, flag: str, serial: str) -> Any:
    from sqlalchemy import select

    from osos.store.schema import modems

    row = conn.execute(select(modems).where(modems.c.flag == flag, modems.c.serial == serial)).mappings().first()
    if row is None:
        raise ProvisioningError(f"no modem {flag}{serial}")
    return row


def set_modem_enabled(engine: Any, admin: DynSecAdmin, flag: str, serial: str, enabled: bool, *, by: str,
                      now: Any) -> None:
    """Disable (status disabled, broker account disabled and its live session dropped) or enable a modem."""
    from sqlalchemy import update

    from osos.store.schema import modems

    with engine.begin() as conn:
        row = _modem_row(conn, flag, serial)
        username = row["mqtt_username"] or f"{flag}{serial}"
        conn.execute(update(modems).where(modems.c.id == row["id"])
                     .values(status="active" if enabled else "disabled"))
        _audit(conn, f"modem {flag}{serial} {'enabled' if enabled else 'disabled'}", by, now, modem=f"{flag}{serial}")
        if enabled:
            admin.enable(username)
        else:
            admin.disable(username)


def rotate_modem_password(engine: Any, admin: DynSecAdmin, flag: str, serial: str, *, by: str,
                          now: Any) -> Credentials:
    """A new broker password for a modem (the old one stops working at once); shown to the caller once."""
    with engine.begin() as conn:
        row = _modem_row(conn, flag, serial)
        username = row["mqtt_username"] or f"{flag}{serial}"
        _audit(conn, f"modem {flag}{serial} broker password rotated", by, now, modem=f"{flag}{serial}")
        return Credentials(username, admin.rotate_password(username))
