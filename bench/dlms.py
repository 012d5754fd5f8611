"""Benchmark: the DLMS codec and the simulated meter over loopback TCP. Prints ONE JSON line.

Figures: APDU decodes per second (a 169-row load-profile GET response and the Green Book ciphered
GET request), and full meter reads per second (associate with LLS or HLS-GMAC, read clock + 1.8.0,
release) with the OSOS client against the simulated meter on 127.0.0.1, over the wrapper and HDLC.

    .venv/bin/python bench/dlms.py --json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from osos.field import dlms_client as C  # noqa: E402
from osos.field.meters.dlms_meter import MeterSecrets, SimulatedDlmsMeter  # noqa: E402
from osos.field.meters.dlms_server import HdlcTcpServer, WrapperServer  # noqa: E402
from osos.protocols import dlms as D  # noqa: E402

EK = bytes(range(16))
AK = bytes(range(16, 32))
NOW = dt.datetime(2026, 11, 21, 21, 30, tzinfo=dt.UTC)


def _rate(fn: object, seconds: float) -> float:
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()  # type: ignore[operator]
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="time per figure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    meter = SimulatedDlmsMeter(lambda: NOW, MeterSecrets(password=b"bench-pw-1", ek=EK, ak=AK))
    profile = meter.objects[(7, D.obis_bytes("1.0.99.1.0.255"))].get(2, None)
    big = D.encode_apdu(D.GetResponse(profile))
    glo = bytes.fromhex("C81E3001234567411312FF935A47566827C467BC7D825C3BE4A77C3FCC056B6B")
    out: dict[str, object] = {
        "profile_response_bytes": len(big),
        "decode_profile_response_per_s": round(_rate(lambda: D.decode_apdu(big), args.seconds)),
        "decrypt_glo_get_per_s": round(_rate(
            lambda: D.decode_to_json(glo, bytes.fromhex("4D4D4D0000BC614E") + bytes.fromhex(
                "000102030405060708090A0B0C0D0E0FD0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")), args.seconds)),
    }
    with WrapperServer(meter) as w, HdlcTcpServer(meter) as h:
        def read(transport: C.Transport, sec: C.Security) -> None:
            with C.DlmsClient(transport, sec) as c:
                c.read_clock()
                c.read_register("1.0.1.8.0.255")

        ic = [1]

        def hls() -> None:
            sec = C.Security("hls-gmac", ek=EK, ak=AK, invocation_counter=ic[0])
            read(C.WrapperTransport(w.host, w.port, 1), sec)
            ic[0] = sec.invocation_counter

        out["wrapper_lls_reads_per_s"] = round(_rate(
            lambda: read(C.WrapperTransport(w.host, w.port, 32), C.Security("lls", password=b"bench-pw-1")),
            args.seconds), 1)
        out["wrapper_hls_gmac_reads_per_s"] = round(_rate(hls, args.seconds), 1)
        out["hdlc_lls_reads_per_s"] = round(_rate(
            lambda: read(C.HdlcTransport.tcp(h.host, h.port, 32), C.Security("lls", password=b"bench-pw-1")),
            args.seconds), 1)

        def profile_read() -> None:
            with C.DlmsClient(C.WrapperTransport(w.host, w.port, 32), C.Security("lls", password=b"bench-pw-1")) as c:
                c.read_profile("1.0.99.1.0.255")

        out["wrapper_169_row_profile_reads_per_s"] = round(_rate(profile_read, args.seconds), 1)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
