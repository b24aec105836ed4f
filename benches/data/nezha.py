#!/usr/bin/env python3
"""Convert the Nezha TrainTicket data of 2023-01-30 into OTLP JSON lines for `triage replay`.

Source: https://github.com/IntelligentDDS/Nezha (FSE'23), folders
`rca_data/2023-01-30` (17 labelled faults) and `construct_data/2023-01-30`
(fault-free reference). The other TrainTicket date, 2023-01-29, is held out:
this script never lists or reads it, and refuses to run on any other date.

Usage:
    python3 nezha.py [convert] SOURCE OUT_DIR [--reference-minutes 10] [--healthy-minutes 12]
                     [--span-status-from-logs] [--gzip] [--only CASE...]
    python3 nezha.py replay DATA_DIR --triage BINARY [--config FILE] [--events events]
    python3 nezha.py score DATA_DIR [--events events]

convert: SOURCE is either the bare git directory the session's fetch tool
returns (read with `git show HEAD:path`) or a checkout/extracted copy of the
repository. OUT_DIR gets one `<case>.jsonl` per fault, `healthy.jsonl`,
`labels.json` and `manifest.json`. The word `convert` may be left out.

replay: runs `BINARY replay [--config FILE] FILE` on every case and
healthy.jsonl; incident events to DATA_DIR/EVENTS/<case>.jsonl, stderr to
<case>.stderr.txt. Exits 1 if a run failed or rejected any item.

score: markdown tables per case and in total: detection, time to detect,
false incidents, AS@1/AS@3 (rules in benches/data/README.md, "Scoring").
Caches each case's caller graph in DATA_DIR/callgraph.json.

Standard library only.

See benches/data/README.md for the mapping and the case construction.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone

DATE = "2023-01-30"  # the only date this converter touches
HELD_OUT = "2023-01-29"  # never read
RCA_DIR = f"rca_data/{DATE}"
REF_DIR = f"construct_data/{DATE}"
FAULT_LIST = f"{RCA_DIR}/{DATE}-fault_list.json"

NS = 1_000_000_000
MINUTE = 60 * NS
# Nezha paper, section 5.1: "We set each fault duration to 3 minutes".
FAULT_DURATION = 180 * NS
SCOPE = {"name": "triage/benches/data/nezha.py", "version": "1"}

KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = 1, 2, 3, 4, 5
STATUS_ERROR = 2
SEVERITY = {
    "TRACE": (1, "TRACE"),
    "DEBUG": (5, "DEBUG"),
    "INFO": (9, "INFO"),
    "WARN": (13, "WARN"),
    "WARNING": (13, "WARN"),
    "ERROR": (17, "ERROR"),
    "FATAL": (21, "FATAL"),
}
SQL_VERBS = {"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "CALL"}
HEX = re.compile(r"^[0-9a-fA-F]+$")
LOG_LEVEL = re.compile(r"^\s*\d\d:\d\d:\d\d(?:[.,]\d+)?\s+([A-Z]+)\b")


# ---------------------------------------------------------------- source


class Source:
    """Reads repository files from a bare git directory or a plain directory."""

    def __init__(self, root: str):
        self.root = root
        self.git = os.path.isfile(os.path.join(root, "HEAD")) and os.path.isdir(
            os.path.join(root, "objects")
        )

    @staticmethod
    def _guard(path: str) -> None:
        if HELD_OUT in path or not (path.startswith(RCA_DIR) or path.startswith(REF_DIR)):
            raise SystemExit(f"refusing to touch {path}: only {DATE} is converted")

    def list(self, folder: str) -> list[str]:
        """File names (not paths) directly in folder."""
        self._guard(folder)
        if self.git:
            out = subprocess.run(
                ["git", f"--git-dir={self.root}", "ls-tree", "--name-only", f"HEAD:{folder}"],
                capture_output=True, text=True, check=True,
            ).stdout
            return sorted(x for x in out.splitlines() if x)
        return sorted(os.listdir(os.path.join(self.root, folder)))

    def missing(self, folder: str) -> list[str]:
        """Files listed in the tree whose content is absent (large files not fetched)."""
        self._guard(folder)
        if not self.git:
            return []
        out = subprocess.run(
            ["git", f"--git-dir={self.root}", "ls-tree", "-r", f"HEAD:{folder}"],
            capture_output=True, text=True, check=True,
        ).stdout
        absent = []
        for line in out.splitlines():
            meta, name = line.split("\t", 1)
            sha = meta.split()[2]
            ok = subprocess.run(
                ["git", f"--git-dir={self.root}", "cat-file", "-e", sha], capture_output=True
            ).returncode == 0
            if not ok:
                absent.append(f"{folder}/{name}")
        return absent

    def read(self, path: str) -> str:
        self._guard(path)
        if self.git:
            return subprocess.run(
                ["git", f"--git-dir={self.root}", "show", f"HEAD:{path}"],
                capture_output=True, text=True, check=True,
            ).stdout
        with open(os.path.join(self.root, path), encoding="utf-8") as f:
            return f.read()

    def csv(self, path: str) -> list[dict]:
        return list(csv.DictReader(io.StringIO(self.read(path))))


# ---------------------------------------------------------------- helpers


def service_of(pod: str) -> str:
    """ts-basic-service-5dc8d4f9fd-llznp -> ts-basic-service (Deployment pod naming)."""
    parts = pod.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else pod


def hex_id(value: str, width: int) -> str:
    value = (value or "").strip().lower()
    if not value or value == "root" or not HEX.match(value) or len(value) > width:
        return ""
    return value.rjust(width, "0")


def remap(tag: str, trace: str, span: str | None = None) -> str:
    """New deterministic ids for time-shifted copies: 32 hex for a trace, 16 for a span."""
    if span is None:
        return hashlib.md5(f"{tag}/{trace}".encode()).hexdigest()
    return hashlib.md5(f"{tag}/{trace}/{span}".encode()).hexdigest()[:16]


def iso_to_ns(text: str) -> int | None:
    """2023-01-30T12:01:02.090466577Z or '2023-01-30 11:39:52.948766709 +0000 UTC m=+0.1'."""
    m = re.match(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?", text or "")
    if not m:
        return None
    base = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S")
    secs = int(base.replace(tzinfo=timezone.utc).timestamp())
    frac = (m.group(3) or "0")[:9].ljust(9, "0")
    return secs * NS + int(frac)


def fmt(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def attr(key: str, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def pod_resource(pod: str, container: str | None = None) -> dict:
    svc = service_of(pod)
    attrs = [
        attr("service.name", svc),
        attr("service.instance.id", pod),
        attr("k8s.pod.name", pod),
        attr("k8s.deployment.name", svc),
    ]
    if pod.count("-") >= 2:
        attrs.append(attr("k8s.replicaset.name", pod.rsplit("-", 1)[0]))
    if container:
        attrs.append(attr("k8s.container.name", container))
    return {"attributes": attrs}


# ---------------------------------------------------------------- spans


def load_spans(src: Source, minutes: list[str], stats: Counter) -> list[dict]:
    """Rows of the trace files of the given minutes, deduplicated by (trace, span)."""
    seen = {}
    for minute in minutes:
        for row in src.csv(f"{minute[0]}/trace/{minute[1]}_trace.csv"):
            key = (row["TraceID"], row["SpanID"])
            if key in seen:
                stats["duplicate_spans"] += 1
                continue
            try:
                start, end = int(row["StartTimeUnixNano"]), int(row["EndTimeUnixNano"])
            except ValueError:
                stats["spans_dropped_bad_time"] += 1
                continue
            if end < start:
                stats["spans_end_before_start"] += 1
                end = start
            row = dict(row, start=start, end=end)
            seen[key] = row
    return list(seen.values())


def classify(spans: list[dict]) -> None:
    """Adds kind and semantic-convention attributes, inferred from names and the span tree.

    The CSV has no kind, status or attributes. What the names (OTel Java agent naming)
    and the tree tell:
      - parent in another service (or no parent)         -> SERVER (CONSUMER for `X process`)
      - `HTTP GET` etc.                                   -> CLIENT, peer.service = child's service
      - `<dest> send`                                     -> PRODUCER
      - `SELECT ts.table` etc. (dotted namespace.table)   -> CLIENT to the database `ts`
                                                             (db.system.name other_sql)
      - everything else (controllers, repositories, HQL)  -> INTERNAL
    """
    by_id = {(s["TraceID"], s["SpanID"]): s for s in spans}
    callee = {}
    for s in spans:
        parent = by_id.get((s["TraceID"], s["ParentID"]))
        s["_parent_service"] = service_of(parent["PodName"]) if parent else None
        if parent and service_of(parent["PodName"]) != service_of(s["PodName"]):
            callee.setdefault((s["TraceID"], s["ParentID"]), service_of(s["PodName"]))
    for s in spans:
        name, svc = s["OperationName"], service_of(s["PodName"])
        words = name.split(" ")
        attrs = []
        is_root = s["ParentID"] in ("", "root")
        cross_parent = s["_parent_service"] is not None and s["_parent_service"] != svc
        peer = callee.get((s["TraceID"], s["SpanID"]))
        if len(words) == 2 and words[1] == "process" and (cross_parent or is_root):
            kind = KIND_CONSUMER
            attrs += [attr("messaging.operation.type", "process"),
                      attr("messaging.destination.name", words[0])]
        elif len(words) == 2 and words[1] in ("send", "publish"):
            kind = KIND_PRODUCER
            attrs += [attr("messaging.operation.type", "send"),
                      attr("messaging.destination.name", words[0])]
            if peer:
                attrs.append(attr("peer.service", peer))
        elif words[0] == "HTTP" and len(words) == 2:
            kind = KIND_CLIENT
            attrs.append(attr("http.request.method", words[1]))
            if peer:
                attrs.append(attr("peer.service", peer))
        elif cross_parent or is_root:
            kind = KIND_SERVER
            if name.startswith("/"):
                attrs.append(attr("http.route", name))
        elif (words[0] in SQL_VERBS and len(words) == 2 and "." in words[1]
              and (s["TraceID"], s["SpanID"]) not in callee):
            kind = KIND_CLIENT
            namespace, table = words[1].split(".", 1)
            # The data names no database product; semconv's fallback for an unnamed
            # SQL database is db.system.name = other_sql.
            attrs += [attr("db.system.name", "other_sql"), attr("db.operation.name", words[0]),
                      attr("db.namespace", namespace), attr("db.collection.name", table)]
        elif s["_parent_service"] is None and name.startswith("/"):
            kind = KIND_SERVER  # parent not in the data (another minute file)
            attrs.append(attr("http.route", name))
        else:
            kind = KIND_INTERNAL
        s["kind"], s["attrs"] = kind, attrs


def span_json(s: dict, shift: int, tag: str | None, errors: set) -> dict:
    trace, span, parent = s["TraceID"], s["SpanID"], s["ParentID"]
    if tag is not None:
        new_trace = remap(tag, trace)
        new_span = remap(tag, trace, span)
        new_parent = remap(tag, trace, parent) if parent not in ("", "root") else ""
    else:
        new_trace, new_span, new_parent = hex_id(trace, 32), hex_id(span, 16), hex_id(parent, 16)
    out = {
        "traceId": new_trace,
        "spanId": new_span,
        "parentSpanId": new_parent,
        "name": s["OperationName"],
        "kind": s["kind"],
        "startTimeUnixNano": str(s["start"] + shift),
        "endTimeUnixNano": str(s["end"] + shift),
        "attributes": s["attrs"],
        "status": {},
    }
    if (trace, span) in errors:
        out["status"] = {"code": STATUS_ERROR, "message": "ERROR log record in this span"}
    return out


# ---------------------------------------------------------------- logs


def load_logs(src: Source, minutes: list[str], stats: Counter) -> list[dict]:
    out = []
    for minute in minutes:
        for row in src.csv(f"{minute[0]}/log/{minute[1]}_log.csv"):
            # TimeUnixNano is sometimes an overflowed negative number; the Timestamp
            # column (RFC 3339, UTC) is then the only good time.
            from_text = iso_to_ns(row.get("Timestamp", ""))
            try:
                t = int(row["TimeUnixNano"])
            except (ValueError, KeyError):
                t = None
            if t is None or from_text is None or abs(t - from_text) > NS:
                stats["logs_time_from_timestamp_column"] += 1
                t = from_text
            if t is None:
                stats["logs_dropped_bad_time"] += 1
                continue
            raw = row.get("Log", "")
            body, stream = raw, None
            try:
                doc = json.loads(raw)
                body, stream = doc.get("log", raw), doc.get("stream")
            except (ValueError, AttributeError):
                pass
            body = body.rstrip("\n")
            m = LOG_LEVEL.match(body)
            level = SEVERITY.get(m.group(1)) if m else None
            if level is None:
                stats["logs_without_level"] += 1
            out.append({
                "t": t, "pod": row["PodName"], "container": row.get("Container") or None,
                "trace": row.get("TraceID", ""), "span": row.get("SpanID", ""),
                "body": body, "stream": stream, "level": level,
            })
    return out


def log_json(r: dict, shift: int, tag: str | None) -> dict:
    trace, span = hex_id(r["trace"], 32), hex_id(r["span"], 16)
    if tag is not None and trace:
        span = remap(tag, r["trace"], r["span"]) if span else ""
        trace = remap(tag, r["trace"])
    t = str(r["t"] + shift)
    out = {"timeUnixNano": t, "observedTimeUnixNano": t}
    if r["level"]:
        out["severityNumber"], out["severityText"] = r["level"]
    out["body"] = {"stringValue": r["body"]}
    out["attributes"] = [attr("log.iostream", r["stream"])] if r["stream"] else []
    if trace:
        out["traceId"] = trace
        if span:
            out["spanId"] = span
    return out


def error_spans(logs: list[dict]) -> set:
    return {(r["trace"], r["span"]) for r in logs if r["level"] and r["level"][0] >= 17}


# ---------------------------------------------------------------- metrics

# column -> (name, unit, scale, kind); kind "gauge" or "rate" (a per-second rate
# written as a delta monotonic sum over the row's interval).
METRIC_COLUMNS = {
    "CpuUsage(m)": ("container.cpu.usage", "{cpu}", 1e-3, "gauge"),
    "CpuUsageRate(%)": ("k8s.container.cpu.limit_utilization", "1", 1e-2, "gauge"),
    "MemoryUsage(Mi)": ("container.memory.usage", "By", 1048576.0, "gauge_int"),
    "MemoryUsageRate(%)": ("k8s.container.memory.limit_utilization", "1", 1e-2, "gauge"),
    "NetworkReceiveBytes": ("k8s.pod.network.io", "By", 1.0, "rate:receive"),
    "NetworkTransmitBytes": ("k8s.pod.network.io", "By", 1.0, "rate:transmit"),
    "SyscallRead": ("nezha.pod.syscall.read", "{syscall}", 1.0, "gauge"),
    "SyscallWrite": ("nezha.pod.syscall.write", "{syscall}", 1.0, "gauge"),
    "PodClientLatencyP90(s)": ("nezha.pod.client.latency.p90", "s", 1.0, "gauge"),
    "PodClientLatencyP95(s)": ("nezha.pod.client.latency.p95", "s", 1.0, "gauge"),
    "PodClientLatencyP99(s)": ("nezha.pod.client.latency.p99", "s", 1.0, "gauge"),
    "PodServerLatencyP90(s)": ("nezha.pod.server.latency.p90", "s", 1.0, "gauge"),
    "PodServerLatencyP95(s)": ("nezha.pod.server.latency.p95", "s", 1.0, "gauge"),
    "PodServerLatencyP99(s)": ("nezha.pod.server.latency.p99", "s", 1.0, "gauge"),
    "PodWorkload(Ops)": ("nezha.pod.workload", "{operation}/s", 1.0, "gauge"),
    "NodeCpuUsageRate(%)": ("nezha.node.cpu.utilization", "1", 1e-2, "gauge"),
    "NodeMemoryUsageRate(%)": ("nezha.node.memory.utilization", "1", 1e-2, "gauge"),
    "NodeNetworkReceiveBytes": ("nezha.node.network.receive", "By/s", 1.0, "gauge"),
}
# Left out: PodSuccessRate(%) (0 in every row of the date), Time/TimeStamp/PodName,
# and metric/front_service.csv (a probe-level "Frontend" series with no pod or span).


def load_metrics(src: Source, folder: str) -> dict[str, list[dict]]:
    """pod -> rows sorted by time, each with 't' (ns, from the Time column)."""
    out = {}
    for name in src.list(f"{folder}/metric"):
        if not name.endswith("_metric.csv"):
            continue
        rows = []
        for row in src.csv(f"{folder}/metric/{name}"):
            t = iso_to_ns(row.get("Time", "")) or int(row["TimeStamp"]) * NS
            rows.append(dict(row, t=t))
        rows.sort(key=lambda r: r["t"])
        out[name[: -len("_metric.csv")]] = rows
    return out


def metric_points(row: dict, t: int, start: int) -> list[tuple]:
    """(name, unit, kind, attrs, value, start) for one pod row."""
    pts = []
    for col, (name, unit, scale, kind) in METRIC_COLUMNS.items():
        raw = (row.get(col) or "").strip()
        try:
            value = float(raw) * scale
        except ValueError:
            continue
        if value != value:  # NaN
            continue
        attrs = []
        if kind.startswith("rate:"):
            attrs = [attr("network.io.direction", kind.split(":")[1])]
            value *= (t - start) / NS
        pts.append((name, unit, kind, attrs, value, start))
    return pts


def metrics_json(pod: str, t: int, pts: list[tuple]) -> dict:
    metrics = {}
    for name, unit, kind, attrs, value, start in pts:
        dp = {"attributes": attrs, "timeUnixNano": str(t)}
        if kind == "gauge_int":
            dp["asInt"] = str(int(round(value)))
        else:
            dp["asDouble"] = value
        if kind.startswith("rate:"):
            dp["startTimeUnixNano"] = str(start)
            m = metrics.setdefault(name, {"name": name, "unit": unit, "sum": {
                "dataPoints": [], "aggregationTemporality": 1, "isMonotonic": True}})
            m["sum"]["dataPoints"].append(dp)
        else:
            m = metrics.setdefault(name, {"name": name, "unit": unit, "gauge": {"dataPoints": []}})
            m["gauge"]["dataPoints"].append(dp)
    return {"resource": pod_resource(pod), "scopeMetrics": [{"scope": SCOPE, "metrics": list(metrics.values())}]}


# ---------------------------------------------------------------- output


class Writer:
    """Collects events, then writes one OTLP request per line in event-time order.

    Spans are batched by the second their end time falls in, logs by the second of
    their timestamp, metrics by scrape (row); a line's time is its newest event.
    """

    def __init__(self):
        self.spans = defaultdict(lambda: defaultdict(list))  # second -> pod -> spans
        self.logs = defaultdict(lambda: defaultdict(list))  # second -> (pod, container) -> records
        self.metrics = []  # (t, pod, points)
        self.counts = Counter()
        self.first = None
        self.last = None

    def _see(self, t: int) -> None:
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)

    def span(self, pod: str, js: dict) -> None:
        end = int(js["endTimeUnixNano"])
        self._see(int(js["startTimeUnixNano"]))
        self._see(end)
        self.spans[end // NS][pod].append(js)
        self.counts["spans"] += 1
        if js["status"].get("code") == STATUS_ERROR:
            self.counts["error_spans"] += 1

    def log(self, pod: str, container: str | None, js: dict) -> None:
        t = int(js["timeUnixNano"])
        self._see(t)
        self.logs[t // NS][(pod, container)].append(js)
        self.counts["logs"] += 1

    def metric(self, t: int, pod: str, pts: list[tuple]) -> None:
        if pts:
            self._see(t)
            self.metrics.append((t, pod, pts))
            self.counts["points"] += len(pts)

    def write(self, path: str, compress: bool) -> None:
        lines = []  # (time, order, json text)
        for sec, pods in self.spans.items():
            newest = max(int(s["endTimeUnixNano"]) for v in pods.values() for s in v)
            req = {"resourceSpans": [
                {"resource": pod_resource(pod), "scopeSpans": [{"scope": SCOPE, "spans": sorted(
                    v, key=lambda s: int(s["endTimeUnixNano"]))}]}
                for pod, v in sorted(pods.items())]}
            lines.append((newest, 0, req))
        for sec, groups in self.logs.items():
            newest = max(int(r["timeUnixNano"]) for v in groups.values() for r in v)
            req = {"resourceLogs": [
                {"resource": pod_resource(pod, container), "scopeLogs": [{"scope": SCOPE, "logRecords": sorted(
                    v, key=lambda r: int(r["timeUnixNano"]))}]}
                for (pod, container), v in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]}
            lines.append((newest, 1, req))
        by_scrape = defaultdict(list)
        for t, pod, pts in self.metrics:
            by_scrape[t // MINUTE].append((t, pod, pts))
        for _, group in by_scrape.items():
            newest = max(t for t, _, _ in group)
            req = {"resourceMetrics": [metrics_json(pod, t, pts) for t, pod, pts in sorted(group, key=lambda g: g[1])]}
            lines.append((newest, 2, req))
        lines.sort(key=lambda x: (x[0], x[1]))
        self.counts["lines"] = len(lines)
        opener = gzip.open if compress else open
        tmp = path + ".tmp"
        with opener(tmp, "wt", encoding="utf-8") as f:
            for _, _, req in lines:
                f.write(json.dumps(req, separators=(",", ":"), ensure_ascii=False))
                f.write("\n")
        os.replace(tmp, path)


# ---------------------------------------------------------------- reference traffic


class Reference:
    """The fault-free minute of construct_data (traces, logs) and its per-pod metric rows."""

    def __init__(self, src: Source, first_inject: int, stats: Counter, span_status_from_logs: bool):
        minutes = [(REF_DIR, n[: -len("_trace.csv")]) for n in src.list(f"{REF_DIR}/trace")]
        self.minutes = [m[1] for m in minutes]
        self.spans = load_spans(src, minutes, stats)
        classify(self.spans)
        self.logs = load_logs(src, minutes, stats)
        self.errors = error_spans(self.logs) if span_status_from_logs else set()
        times = [s["start"] for s in self.spans] + [r["t"] for r in self.logs]
        ends = [s["end"] for s in self.spans] + [r["t"] for r in self.logs]
        # Slot of the recorded traffic: from its first event, one minute long.
        self.start = min(times)
        self.end = max(ends)
        self.length = max(MINUTE * len(minutes), ((self.end - self.start) // MINUTE + 1) * MINUTE)
        # Metric rows after the recorded traffic began and before the first fault of
        # the day: each row summarises the minute before its time.
        self.metrics = {}
        for pod, rows in load_metrics(src, REF_DIR).items():
            self.metrics[pod] = [r for r in rows if self.start + 30 * NS < r["t"] <= first_inject]
        self.metric_minutes = min(len(v) for v in self.metrics.values())

    def emit(self, w: Writer, slot0: int, copies: int, tag: str) -> tuple[int, int]:
        """Copies the traffic minute `copies` times from slot0 (one slot a minute), with new
        ids; places metric row j at the end of slot j. Returns (start, end) of the block."""
        slot = MINUTE
        assert self.length <= slot, "reference traffic longer than one minute"
        for k in range(copies):
            shift = slot0 + k * slot - self.start
            ctag = f"{tag}/{k}"
            for s in self.spans:
                w.span(s["PodName"], span_json(s, shift, ctag, self.errors))
            for r in self.logs:
                w.log(r["pod"], r["container"], log_json(r, shift, ctag))
        for pod, rows in self.metrics.items():
            prev = None
            for j, row in enumerate(rows[:copies]):
                t = slot0 + (j + 1) * slot - NS
                start = prev if prev is not None else t - slot
                w.metric(t, pod, metric_points(row, t, start))
                prev = t
        return slot0, slot0 + copies * slot


# ---------------------------------------------------------------- main


def fault_cases(src: Source) -> list[dict]:
    doc = json.loads(src.read(FAULT_LIST))
    available = {n[: -len("_trace.csv")] for n in src.list(f"{RCA_DIR}/trace")}
    cases = []
    for hour in sorted(doc, key=int):
        for f in doc[hour]:
            # inject_time (UTC) and inject_timestamp disagree by 60 s for 4 of the 17
            # faults (12:06, 12:15, 13:15, 13:30). The minute files are named after
            # inject_time and Nezha's own evaluation reads inject_time, so it is used;
            # the listed timestamp is kept in the label.
            inject = iso_to_ns(f["inject_time"])
            listed = int(f["inject_timestamp"]) * NS
            # Nezha's minute files: HH_MM holds traces/logs from about HH:(MM-1):53 to
            # HH:MM:52. Take the inject minute's file and the following ones up to the
            # minute the 3-minute fault ends in, those that exist (there are three).
            minutes = []
            t = inject - inject % MINUTE
            while t <= inject + FAULT_DURATION:
                name = datetime.fromtimestamp(t / NS, tz=timezone.utc).strftime("%H_%M")
                if name in available:
                    minutes.append(name)
                t += MINUTE
            hhmm = datetime.fromtimestamp(inject / NS, tz=timezone.utc).strftime("%H%M")
            svc = service_of(f["inject_pod"])
            cases.append({
                "case": f"tt-{DATE}-{hhmm}-{svc}-{f['inject_type']}",
                "service": svc,
                "pod": f["inject_pod"],
                "fault_type": f["inject_type"],
                "inject_time": f["inject_time"],
                "inject_unix_nanos": inject,
                "end_unix_nanos": inject + FAULT_DURATION,
                "listed_inject_timestamp_unix_nanos": listed,
                "minutes": minutes,
            })
    return cases


def add_convert_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("source", help="the fetched Nezha repository: bare git dir or a checkout")
    ap.add_argument("out", help="output directory (outside the triage checkout)")
    ap.add_argument("--reference-minutes", type=int, default=10,
                    help="minutes of fault-free traffic before each fault window (default 10)")
    ap.add_argument("--healthy-minutes", type=int, default=0,
                    help="length of healthy.jsonl; default: as many minutes as fault-free metric rows exist")
    ap.add_argument("--span-status-from-logs", action="store_true",
                    help="set status ERROR on spans an ERROR log record points at (off: the trace "
                         "data itself carries no status)")
    ap.add_argument("--gzip", action="store_true", help="write .jsonl.gz")
    ap.add_argument("--only", nargs="*", help="convert only these case names (and healthy)")


def cmd_convert(args) -> int:

    out = os.path.abspath(args.out)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out == here or out.startswith(here + os.sep):
        raise SystemExit(f"{out} is inside the triage checkout {here}; write the data elsewhere")
    os.makedirs(out, exist_ok=True)
    ext = ".jsonl.gz" if args.gzip else ".jsonl"

    src = Source(args.source)
    missing = []
    for folder in (RCA_DIR, REF_DIR):
        missing += src.missing(folder)
    if missing:
        print(f"missing (not fetched): {len(missing)} files", file=sys.stderr)
        for m in missing:
            print(f"  {m}", file=sys.stderr)
        raise SystemExit("fetch the repository completely (git lfs / fetch again) and retry")

    stats = Counter()
    cases = fault_cases(src)
    first_inject = min(c["inject_unix_nanos"] for c in cases)
    ref = Reference(src, first_inject, stats, args.span_status_from_logs)
    rca_metrics = load_metrics(src, RCA_DIR)
    if args.reference_minutes > ref.metric_minutes:
        print(f"note: only {ref.metric_minutes} fault-free metric rows; reference minutes past "
              f"that carry traces and logs only", file=sys.stderr)

    manifest = {"source": "https://github.com/IntelligentDDS/Nezha", "date": DATE,
                "reference_traffic": {
                    "minutes": [f"{REF_DIR}/trace/{m}_trace.csv" for m in ref.minutes],
                    "start": fmt(ref.start), "end": fmt(ref.end),
                    "metric_rows": ref.metric_minutes},
                "files": []}
    labels = []

    for c in cases:
        if args.only and c["case"] not in args.only:
            continue
        w = Writer()
        minutes = [(RCA_DIR, m) for m in c["minutes"]]
        spans = load_spans(src, minutes, stats)
        classify(spans)
        logs = load_logs(src, minutes, stats)
        errors = error_spans(logs) if args.span_status_from_logs else set()
        # The window is what the trace files cover; log records outside it by more
        # than a few seconds would be mis-stamped lines.
        data_start = min(s["start"] for s in spans)
        data_end = max(s["end"] for s in spans)
        kept = [r for r in logs if data_start - 5 * NS <= r["t"] <= data_end + 5 * NS]
        stats["logs_dropped_outside_window"] += len(logs) - len(kept)
        logs = kept
        data_start = min([data_start] + [r["t"] for r in logs])
        data_end = max([data_end] + [r["t"] for r in logs])
        # Fault-free reference, shifted to end right before the window's first event.
        slot0 = data_start - args.reference_minutes * MINUTE
        ref_start, ref_end = ref.emit(w, slot0, args.reference_minutes, f"{c['case']}/ref")
        for s in spans:
            w.span(s["PodName"], span_json(s, 0, None, errors))
        for r in logs:
            w.log(r["pod"], r["container"], log_json(r, 0, None))
        # Metric rows that summarise the window's minutes (a row covers the minute before it).
        for pod, rows in rca_metrics.items():
            prev = None
            for row in rows:
                if data_start + 30 * NS < row["t"] <= data_end + 30 * NS:
                    start = prev if prev is not None else row["t"] - MINUTE
                    w.metric(row["t"], pod, metric_points(row, row["t"], start))
                prev = row["t"]
        name = c["case"] + ext
        w.write(os.path.join(out, name), args.gzip)
        label = {
            "case": c["case"], "file": name, "service": c["service"], "pod": c["pod"],
            "fault_type": c["fault_type"], "inject_time_utc": c["inject_time"],
            "inject_unix_nanos": c["inject_unix_nanos"], "end_unix_nanos": c["end_unix_nanos"],
            "listed_inject_timestamp_unix_nanos": c["listed_inject_timestamp_unix_nanos"],
            "inject_time_disagrees_with_listed_timestamp":
                c["listed_inject_timestamp_unix_nanos"] != c["inject_unix_nanos"],
            "end_source": "inject + 3 min (Nezha paper: each fault lasts 3 minutes)",
            "reference_start_unix_nanos": ref_start, "reference_end_unix_nanos": ref_end,
            "window_start_unix_nanos": data_start, "window_end_unix_nanos": data_end,
            "window_files": [f"{RCA_DIR}/trace/{m}_trace.csv" for m in c["minutes"]],
        }
        labels.append(label)
        manifest["files"].append({"file": name, **{k: v for k, v in w.counts.items()},
                                  "first": fmt(w.first), "last": fmt(w.last)})
        print(f"{name}: {dict(w.counts)} window {fmt(data_start)} .. {fmt(data_end)}", file=sys.stderr)

    # Healthy: only the fault-free reference, as long as fault-free metric rows exist.
    healthy_minutes = args.healthy_minutes or ref.metric_minutes
    w = Writer()
    h_start, h_end = ref.emit(w, ref.start, healthy_minutes, "healthy")
    w.write(os.path.join(out, "healthy" + ext), args.gzip)
    manifest["files"].append({"file": "healthy" + ext, **dict(w.counts),
                              "first": fmt(w.first), "last": fmt(w.last),
                              "reference_start_unix_nanos": h_start, "reference_end_unix_nanos": h_end})
    print(f"healthy{ext}: {dict(w.counts)}", file=sys.stderr)

    manifest["anomalies"] = dict(stats)
    with open(os.path.join(out, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"stats: {dict(stats)}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- replay


def load_labels(data_dir: str) -> list[dict]:
    with open(os.path.join(data_dir, "labels.json"), encoding="utf-8") as f:
        return json.load(f)


def healthy_file(data_dir: str) -> str:
    """healthy.jsonl or healthy.jsonl.gz, as the manifest names it."""
    try:
        with open(os.path.join(data_dir, "manifest.json"), encoding="utf-8") as f:
            for entry in json.load(f)["files"]:
                if entry["file"].startswith("healthy."):
                    return entry["file"]
    except (OSError, KeyError, ValueError):
        pass
    return "healthy.jsonl.gz" if os.path.exists(os.path.join(data_dir, "healthy.jsonl.gz")) else "healthy.jsonl"


def items(data_dir: str) -> list[tuple[str, str]]:
    """(name, file) for every fault case, then the healthy file."""
    return [(c["case"], c["file"]) for c in load_labels(data_dir)] + [("healthy", healthy_file(data_dir))]


def cmd_replay(args) -> int:
    data = os.path.abspath(args.data)
    ev_dir = os.path.join(data, args.events)
    os.makedirs(ev_dir, exist_ok=True)
    bad = 0
    for name, file in items(data):
        cmd = [args.triage, "replay"]
        if args.config:
            cmd += ["--config", args.config]
        cmd.append(os.path.join(data, file))
        with open(os.path.join(ev_dir, name + ".jsonl"), "w", encoding="utf-8") as ev:
            p = subprocess.run(cmd, stdout=ev, stderr=subprocess.PIPE)
        err = p.stderr.decode(errors="replace")
        with open(os.path.join(ev_dir, name + ".stderr.txt"), "w", encoding="utf-8") as f:
            f.write(err)
        # triage replay's summary: "N lines: ... (K rejected); M incident events; ..."
        m = re.findall(r"\((\d+) rejected\)", err)
        rejected = sum(int(x) for x in m) if m else None
        summary = err.strip().splitlines()[-1] if err.strip() else ""
        print(f"{name}: exit {p.returncode}, rejected {rejected}: {summary}", file=sys.stderr)
        if p.returncode != 0 or rejected != 0:
            bad += 1
    print(f"events in {ev_dir}; {bad} item(s) failed, rejected items or printed no summary",
          file=sys.stderr)
    return 1 if bad else 0


# ---------------------------------------------------------------- score

# An incident is on time if opened_unix_nanos + LATENESS is the moment it would have
# paged live: replay stamps windows by event time, a live collector waits this long for
# late spans before closing a window.
LATENESS = 10 * NS
GRAPH_CACHE = "callgraph.json"
GRAPH_VERSION = 1


def open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def scan_case(path: str) -> dict:
    """Caller graph, services with spans and event time range of one converted file.

    An edge A -> B is a CLIENT or PRODUCER span of service A whose child (same trace,
    parentSpanId = its spanId) is a SERVER or CONSUMER span of service B != A."""
    spans = {}  # (trace, span) -> (service, kind)
    children = []  # (trace, parent, service, kind)
    services = set()
    first = last = None

    def see(t: int) -> None:
        nonlocal first, last
        first = t if first is None or t < first else first
        last = t if last is None or t > last else last

    with open_text(path) as f:
        for line in f:
            if not line.strip():
                continue
            req = json.loads(line)
            for rs in req.get("resourceSpans", []):
                svc = next((a["value"].get("stringValue") for a in rs["resource"]["attributes"]
                            if a["key"] == "service.name"), "?")
                services.add(svc)
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        kind = sp.get("kind", 0)
                        spans[(sp["traceId"], sp["spanId"])] = (svc, kind)
                        if sp.get("parentSpanId"):
                            children.append((sp["traceId"], sp["parentSpanId"], svc, kind))
                        see(int(sp["startTimeUnixNano"]))
                        see(int(sp["endTimeUnixNano"]))
            for rl in req.get("resourceLogs", []):
                for sl in rl.get("scopeLogs", []):
                    for r in sl.get("logRecords", []):
                        see(int(r["timeUnixNano"]))
            for rm in req.get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for m in sm.get("metrics", []):
                        for body in m.values():
                            if isinstance(body, dict):
                                for dp in body.get("dataPoints", []):
                                    see(int(dp["timeUnixNano"]))
    edges = Counter()
    for trace, parent, svc, kind in children:
        p = spans.get((trace, parent))
        if p and p[0] != svc and p[1] in (KIND_CLIENT, KIND_PRODUCER) and kind in (KIND_SERVER, KIND_CONSUMER):
            edges[(p[0], svc)] += 1
    return {"services": sorted(services), "first_unix_nanos": first, "last_unix_nanos": last,
            "edges": [[a, b, n] for (a, b), n in sorted(edges.items())]}


def case_graphs(data_dir: str, names: list[tuple[str, str]]) -> dict:
    """scan_case for every item, cached in DATA_DIR/callgraph.json (keyed by file size and mtime)."""
    path = os.path.join(data_dir, GRAPH_CACHE)
    try:
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
        if cache.get("version") != GRAPH_VERSION:
            cache = {}
    except (OSError, ValueError):
        cache = {}
    items_ = cache.setdefault("items", {})
    cache["version"] = GRAPH_VERSION
    changed = False
    for name, file in names:
        full = os.path.join(data_dir, file)
        st = os.stat(full)
        key = {"file": file, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        hit = items_.get(name)
        if hit and all(hit.get(k) == v for k, v in key.items()):
            continue
        print(f"caller graph: scanning {file}", file=sys.stderr)
        items_[name] = {**key, **scan_case(full)}
        changed = True
    if changed:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, path)
    return items_


def read_incidents(path: str) -> list[dict]:
    """One record per incident id, in order of first appearance: the snapshot of its
    `opened` event (or its first event), its last snapshot, and every service named by
    any of its events (service, services, root_causes[].service)."""
    by_id: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            inc = e["incident"]
            r = by_id.setdefault(inc["id"], {"id": inc["id"], "first": None, "named": set()})
            if r["first"] is None or (e.get("event") == "opened" and not r.get("seen_opened")):
                r["first"] = inc
            r["seen_opened"] = r.get("seen_opened") or e.get("event") == "opened"
            r["last"] = inc
            r["named"].update(named(inc))
            r["opened"] = inc.get("opened_unix_nanos") or r.get("opened") or inc.get("onset_unix_nanos")
    return list(by_id.values())


def named(inc: dict) -> set:
    out = {inc.get("service")} | set(inc.get("services") or [])
    out |= {rc.get("service") for rc in inc.get("root_causes") or []}
    out.discard(None)
    return out


def ranking(inc: dict) -> list[str]:
    """root_causes[].service in order; the incident's service alone when it has none."""
    rcs = [rc.get("service") for rc in inc.get("root_causes") or [] if rc.get("service")]
    return rcs or [inc.get("service")]


def short(svc: str | None) -> str:
    if not svc:
        return "-"
    return svc[3:] if svc.startswith("ts-") else svc


def secs(ns: float) -> str:
    return f"{ns / NS:.0f}"


def rate(n: int, hours: float) -> str:
    return f"{n / hours:.1f}" if hours > 0 else "-"


def cmd_score(args) -> int:
    data = os.path.abspath(args.data)
    ev_dir = os.path.join(data, args.events)
    labels = load_labels(data)
    names = items(data)
    graphs = case_graphs(data, names)
    missing = [n for n, _ in names if not os.path.exists(os.path.join(ev_dir, n + ".jsonl"))]
    if missing:
        raise SystemExit(f"no events for {', '.join(missing)} in {ev_dir} (run `replay` first)")

    rows = []
    tot = Counter()
    ttds = []
    ref_hours = ref_service_days = 0.0
    for c in labels:
        g = graphs[c["case"]]
        svc, inject = c["service"], c["inject_unix_nanos"]
        end = g["last_unix_nanos"]  # end of the case's recorded data
        callers = sorted({a for a, b, _ in g["edges"] if b == svc and a != svc})
        targets = {svc, *callers}
        incs = read_incidents(os.path.join(ev_dir, c["case"] + ".jsonl"))
        before = [i for i in incs if i["opened"] < inject]
        in_ref = [i for i in before if i["opened"] < c["reference_end_unix_nanos"]]
        inside = [i for i in incs if inject <= i["opened"] <= end]
        after = [i for i in incs if i["opened"] > end]
        hits = sorted((i for i in inside if i["named"] & targets), key=lambda i: i["opened"])
        already = [i for i in before if i["named"] & targets
                   and (i["last"].get("resolved_unix_nanos") or math.inf) > inject]
        hours = (inject - g["first_unix_nanos"]) / NS / 3600
        ref_hours += hours
        ref_service_days += hours / 24 * len(g["services"])
        tot["false_ref"] += len(in_ref)
        tot["false_pre"] += len(before) - len(in_ref)
        tot["after"] += len(after)
        tot["inside_other"] += len(inside) - len(hits)
        row = {
            "case": c["case"].replace(f"tt-{DATE}-", ""), "fault": c["fault_type"], "svc": short(svc),
            "callers": ", ".join(short(x) for x in callers) or "-",
            "window": secs(end - inject), "incidents": len(incs),
            "false": f"{len(in_ref)} / {len(before) - len(in_ref)}",
            "already": len(already), "other": len(inside) - len(hits), "after": len(after),
        }
        if hits:
            h = hits[0]
            ttd = h["opened"] + LATENESS - inject
            ttds.append(ttd)
            at_open, at_last = ranking(h["first"]), ranking(h["last"])
            a1, a3 = svc in at_open[:1], svc in at_open[:3]
            f1, f3 = svc in at_last[:1], svc in at_last[:3]
            tot["detected"] += 1
            tot["as1"] += a1
            tot["as3"] += a3
            tot["as1_last"] += f1
            tot["as3_last"] += f3
            via = sorted(h["named"] & targets, key=lambda x: (x != svc, x))
            row.update(detected="yes", ttd=secs(ttd),
                       via=f"{short(h['first'].get('service'))} ({'/'.join(h['first'].get('kinds') or [])})"
                           f"; names {', '.join(short(x) for x in via)}",
                       top=", ".join(short(x) for x in at_open[:3]),
                       as_open=f"{int(a1)} / {int(a3)}", as_last=f"{int(f1)} / {int(f3)}")
        else:
            row.update(detected="no", ttd="-", via="-", top="-", as_open="0 / 0", as_last="0 / 0")
        rows.append(row)

    hg = graphs["healthy"]
    h_incs = read_incidents(os.path.join(ev_dir, "healthy.jsonl"))
    h_after = sum(1 for i in h_incs if i["opened"] > hg["last_unix_nanos"])
    h_hours = (hg["last_unix_nanos"] - hg["first_unix_nanos"]) / NS / 3600
    h_sd = h_hours / 24 * len(hg["services"])

    n = len(labels)
    print(f"## Nezha TrainTicket {DATE}: {n} faults, events from {args.events}/")
    print()
    print(f"Detection: an incident opened between the inject time and the case's last recorded "
          f"event that names (service, services, root_causes) the faulty service or a direct "
          f"caller (caller graph from the case's CLIENT->SERVER spans). Time to detect = "
          f"opened + {LATENESS // NS} s - inject. AS@k on that first incident's root_causes "
          f"(its service when it has none), at its `opened` event and at its last event; "
          f"a missed fault counts 0. False incidents: opened before the inject "
          f"(reference block / recorded pre-inject data), and every incident of healthy.jsonl.")
    print()
    print("| case | fault | service | direct callers | window s | incidents | false ref / pre | "
          "open at inject | detected | TTD s | first hit: service (kinds); names | "
          "root causes at open | AS@1 / AS@3 at open | AS@1 / AS@3 last | other in window | after data |")
    print("|" + "---|" * 16)
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in (
            "case", "fault", "svc", "callers", "window", "incidents", "false", "already", "detected",
            "ttd", "via", "top", "as_open", "as_last", "other", "after")) + " |")
    print()
    ttds.sort()
    med = ttds[len(ttds) // 2] if len(ttds) % 2 else (
        (ttds[len(ttds) // 2 - 1] + ttds[len(ttds) // 2]) / 2 if ttds else None)
    false_before = tot["false_ref"] + tot["false_pre"]
    print("| total | value |")
    print("|---|---|")
    print(f"| detected | {tot['detected']}/{n} |")
    if ttds:
        print(f"| time to detect s: median / mean / min / max | {secs(med)} / "
              f"{secs(sum(ttds) / len(ttds))} / {secs(ttds[0])} / {secs(ttds[-1])} |")
    else:
        print("| time to detect s | - |")
    print(f"| AS@1 / AS@3 at open | {tot['as1'] / n:.2f} / {tot['as3'] / n:.2f} "
          f"({tot['as1']}/{n}, {tot['as3']}/{n}) |")
    print(f"| AS@1 / AS@3 at the incident's last event | {tot['as1_last'] / n:.2f} / "
          f"{tot['as3_last'] / n:.2f} ({tot['as1_last']}/{n}, {tot['as3_last']}/{n}) |")
    print(f"| other incidents opened in fault windows (not naming faulty service or a caller) | "
          f"{tot['inside_other']} |")
    print(f"| incidents opened after a case's last event (end-of-data flush, not scored) | {tot['after']} |")
    print(f"| false before the fault (reference block + pre-inject) | {false_before} "
          f"({tot['false_ref']} + {tot['false_pre']}) in {ref_hours * 60:.0f} min: "
          f"{rate(false_before, ref_hours)}/hour, {rate(false_before, ref_service_days)}/service-day |")
    print(f"| false on healthy.jsonl ({len(hg['services'])} services) | {len(h_incs)} in "
          f"{h_hours * 60:.1f} min ({h_after} opened after its last event): "
          f"{rate(len(h_incs), h_hours)}/hour, {rate(len(h_incs), h_sd)}/service-day |")
    return 0


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    doc = __doc__.split("\n\n")
    if not argv or argv[0] not in ("convert", "replay", "score", "-h", "--help"):
        # The original form, `nezha.py SOURCE OUT_DIR [options]`, is `convert`.
        argv = ["convert"] + argv
    ap = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_convert_args(sub.add_parser("convert", help="Nezha repository -> case files, labels.json"))
    r = sub.add_parser("replay", help="run `triage replay` on every case and healthy.jsonl")
    r.add_argument("data", help="the converted data directory (labels.json, cases)")
    r.add_argument("--triage", required=True, help="the triage binary")
    r.add_argument("--config", help="config file passed to `triage replay --config`")
    r.add_argument("--events", default="events", help="events subdirectory of DATA (default events)")
    s = sub.add_parser("score", help="detection, time to detect, false incidents, AS@1/AS@3")
    s.add_argument("data", help="the converted data directory")
    s.add_argument("--events", default="events", help="events subdirectory of DATA (default events)")
    args = ap.parse_args(argv)
    return {"convert": cmd_convert, "replay": cmd_replay, "score": cmd_score}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
