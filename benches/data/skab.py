#!/usr/bin/env python3
"""Convert the Skoltech Anomaly Benchmark (SKAB) into OTLP metrics JSON lines for `triage replay`.

SKAB (https://github.com/waico/SKAB, folder `data/`) holds 1 Hz readings of the
sensors of a water-circulation testbed, one CSV file per experiment (`;`
separated, columns `datetime`, eight sensor columns, and in the experiments
`anomaly` and `changepoint` labels). Each CSV file becomes one case file
`<out>/<folder>_<n>.jsonl` (`anomaly-free/anomaly-free.csv` becomes
`<out>/anomaly-free.jsonl`, a healthy case): one OTLP/JSON
ExportMetricsServiceRequest per line, one line per second of the file holding a
gauge data point of every sensor, in event-time order. The labels go to
`<out>/labels.json`, and a replay config that makes triage watch the `skab.*`
gauges to `<out>/triage-skab.yaml` (the default config watches only
semantic-convention memory/CPU/pool/runtime/duration metrics, so with it the
SKAB gauges are recorded but never judged).

The CSV datetimes are local times of the testbed without a zone; they are
taken as UTC.

Subcommands (Python 3.11 standard library only):

  convert SOURCE OUT       SOURCE: a bare git directory of waico/SKAB (as
                           the session's fetch leaves it), a checkout of the
                           repository, or a copy of its `data/` folder.
  replay OUT               Run `triage replay` on every case in OUT, writing
                           OUT/events/<case>.jsonl and <case>.stderr.txt.
  score OUT                Per case: incidents opened, when, relative to the
                           anomaly intervals; plus a point-wise F1/FAR/MAR
                           computed the way SKAB's leaderboard does.

Example:
  python3 benches/data/skab.py convert /work/.mirror/waico+SKAB/repo /work/data/skab
  python3 benches/data/skab.py replay /work/data/skab --triage /work/bin/triage-before
  python3 benches/data/skab.py score /work/data/skab
"""

from __future__ import annotations

import argparse
import calendar
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import time

NANOS = 1_000_000_000

# SKAB's published layout (v0.9): the files a complete copy holds.
EXPECTED = (
    ["anomaly-free/anomaly-free.csv"]
    + [f"other/{n}.csv" for n in range(1, 15)]
    + [f"valve1/{n}.csv" for n in range(0, 16)]
    + [f"valve2/{n}.csv" for n in range(0, 4)]
)

# Rows at the start of every file that SKAB's notebooks use for training
# (sklearn train_test_split(train_size=400, shuffle=False)); the leaderboard
# is computed on the rest.
SKAB_TRAIN_ROWS = 400

# Column -> (metric name, UCUM unit, description). Units per SKAB's README.
SENSORS = {
    "Accelerometer1RMS": (
        "skab.accelerometer1.rms",
        "[g]",
        "Vibration acceleration (RMS) of the pump, sensor 1, in standard gravities.",
    ),
    "Accelerometer2RMS": (
        "skab.accelerometer2.rms",
        "[g]",
        "Vibration acceleration (RMS) of the pump, sensor 2, in standard gravities.",
    ),
    "Current": ("skab.current", "A", "Current drawn by the electric motor."),
    "Pressure": ("skab.pressure", "bar", "Pressure in the loop after the water pump."),
    "Temperature": ("skab.temperature", "Cel", "Temperature of the motor body."),
    "Thermocouple": (
        "skab.thermocouple",
        "Cel",
        "Temperature of the fluid in the circulation loop.",
    ),
    "Voltage": ("skab.voltage", "V", "Voltage on the electric motor."),
    "Volume Flow RateRMS": (
        "skab.volume_flow_rate.rms",
        "l/min",
        "Circulation flow rate of the fluid in the loop (RMS).",
    ),
}
LABEL_COLUMNS = ("anomaly", "changepoint")
TIME_COLUMN = "datetime"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SCOPE = {"name": "skab-convert", "version": "1"}
CONFIG_NAME = "triage-skab.yaml"


def metric_for(column: str) -> tuple[str, str, str]:
    """The metric of a sensor column; unknown columns get a derived name and no unit."""
    if column in SENSORS:
        return SENSORS[column]
    rms = column.endswith("RMS")
    base = column[:-3] if rms else column
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", base)
    name = "skab." + "_".join(w.lower() for w in words) + (".rms" if rms else "")
    return name, "", f"SKAB column {column!r}."


# ---------------------------------------------------------------- sources


class Source:
    """The CSV files of SKAB's data folder, from a bare git dir, a checkout or a data/ copy."""

    def __init__(self, path: str, rev: str = "HEAD"):
        self.path = os.path.abspath(path)
        self.rev = rev
        self.git = None
        self.commit = None
        if os.path.isdir(os.path.join(self.path, "data")):
            self.root = os.path.join(self.path, "data")
        elif os.path.isfile(os.path.join(self.path, "HEAD")) and os.path.isdir(
            os.path.join(self.path, "objects")
        ):
            self.git = self.path
            self.commit = self._git("rev-parse", rev).decode().strip()
            self.root = None
        else:
            self.root = self.path
        if self.commit is None and os.path.isdir(os.path.join(self.path, ".git")):
            try:
                self.commit = (
                    subprocess.run(
                        ["git", "-C", self.path, "rev-parse", "HEAD"],
                        check=True,
                        capture_output=True,
                    )
                    .stdout.decode()
                    .strip()
                )
            except (OSError, subprocess.CalledProcessError):
                pass

    def _git(self, *args: str) -> bytes:
        return subprocess.run(
            ["git", f"--git-dir={self.git}", *args], check=True, capture_output=True
        ).stdout

    def files(self) -> list[str]:
        """Paths relative to data/, e.g. valve1/0.csv."""
        if self.git:
            out = self._git("ls-tree", "-r", "--name-only", self.rev, "--", "data")
            names = [n[len("data/") :] for n in out.decode().splitlines()]
        else:
            names = []
            for d, _, fs in os.walk(self.root):
                for f in fs:
                    names.append(os.path.relpath(os.path.join(d, f), self.root))
        return sorted(n.replace(os.sep, "/") for n in names if n.endswith(".csv"))

    def read(self, rel: str) -> bytes | None:
        """The file's bytes, or None when absent or only a Git LFS/annex pointer."""
        try:
            if self.git:
                data = self._git("show", f"{self.rev}:data/{rel}")
            else:
                with open(os.path.join(self.root, rel), "rb") as f:
                    data = f.read()
        except (OSError, subprocess.CalledProcessError):
            return None
        if data.startswith(b"version https://git-lfs") or data.startswith(b"/annex/"):
            return None
        return data


def case_name(rel: str) -> str:
    folder, _, fname = rel.rpartition("/")
    stem = fname[:-4]
    if not folder or folder == stem:
        return stem
    return f"{folder.replace('/', '_')}_{stem}"


def case_sort_key(rel: str):
    folder, _, fname = rel.rpartition("/")
    stem = fname[:-4]
    return (folder != "anomaly-free", folder, int(stem) if stem.isdigit() else -1, stem)


# ---------------------------------------------------------------- convert


def parse_time(text: str) -> int:
    t = time.strptime(text.strip(), TIME_FORMAT)
    return calendar.timegm(t) * NANOS  # local testbed time taken as UTC


def runs(times: list[int], flags: list[bool]) -> list[dict]:
    """Maximal runs of flagged rows: start and end are the first and last flagged rows' times."""
    out = []
    for i, on in enumerate(flags):
        if on and (i == 0 or not flags[i - 1]):
            out.append({"start_unix_nano": times[i], "first_row": i})
        if on:
            out[-1]["end_unix_nano"] = times[i]
            out[-1]["last_row"] = i
    for r in out:
        r["points"] = r["last_row"] - r["first_row"] + 1
        r["duration_s"] = (r["end_unix_nano"] - r["start_unix_nano"]) / NANOS
    return out


def request_line(service: str, case: str, t: int, values: list[tuple[tuple, float]]) -> str:
    metrics = []
    for (name, unit, desc), v in values:
        metrics.append(
            {
                "name": name,
                "description": desc,
                "unit": unit,
                "gauge": {
                    "dataPoints": [
                        {
                            "attributes": [],
                            "startTimeUnixNano": "0",
                            "timeUnixNano": str(t),
                            "asDouble": v,
                        }
                    ]
                },
            }
        )
    req = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": service}},
                        {"key": "skab.case", "value": {"stringValue": case}},
                    ]
                },
                "scopeMetrics": [{"scope": SCOPE, "metrics": metrics}],
            }
        ]
    }
    return json.dumps(req, separators=(",", ":"), allow_nan=False)


def convert_file(rel: str, data: bytes, out_dir: str, service: str) -> dict:
    case = case_name(rel)
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";")
    header = [h.strip() for h in next(reader)]
    if TIME_COLUMN not in header:
        raise ValueError(f"{rel}: no {TIME_COLUMN!r} column in {header}")
    ti = header.index(TIME_COLUMN)
    label_idx = {c: header.index(c) for c in LABEL_COLUMNS if c in header}
    sensor_idx = [
        (i, metric_for(c)) for i, c in enumerate(header) if i != ti and c not in label_idx
    ]
    rows = []
    for n, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{rel}:{n}: {len(row)} fields, header has {len(header)}")
        rows.append((parse_time(row[ti]), n, row))
    ordered = all(a[0] < b[0] for a, b in zip(rows, rows[1:]))
    rows.sort(key=lambda r: (r[0], r[1]))  # event-time order (stable)
    times = [r[0] for r in rows]
    duplicates = sum(1 for a, b in zip(times, times[1:]) if a == b)
    gaps = [(b - a) // NANOS for a, b in zip(times, times[1:]) if b - a > NANOS]
    skipped = 0
    labels = {c: [] for c in label_idx}
    path = os.path.join(out_dir, case + ".jsonl")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for t, _, row in rows:
            values = []
            for i, m in sensor_idx:
                try:
                    v = float(row[i])
                except ValueError:
                    v = math.nan
                if math.isfinite(v):
                    values.append((m, v))
                else:
                    skipped += 1
            if values:
                f.write(request_line(service, case, t, values) + "\n")
            for c, i in label_idx.items():
                labels[c].append(float(row[i] or 0) == 1.0)
    os.replace(tmp, path)
    first, last = times[0], times[-1]
    entry = {
        "case": case,
        "file": case + ".jsonl",
        "source": "data/" + rel,
        "healthy": "anomaly" not in label_idx,
        "points": len(rows),
        "data_points": len(rows) * len(sensor_idx) - skipped,
        "metrics": [m[0] for _, m in sensor_idx],
        "start_unix_nano": first,
        "end_unix_nano": last,
        "duration_s": (last - first) / NANOS,
        "gaps": {"count": len(gaps), "longest_s": max(gaps, default=0)},
        "duplicate_timestamps": duplicates,
        "reordered": not ordered,
        "skipped_values": skipped,
        "test_start_unix_nano": times[SKAB_TRAIN_ROWS] if len(times) > SKAB_TRAIN_ROWS else None,
        "anomaly_intervals": runs(times, labels["anomaly"]) if "anomaly" in labels else [],
        "anomaly_points": sum(labels.get("anomaly", [])),
        "changepoints_unix_nano": [t for t, c in zip(times, labels.get("changepoint", [])) if c],
    }
    return entry


def write_config(out_dir: str) -> None:
    text = """\
# triage replay config for SKAB cases (written by benches/data/skab.py):
# the embedded defaults plus the SKAB sensor gauges watched for level shifts.
# The defaults watch only semantic-convention memory/CPU/pool/runtime/duration
# metrics, so without this the skab.* gauges are recorded but never judged.
detect:
  metrics:
    watch:
      - "skab.*"
"""
    with open(os.path.join(out_dir, CONFIG_NAME), "w", encoding="utf-8") as f:
        f.write(text)


def cmd_convert(args) -> int:
    src = Source(args.source, args.rev)
    os.makedirs(args.out, exist_ok=True)
    files = src.files()
    if not files:
        print(f"no CSV files under {args.source}", file=sys.stderr)
        return 1
    missing = [f for f in EXPECTED if f not in files]
    cases = []
    for rel in sorted(files, key=case_sort_key):
        data = src.read(rel)
        if data is None:
            missing.append(rel)
            continue
        entry = convert_file(rel, data, args.out, args.service)
        cases.append(entry)
        iv = ", ".join(
            f"{(r['start_unix_nano'] - entry['start_unix_nano']) // NANOS}-"
            f"{(r['end_unix_nano'] - entry['start_unix_nano']) // NANOS}s"
            for r in entry["anomaly_intervals"]
        )
        print(
            f"{entry['file']:<26} {entry['points']:>5} points {entry['duration_s']:>7.0f} s"
            f"  anomaly {iv or '-'}",
            file=sys.stderr,
        )
    for m in sorted(set(missing)):
        print(f"MISSING: data/{m} (absent or a large-file pointer)", file=sys.stderr)
    labels = {
        "dataset": "SKAB (Skoltech Anomaly Benchmark) v0.9, https://github.com/waico/SKAB",
        "source": src.path,
        "commit": src.commit,
        "service_name": args.service,
        "time_zone": "CSV datetimes are testbed local times without a zone; taken as UTC",
        "interval_end": "end_unix_nano is the time of the last row with anomaly == 1 (inclusive)",
        "skab_train_rows": SKAB_TRAIN_ROWS,
        "metrics": {c: {"name": n, "unit": u} for c, (n, u, _) in SENSORS.items()},
        "config": CONFIG_NAME,
        "missing": sorted(set(missing)),
        "cases": cases,
    }
    with open(os.path.join(args.out, "labels.json"), "w", encoding="utf-8") as f:
        json.dump(labels, f, indent=1)
        f.write("\n")
    write_config(args.out)
    print(
        f"wrote {len(cases)} cases, labels.json and {CONFIG_NAME} to {args.out}"
        + (f"; {len(set(missing))} missing" if missing else ""),
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------- replay


def load_labels(out_dir: str) -> dict:
    with open(os.path.join(out_dir, "labels.json"), encoding="utf-8") as f:
        return json.load(f)


def cmd_replay(args) -> int:
    labels = load_labels(args.out)
    ev_dir = os.path.join(args.out, args.events)
    os.makedirs(ev_dir, exist_ok=True)
    config = args.config
    if config is None and not args.default_config:
        config = os.path.join(args.out, labels.get("config", CONFIG_NAME))
    bad = 0
    for c in labels["cases"]:
        cmd = [args.triage, "replay"]
        if config:
            cmd += ["--config", config]
        cmd += [os.path.join(args.out, c["file"])]
        ev_path = os.path.join(ev_dir, c["case"] + ".jsonl")
        with open(ev_path, "w", encoding="utf-8") as ev:
            p = subprocess.run(cmd, stdout=ev, stderr=subprocess.PIPE, cwd=args.out)
        err = p.stderr.decode(errors="replace")
        with open(os.path.join(ev_dir, c["case"] + ".stderr.txt"), "w", encoding="utf-8") as f:
            f.write(err)
        m = re.search(r"\((\d+) rejected\)", err)
        rejected = int(m.group(1)) if m else None
        summary = err.strip().splitlines()[-1] if err.strip() else ""
        print(f"{c['case']:<20} exit {p.returncode} rejected {rejected}: {summary}", file=sys.stderr)
        if p.returncode != 0 or rejected != 0:
            bad += 1
    print(f"events in {ev_dir}; {bad} case(s) failed or rejected items", file=sys.stderr)
    return 1 if bad else 0


# ---------------------------------------------------------------- score


def incidents(path: str) -> list[dict]:
    """One record per incident id: first open time, onset, last resolved time, series."""
    by_id: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            inc = e["incident"]
            r = by_id.setdefault(
                inc["id"], {"id": inc["id"], "series": set(), "kinds": set()}
            )
            r["onset"] = inc.get("onset_unix_nanos")
            r["opened"] = inc.get("opened_unix_nanos")
            r["resolved"] = inc.get("resolved_unix_nanos")
            r["kinds"].update(inc.get("kinds", []))
            for a in inc.get("anomalies", []):
                r["series"].add(a.get("series", "?"))
    return sorted(by_id.values(), key=lambda r: (r["opened"] or 0))


def cmd_score(args) -> int:
    labels = load_labels(args.out)
    ev_dir = os.path.join(args.out, args.events)
    grace = int(args.grace * NANOS)
    rows = []
    pw = {"alert": [0, 0, 0, 0], "onset": [0, 0, 0, 0]}  # TP, TN, FP, FN on SKAB's test rows
    tot = {"cases": 0, "found": 0, "false": 0, "healthy_false": 0, "ttd": []}
    for c in labels["cases"]:
        path = os.path.join(ev_dir, c["case"] + ".jsonl")
        if not os.path.exists(path):
            print(f"{c['case']}: no events file {path}", file=sys.stderr)
            continue
        incs = incidents(path)
        t0 = c["start_unix_nano"]
        ivs = c["anomaly_intervals"]
        found, false, ttd = [], [], None
        for inc in incs:
            hit = any(
                iv["start_unix_nano"] <= inc["opened"] <= iv["end_unix_nano"] + grace
                for iv in ivs
            )
            (found if hit else false).append(inc)
        if ivs and found:
            ttd = (min(i["opened"] for i in found) - ivs[0]["start_unix_nano"]) / NANOS
        # point-wise, as SKAB's binary metric: a row is predicted anomalous while an
        # incident is open; rows after the first 400 of the file only.
        if not c["healthy"]:
            test_start = c["test_start_unix_nano"]
            # the rows' times, from the case file (one line per row)
            times = []
            with open(os.path.join(args.out, c["file"]), encoding="utf-8") as f:
                for line in f:
                    m = re.search(r'"timeUnixNano":"(\d+)"', line)
                    times.append(int(m.group(1)))
            for key in ("alert", "onset"):
                spans = [
                    (inc["opened"] if key == "alert" else inc["onset"], inc["resolved"] or math.inf)
                    for inc in incs
                ]
                for t in times:
                    if test_start is None or t < test_start:
                        continue
                    truth = any(iv["start_unix_nano"] <= t <= iv["end_unix_nano"] for iv in ivs)
                    pred = any(a <= t < b for a, b in spans)
                    k = 0 if truth and pred else 1 if not truth and not pred else 2 if pred else 3
                    pw[key][k] += 1
        tot["cases"] += 1
        tot["false"] += len(false)
        if c["healthy"]:
            tot["healthy_false"] += len(false)
        if ivs and found:
            tot["found"] += 1
            tot["ttd"].append(ttd)
        rel = lambda t: f"{(t - t0) / NANOS:.0f}"  # noqa: E731
        iv_text = ", ".join(
            f"{rel(iv['start_unix_nano'])}-{rel(iv['end_unix_nano'])}" for iv in ivs
        ) or "healthy"
        opened = "; ".join(
            f"{rel(i['opened'])}"
            + (f"-{rel(i['resolved'])}" if i["resolved"] else "-open")
            + f" ({', '.join(sorted(i['series']))[:60]})"
            for i in incs
        )
        rows.append(
            (
                c["case"],
                c["points"],
                c["duration_s"],
                iv_text,
                len(incs),
                "yes" if found else ("-" if not ivs else "no"),
                "-" if ttd is None else f"{ttd:.0f}",
                len(false),
                opened or "-",
            )
        )
    print(
        "| case | points | duration s | anomaly (s from start) | incidents | found | TTD s | false | incidents opened-resolved (s from start; series) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    anomalous = sum(1 for c in labels["cases"] if c["anomaly_intervals"])
    ttds = sorted(tot["ttd"])
    med = ttds[len(ttds) // 2] if ttds else None
    print()
    print(
        f"found {tot['found']}/{anomalous} anomalous cases (an incident opened between the "
        f"anomaly's start and {args.grace:.0f} s after its end); median time to detect "
        f"{med if med is None else f'{med:.0f} s'}; {tot['false']} false incidents "
        f"({tot['healthy_false']} on the healthy case)"
    )
    for key, what in (("alert", "opened..resolved"), ("onset", "onset..resolved")):
        tp, tn, fp, fn = pw[key]
        f1 = tp / (tp + (fn + fp) / 2) if tp + fn + fp else 0.0
        far = 100 * fp / (fp + tn) if fp + tn else 0.0
        mar = 100 * fn / (fn + tp) if fn + tp else 0.0
        print(
            f"point-wise on SKAB's test rows (rows 401.. of each anomalous file), a row flagged "
            f"while an incident is {what}: F1 {f1:.2f}, FAR {far:.2f} %, MAR {mar:.2f} % "
            f"(TP {tp}, TN {tn}, FP {fp}, FN {fn})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="CSV files -> case files, labels.json, triage-skab.yaml")
    c.add_argument("source", help="bare git dir of waico/SKAB, a checkout, or its data/ folder")
    c.add_argument("out", help="output directory, e.g. /work/data/skab (not inside the repo)")
    c.add_argument("--rev", default="HEAD", help="git revision when SOURCE is a git dir")
    c.add_argument("--service", default="skab-testbed", help="resource service.name")
    c.set_defaults(func=cmd_convert)
    r = sub.add_parser("replay", help="run `triage replay` on every case")
    r.add_argument("out")
    r.add_argument("--triage", default="triage", help="the triage binary")
    r.add_argument("--config", help=f"config file (default: OUT/{CONFIG_NAME})")
    r.add_argument("--default-config", action="store_true", help="pass no --config")
    r.add_argument("--events", default="events", help="events folder under OUT")
    r.set_defaults(func=cmd_replay)
    s = sub.add_parser("score", help="found / time to detect / false alarms per case")
    s.add_argument("out")
    s.add_argument("--events", default="events", help="events folder under OUT")
    s.add_argument(
        "--grace", type=float, default=60.0, help="seconds after an anomaly's end still counted"
    )
    s.set_defaults(func=cmd_score)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
