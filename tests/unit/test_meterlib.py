"""The meter library (AMR-7): profiles as data, lookup by FLAG code, clear errors. # covers AMR-7, HES-38"""

from __future__ import annotations

import pytest

from osos import meterlib as ml
from osos.field.directive_library import KINDS, directives_for
from osos.field.meters.brands import load_brands


def test_flags_of_the_library_are_the_flag_list_codes() -> None:
    # FLAG manufacturer list (DLMS UA FLAG ID list as mirrored at m-bus.de/man.html)
    expected = {"elektromed": "ELM", "makel": "MKL", "viko": "VIK", "landis-gyr-e450": "LGZ",
                "iskraemeco-am550": "ISK", "kamstrup-omnipower": "KAM", "itron-sl7000": "ACE", "emh-lzqj": "EMH",
                "elster-as3000": "ELS", "kohler-dlms": "KHL"}
    lib = ml.load_library()
    assert {k: lib[k].flag for k in expected} == expected
    assert {p.protocol for p in lib.values()} == set(ml.PROTOCOLS)


def test_lookup_by_flag_and_model_and_the_generic_fallback() -> None:
    assert ml.profile_for("lgz").key == "landis-gyr-e450"
    assert ml.profile_for("MKL", "K700.M").key == "makel"
    unknown = ml.profile_for("QQQ")
    assert (unknown.key, unknown.flag, unknown.protocol, unknown.framing) == ("generic-iec", "QQQ", "iec62056-21",
                                                                              "7E1")


def test_no_secrets_in_any_profile() -> None:  # issue 7: no built-in meter password (HES-56)
    assert not hasattr(ml.MeterProfile, "password")
    for p in ml.load_library().values():
        assert not hasattr(p, "password"), p.key  # the gateway's secret store gives each meter its secret
    good = {"name": "X", "flag": "XYZ", "protocol": "iec62056-21", "source": "s", "init_baud": 300, "max_baud": 9600,
            "framing": "7E1", "auth": "p1", "short_read": ["1.8.0"]}
    assert ml.parse_profile("x", good).auth == "p1"
    for key in ("password", "ek", "ak"):
        with pytest.raises(ml.MeterLibraryError, match=f"'{key}' not allowed"):
            ml.parse_profile("x", {**good, key: "00000000"})


def test_simulated_brands_still_load_from_the_same_files() -> None:
    assert set(load_brands()) == {"elektromed", "makel", "viko"}
    assert ml.profile("viko").max_baud == load_brands()["viko"].max_baud


def test_every_profile_generates_valid_directives() -> None:
    for key, p in ml.load_library().items():
        generated = directives_for(key)
        assert {"readout", "short-read"} <= set(generated), key
        assert ("relay-connect" in generated) == (p.relay is not None), key
        assert set(generated) - {"break", "load-profile-2"} <= set(KINDS), key


def test_iec_short_read_asks_for_the_profile_registers_in_order() -> None:
    doc = directives_for("makel")["short-read"]
    asked = [s["text"][4:-3] for s in doc["steps"] if s["op"] == "send" and s["text"].startswith("\u0001R1")]
    assert asked == list(ml.profile("makel").short_read)
    assert doc["params"]["max_baud"] == 19200


@pytest.mark.parametrize(("change", "needle"), [
    ({"protocol": "zigbee"}, "key 'protocol'"),
    ({"framing": "9X9"}, "key 'framing'"),
    ({"flag": "lgz"}, "key 'flag'"),
    ({"short_read": [{"obis": "1.8.0", "class": 3}]}, "short_read"),
    ({"dlms": {"transport": "carrier-pigeon", "client_sap": 1}}, "dlms.transport"),
])
def test_bad_profile_errors_name_the_file_and_key(change: dict, needle: str) -> None:
    doc = {"name": "x", "flag": "ABC", "protocol": "dlms", "source": "s", "init_baud": 300, "max_baud": 9600,
           "framing": "8N1", "auth": "lls", "short_read": [], "dlms": {"transport": "hdlc", "client_sap": 1}}
    doc.update(change)
    with pytest.raises(ml.MeterLibraryError) as err:
        ml.parse_profile("x", doc, "osos/data/meters/x.toml")
    assert "osos/data/meters/x.toml" in str(err.value) and needle in str(err.value)


def test_missing_key_is_named() -> None:
    with pytest.raises(ml.MeterLibraryError, match=r"x\.toml: missing key 'framing'"):
        ml.parse_profile("x", {"protocol": "iec62056-21", "flag": "ABC"}, "x.toml")


def test_gateway_cli_refuses_an_unknown_profile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from osos.cli.main import app

    bad = CliRunner().invoke(app, ["gateway", "--flag", "OSS", "--serial", "1", "--data-dir", str(tmp_path),
                                   "--meter", "tcp://127.0.0.1:9?profile=no-such-meter"])
    assert bad.exit_code == 2 and "no meter profile 'no-such-meter'" in bad.output


def test_gateway_uses_the_flag_profile_only_for_the_same_protocol() -> None:
    from osos.field.gateway import MeterConfig, _library_key

    assert _library_key(MeterConfig(link="tcp://h:1", flag="LGZ", protocol="dlms")) == "landis-gyr-e450"
    assert _library_key(MeterConfig(link="tcp://h:1", flag="LGZ")) == ""  # an IEC-configured LGZ: standard set
    assert _library_key(MeterConfig(link="tcp://h:1", flag="VIK")) == "viko"
    assert _library_key(MeterConfig(link="tcp://h:1", flag="QQQ")) == ""
