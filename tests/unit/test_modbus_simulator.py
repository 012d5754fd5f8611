"""The simulated analyzer holds its measurements exactly as the map types allow (covers HES-32, HES-40)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from osos.field.meters.modbus_analyzer import SimulatedAnalyzer
from osos.protocols import modbus as M

T0 = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", M.available_maps())
def test_every_meant_value_survives_the_words_exactly(name: str) -> None:
    regmap = M.load_map(name)
    sim = SimulatedAnalyzer(regmap, seed=9, unit=4)
    for hours in range(0, 48, 7):
        t = T0 + timedelta(hours=hours)
        meant = sim.values_at(t)
        decoded, errors = M.decode_words(regmap, sim.words_at(t))
        assert errors == {}
        for reg in regmap.registers:
            assert decoded[reg.name] == sim.register_value(reg, meant.get(reg.name)), reg.name


def test_physics_is_consistent() -> None:
    regmap = M.load_map("eastron-sdm630")
    v = SimulatedAnalyzer(regmap, seed=1).values_at(T0 + timedelta(hours=19))
    for n in ("l1", "l2", "l3"):
        p, q, s = v[f"active_power_{n}"], v[f"reactive_power_{n}"], v[f"apparent_power_{n}"]
        assert abs(p * p + q * q - s * s) < Decimal("1E-10") * s * s  # type: ignore[operator]
        assert Decimal("0.9") < v[f"power_factor_{n}"] <= 1  # type: ignore[operator]
    total = sum((v[f"active_power_{n}"] for n in ("l1", "l2", "l3")), Decimal(0))  # type: ignore[misc]
    assert v["active_power_total"] == total


def test_overrides_must_name_map_registers() -> None:
    with pytest.raises(ValueError, match="no_such_register"):
        SimulatedAnalyzer(M.load_map("carlo-gavazzi-em21"), overrides={"no_such_register": Decimal(1)})
