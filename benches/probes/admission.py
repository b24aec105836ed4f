#!/usr/bin/env python3
"""Memory limit and admission probe (issue #14, items 2 and 4).

Starts `triage run` with `memory_limit_mib` (default 256) on free loopback
ports and throws at it, each scenario in a fresh process:

- flood: N (default 2,000) OTLP/HTTP export requests at once, each on its
  own connection, each a real batch of 2,000 spans with eight attributes
  (about 0.7 MiB of protobuf);
- bombs: eight gzip bombs at once (20 MiB of empty spans, half protobuf,
  half JSON; see amplification.py);
- both at once.

For each it prints how the requests were answered (200, 503 with
Retry-After, other, no answer), answer times (p50, p99, max), the peak RSS
(VmHWM of /proc/PID/status), the slowest /healthz while it ran, and the
collector's refusal counters; then that a valid request is accepted again.

    benches/probes/admission.py [--binary target/debug/triage] [-n 2000]
        [--memory-limit-mib 256] [--scenarios flood,bombs,both]

Bounded: loopback only; at most 2,000 requests per scenario; every socket
has a timeout (30 s); a watchdog kills the collector past --rss-cap-mib
(default 2048). The OTLP/HTTP listener's connection cap is raised to 4096
so that the requests reach admission control rather than the cap (which
docs/RELIABILITY.md, "Listeners", measures). Linux only; standard library.
"""

import argparse
import asyncio
import gzip
import os
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from amplification import (  # noqa: E402
    BODY,
    VALID_JSON,
    free_port,
    json_bomb,
    protobuf_bomb,
    real_protobuf,
    request,
    status_kib,
)

import subprocess  # noqa: E402

MIB = 1024 * 1024
TIMEOUT = 30.0


class Collector:
    def __init__(self, binary, workdir, memory_limit_mib):
        self.ports = {name: free_port() for name in ("grpc", "http", "admin", "api")}
        config = os.path.join(workdir, "triage.yaml")
        with open(config, "w") as out:
            out.write(
                "receivers:\n  otlp:\n"
                f"    memory_limit_mib: {memory_limit_mib}\n"
                f'    grpc:\n      endpoint: "127.0.0.1:{self.ports["grpc"]}"\n'
                f'    http:\n      endpoint: "127.0.0.1:{self.ports["http"]}"\n'
                "      max_connections: 4096\n"
                f'admin:\n  endpoint: "127.0.0.1:{self.ports["admin"]}"\n'
                f'api:\n  endpoint: "127.0.0.1:{self.ports["api"]}"\n'
                f'storage:\n  enabled: false\n  data_dir: "{workdir}/data"\n'
                "log:\n  level: info\n"
            )
        self.log_path = os.path.join(workdir, "triage.log")
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [binary, "run", "-c", config], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"triage exited at start; see {self.log_path}")
            status, _ = request(self.ports["admin"], "GET", "/healthz", timeout=2)
            if status == 200:
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit("triage did not answer /healthz within 30 s")

    def metrics(self):
        _, text = request(self.ports["admin"], "GET", "/metrics", timeout=5)
        return text.decode("utf-8", "replace")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def post(port, body, content_type, gzipped):
    """One POST /v1/traces on its own connection: (status, retry_after, s)."""
    began = time.monotonic()
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), TIMEOUT
        )
        head = (
            f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            + ("Content-Encoding: gzip\r\n" if gzipped else "")
            + "Connection: close\r\n\r\n"
        ).encode()

        async def send():
            writer.write(head)
            writer.write(body)
            await writer.drain()

        # The server may answer before reading the body (a refusal), so
        # the answer is read while the body is still being sent.
        sending = asyncio.ensure_future(send())
        # A refusal closes the connection while the body is still going out.
        sending.add_done_callback(lambda task: task.cancelled() or task.exception())
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        sending.cancel()
        parts = line.split()
        status = int(parts[1]) if len(parts) > 1 else None
        match = re.search(rb"(?i)retry-after:\s*(\d+)", headers)
        retry_after = int(match.group(1)) if match else None
        return status, retry_after, time.monotonic() - began
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
        return None, None, time.monotonic() - began
    finally:
        if writer is not None:
            writer.close()


async def send_all(port, bodies):
    return await asyncio.gather(*(post(port, *body) for body in bodies))


def quantile(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_scenario(args, name, bodies):
    cap_kib = args.rss_cap_mib * 1024
    with tempfile.TemporaryDirectory(prefix="triage-probe-") as workdir:
        collector = Collector(args.binary, workdir, args.memory_limit_mib)
        pid = collector.process.pid
        start_kib = status_kib(pid, "VmRSS")
        done = threading.Event()
        killed = threading.Event()
        health = {"slowest": 0.0, "failed": 0, "asked": 0}

        def watchdog():
            while not done.is_set():
                rss = status_kib(pid, "VmRSS")
                if rss is not None and rss > cap_kib:
                    killed.set()
                    collector.process.kill()
                    return
                time.sleep(0.02)

        def healthz():
            while not done.is_set():
                began = time.monotonic()
                status, _ = request(collector.ports["admin"], "GET", "/healthz", timeout=5)
                health["asked"] += 1
                health["failed"] += status != 200
                health["slowest"] = max(health["slowest"], time.monotonic() - began)
                time.sleep(0.1)

        watchers = [threading.Thread(target=watchdog), threading.Thread(target=healthz)]
        for thread in watchers:
            thread.start()
        began = time.monotonic()
        answers = asyncio.run(send_all(collector.ports["http"], bodies))
        elapsed = time.monotonic() - began
        peak_kib = status_kib(pid, "VmHWM")
        done.set()
        for thread in watchers:
            thread.join()
        metrics = "" if killed.is_set() else collector.metrics()
        valid = None
        if not killed.is_set():
            # Memory falls below the soft limit once the flood is answered
            # (requests still reading their bodies end by read_timeout, 30 s);
            # the limiter notices within a check interval (1 s).
            after = time.monotonic()
            deadline = after + 45
            while time.monotonic() < deadline:
                valid, _ = request(
                    collector.ports["http"],
                    "POST",
                    "/v1/traces",
                    VALID_JSON,
                    {"Content-Type": "application/json"},
                    timeout=10,
                )
                if valid == 200:
                    break
                time.sleep(0.5)
            after = time.monotonic() - after
        collector.stop()
        with open(collector.log_path) as log:
            transitions = [line.strip() for line in log if "soft limit" in line]

    statuses = {}
    for status, retry_after, _ in answers:
        key = "no answer" if status is None else str(status)
        if status == 503:
            key += " with Retry-After" if retry_after else " WITHOUT Retry-After"
        statuses[key] = statuses.get(key, 0) + 1
    times = [seconds for _, _, seconds in answers]
    print(f"\n{name}: {len(bodies)} requests, all answered in {elapsed:.1f} s")
    for key, count in sorted(statuses.items()):
        print(f"  {key}: {count}")
    print(
        f"  answer time p50 {quantile(times, 0.5):.2f} s, p99 {quantile(times, 0.99):.2f} s, "
        f"max {max(times):.2f} s"
    )
    if killed.is_set():
        print(f"  killed: RSS passed the cap of {args.rss_cap_mib} MiB")
    print(
        f"  peak RSS (VmHWM): {peak_kib / 1024:.0f} MiB "
        f"(at start {start_kib / 1024:.0f} MiB; limit {args.memory_limit_mib} MiB)"
    )
    print(
        f"  /healthz: {health['asked']} asked, {health['failed']} failed, "
        f"slowest {health['slowest']:.2f} s"
    )
    for line in metrics.splitlines():
        if line.startswith(
            ("triage_receiver_refused_requests_total", "triage_memory_", "triage_receiver_accepted")
        ):
            print(f"  {line}")
    print(f"  limiter transitions logged: {len(transitions)}")
    if valid is not None:
        print(f"  a valid request afterwards: {valid} (after {after:.1f} s of retrying)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/debug/triage")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--memory-limit-mib", type=int, default=256)
    parser.add_argument("--rss-cap-mib", type=int, default=2048)
    parser.add_argument("--scenarios", default="flood,bombs,both")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit(f"no executable {args.binary} (cargo build first)")
    n = min(args.n, 2000)
    print(args.binary)
    batch = real_protobuf(2000)
    print(f"flood batch: 2,000 spans, {len(batch) / MIB:.2f} MiB protobuf")
    flood = [(batch, "application/x-protobuf", False)] * n
    bombs = [
        (gzip.compress(protobuf_bomb(BODY), 9), "application/x-protobuf", True),
        (gzip.compress(json_bomb(BODY), 9), "application/json", True),
    ] * 4
    scenarios = {"flood": flood, "bombs": bombs, "both": flood + bombs}
    for name in args.scenarios.split(","):
        run_scenario(args, name, scenarios[name])


if __name__ == "__main__":
    main()
