"""Sends a small, deterministic span topology to triage with the real
OpenTelemetry Python SDK and prints a JSON summary of what was sent.

Driven by tests/it/python_sdk.rs, which starts the collector, runs this script
once per OTLP protocol and checks the collector's series against the summary.

Topology (service names carry the --suffix, so runs against one collector are
counted apart):

- frontend: N SERVER spans `GET /checkout` lasting 1..=N ms, every tenth one
  with status ERROR;
- for each of the first PAY_CALLS of them, a CLIENT child `POST /pay` naming
  `payments.internal` as its server address, whose own child is a SERVER span
  `POST /pay` in the backend: the collector must pair the two and name the
  edge after the backend, not after the address;
- backend: DB_CALLS CLIENT spans to PostgreSQL database `payments`, children of
  the first backend spans.

Exit status is non-zero, with the reason on stderr, if the exporter reported
any batch as failed or did not export every span that was ended.
"""

import argparse
import json
import os
import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, StatusCode

CHECKOUT_SPANS = 200
CHECKOUT_ERROR_EVERY = 10
PAY_CALLS = 50
DB_CALLS = 10
PAYMENTS_ADDRESS = "payments.internal"
DB_SYSTEM = "postgresql"
DB_NAMESPACE = "payments"
# The database host: what names the edge (the namespace is detail).
DB_ADDRESS = "payments-db"
MILLISECOND_NS = 1_000_000
EXPORT_TIMEOUT_S = 10


class CheckedExporter(SpanExporter):
    """Forwards to the real exporter and counts what it delivered.

    The SDK's processors log a failed export and drop the batch; counting
    here lets the script fail loudly instead.
    """

    def __init__(self, inner):
        self._inner = inner
        # export() runs on the batch processor's worker thread.
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0

    def export(self, spans):
        result = self._inner.export(spans)
        with self._lock:
            if result == SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self):
        self._inner.shutdown()

    def force_flush(self, timeout_millis=30_000):
        return self._inner.force_flush(timeout_millis)


def make_exporter(protocol, endpoint, tls):
    """The SDK's exporter; over TLS with a client certificate and a bearer
    token (from TRIAGE_TEST_TOKEN) when `tls` names the files."""
    headers = None
    if tls is not None:
        headers = {"authorization": f"Bearer {os.environ['TRIAGE_TEST_TOKEN']}"}
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        if tls is None:
            return OTLPSpanExporter(
                endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S
            )
        import grpc

        def read(path):
            with open(path, "rb") as file:
                return file.read()

        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(tls.ca_file),
            private_key=read(tls.client_key),
            certificate_chain=read(tls.client_cert),
        )
        return OTLPSpanExporter(
            endpoint=f"https://{endpoint}",
            credentials=credentials,
            headers=headers,
            timeout=EXPORT_TIMEOUT_S,
        )
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        if tls is None:
            return OTLPSpanExporter(
                endpoint=f"http://{endpoint}/v1/traces", timeout=EXPORT_TIMEOUT_S
            )
        return OTLPSpanExporter(
            endpoint=f"https://{endpoint}/v1/traces",
            certificate_file=tls.ca_file,
            client_certificate_file=tls.client_cert,
            client_key_file=tls.client_key,
            headers=headers,
            timeout=EXPORT_TIMEOUT_S,
        )
    raise ValueError(f"unknown protocol {protocol!r}")


def make_provider(service, protocol, endpoint, tls):
    exporter = CheckedExporter(make_exporter(protocol, endpoint, tls))
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--endpoint", required=True, help="collector address, HOST:PORT"
    )
    parser.add_argument(
        "--protocol", required=True, choices=["grpc", "http/protobuf"]
    )
    parser.add_argument(
        "--suffix", required=True, help="appended to the service names"
    )
    parser.add_argument("--ca-file", help="TLS: the CA the collector's certificate chains to")
    parser.add_argument("--client-cert", help="TLS: the client certificate (mTLS)")
    parser.add_argument("--client-key", help="TLS: the client certificate's key")
    args = parser.parse_args()
    tls = args if args.ca_file else None

    frontend = f"py-frontend-{args.suffix}"
    backend = f"py-backend-{args.suffix}"
    frontend_provider, frontend_exporter = make_provider(
        frontend, args.protocol, args.endpoint, tls
    )
    backend_provider, backend_exporter = make_provider(
        backend, args.protocol, args.endpoint, tls
    )
    frontend_tracer = frontend_provider.get_tracer("triage-test")
    backend_tracer = backend_provider.get_tracer("triage-test")

    # Every span ends at or just before `now`, so all of them land in the
    # collector's current windows.
    now = time.time_ns()
    durations_ns = []
    checkout_errors = 0
    pay_servers = 0
    db_calls = 0
    for i in range(1, CHECKOUT_SPANS + 1):
        duration = i * MILLISECOND_NS
        start = now - duration
        server = frontend_tracer.start_span(
            "GET /checkout",
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={"http.route": "/checkout", "http.request.method": "GET"},
        )
        if i <= PAY_CALLS:
            # The client call lies inside its parent and the backend's
            # server span inside the client call.
            margin = duration // 10
            client = frontend_tracer.start_span(
                "POST /pay",
                context=trace.set_span_in_context(server),
                kind=SpanKind.CLIENT,
                start_time=start + margin,
                attributes={
                    "server.address": PAYMENTS_ADDRESS,
                    "http.request.method": "POST",
                },
            )
            pay = backend_tracer.start_span(
                "POST /pay",
                context=trace.set_span_in_context(client),
                kind=SpanKind.SERVER,
                start_time=start + 2 * margin,
                attributes={"http.route": "/pay", "http.request.method": "POST"},
            )
            if db_calls < DB_CALLS:
                query = backend_tracer.start_span(
                    f"SELECT {DB_NAMESPACE}",
                    context=trace.set_span_in_context(pay),
                    kind=SpanKind.CLIENT,
                    start_time=start + 3 * margin,
                    attributes={
                        "db.system.name": DB_SYSTEM,
                        "db.namespace": DB_NAMESPACE,
                        "server.address": DB_ADDRESS,
                    },
                )
                query.end(end_time=now - 3 * margin)
                db_calls += 1
            pay.end(end_time=now - 2 * margin)
            pay_servers += 1
            client.end(end_time=now - margin)
        if i % CHECKOUT_ERROR_EVERY == 0:
            server.set_status(StatusCode.ERROR)
            checkout_errors += 1
        server.end(end_time=now)
        durations_ns.append(duration)

    # Backend first: a server-side child usually reaches the collector before
    # its client span, and the collector must hold it until the client comes.
    backend_provider.shutdown()
    frontend_provider.shutdown()

    sent = {
        frontend: CHECKOUT_SPANS + PAY_CALLS,
        backend: pay_servers + db_calls,
    }
    exported = {
        frontend: frontend_exporter.exported,
        backend: backend_exporter.exported,
    }
    failed = frontend_exporter.failed + backend_exporter.failed
    if failed or exported != sent:
        print(
            f"send_spans.py: {args.protocol} export to {args.endpoint} failed: "
            f"{failed} spans in failed batches; sent {sent}, exported {exported}",
            file=sys.stderr,
        )
        return 1

    summary = {
        "protocol": args.protocol,
        "frontend": frontend,
        "backend": backend,
        "checkout": {
            "name": "GET /checkout",
            "route": "/checkout",
            "count": CHECKOUT_SPANS,
            "errors": checkout_errors,
            "durations_ns": durations_ns,
        },
        "pay": {
            "name": "POST /pay",
            "route": "/pay",
            "calls": pay_servers,
            "server_address": PAYMENTS_ADDRESS,
        },
        "db": {
            "calls": db_calls,
            "system": DB_SYSTEM,
            "namespace": DB_NAMESPACE,
            "address": DB_ADDRESS,
        },
        "exported": exported,
    }
    json.dump(summary, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
