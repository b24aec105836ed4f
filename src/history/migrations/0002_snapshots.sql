-- Migration 2: snapshots of the detection state (baselines, hysteresis,
-- open incidents), so a restarted collector alerts without a new warm-up.

CREATE TABLE snapshots (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    taken_unix_nanos       INTEGER NOT NULL,  -- wall clock
    window_nanos           INTEGER NOT NULL,  -- store.window when taken
    next_window_unix_nanos INTEGER,           -- start of the next window to judge
    n_series               INTEGER NOT NULL,
    incidents              TEXT NOT NULL      -- hysteresis state and open incidents, JSON
);

CREATE TABLE snapshot_series (
    snapshot_id          INTEGER NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    kind                 TEXT NOT NULL,       -- operation | edge | metric | log
    service              TEXT NOT NULL,
    name                 TEXT NOT NULL,
    last_data_unix_nanos INTEGER NOT NULL,    -- start of the last window with data
    detector             BLOB NOT NULL,       -- the series' baseline: JSON, zlib-compressed
    detector_bytes       INTEGER NOT NULL,    -- its uncompressed length (for sqlar_uncompress)
    PRIMARY KEY (snapshot_id, kind, service, name)
) WITHOUT ROWID;
