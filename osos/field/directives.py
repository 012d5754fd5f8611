"""Directives: JSON programs a gateway runs against a meter link (HES-44, HES-45, HES-46).

A directive is data: line settings, bytes to send, what to wait for, pauses, and rules that copy parts of
the answer into parameters for later steps (``${param}``). The interpreter works on the :class:`Link`
interface only, so it is tested against simulated meters without any MQTT. Format and op reference:
docs/directives.md; JSON schema: ``osos/data/directives/directive.schema.json``; standard set: the other
``*.json`` files next to it.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from osos.field import protocol_ops
from osos.field.links import Link, LinkError
from osos.protocols import iec62056_21 as iec

_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_TIMEOUT_MS = 2000
DEFAULT_MAX_BYTES = 1 << 20

# failCode values of a failed run (sent in the MASS negative answer)
FAIL_LINK = 1
FAIL_TIMEOUT = 2
FAIL_MISMATCH = 3
FAIL_CAPTURE = 4
FAIL_INVALID = 5
FAIL_BCC = 6
FAIL_NO_SECRET = protocol_ops.FAIL_NO_SECRET  # 8: the meter secret the directive needs is not configured

#: meter secrets: they come only from the gateway's secret store (osos.field.secrets), never from a directive's
#: own params, and a directive may use them only where they go to the meter (a ``send``), not where they could
#: end up in a captured parameter or an error text that goes uplink
SECRET_PARAMS = frozenset({"password", "ek", "ak"})


class DirectiveError(Exception):
    """A directive that is invalid, or a run that failed at ``step`` (index into steps; -1 before any)."""

    def __init__(self, reason: str, *, step: int = -1, fail_code: int = FAIL_INVALID) -> None:
        self.reason, self.step, self.fail_code = reason, step, fail_code
        where = f" at step {step}" if step >= 0 else ""
        super().__init__(f"{reason}{where}")


@cache
def schema() -> dict[str, Any]:
    text = resources.files("osos.data").joinpath("directives/directive.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator() -> Any:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(schema())


def validate(doc: Any) -> dict[str, Any]:
    """Check a directive against the schema and its regexes; returns it unchanged or raises DirectiveError."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise DirectiveError(f"invalid directive: {where}: {err.message}")
    carried = SECRET_PARAMS & set(doc.get("params", {}))
    if carried:
        raise DirectiveError(f"invalid directive: params must not carry meter secrets ({', '.join(sorted(carried))});"
                             " the gateway takes them from its secret store")
    for i, step in enumerate(doc["steps"] + doc.get("finally", [])):
        for key, value in step.items():
            if key == "text" and step["op"] == "send":
                continue
            used = SECRET_PARAMS & set(_PARAM.findall(value)) if isinstance(value, str) else set()
            if used:
                raise DirectiveError(f"invalid directive: {step['op']}.{key} uses {', '.join(sorted(used))}; meter "
                                     "secrets may only be sent to the meter (send text)", step=i)
        for key in ("regex", "match"):
            if key in step:
                try:
                    re.compile(step[key])
                except re.error as exc:
                    raise DirectiveError(f"invalid directive: bad {key}: {exc}", step=i) from None
    return doc


def needed_secrets(directive: dict[str, Any]) -> set[str]:
    """The meter secrets a directive sends (``${password}`` in a send step, e.g. the IEC P1 command)."""
    used: set[str] = set()
    for step in directive.get("steps", []) + directive.get("finally", []):
        if step.get("op") == "send":
            used |= SECRET_PARAMS & set(_PARAM.findall(str(step.get("text", ""))))
    return used


@cache
def standard_directives() -> dict[str, dict[str, Any]]:
    """The shipped set (readout, short-read, load-profile, time-set, break), by name."""
    folder = resources.files("osos.data").joinpath("directives")
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json") and not entry.name.endswith(".schema.json"):
            doc = validate(json.loads(entry.read_text("utf-8")))
            out[doc["name"]] = doc
    return out


@dataclass
class RunResult:
    """What a run produced: captured parameters, named receive buffers, traffic counters."""

    directive: str
    params: dict[str, str]
    buffers: dict[str, bytes]
    bytes_in: int = 0
    bytes_out: int = 0
    duration_s: float = 0.0
    negotiated_baud: int | None = None
    steps_run: int = 0
    log: list[str] = field(default_factory=list)
    captured: dict[str, str] = field(default_factory=dict)  # what set/capture/baud_from_ident produced
    records: list[dict[str, Any]] = field(default_factory=list)  # what each part of a binary answer is
    sessions: dict[str, Any] = field(default_factory=dict)  # protocol sessions open during the run (DLMS)
    counters: Any = None  # the gateway's persistent DLMS invocation counters (osos.field.secrets), if any

    def keep(self, name: str, value: str) -> None:
        self.params[name] = value
        self.captured[name] = value


def substitute(text: str, params: dict[str, str], step: int) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in params:
            raise DirectiveError(f"parameter ${{{name}}} is not set", step=step, fail_code=FAIL_INVALID)
        return str(params[name])

    return _PARAM.sub(repl, text)


def _int(value: Any, params: dict[str, str], step: int, what: str) -> int:
    if isinstance(value, int):
        return value
    text = substitute(str(value), params, step)
    try:
        return int(text)
    except ValueError:
        raise DirectiveError(f"{what} {text!r} is not an integer", step=step) from None


class Interpreter:
    """Runs validated directives on a link. ``sleep`` is injectable so tests can skip real pauses."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep, counters: Any = None) -> None:
        self.sleep = sleep
        self.counters = counters  # InvocationCounters of the gateway's data dir (HLS-GMAC across restarts)

    def run(self, directive: dict[str, Any], link: Link, params: dict[str, Any] | None = None) -> RunResult:
        validate(directive)
        merged = {k: str(v) for k, v in directive.get("params", {}).items()}
        merged.update({k: str(v) for k, v in (params or {}).items()})
        missing = sorted(n for n in needed_secrets(directive) if not merged.get(n))
        if missing:  # refused before the meter is touched: no half-open programming session
            raise DirectiveError(f"directive {directive['name']!r} needs this meter's {' and '.join(missing)}, which "
                                 "the gateway has not been given: put it in the gateway's secret store (`osos "
                                 "gateway-secret set NAME password`) and reference it from the meter (?secret=NAME)",
                                 fail_code=FAIL_NO_SECRET)
        result = RunResult(directive["name"], merged, {}, counters=self.counters)
        in0, out0 = link.bytes_in, link.bytes_out
        started = time.monotonic()
        try:
            for index, step in enumerate(directive["steps"]):
                self._step(index, step, link, result)
                result.steps_run = index + 1
        finally:
            for step in directive.get("finally", []):
                # clean-up is best effort; the original outcome stands
                with contextlib.suppress(DirectiveError, LinkError):
                    self._step(-1, step, link, result)
            protocol_ops.close_sessions(result)
            result.bytes_in = link.bytes_in - in0
            result.bytes_out = link.bytes_out - out0
            result.duration_s = time.monotonic() - started
        return result

    # ------------------------------------------------------------------ ops
    def _step(self, index: int, step: dict[str, Any], link: Link, result: RunResult) -> None:
        op = step["op"]
        params = result.params
        try:
            if op == "serial":
                baud = _int(step["baud"], params, index, "baud")
                link.configure(baud, step.get("bits", 7), step.get("parity", "E"), step.get("stop", 1))
                result.negotiated_baud = baud
            elif op == "send":
                self._send(index, step, link, result)
            elif op == "expect":
                self._expect(index, step, link, result)
            elif op == "wait":
                self.sleep(_int(step["ms"], params, index, "ms") / 1000)
            elif op == "set":
                result.keep(step["param"], substitute(str(step["value"]), params, index))
            elif op == "capture":
                self._capture(index, step, result)
            elif op == "baud_from_ident":
                self._baud_from_ident(index, step, result)
            elif op == "check_bcc":
                self._check_bcc(index, step, result)
            elif op in protocol_ops.PROTOCOL_OPS:  # DLMS, Modbus, M-Bus steps (HES-40)
                protocol_ops.run_step(op, index, step, link, result)
            else:  # pragma: no cover - the schema admits no other op
                raise DirectiveError(f"unknown op {op!r}", step=index)
        except LinkError as exc:
            raise DirectiveError(f"link: {exc}", step=index, fail_code=FAIL_LINK) from None
        except re.error as exc:  # a pattern that only breaks after ${param} substitution
            raise DirectiveError(f"bad regex after substitution: {exc}", step=index) from None
        except UnicodeEncodeError:
            raise DirectiveError("text must be 8-bit (latin-1) characters", step=index) from None

    def _send(self, index: int, step: dict[str, Any], link: Link, result: RunResult) -> None:
        if "hex" in step:
            text = substitute(step["hex"], result.params, index)
            try:
                data = bytes.fromhex(text)
            except ValueError:  # the template, not the substituted text: error texts go uplink
                raise DirectiveError(f"hex {step['hex']!r} is not hexadecimal", step=index) from None
        else:
            text = substitute(step["text"], result.params, index)
            try:
                data = text.encode("latin-1")
            except UnicodeEncodeError:
                raise DirectiveError("text must be 8-bit characters", step=index) from None
        if step.get("bcc"):
            data += bytes([iec.bcc(data)])
        link.write(data)
        result.log.append(f">> {data!r}")

    def _expect(self, index: int, step: dict[str, Any], link: Link, result: RunResult) -> None:
        timeout_s = _int(step.get("timeout_ms", DEFAULT_TIMEOUT_MS), result.params, index, "timeout_ms") / 1000
        max_bytes = step.get("max_bytes", DEFAULT_MAX_BYTES)
        deadline = time.monotonic() + timeout_s
        until = substitute(step["until"], result.params, index).encode("latin-1") if "until" in step else None
        got = bytearray()

        def complete() -> bool:
            if until is not None:
                return until in got
            if "count" in step:
                return len(got) >= step["count"]
            # etx_bcc: a frame ends one byte after ETX/EOT; a lone ACK/NAK also ends the answer
            if got[:1] in (iec.ACK, iec.NAK) and len(got) == 1:
                return True
            return any(b in (0x03, 0x04) for b in got[:-1])

        while not complete():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DirectiveError(
                    f"timeout after {int(timeout_s * 1000)} ms ({len(got)} bytes received: {bytes(got[:40])!r})",
                    step=index,
                    fail_code=FAIL_TIMEOUT,
                )
            want = 1 if "count" in step or until is not None else 4096
            if "count" in step:
                want = step["count"] - len(got)
            chunk = link.read(want if until is None else 1, remaining)
            got += chunk
            if len(got) > max_bytes:
                raise DirectiveError(f"answer longer than {max_bytes} bytes", step=index, fail_code=FAIL_MISMATCH)
        data = bytes(got)
        if "etx_bcc" in step:
            end = next(i for i, b in enumerate(data) if b in (0x03, 0x04)) + 2 if len(data) > 1 else 1
            data = data[:end]
        name = step.get("into", "last")
        if step.get("append") and name in result.buffers:
            result.buffers[name] += data
        else:
            result.buffers[name] = data
        result.log.append(f"<< {data[:80]!r}")
        if "match" in step:
            pattern = substitute(step["match"], result.params, index)
            if not re.search(pattern, data.decode("latin-1"), re.S):
                raise DirectiveError(
                    f"answer {data[:40]!r} does not match {pattern!r}", step=index, fail_code=FAIL_MISMATCH
                )

    def _buffer(self, index: int, name: str, result: RunResult) -> str:
        if name not in result.buffers:
            raise DirectiveError(f"buffer {name!r} holds nothing yet", step=index, fail_code=FAIL_CAPTURE)
        return result.buffers[name].decode("latin-1")

    def _capture(self, index: int, step: dict[str, Any], result: RunResult) -> None:
        text = self._buffer(index, step["from"], result)
        m = re.search(substitute(step["regex"], result.params, index), text, re.S)
        if m is None:
            if step.get("required", True):
                raise DirectiveError(
                    f"capture: {step['regex']!r} not found in {step['from']}", step=index, fail_code=FAIL_CAPTURE
                )
            return
        for key, value in m.groupdict().items():
            if value is not None:
                result.keep(key, value)
        if "param" in step:
            result.keep(step["param"], m.group(1) if m.groups() else m.group(0))

    def _baud_from_ident(self, index: int, step: dict[str, Any], result: RunResult) -> None:
        """Pick the mode C speed: the meter's announced Z, capped at ``max``; sets ${baud} and ${baud_char}."""
        raw = result.buffers.get(step.get("from", "ident"), b"")
        try:
            ident = iec.parse_identification(raw)
        except iec.IECError as exc:
            raise DirectiveError(f"identification: {exc}", step=index, fail_code=FAIL_MISMATCH) from None
        if ident.baud is None:
            raise DirectiveError(f"identification announces no mode C speed ({ident.baud_char!r})", step=index,
                                 fail_code=FAIL_MISMATCH)
        baud = ident.baud
        if "max" in step:
            baud = min(baud, _int(step["max"], result.params, index, "max"))
        try:
            char = iec.baud_char_for(baud, "C")
        except iec.IECError as exc:
            raise DirectiveError(str(exc), step=index) from None
        for key, value in {"baud": str(baud), "baud_char": char, "flag": ident.flag, "ident": ident.ident}.items():
            result.keep(key, value)

    def _check_bcc(self, index: int, step: dict[str, Any], result: RunResult) -> None:
        data = result.buffers.get(step["from"], b"")
        if len(data) < 2 or data[-2] not in (0x03, 0x04) or iec.bcc(data[:-1]) != data[-1]:
            raise DirectiveError(f"BCC of {step['from']} does not match", step=index, fail_code=FAIL_BCC)
