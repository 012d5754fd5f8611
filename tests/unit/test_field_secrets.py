"""Meter secrets on the gateway (issue 7, HES-56): no built-in password, an encrypted 0600 store the meters name
by reference, refused secrets on the command line, and DLMS invocation counters that survive a restart."""

from __future__ import annotations

import base64
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from typer.testing import CliRunner

import osos
from osos.cli.main import app
from osos.field import directives as d
from osos.field import secrets as S
from osos.field.directive_library import directives_for
from osos.field.fleet import Fleet
from osos.field.gateway import Gateway, GatewayConfig, MeterConfig
from osos.field.meters.brands import brand
from osos.field.meters.iec import SimMeter
from osos.field.meters.model import ConstantLoad, MeterModel
from osos.field.meters.serve import TcpMeterServer

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()
T0 = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_key_from_the_developer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(S.KEY_ENV, raising=False)


# ---------------------------------------------------------------- acceptance 1: no built-in password
def test_no_factory_password_literal_anywhere_in_the_package() -> None:
    """The IEC factory password 00000000 was built into the gateway, the CLI and four shipped directives."""
    root = Path(osos.__file__).parent
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".json", ".toml", ".md", ".txt", ".html", ".js"):
            for n, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
                if re.search(r"(?<![0-9A-Fa-f])00000000(?![0-9A-Fa-f])", line):
                    hits.append(f"{path.relative_to(root)}:{n}")
    assert hits == []


def test_no_password_in_shipped_directives_meter_defaults_or_profiles() -> None:
    for name, doc in {**d.standard_directives(), **directives_for("makel"),
                      **directives_for("osos-sim-dlms")}.items():
        assert not d.SECRET_PARAMS & set(doc.get("params", {})), name
    meter = MeterConfig(link="tcp://127.0.0.1:1")
    assert meter.password == "" and "password" not in meter.params()


def test_directives_cannot_carry_or_leak_secrets() -> None:
    base = {"name": "x", "steps": [{"op": "send", "text": "\u0001P1\u0002(${password})\u0003", "bcc": True}]}
    assert d.validate(base) is base  # sending it to the meter is what a password is for
    with pytest.raises(d.DirectiveError, match="must not carry meter secrets"):
        d.validate({**base, "params": {"password": "00000001"}})
    for step in ({"op": "set", "param": "copy", "value": "${password}"},  # would go uplink as a captured param
                 {"op": "expect", "count": 1, "match": "${ek}"},  # would go uplink in the mismatch text
                 {"op": "send", "hex": "${ak}"}):
        with pytest.raises(d.DirectiveError, match="may only be sent to the meter"):
            d.validate({"name": "x", "steps": [step]})


class NoLink:
    """A link that must not be touched: a directive refused for a missing secret never reaches the meter."""

    bytes_in = bytes_out = 0

    def configure(self, *a: object) -> None:
        raise AssertionError("touched the link")

    write = read = configure


def test_programming_directive_without_a_password_fails_before_touching_the_meter() -> None:
    for name in ("time-set", "short-read", "load-profile"):
        with pytest.raises(d.DirectiveError, match="secret store") as err:
            d.Interpreter().run(d.standard_directives()[name], NoLink(), {"time": "t", "date": "d"})  # type: ignore
        assert err.value.fail_code == d.FAIL_NO_SECRET == 8


def test_a_meter_needing_a_password_without_one_fails_its_directive_but_readout_works(tmp_path) -> None:
    model = MeterModel("40000001", "single-phase", T0, load=ConstantLoad(1000), initial_wh=1_000_000)
    sim = SimMeter(model, brand("makel"), password="Rnd-5521")
    with TcpMeterServer([sim], clock=lambda: T0) as server:
        meter = MeterConfig(link=server.url, flag="MKL", serial="40000001", profile="makel")
        gw = Gateway(GatewayConfig(flag="OSS", serial="1", data_dir=tmp_path), [meter])
        link = meter.spec.open()
        try:
            readout = gw.interpreter.run(gw._directive_for(meter, "readout"), link, meter.params())
            assert b"1.8.0" in readout.buffers["data"]
            with pytest.raises(d.DirectiveError, match="secret store"):
                gw.interpreter.run(gw._directive_for(meter, "time-set"), link, meter.params())
        finally:
            link.close()
            gw.stop()


# ---------------------------------------------------------------- acceptance 2: the store
def test_store_round_trip_is_encrypted_0600_and_atomic(tmp_path) -> None:
    store = S.SecretStore.open(tmp_path / "gw", key=KEY)
    store.set("m1", "password", "Very-Secret-1")
    store.set("m1", "ek", "000102030405060708090A0B0C0D0E0F")
    path = tmp_path / "gw" / S.STORE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    raw = path.read_bytes()
    assert b"Very-Secret-1" not in raw and b"m1" not in raw and b"000102" not in raw
    # independently decrypted with AES-GCM: the header is the associated data, then a 12-byte nonce
    body = raw[len(S.MAGIC):]
    plain = AESGCM(KEY).decrypt(body[:12], body[12:], S.MAGIC)
    assert b'"Very-Secret-1"' in plain
    again = S.SecretStore.open(tmp_path / "gw", env={S.KEY_ENV: KEY_B64})
    assert again.get("m1") == {"password": "Very-Secret-1", "ek": "000102030405060708090a0b0c0d0e0f"}
    assert again.names() == ["m1"] and again.fields("m1") == ["ek", "password"]
    assert [p.name for p in path.parent.iterdir()] == [S.STORE_FILE]  # no temporary file left behind
    assert again.delete("m1", "ek") and again.fields("m1") == ["password"]
    assert again.delete("m1") and not again.delete("m1")
    assert S.SecretStore.open(tmp_path / "gw", key=KEY).names() == []


def test_a_failed_write_leaves_the_old_store_intact(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = S.SecretStore.open(tmp_path, key=KEY)
    store.set("m1", "password", "old-one")

    def crash(*a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(S.os, "replace", crash)
    with pytest.raises(OSError):
        store.set("m1", "password", "new-one")
    monkeypatch.undo()
    assert S.SecretStore.open(tmp_path, key=KEY).get("m1")["password"] == "old-one"
    assert [p.name for p in tmp_path.iterdir()] == [S.STORE_FILE]


def test_missing_wrong_or_bad_key_and_altered_file_are_refused(tmp_path) -> None:
    S.SecretStore.open(tmp_path, key=KEY).set("m1", "password", "pw-1")
    with pytest.raises(S.SecretStoreError, match="OSOS_GATEWAY_KEY is not set"):
        S.SecretStore.open(tmp_path, env={})
    with pytest.raises(S.SecretStoreError, match="cannot be decrypted"):
        S.SecretStore.open(tmp_path, key=bytes(32))
    for bad in ("a", "00" * 31, base64.b64encode(b"x" * 16).decode()):
        with pytest.raises(S.SecretStoreError, match="32 bytes"):
            S.SecretStore.open(tmp_path, env={S.KEY_ENV: bad})
    assert S.parse_key(KEY.hex()) == KEY == S.parse_key(KEY_B64)
    path = tmp_path / S.STORE_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(S.SecretStoreError, match="cannot be decrypted"):
        S.SecretStore.open(tmp_path, key=KEY)
    with pytest.raises(S.SecretStoreError, match="16 bytes"):
        S.SecretStore(tmp_path / "other", KEY).set("m2", "ek", "0011")


def test_gateway_resolves_meter_secrets_by_name_and_refuses_to_start_without_its_key(tmp_path, monkeypatch) -> None:
    S.SecretStore.open(tmp_path, key=KEY).set("m1", "password", "pw-of-m1")
    meter = MeterConfig(link="tcp://127.0.0.1:1?address=1", secret="m1")
    config = GatewayConfig(flag="OSS", serial="1", data_dir=tmp_path)
    with pytest.raises(S.SecretStoreError, match="OSOS_GATEWAY_KEY is not set"):
        Gateway(config, [meter])
    monkeypatch.setenv(S.KEY_ENV, KEY.hex())
    gw = Gateway(config, [meter])
    gw.stop()
    assert meter.params()["password"] == "pw-of-m1"
    assert "pw-of-m1" not in repr(meter)
    with pytest.raises(S.SecretStoreError, match="no secret 'm2'"):
        Gateway(config, [MeterConfig(link="tcp://127.0.0.1:1", secret="m2")])
    monkeypatch.setenv(S.KEY_ENV, bytes(32).hex())
    with pytest.raises(S.SecretStoreError, match="cannot be decrypted"):
        Gateway(config, [])


def test_cli_refuses_secrets_in_meter_urls_and_manages_the_store(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["gateway", "--flag", "OSS", "--serial", "1", "--data-dir", str(tmp_path),
                              "--meter", "tcp://127.0.0.1:1?password=hunter22", "--duration", "0.1"])
    assert res.exit_code != 0 and "gateway-secret set" in res.output and "?secret=NAME" in res.output
    res = runner.invoke(app, ["gateway-secret", "set", "m1", "password", "--data-dir", str(tmp_path)],
                        input="pw-from-stdin\n")
    assert res.exit_code == 2 and "OSOS_GATEWAY_KEY" in res.output  # no key: nothing written
    assert not (tmp_path / S.STORE_FILE).exists()
    key = runner.invoke(app, ["gateway-secret", "keygen"]).output.strip()
    env = {S.KEY_ENV: key}
    res = runner.invoke(app, ["gateway-secret", "set", "m1", "password", "--data-dir", str(tmp_path)],
                        input="pw-from-stdin\n", env=env)
    assert res.exit_code == 0, res.output
    assert "pw-from-stdin" not in res.output
    res = runner.invoke(app, ["gateway-secret", "list", "--data-dir", str(tmp_path)], env=env)
    assert res.output == "m1\tpassword\n"
    assert S.SecretStore.open(tmp_path, key=S.parse_key(key)).get("m1") == {"password": "pw-from-stdin"}
    res = runner.invoke(app, ["gateway-secret", "delete", "m1", "--data-dir", str(tmp_path)], env=env)
    assert res.exit_code == 0 and S.SecretStore.open(tmp_path, key=S.parse_key(key)).names() == []
    res = runner.invoke(app, ["gateway-secret", "list", "--data-dir", str(tmp_path)], env={S.KEY_ENV: KEY_B64})
    assert res.exit_code == 2 and "cannot be decrypted" in res.output


# ---------------------------------------------------------------- acceptance 3: counters on disk
def test_invocation_counters_resume_past_every_reserved_one(tmp_path) -> None:
    counters = S.InvocationCounters.open(tmp_path)
    assert counters.next("OSS1/1/aa") == 1
    for ic in range(1, 6):
        counters.reserve("OSS1/1/aa", ic)
    counters.saw("OSS1/1/aa", 41)
    path = tmp_path / S.COUNTERS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = S.InvocationCounters.open(tmp_path)  # a restart (or a crash right after counter 5 went out)
    assert again.next("OSS1/1/aa") > 5 and again.meter_seen("OSS1/1/aa") == 41
    path.write_text("{not json")
    with pytest.raises(S.SecretStoreError, match="unreadable"):
        S.InvocationCounters.open(tmp_path)


# ---------------------------------------------------------------- acceptance 4: the simulated fleet
def test_fleet_gives_every_meter_its_own_password_through_the_store(tmp_path) -> None:
    fleet = Fleet("127.0.0.1", 1, gateways=3, data_dir=tmp_path, seed=5, events=False).build()
    try:
        passwords = []
        for unit in fleet.units:
            assert stat.S_IMODE((unit.gateway.data_dir / S.STORE_FILE).stat().st_mode) == 0o600
            for sim, config in zip(unit.meters, unit.configs, strict=True):
                assert config.secret == f"{sim.brand.flag}{sim.serial}"
                assert unit.gateway.secrets.get(config.secret) == {"password": sim.password}
                assert config.password == sim.password
                passwords.append(sim.password)
        assert len(set(passwords)) == len(passwords) > 3  # no shared default
        assert os.environ.get(S.KEY_ENV) is None  # the fleet's key stays in memory
    finally:
        fleet.stop()


def test_dlms_directive_without_its_password_or_keys_never_touches_the_meter() -> None:
    lib = directives_for("osos-sim-dlms")
    for params, text in (({"auth": "lls"}, "LLS needs this meter's password"),
                         ({"auth": "hls-gmac", "client_sap": "1"}, "16-byte ek and ak"),
                         ({"auth": "lls", "dlms_transport": "hdlc"}, "LLS needs this meter's password")):
        with pytest.raises(d.DirectiveError, match=text) as err:
            d.Interpreter().run(lib["short-read"], NoLink(), params)  # type: ignore[arg-type]
        assert err.value.fail_code == d.FAIL_NO_SECRET
