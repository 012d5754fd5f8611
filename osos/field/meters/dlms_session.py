"""One association with the simulated DLMS meter (HES-40): AARQ/AARE with no security, LLS or
HLS-GMAC (suite 0), ciphered APDUs and invocation counters, GET (normal, next, with-list, blocks),
SET and ACTION, until RLRQ or the link closes. Transports feed it whole APDUs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from osos.field.meters.dlms_meter import (
    CLASS_ASSOCIATION_LN,
    AccessError,
    AssociationLN,
    ClientPolicy,
)
from osos.protocols import dlms as D

if TYPE_CHECKING:
    from osos.field.meters.dlms_meter import SimulatedDlmsMeter


@dataclass
class _Ciphering:
    client_title: bytes
    general: bool = False


@dataclass
class MeterSession:
    """One association (one TCP connection or one HDLC link): AARQ -> AARE, then GET/SET/ACTION
    with block transfer, until RLRQ or the link closes."""

    meter: SimulatedDlmsMeter
    client_sap: int
    associated: bool = False
    hls_pending: bool = False
    policy: ClientPolicy | None = None
    max_pdu: int = 1024
    ciphering: _Ciphering | None = None
    stoc: bytes = b""
    ctos: bytes = b""
    _blocks: list[bytes] = field(default_factory=list)
    _block_invoke: D.InvokeId | None = None

    def handle(self, apdu: bytes) -> bytes | None:
        """One request APDU in, one response APDU out (None: nothing to answer)."""
        with self.meter.lock:
            self.meter.current_session = self
            self.meter.tick()
            try:
                return self._handle(apdu)
            finally:
                self.meter.current_session = None

    def _handle(self, raw: bytes) -> bytes | None:
        try:
            apdu = D.decode_apdu(raw)
        except D.DLMSError:
            return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_UNKNOWN, D.ServiceError.OTHER_REASON))
        if isinstance(apdu, D.AcseApdu):
            if apdu.tag == D.Tag.AARQ:
                return self._aarq(apdu.parsed)
            if apdu.tag == D.Tag.RLRQ:
                return self._release()
            return None
        if not self.associated and not self.hls_pending:
            return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED,
                                                     D.ServiceError.OPERATION_NOT_POSSIBLE))
        if self.ciphering is not None:
            if not isinstance(apdu, D.CipheredApdu):
                return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED,
                                                         D.ServiceError.DECIPHERING_ERROR))
            return self._ciphered(apdu)
        if isinstance(apdu, D.CipheredApdu):
            return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED,
                                                     D.ServiceError.DECIPHERING_ERROR))
        resp = self._service(apdu)
        return D.encode_apdu(resp) if resp is not None else None

    # association -------------------------------------------------------------------------
    def _aarq(self, aarq: Any) -> bytes:
        from dlms_cosem import enumerations as E
        from dlms_cosem.protocol import acse, xdlms

        self._reset()
        m = self.meter
        policy = m.clients.get(self.client_sap)

        def reject(diag: Any, ciphered: bool = False) -> bytes:
            aare = acse.ApplicationAssociationResponse(
                result=E.AssociationResult.REJECTED_PERMANENT, result_source_diagnostics=diag, ciphered=ciphered)
            return bytes(aare.to_bytes())

        if policy is None:
            return reject(E.AcseServiceUserDiagnostics.CALLING_AP_TITLE_NOT_RECOGNIZED)
        mech = aarq.authentication or E.AuthenticationMechanism.NONE
        wanted = {"none": E.AuthenticationMechanism.NONE, "lls": E.AuthenticationMechanism.LLS,
                  "hls-gmac": E.AuthenticationMechanism.HLS_GMAC}[policy.mechanism]
        if mech != wanted:
            return reject(E.AcseServiceUserDiagnostics.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNIZED)
        content = aarq.user_information.content
        ciphered = policy.mechanism == "hls-gmac"
        if ciphered != bool(aarq.ciphered):
            return reject(E.AcseServiceUserDiagnostics.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
        if ciphered:
            sec = m.secrets
            if sec.ek is None or sec.ak is None or not aarq.system_title or len(aarq.system_title) != 8:
                return reject(E.AcseServiceUserDiagnostics.CALLING_AP_TITLE_NOT_RECOGNIZED, True)
            if not isinstance(content, xdlms.GlobalCipherInitiateRequest):
                return reject(E.AcseServiceUserDiagnostics.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED, True)
            try:
                plain = D.decrypt(content.ciphered_text, system_title=bytes(aarq.system_title),
                                  invocation_counter=content.invocation_counter, ek=sec.ek, ak=sec.ak,
                                  security_control=content.security_control.to_bytes()[0])
                initiate = xdlms.InitiateRequest.from_bytes(plain)
            except (D.DLMSError, ValueError, IndexError):
                return reject(E.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED, True)
            if m.accept_client_ic(bytes(aarq.system_title), content.invocation_counter) is not None:
                return reject(E.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED, True)
            self.ciphering = _Ciphering(bytes(aarq.system_title))
            self.ctos = bytes(aarq.authentication_value or b"")
            if len(self.ctos) < 8:
                self._reset()
                return reject(E.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED, True)
        else:
            if not isinstance(content, xdlms.InitiateRequest):
                return reject(E.AcseServiceUserDiagnostics.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED)
            initiate = content
            if policy.mechanism == "lls":
                pw = m.secrets.password
                if pw is None or bytes(aarq.authentication_value or b"") != pw:
                    return reject(E.AcseServiceUserDiagnostics.AUTHENTICATION_FAILED)
        self.policy = policy
        self.max_pdu = max(64, min(initiate.client_max_receive_pdu_size or 0xFFFF, m.profile.server_max_pdu))
        conformance = initiate.proposed_conformance
        response = xdlms.InitiateResponse(negotiated_conformance=_negotiate(conformance),
                                          server_max_receive_pdu_size=m.profile.server_max_pdu)
        if ciphered:
            assert m.secrets.ek is not None and m.secrets.ak is not None
            ic = m.next_server_ic()
            from dlms_cosem.security import SecurityControlField

            ct = D.encrypt(response.to_bytes(), system_title=m.system_title, invocation_counter=ic,
                           ek=m.secrets.ek, ak=m.secrets.ak)
            ui_content: Any = xdlms.GlobalCipherInitiateResponse(
                security_control=SecurityControlField(0, authenticated=True, encrypted=True),
                invocation_counter=ic, ciphered_text=ct)
            self.stoc = m.challenge(16)
            self.hls_pending = True
            aare = acse.ApplicationAssociationResponse(
                result=E.AssociationResult.ACCEPTED,
                result_source_diagnostics=E.AcseServiceUserDiagnostics.AUTHENTICATION_REQUIRED,
                ciphered=True, authentication=E.AuthenticationMechanism.HLS_GMAC, system_title=m.system_title,
                authentication_value=self.stoc, user_information=acse.UserInformation(content=ui_content))
        else:
            self.associated = True
            aare = acse.ApplicationAssociationResponse(
                result=E.AssociationResult.ACCEPTED, result_source_diagnostics=E.AcseServiceUserDiagnostics.NULL,
                authentication=mech if mech != E.AuthenticationMechanism.NONE else None,
                user_information=acse.UserInformation(content=response))
        return bytes(aare.to_bytes())

    def reply_to_hls(self, param: D.Data | None) -> D.Data:
        """Association LN method 1: check f(StoC) from the client, answer f(CtoS) (Green Book 9.2.7.4)."""
        m = self.meter
        if not self.hls_pending or self.ciphering is None or param is None \
                or param.type is not D.DataType.OCTET_STRING or len(param.value) != 17:
            raise AccessError(D.DataAccessResult.READ_WRITE_DENIED)
        assert m.secrets.ek is not None and m.secrets.ak is not None
        ic = int.from_bytes(param.value[1:5], "big")
        expected = D.hls_gmac_response(self.stoc, system_title=self.ciphering.client_title, invocation_counter=ic,
                                       ek=m.secrets.ek, ak=m.secrets.ak)
        if param.value != expected:
            self._reset()
            raise AccessError(D.DataAccessResult.READ_WRITE_DENIED)
        self.hls_pending = False
        self.associated = True
        return D.octets(D.hls_gmac_response(self.ctos, system_title=m.system_title,
                                            invocation_counter=m.next_server_ic(), ek=m.secrets.ek,
                                            ak=m.secrets.ak))

    def _release(self) -> bytes:
        from dlms_cosem import enumerations as E
        from dlms_cosem.protocol import acse

        self._reset()
        return bytes(acse.ReleaseResponse(reason=E.ReleaseResponseReason.NORMAL).to_bytes())

    def _reset(self) -> None:
        self.associated = False
        self.hls_pending = False
        self.policy = None
        self.ciphering = None
        self._blocks = []

    # ciphered APDUs --------------------------------------------------------------------------
    def _ciphered(self, c: D.CipheredApdu) -> bytes | None:
        m = self.meter
        assert self.ciphering is not None and m.secrets.ek is not None and m.secrets.ak is not None
        title = c.system_title or self.ciphering.client_title
        if title != self.ciphering.client_title:
            return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED,
                                                     D.ServiceError.DECIPHERING_ERROR))
        try:
            plain = D.decipher_apdu(c, system_title=title, ek=m.secrets.ek, ak=m.secrets.ak)
        except D.DLMSError:
            return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED,
                                                     D.ServiceError.DECIPHERING_ERROR))
        expected = m.accept_client_ic(title, c.invocation_counter)
        if expected is not None:
            return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED,
                                                     D.ServiceError.INVOCATION_COUNTER_ERROR, expected))
        try:
            inner = D.decode_apdu(plain)
        except D.DLMSError:
            return D.encode_apdu(D.ExceptionResponse(D.StateError.SERVICE_UNKNOWN, D.ServiceError.OTHER_REASON))
        resp = self._service(inner)
        if resp is None:
            return None
        out = D.encode_apdu(resp)
        if isinstance(resp, D.ExceptionResponse):
            return out
        return D.cipher_apdu(out, system_title=m.system_title, invocation_counter=m.next_server_ic(),
                             ek=m.secrets.ek, ak=m.secrets.ak, general=c.tag == D.Tag.GENERAL_GLO_CIPHER)

    # xDLMS services --------------------------------------------------------------------------
    def _service(self, apdu: D.Apdu) -> D.Apdu | None:
        if self.hls_pending and not (isinstance(apdu, D.ActionRequest)
                                     and apdu.method.class_id == CLASS_ASSOCIATION_LN and apdu.method.index == 1):
            return D.ExceptionResponse(D.StateError.SERVICE_NOT_ALLOWED, D.ServiceError.OPERATION_NOT_POSSIBLE)
        if isinstance(apdu, D.GetRequest):
            return self._get(apdu)
        if isinstance(apdu, D.GetRequestNext):
            return self._get_next(apdu)
        if isinstance(apdu, D.GetRequestWithList):
            return self._get_list(apdu)
        if isinstance(apdu, D.SetRequest):
            return self._set(apdu)
        if isinstance(apdu, D.ActionRequest):
            return self._action(apdu)
        return D.ExceptionResponse(D.StateError.SERVICE_UNKNOWN, D.ServiceError.SERVICE_NOT_SUPPORTED)

    def _get(self, req: D.GetRequest) -> D.Apdu:
        self._blocks = []
        ref = req.attribute
        obj = self.meter.find(ref.class_id, ref.obis)
        if obj is None:
            return D.GetResponse(error=D.DataAccessResult.OBJECT_UNDEFINED, invoke=req.invoke)
        try:
            value = obj.get(ref.index, req.access)
        except AccessError as exc:
            return D.GetResponse(error=exc.result, invoke=req.invoke)
        encoded = D.encode_data(value)
        room = self.max_pdu - (40 if self.ciphering else 16)
        if len(encoded) + 8 <= room:
            return D.GetResponse(data=value, invoke=req.invoke)
        self._blocks = [encoded[i : i + room] for i in range(0, len(encoded), room)]
        self._block_invoke = req.invoke
        return self._block(1)

    def _get_list(self, req: D.GetRequestWithList) -> D.Apdu:
        self._blocks = []
        results: list[D.Data | D.DataAccessResult] = []
        for ref, access in req.attributes:
            obj = self.meter.find(ref.class_id, ref.obis)
            if obj is None:
                results.append(D.DataAccessResult.OBJECT_UNDEFINED)
                continue
            try:
                results.append(obj.get(ref.index, access))
            except AccessError as exc:
                results.append(exc.result)
        encoded = D.encode_result_list(results)
        room = self.max_pdu - (40 if self.ciphering else 16)
        if len(encoded) + 8 <= room:
            return D.GetResponseWithList(tuple(results), req.invoke)
        # too long: the SEQUENCE OF Get-Data-Result goes out in blocks (Green Book 9.3.6)
        self._blocks = [encoded[i : i + room] for i in range(0, len(encoded), room)]
        self._block_invoke = req.invoke
        return self._block(1)

    def _block(self, number: int) -> D.Apdu:
        assert self._block_invoke is not None
        last = number == len(self._blocks)
        chunk = self._blocks[number - 1]
        if last:
            self._blocks = []
        return D.GetResponseBlock(last, number, chunk, invoke=self._block_invoke)

    def _get_next(self, req: D.GetRequestNext) -> D.Apdu:
        if not self._blocks:
            return D.GetResponseBlock(True, req.block_number, error=D.DataAccessResult.NO_LONG_GET_IN_PROGRESS,
                                      invoke=req.invoke)
        if not 1 <= req.block_number < len(self._blocks):
            self._blocks = []
            return D.GetResponseBlock(True, req.block_number, error=D.DataAccessResult.DATA_BLOCK_NUMBER_INVALID,
                                      invoke=req.invoke)
        return self._block(req.block_number + 1)

    def _set(self, req: D.SetRequest) -> D.Apdu:
        assert self.policy is not None
        ref = req.attribute
        obj = self.meter.find(ref.class_id, ref.obis)
        if obj is None:
            return D.SetResponse(D.DataAccessResult.OBJECT_UNDEFINED, req.invoke)
        if not self.policy.write:
            return D.SetResponse(D.DataAccessResult.READ_WRITE_DENIED, req.invoke)
        try:
            obj.set(ref.index, req.value)
        except AccessError as exc:
            return D.SetResponse(exc.result, req.invoke)
        return D.SetResponse(D.DataAccessResult.SUCCESS, req.invoke)

    def _action(self, req: D.ActionRequest) -> D.Apdu:
        assert self.policy is not None
        ref = req.method
        obj = self.meter.find(ref.class_id, ref.obis)
        if obj is None:
            return D.ActionResponse(D.ActionResult.OBJECT_UNDEFINED, invoke=req.invoke)
        if not self.policy.write and not isinstance(obj, AssociationLN):
            return D.ActionResponse(D.ActionResult.READ_WRITE_DENIED, invoke=req.invoke)
        try:
            out = obj.action(ref.index, req.parameter, self)
        except AccessError as exc:
            return D.ActionResponse(D.ActionResult(int(exc.result)) if int(exc.result) in
                                    D.ActionResult._value2member_map_ else D.ActionResult.OTHER_REASON,
                                    invoke=req.invoke)
        return D.ActionResponse(D.ActionResult.SUCCESS, out, invoke=req.invoke)


def _negotiate(proposed: Any) -> Any:
    """The conformance the meter grants: what the client proposed, limited to what it implements."""
    from dlms_cosem.protocol.xdlms.conformance import Conformance

    supported = {"get", "set", "action", "selective_access", "block_transfer_with_get_or_read",
                 "priority_management_supported", "multiple_references"}
    kwargs = {name: bool(getattr(proposed, name, False)) and name in supported
              for name in attr_names(Conformance)}
    return Conformance(**kwargs)


def attr_names(cls: type) -> list[str]:
    import attr

    return [a.name for a in attr.fields(cls)]
