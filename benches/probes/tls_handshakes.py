#!/usr/bin/env python3
"""TLS listener probe (issue #14, item 4).

Makes a throwaway CA and a server certificate for 127.0.0.1 with the
openssl CLI, starts `triage run` with TLS and a bearer token on OTLP/gRPC
and OTLP/HTTP (read_header_timeout --timeout seconds, the handshake
deadline) on free loopback ports, and then:

  1. handshakes   --handshakes sequential full TLS handshakes (a new
                  connection each) to OTLP/HTTP, each followed by a POST of
                  an empty export with the token: the median and 95th
                  percentile time of a handshake and of the request.
  2. slow flood   -n connections to OTLP/gRPC that send the first 43 bytes
                  of a ClientHello and then nothing; meanwhile a real TLS
                  client exports to OTLP/HTTP and /healthz is asked every
                  0.2 s. Prints how many the server closed and when (it
                  must be at the deadline), the real client's answers, and
                  the server's counters (triage_tls_handshake_failures_total,
                  triage_listener_connections).
  3. wrong token  one export with a wrong token: its status and body.

    benches/probes/tls_handshakes.py [--binary target/debug/triage]
        [-n 500] [--handshakes 200] [--timeout 2]

Bounded: loopback only, at most 1,000 flood connections, every wait has a
deadline; about --timeout + 10 s in all. Linux, Python standard library,
openssl CLI.
"""

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TOKEN = "probe-token"
MAX_FLOOD = 1000
# A TLS record header and handshake header announcing a 508-byte
# ClientHello, the client version and 32 bytes of random: more than the 24
# bytes that count as "started speaking" for a plaintext connection.
PARTIAL_HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]) + bytes(32)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(dir):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
            "-subj", "/CN=probe CA", cwd=dir)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=dir)
    with open(os.path.join(dir, "ext"), "w") as file:
        file.write("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "ext", cwd=dir)


def start(binary, dir, timeout):
    ports = {name: free_port() for name in ("grpc", "http", "admin", "api")}
    tls = f'{{ cert_file: {dir}/server.crt, key_file: {dir}/server.key }}'
    config = f"""
receivers:
  otlp:
    grpc:
      endpoint: "127.0.0.1:{ports['grpc']}"
      read_header_timeout: {timeout}s
      tls: {tls}
      auth: {{ bearer_tokens: ["{TOKEN}"] }}
    http:
      endpoint: "127.0.0.1:{ports['http']}"
      read_header_timeout: {timeout}s
      tls: {tls}
      auth: {{ bearer_tokens: ["{TOKEN}"] }}
admin:
  endpoint: "127.0.0.1:{ports['admin']}"
api:
  endpoint: "127.0.0.1:{ports['api']}"
storage:
  enabled: false
log:
  level: warn
"""
    path = os.path.join(dir, "triage.yaml")
    with open(path, "w") as file:
        file.write(config)
    process = subprocess.Popen([binary, "run", "--config", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/readyz", timeout=1) as r:
                if r.status == 200:
                    return process, ports
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit("triage did not become ready within 30 s")


def export(context, port, token, timeout=5.0):
    """One connection: handshake, then POST an empty export. Returns
    (handshake seconds, request seconds, status, body)."""
    started = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
    shaken = time.perf_counter()
    request = (f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/x-protobuf\r\nContent-Length: 0\r\n"
               f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n").encode()
    tls.sendall(request)
    answer = b""
    while True:
        chunk = tls.recv(4096)
        if not chunk:
            break
        answer += chunk
    tls.close()
    done = time.perf_counter()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    body = answer.split(b"\r\n\r\n", 1)[-1]
    return shaken - started, done - shaken, status, body


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [line for line in text.splitlines()
            if line.startswith(("triage_tls_", "triage_auth_", "triage_listener_connections{",
                                "triage_listener_timeouts_total"))]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default="target/debug/triage")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--handshakes", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    n = min(args.n, MAX_FLOOD)
    with tempfile.TemporaryDirectory() as dir:
        make_pki(dir)
        context = ssl.create_default_context(cafile=os.path.join(dir, "ca.crt"))
        context.set_alpn_protocols(["http/1.1"])
        process, ports = start(os.path.abspath(args.binary), dir, args.timeout)
        try:
            # 1. full handshakes
            shakes, requests = [], []
            for _ in range(args.handshakes):
                shake, request, status, _ = export(context, ports["http"], TOKEN)
                assert status == 200, status
                shakes.append(shake * 1000)
                requests.append(request * 1000)
            print(f"handshakes: {args.handshakes} sequential; handshake median "
                  f"{statistics.median(shakes):.2f} ms, p95 {percentile(shakes, 0.95):.2f} ms; "
                  f"export after it median {statistics.median(requests):.2f} ms")

            # 2. slow flood on OTLP/gRPC
            flood = []
            opened = time.perf_counter()
            for _ in range(n):
                sock = socket.create_connection(("127.0.0.1", ports["grpc"]), timeout=5)
                sock.sendall(PARTIAL_HELLO)
                flood.append(sock)
            sent = time.perf_counter()
            print(f"slow flood: {n} connections sent a partial ClientHello in {sent - opened:.2f} s")
            closed_at = [None] * n

            def watch(index, sock):
                sock.settimeout(args.timeout + 10)
                try:
                    sock.recv(1)
                except OSError:
                    pass
                closed_at[index] = time.perf_counter() - sent
            watchers = [threading.Thread(target=watch, args=(i, s)) for i, s in enumerate(flood)]
            for watcher in watchers:
                watcher.start()
            during = []
            health = []
            while time.perf_counter() - sent < args.timeout + 1:
                start_health = time.perf_counter()
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/healthz", timeout=5) as r:
                    health.append((r.status, time.perf_counter() - start_health))
                during.append(export(context, ports["http"], TOKEN)[2])
                time.sleep(0.2)
            for watcher in watchers:
                watcher.join(args.timeout + 12)
            closed = [t for t in closed_at if t is not None]
            print(f"  closed by the server: {len(closed)}/{n}, first at {min(closed):.2f} s, "
                  f"last at {max(closed):.2f} s after the flood was sent "
                  f"(handshake deadline {args.timeout} s from each accept)")
            print(f"  real TLS exports during the flood: {len(during)}, statuses {sorted(set(during))}; "
                  f"/healthz {len(health)} answers, slowest {max(h[1] for h in health) * 1000:.1f} ms")
            for sock in flood:
                sock.close()

            # 3. wrong token
            _, _, status, body = export(context, ports["http"], "wrong")
            print(f"wrong token: HTTP {status}, google.rpc.Status body {body.hex()}")
            for line in metrics(ports["admin"]):
                print(f"  {line}")
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
