-- Migration 1: incidents, their events, and change events.
--
-- Times are Unix nanoseconds (INTEGER); JSON columns hold the full value as
-- served by the API, so new fields need no migration.

CREATE TABLE incidents (
    id                  TEXT PRIMARY KEY,   -- service@onset_seconds
    service             TEXT NOT NULL,
    state               TEXT NOT NULL,      -- open | resolved
    severity            TEXT NOT NULL,      -- warning | critical
    kinds               TEXT NOT NULL,      -- JSON array, e.g. ["latency","error_rate"]
    summary             TEXT NOT NULL,
    onset_unix_nanos    INTEGER NOT NULL,
    opened_unix_nanos   INTEGER NOT NULL,
    resolved_unix_nanos INTEGER,            -- NULL while open
    updated_unix_nanos  INTEGER NOT NULL,   -- time of the latest event
    incident            TEXT NOT NULL       -- the latest full incident, JSON
);
CREATE INDEX incidents_by_onset ON incidents (onset_unix_nanos DESC, id DESC);
CREATE INDEX incidents_by_state ON incidents (state, resolved_unix_nanos);

CREATE TABLE incident_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after pruning
    incident_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,                      -- opened | updated | resolved
    at_unix_nanos INTEGER NOT NULL,                   -- wall clock when recorded
    incident      TEXT NOT NULL                       -- the incident as of this event, JSON
);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, seq);
CREATE INDEX incident_events_by_time ON incident_events (at_unix_nanos);

CREATE TABLE changes (
    id              INTEGER PRIMARY KEY,  -- the change log's id
    service         TEXT NOT NULL,
    kind            TEXT NOT NULL,        -- deploy | config | feature_flag | scale | infra
    version         TEXT,
    key             TEXT,
    value           TEXT,
    description     TEXT NOT NULL,
    time_unix_nanos INTEGER NOT NULL,     -- when the change happened
    link            TEXT,
    source          TEXT NOT NULL,        -- api | telemetry
    change          TEXT NOT NULL         -- the full change, JSON
);
CREATE INDEX changes_by_time ON changes (time_unix_nanos, id);
