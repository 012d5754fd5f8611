"""DLMS/COSEM client for the field side: a gateway in transparent mode, or a tool, reads and programs
a meter over the wrapper (TCP) or HDLC (HES-11, HES-35, HES-37, HES-40, HES-42, AMR-5).

It speaks only the wire protocol (``osos.protocols.dlms``) and never imports the head-end.
Security: none (public client), LLS (password) or HLS-GMAC with suite-0 ciphered APDUs. The
client's invocation counter must stay ahead of what the meter has seen: a gateway persists it across
restarts (``on_counter``, ``osos.field.secrets.InvocationCounters``); :meth:`DlmsClient.associate`
retries once with the meter's counter when the meter rejects a stale one, and
:func:`read_invocation_counter` reads it through the public client as IDIS meters allow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from osos.protocols import dlms as D

PUBLIC_CLIENT = 16
CLOCK = (8, D.obis_bytes("0.0.1.0.0.255"))
DISCONNECT = (70, D.obis_bytes("0.0.96.3.10.255"))
ASSOCIATION = (15, D.obis_bytes("0.0.40.0.0.255"))
INVOCATION_COUNTER = (1, D.obis_bytes("0.0.43.1.0.255"))
ACTIVITY_CALENDAR = (20, D.obis_bytes("0.0.13.0.0.255"))
SPECIAL_DAYS = (11, D.obis_bytes("0.0.11.0.0.255"))


class DlmsClientError(Exception):
    """The meter refused or answered something the client cannot use."""


class AssociationRejected(DlmsClientError):
    def __init__(self, diagnostic: str) -> None:
        super().__init__(f"association rejected: {diagnostic}")
        self.diagnostic = diagnostic


class AccessDenied(DlmsClientError):
    def __init__(self, what: str, result: Any) -> None:
        super().__init__(f"{what}: {result.name.lower() if hasattr(result, 'name') else result}")
        self.result = result


class Transport(Protocol):
    """Carries whole APDUs; framing (wrapper/HDLC) is the transport's business."""

    def send(self, apdu: bytes) -> None: ...
    def receive(self) -> bytes: ...
    def close(self) -> None: ...


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise DlmsClientError("peer closed the connection")
        buf += chunk
    return bytes(buf)


class WrapperFraming:
    """IEC 62056-47 wrapper framing over any byte stream: subclasses give ``_write`` and ``_exact``."""

    client_sap: int
    server_sap: int

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _exact(self, n: int) -> bytes:
        raise NotImplementedError

    def send(self, apdu: bytes) -> None:
        self._write(D.wrap(apdu, self.client_sap, self.server_sap))

    def receive(self) -> bytes:
        """The next APDU addressed to us (frames for other client SAPs on a shared stream are skipped)."""
        while True:
            src, dst, length = D.parse_wrapper_header(self._exact(D.WRAPPER_HEADER))
            body = self._exact(length)
            if dst == self.client_sap and src == self.server_sap:
                return body


class WrapperTransport(WrapperFraming):
    """IEC 62056-47 over TCP."""

    def __init__(self, host: str, port: int, client_sap: int, server_sap: int = 1, timeout: float = 10.0) -> None:
        self.client_sap = client_sap
        self.server_sap = server_sap
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def _write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        return _recv_exact(self.sock, n)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class LinkWrapperTransport(WrapperFraming):
    """IEC 62056-47 wrapper frames over a gateway Link (a TCP meter port or a modem's transparent socket): anything
    with ``write(bytes)`` and ``read(max_bytes, timeout_s)``. The link belongs to its owner; close leaves it open."""

    def __init__(self, link: Any, client_sap: int, server_sap: int = 1, timeout_s: float = 5.0) -> None:
        self.link, self.client_sap, self.server_sap, self.timeout_s = link, client_sap, server_sap, timeout_s

    def _write(self, data: bytes) -> None:
        self.link.write(data)

    def _exact(self, n: int) -> bytes:
        buf, deadline = b"", time.monotonic() + self.timeout_s
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DlmsClientError(f"no answer within {self.timeout_s} s ({len(buf)} of {n} bytes)")
            buf += self.link.read(n - len(buf), remaining)
        return buf

    def close(self) -> None:
        """Nothing to close: the link is the gateway's."""


class HdlcTransport:
    """IEC 62056-46 HDLC over a byte stream (TCP socket to a transparent modem, or a serial port).

    ``read(n)`` returns up to n bytes (b"" on timeout/EOF), ``write(data)`` sends. Window 1;
    long APDUs are segmented into ``max_info``-byte I-frames and long answers are pulled with RR."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], None], client_sap: int,
                 server_logical: int = 1, server_physical: int | None = None, max_info: int = 128,
                 closer: Callable[[], None] | None = None, retries: int = 3) -> None:
        from osos.protocols import dlms_hdlc as H

        self.H = H
        self._read, self._write, self._closer = read, write, closer
        self.client = (client_sap, 1)
        self.server = H.server_address(server_logical, server_physical)
        self.max_info = max_info
        self.retries = retries
        self.reader = H.FrameReader()
        self.pending: list[bytes] = []
        self.vs = self.vr = 0
        self.connected = False

    @classmethod
    def tcp(cls, host: str, port: int, client_sap: int, timeout: float = 10.0, **kw: Any) -> HdlcTransport:
        sock = socket.create_connection((host, port), timeout=timeout)

        def read(n: int) -> bytes:
            try:
                return sock.recv(n)
            except TimeoutError:
                return b""

        return cls(read, sock.sendall, client_sap, closer=sock.close, **kw)

    def _frame(self) -> Any:
        while not self.pending:
            chunk = self._read(4096)
            if not chunk:
                raise DlmsClientError("HDLC: no answer from the meter")
            self.pending.extend(self.reader.feed(chunk))
        return self.H.parse_frame(self.pending.pop(0))

    def connect(self) -> None:
        H = self.H
        self._write(H.u_frame(self.server, self.client, H.SNRM,
                              H.negotiation(self.max_info, self.max_info)).to_bytes())
        f = self._frame()
        if f.kind != "UA":
            raise DlmsClientError(f"HDLC: SNRM answered with {f.kind}")
        params = H.parse_negotiation(f.information)
        self.max_info = min(self.max_info, params.get(0x06, self.max_info))
        self.vs = self.vr = 0
        self.connected = True

    def send(self, apdu: bytes) -> None:
        if not self.connected:
            self.connect()
        H = self.H
        payload = H.LLC_REQUEST + apdu
        chunks = [payload[i : i + self.max_info] for i in range(0, len(payload), self.max_info)]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            self._write(H.i_frame(self.server, self.client, self.vs, self.vr, chunk, segmented=not last).to_bytes())
            self.vs = (self.vs + 1) % 8
            if not last:
                ack = self._frame()
                if ack.kind != "RR" or ack.nr != self.vs:
                    raise DlmsClientError(f"HDLC: segment not acknowledged ({ack.kind})")

    def receive(self) -> bytes:
        H = self.H
        data = bytearray()
        while True:
            f = self._frame()
            if f.kind != "I":
                raise DlmsClientError(f"HDLC: expected an I-frame, got {f.kind}")
            if f.ns != self.vr:
                raise DlmsClientError(f"HDLC: frame N(S)={f.ns}, expected {self.vr}")
            self.vr = (self.vr + 1) % 8
            data += f.information
            if not f.segmented:
                break
            self._write(H.rr_frame(self.server, self.client, self.vr).to_bytes())
        if data[:3] != H.LLC_RESPONSE:
            raise DlmsClientError("HDLC: answer without the LLC response header")
        return bytes(data[3:])

    def close(self) -> None:
        H = self.H
        try:
            if self.connected:
                self._write(H.u_frame(self.server, self.client, H.DISC).to_bytes())
                with contextlib.suppress(DlmsClientError, D.DLMSError):
                    self._frame()
        finally:
            self.connected = False
            if self._closer:
                with contextlib.suppress(OSError):
                    self._closer()


@dataclass
class Security:
    """How the client authenticates. ``invocation_counter`` is the next one to use (HLS)."""

    mechanism: str = "none"  # "none", "lls", "hls-gmac"
    password: bytes | None = None
    ek: bytes | None = None
    ak: bytes | None = None
    system_title: bytes = b"OSO\x00\x00\x00\x00\x01"
    invocation_counter: int = 1
    meter_title: bytes | None = None  # when known (inventory), the AARE must carry it (HES-6 identity)


class DlmsClient:
    """One association with one meter. Use as a context manager: associate on enter, release on exit."""

    def __init__(self, transport: Transport, security: Security | None = None, max_pdu: int = 1024,
                 challenge: Callable[[int], bytes] = os.urandom,
                 counter_reader: Callable[[], int] | None = None,
                 on_counter: Callable[[int], None] | None = None) -> None:
        self.t = transport
        self.counter_reader = counter_reader
        self.on_counter = on_counter  # told each counter before it is used (a gateway persists them)
        self.sec = security or Security()
        self.max_pdu = max_pdu
        self.challenge = challenge
        self.meter_title: bytes | None = None
        self.meter_ic_seen = 0
        self.invoke = 0
        self.associated = False

    # association ------------------------------------------------------------------------------
    def associate(self) -> None:
        """AARQ -> AARE (+ HLS passes 3/4). Under HLS a rejection may mean our invocation counter is
        behind the meter's: with a ``counter_reader`` the client reads the meter's counter, jumps
        ahead and retries once."""
        try:
            self._associate_once()
        except AssociationRejected as exc:
            if self.sec.mechanism != "hls-gmac" or exc.diagnostic != "authentication_failed" \
                    or self.counter_reader is None:
                raise
            expected = self.counter_reader()
            if expected <= self.sec.invocation_counter:
                raise
            self.sec.invocation_counter = expected
            self._associate_once()

    def _associate_once(self) -> None:
        from dlms_cosem import enumerations as E
        from dlms_cosem.protocol import acse, xdlms
        from dlms_cosem.protocol.xdlms.conformance import Conformance

        conformance = Conformance(get=True, set=True, action=True, selective_access=True,
                                  block_transfer_with_get_or_read=True, priority_management_supported=True,
                                  multiple_references=True)
        initiate = xdlms.InitiateRequest(proposed_conformance=conformance, client_max_receive_pdu_size=self.max_pdu)
        mech = self.sec.mechanism
        if mech == "hls-gmac":
            from dlms_cosem.security import SecurityControlField

            if self.sec.ek is None or self.sec.ak is None:
                raise DlmsClientError("HLS-GMAC needs ek and ak")
            ic = self._next_ic()
            ct = D.encrypt(initiate.to_bytes(), system_title=self.sec.system_title, invocation_counter=ic,
                           ek=self.sec.ek, ak=self.sec.ak)
            content: Any = xdlms.GlobalCipherInitiateRequest(
                security_control=SecurityControlField(0, authenticated=True, encrypted=True),
                invocation_counter=ic, ciphered_text=ct)
            self.ctos = self.challenge(16)
            aarq = acse.ApplicationAssociationRequest(
                user_information=acse.UserInformation(content=content), system_title=self.sec.system_title,
                authentication=E.AuthenticationMechanism.HLS_GMAC, ciphered=True, authentication_value=self.ctos)
        elif mech == "lls":
            if not self.sec.password:
                raise DlmsClientError("LLS needs a password")
            aarq = acse.ApplicationAssociationRequest(
                user_information=acse.UserInformation(content=initiate),
                authentication=E.AuthenticationMechanism.LLS, authentication_value=self.sec.password)
        elif mech == "none":
            aarq = acse.ApplicationAssociationRequest(user_information=acse.UserInformation(content=initiate))
        else:
            raise DlmsClientError(f"unknown mechanism {mech!r}")
        self.t.send(bytes(aarq.to_bytes()))
        reply = D.decode_apdu(self.t.receive())
        if not isinstance(reply, D.AcseApdu) or reply.tag != D.Tag.AARE:
            raise DlmsClientError(f"expected an AARE, got {type(reply).__name__}")
        aare = reply.parsed
        if aare.result != E.AssociationResult.ACCEPTED:
            diag = aare.result_source_diagnostics
            raise AssociationRejected(diag.name.lower() if hasattr(diag, "name") else str(diag))
        if mech == "hls-gmac":
            self.meter_title = bytes(aare.system_title or b"")
            ui = aare.user_information.content if aare.user_information else None
            if len(self.meter_title) != 8 or not isinstance(ui, xdlms.GlobalCipherInitiateResponse):
                raise DlmsClientError("ciphered AARE without system title or ciphered InitiateResponse")
            if self.sec.meter_title is not None and self.meter_title != self.sec.meter_title:
                raise DlmsClientError(f"meter system title {self.meter_title.hex()} is not the expected "
                                      f"{self.sec.meter_title.hex()}")
            self._check_meter_ic(ui.invocation_counter)
            assert self.sec.ek is not None and self.sec.ak is not None
            D.decrypt(ui.ciphered_text, system_title=self.meter_title, invocation_counter=ui.invocation_counter,
                      ek=self.sec.ek, ak=self.sec.ak)
            stoc = bytes(aare.authentication_value or b"")
            self.associated = True  # needed to send the ciphered ACTION of pass 3
            ic = self._next_ic()  # the counter the ACTION's own ciphering will not use
            f_stoc = D.hls_gmac_response(stoc, system_title=self.sec.system_title, invocation_counter=ic,
                                         ek=self.sec.ek, ak=self.sec.ak)
            try:
                answer = self.action(*ASSOCIATION, 1, D.octets(f_stoc))
            except DlmsClientError:
                self.associated = False
                raise
            if answer is None or answer.type is not D.DataType.OCTET_STRING or len(answer.value) != 17:
                self.associated = False
                raise DlmsClientError("meter did not answer HLS pass 4")
            meter_ic = int.from_bytes(answer.value[1:5], "big")
            expect = D.hls_gmac_response(self.ctos, system_title=self.meter_title, invocation_counter=meter_ic,
                                         ek=self.sec.ek, ak=self.sec.ak)
            if answer.value != expect:
                self.associated = False
                raise DlmsClientError("meter failed HLS authentication (f(CtoS) does not verify)")
        self.associated = True

    def release(self) -> None:
        from dlms_cosem import enumerations as E
        from dlms_cosem.protocol import acse

        if self.associated:
            self.t.send(bytes(acse.ReleaseRequest(reason=E.ReleaseRequestReason.NORMAL).to_bytes()))
            with contextlib.suppress(DlmsClientError, OSError, D.DLMSError):
                self.t.receive()
            self.associated = False

    def close(self) -> None:
        try:
            self.release()
        finally:
            self.t.close()

    def __enter__(self) -> DlmsClient:
        self.associate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ciphering --------------------------------------------------------------------------------
    def _next_ic(self) -> int:
        """The counter for the next ciphered frame; ``on_counter`` hears of it first, so a counter that may
        go out is on record before it does (never reused after a restart)."""
        ic = self.sec.invocation_counter
        if self.on_counter is not None:
            self.on_counter(ic)
        self.sec.invocation_counter += 1
        return ic

    def _check_meter_ic(self, ic: int) -> None:
        if ic <= self.meter_ic_seen:
            raise DlmsClientError(f"replayed meter invocation counter {ic}")
        self.meter_ic_seen = ic

    def _exchange(self, apdu: D.Apdu, _retried: bool = False) -> D.Apdu:
        plain = D.encode_apdu(apdu)
        if self.sec.mechanism == "hls-gmac":
            assert self.sec.ek is not None and self.sec.ak is not None
            self.t.send(D.cipher_apdu(plain, system_title=self.sec.system_title, invocation_counter=self._next_ic(),
                                      ek=self.sec.ek, ak=self.sec.ak))
            reply = D.decode_apdu(self.t.receive())
            if isinstance(reply, D.ExceptionResponse):
                if reply.service_error == D.ServiceError.INVOCATION_COUNTER_ERROR and reply.invocation_counter \
                        and not _retried:
                    self.sec.invocation_counter = reply.invocation_counter
                    return self._exchange(apdu, _retried=True)
                raise DlmsClientError(f"meter exception: {D.apdu_to_json(reply)}")
            if not isinstance(reply, D.CipheredApdu):
                raise DlmsClientError(f"expected a ciphered answer, got {type(reply).__name__}")
            assert self.meter_title is not None
            self._check_meter_ic(reply.invocation_counter)
            return D.decode_apdu(D.decipher_apdu(reply, system_title=self.meter_title, ek=self.sec.ek,
                                                 ak=self.sec.ak))
        self.t.send(plain)
        reply = D.decode_apdu(self.t.receive())
        if isinstance(reply, D.ExceptionResponse):
            raise DlmsClientError(f"meter exception: {D.apdu_to_json(reply)}")
        return reply

    def _invoke(self) -> D.InvokeId:
        self.invoke = (self.invoke + 1) % 16
        return D.InvokeId(self.invoke)

    # services ---------------------------------------------------------------------------------
    def get(self, class_id: int, obis: bytes | str, attribute: int,
            access: D.AccessSelection | None = None) -> D.Data:
        """GET one attribute; block transfer is followed to the last block."""
        if not self.associated:
            raise DlmsClientError("not associated")
        ref = D.AttributeRef(class_id, D.obis_bytes(obis), attribute)
        inv = self._invoke()
        reply = self._exchange(D.GetRequest(ref, access, inv))
        if isinstance(reply, D.GetResponse):
            if reply.data is None:
                raise AccessDenied(f"GET {D.obis_str(ref.obis)}/{attribute}", reply.error)
            return reply.data
        return D.decode_data_exact(self._collect_blocks(reply, inv, f"GET {D.obis_str(ref.obis)}/{attribute}"))

    def get_list(self, refs: list[tuple[int, bytes | str, int]]) -> list[D.Data | D.DataAccessResult | int]:
        """GET several attributes in one request (HES-36); each result is a Data or an error."""
        if not self.associated:
            raise DlmsClientError("not associated")
        items = tuple((D.AttributeRef(c, D.obis_bytes(o), a), None) for c, o, a in refs)
        inv = self._invoke()
        reply = self._exchange(D.GetRequestWithList(items, inv))
        if isinstance(reply, D.GetResponseWithList):
            results = reply.results
        elif isinstance(reply, D.GetResponseBlock):
            raw = self._collect_blocks(reply, inv, "GET-with-list")
            results, end = D.decode_result_list(raw)
            if end != len(raw):
                raise DlmsClientError("trailing bytes after the result list")
        else:
            raise DlmsClientError(f"unexpected answer to GET-with-list: {type(reply).__name__}")
        if len(results) != len(refs):
            raise DlmsClientError(f"{len(results)} results for {len(refs)} attributes")
        return list(results)

    def _collect_blocks(self, reply: D.Apdu, inv: D.InvokeId, what: str) -> bytes:
        raw = bytearray()
        expected = 1
        while isinstance(reply, D.GetResponseBlock):
            if reply.raw is None:
                raise AccessDenied(f"{what} block {reply.block_number}", reply.error)
            if reply.block_number != expected:
                raise DlmsClientError(f"block {reply.block_number} arrived, {expected} expected")
            raw += reply.raw
            if reply.last:
                return bytes(raw)
            reply = self._exchange(D.GetRequestNext(reply.block_number, inv))
            expected += 1
        raise DlmsClientError(f"unexpected answer in a block transfer: {type(reply).__name__}")

    def set(self, class_id: int, obis: bytes | str, attribute: int, value: D.Data) -> None:
        ref = D.AttributeRef(class_id, D.obis_bytes(obis), attribute)
        reply = self._exchange(D.SetRequest(ref, value, None, self._invoke()))
        if not isinstance(reply, D.SetResponse):
            raise DlmsClientError(f"unexpected answer to SET: {type(reply).__name__}")
        if reply.result != D.DataAccessResult.SUCCESS:
            raise AccessDenied(f"SET {D.obis_str(ref.obis)}/{attribute}", reply.result)

    def action(self, class_id: int, obis: bytes | str, method: int, parameter: D.Data | None = None) -> D.Data | None:
        if not self.associated:
            raise DlmsClientError("not associated")
        ref = D.AttributeRef(class_id, D.obis_bytes(obis), method)
        reply = self._exchange(D.ActionRequest(ref, parameter, self._invoke()))
        if not isinstance(reply, D.ActionResponse):
            raise DlmsClientError(f"unexpected answer to ACTION: {type(reply).__name__}")
        if reply.result != D.ActionResult.SUCCESS:
            raise AccessDenied(f"ACTION {D.obis_str(ref.obis)}/{method}", reply.result)
        return reply.data

    # COSEM conveniences -----------------------------------------------------------------------
    def read_clock(self) -> dt.datetime:
        return D.data_datetime(self.get(*CLOCK, 2))

    def set_clock(self, when: dt.datetime) -> None:
        """HES-35 time synchronisation: write the clock (aware datetimes keep their deviation)."""
        self.set(*CLOCK, 2, D.octets(D.datetime_to_octets(when)))

    def read_register(self, obis: bytes | str, class_id: int = 3) -> tuple[Decimal, str]:
        """(value × 10^scaler, unit) exactly, for class 3 registers."""
        value = self.get(class_id, obis, 2)
        scaler, unit = self.get(class_id, obis, 3).items
        if not isinstance(value.value, int) or isinstance(value.value, bool):
            raise DlmsClientError(f"register value is {value.type.name.lower()}, not a number")
        return D.scaled(value.value, scaler.value), D.UNITS.get(unit.value, str(unit.value))

    def read_data(self, obis: bytes | str) -> D.Data:
        return self.get(1, obis, 2)

    def read_profile(self, obis: bytes | str, start: dt.datetime | None = None, end: dt.datetime | None = None,
                     ) -> list[tuple[Any, ...]]:
        """Profile generic buffer, by date range when ``start``/``end`` are given (AMR-5).

        Returns rows as tuples; a date-time column comes back as an aware datetime."""
        access = None
        if start is not None or end is not None:
            if start is None or end is None:
                raise ValueError("give both start and end")
            access = D.AccessSelection(1, D.struct_(
                D.struct_(D.u16(CLOCK[0]), D.octets(CLOCK[1]), D.i8(2), D.u16(0)),
                D.octets(D.datetime_to_octets(start)), D.octets(D.datetime_to_octets(end)), D.array([])))
        buf = self.get(7, obis, 2, access)
        return [tuple(_plain(c) for c in row.items) for row in buf.items]

    def read_capture_objects(self, obis: bytes | str) -> list[tuple[int, str, int]]:
        cols = self.get(7, obis, 3)
        return [(c.items[0].value, D.obis_str(c.items[1].value), c.items[2].value) for c in cols.items]

    def disconnect(self) -> None:
        self.action(*DISCONNECT, 1, D.i8(0))

    def reconnect(self) -> None:
        self.action(*DISCONNECT, 2, D.i8(0))

    def disconnect_state(self) -> tuple[bool, int]:
        """(output_state, control_state): control 0 disconnected, 1 connected, 2 ready for reconnection."""
        return bool(self.get(*DISCONNECT, 2).value), int(self.get(*DISCONNECT, 3).value)

    def read_calendar(self) -> Any:
        """The active activity calendar and special days as ``osos.tariff.dlms_calendar.ActivityCalendar``."""
        from osos.protocols import dlms_calendar_axdr as cc
        from osos.tariff.dlms_calendar import ActivityCalendar

        attrs = {i: self.get(*ACTIVITY_CALENDAR, i) for i in (2, 3, 4, 5)}
        return ActivityCalendar.from_dlms(cc.calendar_from_data(attrs, self.get(*SPECIAL_DAYS, 2)))

    def write_calendar(self, calendar: Any, activate: bool = True) -> None:
        """Write ``calendar`` as the passive calendar (attributes 6..9), activate it at once (method 1)
        when ``activate``, and write its special days (HES-37, AMR-4). Without ``activate`` the
        special days must fit the calendar the meter runs now, or the meter refuses them."""
        from osos.protocols import dlms_calendar_axdr as cc

        values = calendar.to_dlms()
        for idx, data in cc.calendar_to_data(values).items():
            self.set(*ACTIVITY_CALENDAR, idx + cc.PASSIVE_OFFSET, data)
        special = cc.special_days_to_data(values["special_days_table"])
        if activate:
            # the meter refuses a calendar whose special days name day profiles it lacks: clear the
            # table, switch calendars, then write the new special days (valid for the new calendar)
            self.set(*SPECIAL_DAYS, 2, D.array([]))
            self.action(*ACTIVITY_CALENDAR, 1, D.i8(0))
        self.set(*SPECIAL_DAYS, 2, special)


def _plain(d: D.Data) -> Any:
    if d.type is D.DataType.OCTET_STRING and len(d.value) == 12:
        try:
            return D.data_datetime(d)
        except D.DLMSError:
            return d.value
    if d.type in (D.DataType.ARRAY, D.DataType.STRUCTURE):
        return tuple(_plain(i) for i in d.value)
    return d.value


@dataclass(frozen=True)
class Notification:
    """One received push: who sent it (system title when ciphered), when, and the body."""

    source_wport: int
    long_invoke_id: int
    when: dt.datetime | None
    body: D.Data
    system_title: bytes | None = None
    authenticated: bool = False


class NotificationListener:
    """Receive DataNotification pushes over TCP + wrapper (HES-11 alarms pushed by meters, HES-34).

    ``keys`` maps a meter system title to its (EK, AK); ciphered pushes from unknown titles, with bad
    tags or replayed counters are dropped and counted in ``rejected``. Runs in a thread."""

    def __init__(self, on_notification: Callable[[Notification], None], host: str = "127.0.0.1", port: int = 0,
                 keys: dict[bytes, tuple[bytes, bytes]] | None = None) -> None:
        import socketserver
        import threading

        listener = self
        self.on_notification = on_notification
        self.keys = keys or {}
        self.rejected = 0
        self._last_ic: dict[bytes, int] = {}
        self._lock = threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while True:
                    try:
                        src, _dst, length = D.parse_wrapper_header(_recv_exact(self.request, D.WRAPPER_HEADER))
                        apdu = _recv_exact(self.request, length)
                    except (DlmsClientError, D.DLMSError, OSError):
                        return
                    listener._deliver(src, apdu)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._srv = Server((host, port), Handler)
        self.host, self.port = self._srv.server_address[:2]
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.05,), daemon=True)

    def _deliver(self, src: int, raw: bytes) -> None:
        try:
            apdu = D.decode_apdu(raw)
            title, authenticated = None, False
            if isinstance(apdu, D.CipheredApdu):
                title = apdu.system_title
                if title is None or title not in self.keys:
                    raise D.DLMSError("ciphered push from an unknown system title")
                ic = apdu.invocation_counter
                with self._lock:
                    if ic <= self._last_ic.get(title, 0):
                        raise D.DLMSError("replayed push (invocation counter not increasing)")
                    ek, ak = self.keys[title]
                    apdu = D.decode_apdu(D.decipher_apdu(apdu, system_title=title, ek=ek, ak=ak))
                    self._last_ic[title] = ic
                authenticated = True
            if not isinstance(apdu, D.DataNotification):
                raise D.DLMSError("not a data-notification")
            when = D.octets_to_datetime(apdu.when).to_datetime() if apdu.when else None
        except D.DLMSError:
            with self._lock:
                self.rejected += 1
            return
        self.on_notification(Notification(src, apdu.long_invoke_id, when, apdu.body, title, authenticated))

    def start(self) -> NotificationListener:
        self._thread.start()
        return self

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> NotificationListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_invocation_counter(transport: Transport) -> int:
    """Read 0.0.43.1.0.255 (the counter the meter expects next) through the public client."""
    with DlmsClient(transport, Security("none")) as c:
        v = c.read_data(INVOCATION_COUNTER[1])
    if v.type is not D.DataType.DOUBLE_LONG_UNSIGNED:
        raise DlmsClientError("invocation counter object is not a double-long-unsigned")
    return int(v.value)
