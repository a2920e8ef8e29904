-- Seed the chain heads so the first appends lock an existing row (PostgreSQL's FOR UPDATE
-- locks nothing when the row is missing, and concurrent first appends would collide).
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')
ON CONFLICT (id) DO NOTHING;
INSERT INTO revocation_head (id, seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
