#!/usr/bin/env python3
"""Convert the Nezha TrainTicket data of 2023-01-30 into OTLP JSON lines for `triage replay`.

Source: https://github.com/IntelligentDDS/Nezha (FSE'23), folders
`rca_data/2023-01-30` (17 labelled faults) and `construct_data/2023-01-30`
(fault-free reference). The other TrainTicket date, 2023-01-29, is held out:
this script never lists or reads it, and refuses to run on any other date.

Usage:
    python3 nezha.py SOURCE OUT_DIR [--reference-minutes 10] [--healthy-minutes 12]
                     [--span-status-from-logs] [--gzip]

SOURCE is either the bare git directory the session's fetch tool returns
(read with `git show HEAD:path`) or a checkout/extracted copy of the
repository. OUT_DIR gets one `<case>.jsonl` per fault, `healthy.jsonl`,
`labels.json` and `manifest.json`. Standard library only.

See benches/data/README.md for the mapping and the case construction.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    args = ap.parse_args()

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


if __name__ == "__main__":
    sys.exit(main())
