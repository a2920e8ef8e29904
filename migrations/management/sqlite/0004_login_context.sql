-- What the confirm page shows before a link is used: where the request came from, and for the
-- desktop app the match code the app displays (so a person approving a link can tell that the
-- sign-in they approve is the one on their own screen).
ALTER TABLE login_requests ADD COLUMN requested_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE login_requests ADD COLUMN match_code TEXT NOT NULL DEFAULT '';
