"""The tariff parameter printout (TAX-9): what the taximeter's thermal printer lists, as text or PDF.

S3 §4.2.4 and Figs. 4.32/4.41: from the PRINT menu the meter prints every loaded tariff's parameters
so an inspector can check the load; the CRC over all tariffs (Fig. 4.29) identifies the load. This
module lays out the same list: tariff code, CRC, options, each tariff's parameters, its tiers and its
activation ranges. Pure: it returns a string or PDF bytes and writes no file.
"""

from __future__ import annotations

import io
from decimal import Decimal

from osos.tariff.calendar import WEEKDAY_KEYS, Activation, step_to_text
from osos.tariff.errors import TariffError
from osos.tariff.model import TaxiTariff, TaxiTariffSet, Tier

DEFAULT_WIDTH = 40  # characters per line of an 80 mm thermal printer in its normal font
_TIER_TAG = {"distance": "DIST", "time": "TIME", "amount": "AMOUNT", "speed": "SPEED"}


def _num(value: Decimal | None, places: int | None = None) -> str:
    if value is None:
        return "-"
    if places is not None:
        return f"{value:.{places}f}"
    text = format(value.normalize(), "f")
    return text


def _row(label: str, value: str, width: int) -> str:
    gap = width - len(label) - len(value)
    if gap < 1:
        return f"{label} {value}"[:width] if len(label) + 1 + len(value) > width else f"{label} {value}"
    return label + " " * gap + value


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else f"{indent}{word}"
        if len(candidate) > width and line:
            lines.append(line)
            line = f"{indent}{word}"
        else:
            line = candidate
    if line:
        lines.append(line)
    return [ln[:width] for ln in lines]


def activation_text(act: Activation) -> str:
    """One activation range in S3's printed form, e.g. ``HN 24/12 20:00 - 26/12 08:00``."""
    kind = act.kind

    def day(d: object) -> str:
        if hasattr(d, "year"):
            return f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}"  # type: ignore[attr-defined]
        return f"{d.day:02d}/{d.month:02d}"  # type: ignore[attr-defined]

    if kind == "N":
        return "N ALWAYS"
    if kind in ("HN", "SN"):
        return (f"{kind} {day(act.from_date)} {step_to_text(act.start_step)} - "
                f"{day(act.to_date)} {step_to_text(act.end_step)}")
    span = f" {day(act.from_date)}-{day(act.to_date)}" if kind[0] in "HS" else ""
    if kind[-1] == "W":
        assert act.weekdays is not None
        days = " ".join(f"{k.upper()[:2]} {step_to_text(s)}-{step_to_text(e)}"
                        for k, (s, e) in zip(WEEKDAY_KEYS, act.weekdays, strict=True) if s != e)
        return f"{kind}{span} {days or 'NO DAY'}"
    return f"{kind}{span} {step_to_text(act.start_step)}-{step_to_text(act.end_step)}"


def _tariff_lines(t: TaxiTariff, ts: TaxiTariffSet, width: int) -> list[str]:
    u = ts.distance_unit
    lines = [f"TARIFF {t.no}  {t.name}"[:width], f" MODE {t.mode}  CHARGE {t.charge.upper()}"[:width]]
    rows = [
        ("OPENING FARE", _num(t.opening_fare, ts.decimals)),
        ("OPENING DIST.", f"{_num(t.opening_distance)} {u}"),
        ("OPENING TIME", f"{_num(t.opening_time_s)} s"),
        ("UNIT DIST. FARE", _num(t.unit_distance_fare, ts.decimals + 1)),
        ("UNIT DISTANCE", f"{_num(t.unit_distance)} {u}"),
        ("UNIT TIME FARE", _num(t.unit_time_fare, ts.decimals + 1)),
        ("UNIT TIME", f"{_num(t.unit_time_s)} s"),
        ("UNIT EXTRA", _num(t.extra_fare, ts.decimals + 1)),
        ("MAX EXTRA COUNT", str(t.max_extras)),
    ]
    if t.minimum_fare:
        rows.append(("MINIMUM FARE", _num(t.minimum_fare, ts.decimals)))
    if t.crossover_kmh is not None:
        rows.append(("CROSS-OVER", f"{_num(t.crossover_kmh)} km/h"))
    lines += [" " + _row(label, value, width - 1) for label, value in rows]
    if t.tiers:
        lines += _wrap("TIERS " + " ".join(t.tiers), width, " ")
    for act in (t.activation, *t.also_active):
        lines += _wrap(activation_text(act), width, " ")
    return lines


def _tier_lines(tier: Tier, ts: TaxiTariffSet, width: int) -> list[str]:
    u = ts.distance_unit
    unit = {"distance": u, "time": "s", "amount": ts.currency, "speed": "km/h"}[tier.kind]
    op = ">" if tier.kind == "speed" else ">="  # a speed tier counts while the speed is above its limit
    head = f"{tier.id} {_TIER_TAG[tier.kind]} {op} {_num(tier.limit)} {unit}"
    if tier.kind == "speed":
        head += f" FOR {tier.dwell_s} s"
    if tier.switch_to:
        head += f" -> TARIFF {tier.switch_to}"
    places = ts.decimals + 1
    rows = []
    if tier.monetary_step is not None:
        rows.append(("STEP", _num(tier.monetary_step, places)))
    else:
        if tier.unit_distance_fare is not None:
            rows.append(("UNIT DIST. FARE", _num(tier.unit_distance_fare, places)))
        if tier.unit_time_fare is not None:
            rows.append(("UNIT TIME FARE", _num(tier.unit_time_fare, places)))
    if tier.unit_distance is not None:
        rows.append(("UNIT DISTANCE", f"{_num(tier.unit_distance)} {u}"))
    if tier.unit_time_s is not None:
        rows.append(("UNIT TIME", f"{_num(tier.unit_time_s)} s"))
    if tier.km_fare is not None:
        rows.append(("KM FARE", _num(tier.km_fare, places)))
    if tier.hourly_fare is not None:
        rows.append(("HOURLY FARE", _num(tier.hourly_fare, places)))
    body = ["   " + _row(label, value, width - 3) for label, value in rows] or ["   NO CHANGE"]
    return _wrap(head, width, " ") + body


def render_text(ts: TaxiTariffSet, *, width: int = DEFAULT_WIDTH, crc: int | None = None, locked: bool = False) -> str:
    """The parameter list as a thermal printer prints it, ``width`` characters per line.

    ``crc`` is the image CRC to print; by default it is computed by encoding ``ts`` (S3 binary). A tariff
    set the S3 layout cannot hold prints ``CRC ----`` and the reason.
    """
    if width < 24:
        raise TariffError("printout width must be at least 24 characters")
    crc_note = ""
    if crc is None:
        from osos.tariff.binary import encode

        try:
            crc = int.from_bytes(encode(ts, locked=locked)[-2:], "little")
        except TariffError as exc:
            crc_note = str(exc)
    rule, thin = "=" * width, "-" * width
    out = [rule, "TARIFF PARAMETERS".center(width).rstrip(), rule]
    rows = [
        ("TARIFF SET", ts.name),
        ("CITY", f"{ts.city} {ts.country}".strip() or "-"),
        ("YEAR", str(ts.year)),
        ("TARIFF CODE", str(ts.tariff_code)),
        ("CRC", "----" if crc is None else f"{crc:04X}"),
        ("CURRENCY", f"{ts.currency} /{ts.decimals} DEC"),
        ("DISTANCE UNIT", ts.distance_unit),
        ("DST SWITCH", "ON" if ts.dst_switch else "OFF"),
        ("ONLY ONE ACTIVE", "ON" if ts.only_one_active else "OFF"),
        ("LOCKED", "ON" if locked else "OFF"),
        ("TARIFFS", str(len(ts.tariffs))),
    ]
    out += [_row(label, value[: width - len(label) - 1], width) for label, value in rows]
    if crc_note:
        out += _wrap("NOT IN S3 FORMAT: " + crc_note, width)
    for t in ts.tariffs:
        out.append(thin)
        out += _tariff_lines(t, ts, width)
    if ts.tiers:
        out.append(thin)
        out.append("TIERS")
        for tier in ts.tiers:
            out += _tier_lines(tier, ts, width)
    out.append(rule)
    return "\n".join(line.rstrip() for line in out) + "\n"


def render_pdf(ts: TaxiTariffSet, *, width: int = DEFAULT_WIDTH, crc: int | None = None, locked: bool = False,
               text: str | None = None) -> bytes:
    """The same printout on an 80 mm wide receipt-shaped PDF page (Courier), as bytes (HES-21 PDF export)."""
    from reportlab.lib.units import mm
    from reportlab.pdfgen import canvas

    body = text if text is not None else render_text(ts, width=width, crc=crc, locked=locked)
    lines = body.splitlines()
    font_size = 7.0
    leading = font_size * 1.25
    margin = 4 * mm
    page_w = 80 * mm
    page_h = max(60 * mm, 2 * margin + leading * len(lines))
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf, pagesize=(page_w, page_h), invariant=1, pageCompression=0)
    pdf.setTitle(f"Tariff parameters {ts.name}")
    pdf.setAuthor("OSOS")
    pdf.setFont("Courier", font_size)
    y = page_h - margin - font_size
    for line in lines:
        pdf.drawString(margin, y, line)
        y -= leading
    pdf.showPage()
    pdf.save()
    return buf.getvalue()
