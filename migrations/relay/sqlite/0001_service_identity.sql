-- Records which service owns this database, so a misconfigured URL cannot make one service
-- open (or migrate) another's tables. Exactly one row, written at first start.
CREATE TABLE keymesh_service (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    service TEXT NOT NULL CHECK (service IN ('management', 'vault', 'relay')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
