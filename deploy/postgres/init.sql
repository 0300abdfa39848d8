-- First-start setup of the postgres service (mounted into /docker-entrypoint-initdb.d/).
--
-- The image runs this once, as the superuser, when the postgres-data volume is empty; later starts
-- skip it. Passwords come from the container's environment (docker-compose.yml passes them from .env)
-- through psql's getenv command (psql 15+), so none is written here. Safe to run again by hand:
--   docker compose exec -T postgres psql -U postgres -v ON_ERROR_STOP=1 < deploy/postgres/init.sql
-- (with the same variables set in the container) creates only what is missing.

\set ON_ERROR_STOP on
\getenv unityplan_password UNITYPLAN_DB_PASSWORD
\getenv synapse_dk_password SYNAPSE_DK_DB_PASSWORD
\getenv synapse_ca_password SYNAPSE_CA_DB_PASSWORD

-- The admin of the appservices' database: owns it and the shared global and public schemas, and makes
-- each territory's own role (CREATEROLE) when `unityplan db migrate` runs with database.admin_url
-- (the migrate-<code> services). No running appservice logs in with it.
SELECT format('CREATE ROLE unityplan LOGIN CREATEROLE PASSWORD %L', :'unityplan_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'unityplan') \gexec
SELECT 'CREATE DATABASE unityplan OWNER unityplan ENCODING ''UTF8'''
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'unityplan') \gexec

-- TimescaleDB in the appservice's database, created here by the superuser; the migrations then find it
-- installed and turn global.audit_log into a hypertable.
\connect unityplan
CREATE EXTENSION IF NOT EXISTS timescaledb;
\connect postgres

-- Synapse of territory dk. Synapse needs a UTF8 database with C collation, hence template0.
SELECT format('CREATE ROLE synapse_dk LOGIN PASSWORD %L', :'synapse_dk_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'synapse_dk') \gexec
SELECT 'CREATE DATABASE synapse_dk OWNER synapse_dk ENCODING ''UTF8'' LC_COLLATE ''C'' LC_CTYPE ''C'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'synapse_dk') \gexec

-- Synapse of territory ca. Synapse needs a UTF8 database with C collation, hence template0.
SELECT format('CREATE ROLE synapse_ca LOGIN PASSWORD %L', :'synapse_ca_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'synapse_ca') \gexec
SELECT 'CREATE DATABASE synapse_ca OWNER synapse_ca ENCODING ''UTF8'' LC_COLLATE ''C'' LC_CTYPE ''C'' TEMPLATE template0'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'synapse_ca') \gexec
