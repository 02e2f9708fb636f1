"""The Event Grid sink against a local HTTPS server: what it POSTs (a CloudEvents batch with
an Entra ID bearer token for Event Grid's scope), and that a refusal raises."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.contract.lifecycle_events import COMPLETED, JobEvent
from shared.control.event_sinks import EVENTGRID_SCOPE, EventGridSink


class FixedToken:
    """A token credential (azure-core's protocol) handing out one token; notes the scopes."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("token-for-test", int(time.time()) + 3600)


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def topic(tmp_path):
    """A local HTTPS 'topic' recording each request; answers `status[0]`."""
    received: list[dict] = []
    status = [200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "headers": dict(self.headers),
                             "body": json.loads(body)})
            self.send_response(status[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    cert_file, key_file = _certificate(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/api/events", cert_file, received, status
    server.shutdown()


def _event(number: int) -> JobEvent:
    return JobEvent(f"j:{number}", COMPLETED, "/batchfn/endpoints/e/deployments/d", "jobs/j",
                    "2025-01-01T00:00:00.000Z", {"status": "Completed", "n": number})


def test_events_go_as_one_cloudevents_batch_with_a_bearer_token(topic):
    url, cert, received, _ = topic
    credential = FixedToken()
    EventGridSink(url, credential, ca_bundle=str(cert)).publish([_event(1), _event(2)])
    (request,) = received
    assert request["path"] == "/api/events"
    assert request["headers"]["Authorization"] == "Bearer token-for-test"
    assert request["headers"]["Content-Type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert [event["id"] for event in request["body"]] == ["j:1", "j:2"]
    assert request["body"][0]["specversion"] == "1.0"
    assert credential.scopes == [(EVENTGRID_SCOPE,)]


def test_a_refusing_topic_raises_after_its_retries(topic):
    url, cert, received, status = topic
    status[0] = 403
    with pytest.raises(HttpResponseError):
        EventGridSink(url, FixedToken(), ca_bundle=str(cert)).publish([_event(1)])
    assert len(received) == 1  # a 403 is not retried


def test_nothing_to_send_sends_nothing(topic):
    url, cert, received, _ = topic
    EventGridSink(url, FixedToken(), ca_bundle=str(cert)).publish([])
    assert received == []
