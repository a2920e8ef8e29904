-- Approval requests and the reviewers' decisions. A request is decided by its policy's
-- thresholds (copied onto the request when it is made, so a policy change never re-decides
-- old requests); decisions are final; an approved request is executed at most once
-- (status moves from 'approved' to 'executed' in one conditional update).
CREATE TABLE approval_requests (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    params TEXT NOT NULL,
    reason TEXT NOT NULL,
    requester TEXT NOT NULL,
    requester_user TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'executed')),
    approvals_needed INTEGER NOT NULL,
    denials_needed INTEGER NOT NULL,
    reviewer_roles TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    decided_at_ms INTEGER,
    executed_at_ms INTEGER
);
CREATE INDEX approval_requests_status ON approval_requests (status, created_at_ms);
CREATE INDEX approval_requests_requester ON approval_requests (requester_user, created_at_ms);

CREATE TABLE approval_decisions (
    request_id TEXT NOT NULL REFERENCES approval_requests (id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    reason TEXT NOT NULL,
    decided_at_ms INTEGER NOT NULL,
    PRIMARY KEY (request_id, reviewer)
);
