-- The node's schema version 1 (lua/aitbc/node/store.lua, MIGRATIONS[1]) as
-- the first aitbc wrote it, kept here unchanged: tests/migration_spec.lua
-- builds a version-1 database with it and checks that a node of today
-- migrates it to the current schema with its rows intact.
CREATE TABLE api_keys (
  key_id TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, name TEXT,
  environment TEXT NOT NULL DEFAULT 'default', created_at REAL NOT NULL,
  expires_at REAL, revoked_at REAL, revoked_reason TEXT);
CREATE TABLE audit (
  id INTEGER PRIMARY KEY, time REAL NOT NULL, key_id TEXT, role TEXT, method TEXT NOT NULL,
  route TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, remote TEXT, request_id TEXT);
CREATE INDEX audit_time ON audit(time);
CREATE INDEX audit_key ON audit(key_id, time);
CREATE TABLE miners (
  miner_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, capabilities TEXT NOT NULL,
  concurrency INTEGER NOT NULL DEFAULT 1, region TEXT, price_units INTEGER,
  payout_address TEXT, status TEXT NOT NULL, registered_at REAL NOT NULL, last_seen REAL NOT NULL,
  jobs_completed INTEGER NOT NULL DEFAULT 0, jobs_failed INTEGER NOT NULL DEFAULT 0,
  session_token TEXT NOT NULL);
CREATE INDEX miners_key ON miners(key_id);
CREATE TABLE jobs (
  job_id TEXT PRIMARY KEY, client_key_id TEXT NOT NULL, state TEXT NOT NULL,
  payload TEXT NOT NULL, model TEXT, constraints TEXT NOT NULL, ttl_seconds INTEGER NOT NULL,
  requested_at REAL NOT NULL, expires_at REAL NOT NULL, started_at REAL, finished_at REAL,
  miner_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, result TEXT, metrics TEXT, error TEXT,
  receipt TEXT) WITHOUT ROWID;
-- Partial indexes hold only live jobs, so a submit touches few pages
-- and the queue, running-job and expiry look-ups stay small.
CREATE INDEX jobs_queue ON jobs(requested_at) WHERE state = 'QUEUED';
CREATE INDEX jobs_running ON jobs(miner_id) WHERE state = 'RUNNING';
CREATE INDEX jobs_live_expiry ON jobs(expires_at) WHERE state IN ('QUEUED', 'RUNNING');
CREATE INDEX jobs_client ON jobs(client_key_id, requested_at);
