#!/usr/bin/env bash
# Run once by the postgres image, on an empty data directory: one role and one database per
# Keymesh service, with the name and password its own URL carries (the same file the service
# reads as *_DATABASE_URL_FILE), so the two cannot disagree. A service's role owns its database
# and can connect to no other: each service keeps its own tables (docs/threat-model.md).
set -euo pipefail

for service in management vault relay; do
  file=/run/secrets/${service}-database-url
  if [[ ! -r $file ]]; then
    echo "10-keymesh-databases: cannot read $file: create deploy/compose/secrets/${service}-database-url (README.md)" >&2
    exit 1
  fi
  url=$(<"$file")
  url=${url%$'\n'}
  # postgres://USER:PASSWORD@HOST:PORT/DATABASE[?options]; the password in URL-safe characters
  # (hex from openssl rand), so that it needs no percent-decoding here.
  re='^postgres(ql)?://([a-z_][a-z0-9_]*):([A-Za-z0-9._~-]+)@[^/]+/([a-z_][a-z0-9_]*)(\?.*)?$'
  if [[ ! $url =~ $re ]]; then
    echo "10-keymesh-databases: $file is not postgres://USER:PASSWORD@postgres:5432/DATABASE with a hex password (README.md)" >&2
    exit 1
  fi
  user=${BASH_REMATCH[2]}
  password=${BASH_REMATCH[3]}
  database=${BASH_REMATCH[4]}
  # psql quotes the variables itself (:"name" as an identifier, :'value' as a literal).
  psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$user" -v password="$password" -v database="$database" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"role";
-- PUBLIC may connect to every database by default: only the owner may connect to this one.
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
SQL
  echo "10-keymesh-databases: role and database $database for $service created"
done
