"""Topic layout with the broker's plain mount point (HES-54): what the head-end subscribes to, how it tells a
plain session from a TLS one, and where it answers. Expected topics are written out here by hand.

covers HES-4, HES-34, HES-54
"""

from __future__ import annotations

from osos.protocols import mass

DEV = mass.Device("OSS", "GW0001")


def test_both_session_forms_are_subscribed() -> None:
    topics = mass.Topics("mass")
    assert set(topics.uplink_filters) == {
        "mass/device/to_server",
        "mass/device/+/+/to_server",
        "plain/mass/device/to_server",
        "plain/mass/device/+/+/to_server",
    }
    assert set(topics.emergency_filters) == {"mass/device/+/+/emergency", "plain/mass/device/+/+/emergency"}


def test_transport_follows_the_mount_and_the_deployment() -> None:
    with_tls = mass.Topics("mass", device_tls=True)
    no_tls = mass.Topics("mass", device_tls=False)
    assert with_tls.transport("mass/device/OSS/GW0001/to_server") == "tls"
    assert with_tls.transport("plain/mass/device/OSS/GW0001/to_server") == "plain"
    # without TLS (one plain listener, no mount point) every session is plain
    assert no_tls.transport("mass/device/OSS/GW0001/to_server") == "plain"
    assert no_tls.transport("plain/mass/device/to_server") == "plain"
    # "plainly/..." is not the mount point
    assert with_tls.transport("plainly/mass/device/OSS/GW0001/to_server") == "tls"


def test_mounted_topics_name_the_same_device_and_kind() -> None:
    topics = mass.Topics("mass", device_tls=True)
    assert topics.strip_mount("plain/mass/device/OSS/GW0001/to_server") == "mass/device/OSS/GW0001/to_server"
    assert topics.strip_mount("mass/device/OSS/GW0001/to_server") == "mass/device/OSS/GW0001/to_server"
    assert topics.device_from_topic("plain/mass/device/OSS/GW0001/to_server") == DEV
    assert topics.device_from_topic("plain/mass/device/OSS/GW0001/emergency") == DEV
    assert topics.is_emergency("plain/mass/device/OSS/GW0001/emergency")
    assert topics.is_legacy("plain/mass/device/to_server") and topics.is_legacy("mass/device/to_server")
    assert topics.device_from_topic("plain/mass/device/to_server") is None


def test_downlink_for_the_session_the_modem_uses() -> None:
    with_tls = mass.Topics("mass", device_tls=True)
    assert with_tls.downlink_for(DEV, "tls") == "mass/server/OSS/GW0001/to_device"
    assert with_tls.downlink_for(DEV, "plain") == "plain/mass/server/OSS/GW0001/to_device"
    assert with_tls.downlink_for(DEV, "plain", legacy=True) == "plain/mass/server/to_device"
    assert with_tls.downlink_for(DEV, None) == "mass/server/OSS/GW0001/to_device"  # never heard: TLS side
    no_tls = mass.Topics("mass")
    assert no_tls.downlink_for(DEV, "plain") == "mass/server/OSS/GW0001/to_device"
    assert no_tls.downlink_for(DEV, "plain", legacy=True) == "mass/server/to_device"
