#!/usr/bin/env python3
"""Decode amplification probe (issue #14).

Starts `triage run` on free loopback ports, sends it OTLP/HTTP bodies that
are tiny gzipped and huge decoded (20 MiB of empty spans: two bytes each in
protobuf, three in JSON), and prints for each scenario the answers, the
process's peak RSS (VmHWM from /proc/PID/status) and the slowest /healthz
answer while the bodies were being handled. Every scenario runs in a fresh
process, so each peak is its own.

    benches/probes/amplification.py [--binary target/release/triage]

Bounded: loopback only; every request has a timeout; a watchdog kills the
collector if its RSS passes --rss-cap-gib (default 12), and the scenario is
reported as killed. Linux only (/proc). Standard library only.
"""

import argparse
import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1024 * 1024
BODY = 20 * MIB  # the default max_request_body_size


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number, body):
    return bytes([number << 3 | 2]) + varint(len(body)) + body


def protobuf_bomb(size):
    """ExportTraceServiceRequest: one resource, one scope, empty spans."""
    spans = b"\x12\x00" * (size // 2 - 16)
    return field(1, field(2, spans))


def json_bomb(size):
    """The same request in OTLP/JSON: `{}` for each span."""
    spans = ",".join(["{}"] * (size // 3 - 64))
    return ('{"resourceSpans":[{"scopeSpans":[{"spans":[' + spans + "]}]}]}").encode()


def fixed64(number, value):
    return bytes([number << 3 | 1]) + value.to_bytes(8, "little")


# Attributes of an HTTP server span, as instrumentation libraries write them.
ATTRIBUTES = [
    ("http.request.method", "GET"),
    ("http.route", "/api/items/{id}"),
    ("http.response.status_code", "200"),
    ("url.scheme", "https"),
    ("server.address", "shop.example"),
    ("network.protocol.version", "1.1"),
    ("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("client.address", "10.0.3.17"),
]


def real_spans(n):
    """n spans like an SDK's: ids, name, kind, times, eight attributes."""
    for i in range(n):
        yield {
            "traceId": (i // 8 + 1).to_bytes(16, "big").hex(),
            "spanId": (i + 1).to_bytes(8, "big").hex(),
            "name": "GET /api/items/{id}",
            "kind": 2,
            "start": 1_700_000_000_000_000_000 + i * 1_000_000,
            "end": 1_700_000_000_000_000_000 + i * 1_000_000 + 20_000_000,
        }


def real_protobuf(n):
    attributes = b"".join(
        field(9, field(1, key.encode()) + field(2, field(1, value.encode())))
        for key, value in ATTRIBUTES
    )
    spans = b"".join(
        field(
            2,
            field(1, bytes.fromhex(span["traceId"]))
            + field(2, bytes.fromhex(span["spanId"]))
            + field(5, span["name"].encode())
            + bytes([6 << 3, 2])
            + fixed64(7, span["start"])
            + fixed64(8, span["end"])
            + attributes,
        )
        for span in real_spans(n)
    )
    service = field(1, field(1, b"service.name") + field(2, field(1, b"shop")))
    return field(1, field(1, service) + field(2, spans))


def real_json(n):
    attributes = [{"key": key, "value": {"stringValue": value}} for key, value in ATTRIBUTES]
    spans = [
        {
            "traceId": span["traceId"],
            "spanId": span["spanId"],
            "name": span["name"],
            "kind": span["kind"],
            "startTimeUnixNano": str(span["start"]),
            "endTimeUnixNano": str(span["end"]),
            "attributes": attributes,
        }
        for span in real_spans(n)
    ]
    service = {"key": "service.name", "value": {"stringValue": "shop"}}
    request = {
        "resourceSpans": [
            {"resource": {"attributes": [service]}, "scopeSpans": [{"spans": spans}]}
        ]
    }
    return json.dumps(request, separators=(",", ":")).encode()


def printable(reply, content_type):
    """The text of an answer: JSON as it is, protobuf's strings."""
    if content_type == "application/json":
        return reply.decode("utf-8", "replace")
    texts = []

    def walk(data):
        at = 0
        while at < len(data):
            key = 0
            shift = 0
            while at < len(data):
                byte = data[at]
                at += 1
                key |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            wire = key & 7
            if wire == 0:
                while at < len(data) and data[at] >= 0x80:
                    at += 1
                at += 1
            elif wire == 1:
                at += 8
            elif wire == 5:
                at += 4
            elif wire == 2:
                length = 0
                shift = 0
                while at < len(data):
                    byte = data[at]
                    at += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if byte < 0x80:
                        break
                chunk = data[at : at + length]
                at += length
                try:
                    text = chunk.decode()
                    if text.isprintable():
                        texts.append(text)
                        continue
                except UnicodeDecodeError:
                    pass
                walk(chunk)
            else:
                return

    walk(reply)
    return " | ".join(texts)


VALID_JSON = (
    b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name",'
    b'"value":{"stringValue":"probe"}}]},"scopeSpans":[{"spans":[{'
    b'"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",'
    b'"name":"GET /probe","kind":2,"startTimeUnixNano":"1700000000000000000",'
    b'"endTimeUnixNano":"1700000000100000000"}]}]}]}'
)


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


def request(port, method, path, body=None, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as error:
        return None, str(error).encode()
    finally:
        conn.close()


class Collector:
    def __init__(self, binary, workdir):
        self.ports = {name: free_port() for name in ("grpc", "http", "admin", "api")}
        config = os.path.join(workdir, "triage.yaml")
        with open(config, "w") as out:
            out.write(
                "receivers:\n  otlp:\n"
                f'    grpc:\n      endpoint: "127.0.0.1:{self.ports["grpc"]}"\n'
                f'    http:\n      endpoint: "127.0.0.1:{self.ports["http"]}"\n'
                f'admin:\n  endpoint: "127.0.0.1:{self.ports["admin"]}"\n'
                f'api:\n  endpoint: "127.0.0.1:{self.ports["api"]}"\n'
                f'storage:\n  enabled: false\n  data_dir: "{workdir}/data"\n'
                "log:\n  level: warn\n"
            )
        self.log = open(os.path.join(workdir, "triage.log"), "w")
        self.process = subprocess.Popen(
            [binary, "run", "-c", config], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"triage exited at start; see {self.log.name}")
            status, _ = request(self.ports["admin"], "GET", "/healthz", timeout=2)
            if status == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit("triage did not answer /healthz within 30 s")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def run_scenario(binary, name, bodies, rss_cap_kib):
    with tempfile.TemporaryDirectory(prefix="triage-probe-") as workdir:
        collector = Collector(binary, workdir)
        pid = collector.process.pid
        start_kib = status_kib(pid, "VmHWM")
        done = threading.Event()
        killed = threading.Event()
        slowest = [0.0]

        def watchdog():
            while not done.is_set():
                rss = status_kib(pid, "VmRSS")
                if rss is not None and rss > rss_cap_kib:
                    killed.set()
                    collector.process.kill()
                    return
                time.sleep(0.02)

        def health():
            while not done.is_set():
                began = time.monotonic()
                request(collector.ports["admin"], "GET", "/healthz", timeout=60)
                slowest[0] = max(slowest[0], time.monotonic() - began)
                time.sleep(0.05)

        answers = [None] * len(bodies)

        def send(index, content_type, body):
            status, reply = request(
                collector.ports["http"],
                "POST",
                "/v1/traces",
                body,
                {"Content-Type": content_type, "Content-Encoding": "gzip"},
            )
            answers[index] = (status, reply)

        watchers = [threading.Thread(target=watchdog), threading.Thread(target=health)]
        senders = [
            threading.Thread(target=send, args=(index, content_type, body))
            for index, (content_type, body) in enumerate(bodies)
        ]
        for thread in watchers + senders:
            thread.start()
        for thread in senders:
            thread.join()
        peak_kib = status_kib(pid, "VmHWM")
        done.set()
        for thread in watchers:
            thread.join()
        valid = None
        if not killed.is_set():
            valid, _ = request(
                collector.ports["http"],
                "POST",
                "/v1/traces",
                VALID_JSON,
                {"Content-Type": "application/json"},
            )
        collector.stop()

    print(f"\n{name}")
    for (content_type, body), (status, reply) in zip(bodies, answers):
        text = printable(reply, content_type)
        print(f"  {content_type:24} {len(body):>7} B gzip -> {status}  {text[:150]}")
    if killed.is_set():
        print(f"  killed: RSS passed the cap of {rss_cap_kib / MIB:.1f} GiB")
    print(f"  peak RSS (VmHWM): {peak_kib / 1024:.0f} MiB (at start {start_kib / 1024:.0f} MiB)")
    print(f"  slowest /healthz while handling: {slowest[0]:.2f} s")
    if valid is not None:
        print(f"  a valid request afterwards: {valid}")


def bombs(binary, cap_kib):
    """The bodies of issue #14, alone and two at once."""
    protobuf = ("application/x-protobuf", gzip.compress(protobuf_bomb(BODY), 9))
    as_json = ("application/json", gzip.compress(json_bomb(BODY), 9))
    print(
        f"20 MiB of empty spans, gzipped to {len(protobuf[1])} B (protobuf) "
        f"and {len(as_json[1])} B (JSON)"
    )
    run_scenario(binary, "bomb: protobuf", [protobuf], cap_kib)
    run_scenario(binary, "bomb: JSON", [as_json], cap_kib)
    run_scenario(binary, "bomb: JSON, two at once", [as_json, as_json], cap_kib)
    run_scenario(binary, "bomb: protobuf and JSON at once", [protobuf, as_json], cap_kib)


def real_batches(binary, cap_kib):
    """Real batches: what the limits let through, and what they cost."""
    for n, encode, content_type in (
        (10_000, real_protobuf, "application/x-protobuf"),
        (50_000, real_protobuf, "application/x-protobuf"),
        (2_000, real_json, "application/json"),
        (10_000, real_json, "application/json"),
    ):
        body = encode(n)
        name = f"real batch: {n} spans, 8 attributes each, {len(body) / MIB:.1f} MiB {content_type}"
        run_scenario(binary, name, [(content_type, gzip.compress(body, 6))], cap_kib)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/triage")
    parser.add_argument("--rss-cap-gib", type=float, default=12.0)
    parser.add_argument(
        "--only", choices=("bombs", "real"), help="run only these scenarios (default: all)"
    )
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"no executable {args.binary} (cargo build --release first)")
    print(args.binary)
    cap_kib = int(args.rss_cap_gib * MIB)
    if args.only != "real":
        bombs(args.binary, cap_kib)
    if args.only != "bombs":
        real_batches(args.binary, cap_kib)


if __name__ == "__main__":
    main()
