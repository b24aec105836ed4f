#!/usr/bin/env python3
"""Listener flood probe (issue #14, items 3 and 5).

Starts `triage run` with its default listener limits on free loopback ports
and, in a fresh process per scenario, opens N connections of one kind:

  slowloris   OTLP/HTTP: a request line and one header, then another header
              line every second, never the blank line that ends them.
  idle        half on OTLP/HTTP, half on OTLP/gRPC: connect, send nothing.
  keepalive   OTLP/HTTP: one request answered, then nothing (an idle
              keep-alive connection).
  slow-upload OTLP/HTTP: POST headers announcing a 20 MiB body, --upload-head
              bytes at once, then --upload-trickle bytes a second.

While a scenario runs, /healthz on the admin port is asked every 0.5 s and
/metrics sampled. For each scenario it prints: connections opened (and how
long opening them took), how many the server closed within 5 s of the
first bytes (refused over the cap) or later (timed out), how many were
answered 408, how many were still open at the end; the server's own counts
(triage_listener_* from /metrics: refused, timeouts by kind, accept
errors, the most request-body bytes held); /healthz answers and the
slowest; the collector's open file descriptors (/proc/PID/fd, the most
seen) and peak RSS (VmHWM) and RSS at the end (VmRSS).

    benches/probes/listeners.py [--binary target/release/triage] [-n 2000]
        [--scenarios slowloris,idle,slow-upload] [--open-files N] [--json]

--open-files N starts the collector with an open-files limit of N (soft and
hard), to see what running out of descriptors does.

keepalive is left out of the default run to keep it under a minute.

Bounded: loopback only; at most 2,000 connections per scenario; each
scenario lasts --hold seconds after its connections have sent their first
bytes (the default timeouts are 10 s for headers and 30 s for bodies, so
slow-upload holds 31.5 s and the others 11 s; about 70 s in all with the
time to open 2,000 connections). Linux only (/proc). Standard library
only.
"""

import argparse
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

MIB = 1024 * 1024
MAX_CONNECTIONS = 2000
# Opening a scenario's connections stops after this many seconds (a server
# that has stopped accepting would otherwise take a second per connection).
CONNECT_BUDGET = 20.0
CONNECT_STARTED = [0.0]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid, key):
    """A value in kB from /proc/PID/status, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Collector:
    """`triage run` on free loopback ports, default limits, storage off."""

    def __init__(self, binary, workdir, open_files=None):
        self.ports = {name: free_port() for name in ("grpc", "http", "admin", "api")}
        config = os.path.join(workdir, "triage.yaml")
        with open(config, "w") as out:
            out.write(
                "receivers:\n  otlp:\n"
                f"    grpc: {{ endpoint: \"127.0.0.1:{self.ports['grpc']}\" }}\n"
                f"    http: {{ endpoint: \"127.0.0.1:{self.ports['http']}\" }}\n"
                f"admin: {{ endpoint: \"127.0.0.1:{self.ports['admin']}\" }}\n"
                f"api: {{ endpoint: \"127.0.0.1:{self.ports['api']}\" }}\n"
                "storage: { enabled: false }\nlog: { level: warn }\n"
            )
        self.log = open(os.path.join(workdir, "triage.log"), "ab")
        def limit_open_files():
            if open_files:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.process = subprocess.Popen(
            [binary, "run", "--config", config],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=limit_open_files,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if healthz(self.ports["admin"])[0]:
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit("triage did not answer /healthz within 20 s")

    @property
    def pid(self):
        return self.process.pid

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def scrape(port):
    """{(name, labels): value} of the triage_listener_* samples."""
    samples = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2.0) as r:
            text = r.read().decode()
    except OSError:
        return samples
    for line in text.splitlines():
        if not line.startswith("triage_listener_"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name, _, labels = name_labels.partition("{")
        try:
            samples[(name, labels.rstrip("}"))] = float(value)
        except ValueError:
            pass
    return samples


def server_counts(samples):
    """The counters worth printing, keyed name[label=value,...]."""
    counts = {}
    for (name, labels), value in sorted(samples.items()):
        if name.endswith("_total") and value:
            short = name.removeprefix("triage_listener_").removesuffix("_total")
            counts[f"{short}{{{labels}}}"] = int(value)
    return counts


def healthz(port, timeout=2.0):
    """(answered 200, seconds taken)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            ok = r.status == 200
    except OSError:
        ok = False
    return ok, time.monotonic() - started


class Watcher(threading.Thread):
    """Asks /healthz every 0.5 s and samples the collector's fds and RSS."""

    def __init__(self, collector):
        super().__init__(daemon=True)
        self.collector = collector
        self.stopping = threading.Event()
        self.answered = 0
        self.failed = 0
        self.slowest = 0.0
        self.max_fds = 0
        self.max_buffered = 0.0

    def run(self):
        while not self.stopping.is_set():
            ok, took = healthz(self.collector.ports["admin"])
            if ok:
                self.answered += 1
            else:
                self.failed += 1
            self.slowest = max(self.slowest, took)
            self.max_fds = max(self.max_fds, open_fds(self.collector.pid) or 0)
            buffered = sum(
                value
                for (name, _), value in scrape(self.collector.ports["admin"]).items()
                if name == "triage_listener_buffered_bytes"
            )
            self.max_buffered = max(self.max_buffered, buffered)
            self.stopping.wait(0.5)


class Conn:
    def __init__(self, sock, opened):
        self.sock = sock
        self.opened = opened
        self.closed_after = None
        self.received = b""


def connect_all(port, count):
    """Up to `count` connections; one the kernel does not complete within a
    second (a full backlog: the server is not accepting) is given up and
    not counted, so this takes at most a second per connection refused that
    way."""
    conns = []
    for _ in range(count):
        sock = socket.socket()
        # Closed with a reset, so thousands of closes leave no TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            if time.monotonic() - CONNECT_STARTED[0] > CONNECT_BUDGET:
                break
            continue
        sock.setblocking(False)
        conns.append(Conn(sock, time.monotonic()))
    return conns


def run_scenario(name, collector, count, hold, head, trickle):
    ports = collector.ports
    connecting = time.monotonic()
    CONNECT_STARTED[0] = connecting
    if name == "idle":
        conns = connect_all(ports["http"], count // 2) + connect_all(ports["grpc"], count - count // 2)
        first, every = b"", b""
    elif name == "slowloris":
        conns = connect_all(ports["http"], count)
        first = b"POST /v1/traces HTTP/1.1\r\nHost: triage\r\n"
        every = b"X-Slow: 1\r\n"
    elif name == "keepalive":
        conns = connect_all(ports["http"], count)
        first = b"GET /v1/traces HTTP/1.1\r\nHost: triage\r\n\r\n"
        every = b""
    elif name == "slow-upload":
        conns = connect_all(ports["http"], count)
        first = (
            b"POST /v1/traces HTTP/1.1\r\nHost: triage\r\n"
            b"Content-Type: application/x-protobuf\r\n"
            + f"Content-Length: {20 * MIB}\r\n\r\n".encode()
            + b"\x0a" * head
        )
        every = b"\x0a" * trickle
    else:
        raise SystemExit(f"unknown scenario {name}")

    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)

    def send(conn, data):
        if conn.closed_after is not None or not data:
            return
        try:
            conn.sock.send(data)  # best effort: a full buffer is part of the point
        except BlockingIOError:
            pass
        except OSError:
            close(conn)

    def close(conn):
        if conn.closed_after is None:
            conn.closed_after = time.monotonic() - conn.opened
            selector.unregister(conn.sock)
            conn.sock.close()

    connect_s = time.monotonic() - connecting
    for conn in conns:
        send(conn, first)
    # Times are counted from here, when every connection has sent its first
    # bytes (writing 2,000 first megabytes takes the probe a second or two).
    started = time.monotonic()
    for conn in conns:
        conn.opened = started
    next_tick = started + 1
    while time.monotonic() - started < hold:
        for key, _ in selector.select(timeout=0.2):
            conn = key.data
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                if len(conn.received) < 64:
                    conn.received += data[:64]
            else:
                close(conn)
        if time.monotonic() >= next_tick:
            next_tick += 1
            for conn in conns:
                send(conn, every)
    result = {
        "opened": len(conns),
        "connect_s": round(connect_s, 1),
        "closed_within_5s": sum(1 for c in conns if c.closed_after is not None and c.closed_after < 5),
        "closed_later": sum(1 for c in conns if c.closed_after is not None and c.closed_after >= 5),
        "answered_408": sum(1 for c in conns if c.received.startswith(b"HTTP/1.1 408")),
        "still_open": sum(1 for c in conns if c.closed_after is None),
    }
    later = sorted(c.closed_after for c in conns if c.closed_after is not None and c.closed_after >= 5)
    if later:
        result["closed_later_after_s"] = [round(later[0], 1), round(later[-1], 1)]
    for conn in conns:
        if conn.closed_after is None:
            conn.sock.close()
    selector.close()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/triage")
    parser.add_argument("-n", "--connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("--scenarios", default="slowloris,idle,slow-upload")
    parser.add_argument("--hold", type=float, default=11, help="seconds per scenario (slow-upload: +20.5)")
    parser.add_argument("--upload-head", type=int, default=1 * MIB, help="bytes each upload sends at once")
    parser.add_argument("--upload-trickle", type=int, default=1024, help="bytes each upload sends a second")
    parser.add_argument("--open-files", type=int, help="the collector's open-files limit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    count = min(args.connections, MAX_CONNECTIONS)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * MAX_CONNECTIONS), hard))

    results = {}
    for name in args.scenarios.split(","):
        hold = args.hold + (20.5 if name == "slow-upload" else 0)
        with tempfile.TemporaryDirectory() as workdir:
            collector = Collector(args.binary, workdir, args.open_files)
            try:
                idle_fds = open_fds(collector.pid)
                watcher = Watcher(collector)
                watcher.start()
                result = run_scenario(name, collector, count, hold, args.upload_head, args.upload_trickle)
                watcher.stopping.set()
                watcher.join()
                ok_after, _ = healthz(collector.ports["admin"])
                result["server"] = server_counts(scrape(collector.ports["admin"]))
                with open(os.path.join(workdir, "triage.log"), "rb") as log:
                    lines = log.read().decode(errors="replace").splitlines()
                result["log_lines"] = len(lines)
                result["log_fd_lines"] = sum("out of file descriptors" in line for line in lines)
                result.update(
                    {
                        "buffered_most_mib": round(watcher.max_buffered / MIB, 1),
                        "healthz_answered": watcher.answered,
                        "healthz_failed": watcher.failed,
                        "healthz_slowest_s": round(watcher.slowest, 3),
                        "healthz_after": ok_after,
                        "fds_at_start": idle_fds,
                        "fds_most": watcher.max_fds,
                        "fds_at_end": open_fds(collector.pid),
                        "peak_rss_mib": round(proc_status(collector.pid, "VmHWM") or 0, 1),
                        "rss_at_end_mib": round(proc_status(collector.pid, "VmRSS") or 0, 1),
                    }
                )
            finally:
                collector.stop()
        results[name] = result
        if not args.json:
            print(f"{name}: " + ", ".join(f"{key}={value}" for key, value in result.items()), flush=True)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
