-- How far each other service's audit log has been copied into the central chain.
CREATE TABLE audit_imports (
    service TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
