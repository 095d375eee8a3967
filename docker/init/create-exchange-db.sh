#!/bin/bash
# The exchange metadata store: its own database and user next to Airflow's metadata DB.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -v pw="$POSTGRES_PASSWORD" --username "$POSTGRES_USER" <<'SQL'
CREATE USER exchange PASSWORD :'pw';
CREATE DATABASE exchange OWNER exchange ENCODING 'UTF8' TEMPLATE template0;
SQL
