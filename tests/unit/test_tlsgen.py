"""The demo's private CA (HES-52, HES-53): keys 0600, reused on restart, a server certificate a client verifies."""

from __future__ import annotations

import os
import socket
import ssl
import threading

from osos.headend.tlsgen import ensure_server_tls, issue_client


def test_ca_and_server_certificate_are_made_once_with_private_keys(tmp_path) -> None:
    files = ensure_server_tls(tmp_path / "tls")
    for key in (files.ca_key, files.server_key):
        assert os.stat(key).st_mode & 0o777 == 0o600
    before = {p: p.read_bytes() for p in (files.ca_cert, files.ca_key, files.server_cert, files.server_key)}
    again = ensure_server_tls(tmp_path / "tls")
    assert again == files
    assert {p: p.read_bytes() for p in before} == before  # a restart keeps the trust anchor and the certificate
    cert, key = issue_client(files, "gw-1", tmp_path / "clients")
    assert os.stat(key).st_mode & 0o777 == 0o600 and cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_a_client_trusting_the_ca_verifies_the_server_for_127_0_0_1(tmp_path) -> None:
    files = ensure_server_tls(tmp_path / "tls")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            conn, _addr = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    trusting = ssl.create_default_context(cafile=str(files.ca_cert))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            trusting.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.getpeercert()["subject"] == ((("commonName", "osos-broker"),),)
    untrusting = ssl.create_default_context()  # the system store: does not know the private CA
    raw = socket.create_connection(("127.0.0.1", port))
    try:
        untrusting.wrap_socket(raw, server_hostname="127.0.0.1")
        raise AssertionError("a client without the CA accepted the server")
    except ssl.SSLCertVerificationError:
        pass
    finally:
        raw.close()
    thread.join(5)
    listener.close()
