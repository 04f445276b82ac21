--- The node's storage: every SQL statement the node runs lives here, behind
-- a narrow interface (keys, audit, miners, jobs), so that another backend
-- (PostgreSQL with FOR UPDATE SKIP LOCKED for several coordinators) can
-- replace this file.  SQLite in WAL mode; each change is one transaction;
-- writes from all worker threads are serialised by one process-wide lock.
local db = require "aitbc.db"
local json = require "aitbc.json"
local sys = require "aitbc.native.sys"

local M = {}

local Store = {}
Store.__index = Store

local function check(ok, err)
  if ok == nil then error("storage: " .. tostring(err), 0) end
  return ok
end

local MIGRATIONS = {
  [1] = [[
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
  ]],
  [2] = [[
    -- the GPU marketplace: listings offered by providers (API keys)
    CREATE TABLE listings (
      listing_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, miner_id TEXT, model TEXT NOT NULL, model_key TEXT NOT NULL,
      vram_gb REAL NOT NULL, count INTEGER NOT NULL, rate_units INTEGER NOT NULL, region TEXT, payout_address TEXT,
      status TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
    CREATE INDEX listings_model ON listings(model_key, rate_units);
    CREATE INDEX listings_key ON listings(key_id);
    ALTER TABLE miners ADD COLUMN jobs_expired INTEGER NOT NULL DEFAULT 0;
  ]],
  [3] = [[
    -- the chain: accounts, transactions (applied on acceptance, then sealed
    -- into blocks), blocks hash-linked and signed by the node
    CREATE TABLE chain_accounts (
      chain_id TEXT NOT NULL, address TEXT NOT NULL, balance INTEGER NOT NULL DEFAULT 0,
      staked INTEGER NOT NULL DEFAULT 0, nonce INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (chain_id, address)) WITHOUT ROWID;
    CREATE TABLE chain_txs (
      seq INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, chain_id TEXT NOT NULL, type TEXT NOT NULL,
      sender TEXT NOT NULL, recipient TEXT, amount INTEGER NOT NULL, nonce INTEGER NOT NULL, body TEXT NOT NULL,
      block_height INTEGER, received_at REAL NOT NULL);
    CREATE INDEX chain_txs_pending ON chain_txs(chain_id, seq) WHERE block_height IS NULL;
    CREATE INDEX chain_txs_sender ON chain_txs(sender, seq);
    CREATE INDEX chain_txs_recipient ON chain_txs(recipient, seq);
    CREATE TABLE chain_blocks (
      chain_id TEXT NOT NULL, height INTEGER NOT NULL, hash TEXT NOT NULL UNIQUE, prev_hash TEXT NOT NULL,
      timestamp REAL NOT NULL, tx_count INTEGER NOT NULL, tx_root TEXT NOT NULL, proposer TEXT NOT NULL,
      signature TEXT NOT NULL, PRIMARY KEY (chain_id, height)) WITHOUT ROWID;
  ]],
  [4] = [[
    -- job payments: an escrow on the chain, released to the miner or refunded
    ALTER TABLE jobs ADD COLUMN payment_id TEXT;
    ALTER TABLE jobs ADD COLUMN payment_status TEXT;
    ALTER TABLE jobs ADD COLUMN payment_amount INTEGER;
    ALTER TABLE jobs ADD COLUMN payment_chain TEXT;
    ALTER TABLE jobs ADD COLUMN payer TEXT;
    ALTER TABLE jobs ADD COLUMN settlement_id TEXT;
    CREATE INDEX jobs_payment ON jobs(payment_id) WHERE payment_id IS NOT NULL;
    CREATE INDEX jobs_unsettled ON jobs(job_id) WHERE payment_status IN ('pending', 'funded');
  ]],
  [5] = [[
    -- refused requests (401) are counted, one row per client address, minute
    -- and outcome (the error code), instead of stored one row each
    ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE audit ADD COLUMN outcome TEXT;
    ALTER TABLE audit ADD COLUMN minute INTEGER;
    ALTER TABLE audit ADD COLUMN last_time REAL;
    CREATE UNIQUE INDEX audit_refused ON audit(minute, remote, outcome, coalesce(key_id, '')) WHERE minute IS NOT NULL;
  ]],
  [6] = [[
    -- what the faucet gave, by API key and address (the last day's: older
    -- rows are pruned), for its limits
    CREATE TABLE faucet_grants (
      id INTEGER PRIMARY KEY, chain_id TEXT NOT NULL, key_id TEXT NOT NULL, address TEXT NOT NULL,
      amount INTEGER NOT NULL, granted_at REAL NOT NULL);
    CREATE INDEX faucet_grants_key ON faucet_grants(chain_id, key_id, granted_at);
    CREATE INDEX faucet_grants_address ON faucet_grants(chain_id, address, granted_at);
    CREATE INDEX faucet_grants_time ON faucet_grants(granted_at);
    -- a follower's state per chain (written by the supervisor that follows,
    -- read by /health and /v1/chains in the request handlers)
    CREATE TABLE chain_follow (
      chain_id TEXT PRIMARY KEY, leader TEXT NOT NULL, state TEXT NOT NULL, height INTEGER, reason TEXT,
      since REAL NOT NULL) WITHOUT ROWID;
  ]],
  [7] = [[
    -- a running job's lease: re-queued (or failed after its last attempt)
    -- when its miner has not answered by then, heart-beating or not
    ALTER TABLE jobs ADD COLUMN run_timeout INTEGER;
    ALTER TABLE jobs ADD COLUMN lease_expires_at REAL;
    CREATE INDEX jobs_lease ON jobs(lease_expires_at) WHERE state = 'RUNNING';
  ]],
  [8] = [[
    -- the queue by model (lower case, without ":latest"), so that a miner
    -- looks only at jobs it could run
    ALTER TABLE jobs ADD COLUMN model_key TEXT;
    UPDATE jobs SET model_key = CASE WHEN lower(model) LIKE '%:latest' THEN substr(lower(model), 1, length(model) - 7)
      ELSE lower(model) END WHERE model IS NOT NULL;
    CREATE INDEX jobs_queue_model ON jobs(model_key, requested_at) WHERE state = 'QUEUED';
  ]],
  [9] = [[
    -- job types (inference, agent, multimodal) and what a miner needs to run one
    ALTER TABLE jobs ADD COLUMN job_type TEXT NOT NULL DEFAULT 'inference';
    ALTER TABLE jobs ADD COLUMN needs TEXT;
    -- what a job did, in order: tokens, an agent's steps, the node's state changes
    CREATE TABLE job_events (
      job_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, type TEXT NOT NULL, data TEXT,
      PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
    -- every state change leaves an event, whichever statement made it
    CREATE TRIGGER job_queued_event AFTER INSERT ON jobs BEGIN
      INSERT INTO job_events (job_id, seq, time, type, data) VALUES (NEW.job_id, 1, NEW.requested_at, 'job.queued',
        json_object('state', 'QUEUED'));
    END;
    CREATE TRIGGER job_state_event AFTER UPDATE OF state ON jobs WHEN NEW.state <> OLD.state BEGIN
      INSERT INTO job_events (job_id, seq, time, type, data) VALUES (NEW.job_id,
        coalesce((SELECT max(seq) FROM job_events WHERE job_id = NEW.job_id), 0) + 1,
        (julianday('now') - 2440587.5) * 86400.0, 'job.' || lower(NEW.state),
        json_object('state', NEW.state, 'miner_id', NEW.miner_id, 'attempt', NEW.attempts, 'error', NEW.error));
    END;
    -- agents: versioned definitions owned by an API key
    CREATE TABLE agents (
      agent_id TEXT PRIMARY KEY, owner_key_id TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
      version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID;
    CREATE INDEX agents_owner ON agents(owner_key_id, created_at);
    CREATE TABLE agent_versions (
      agent_id TEXT NOT NULL, version INTEGER NOT NULL, definition TEXT NOT NULL, created_at REAL NOT NULL,
      note TEXT, PRIMARY KEY (agent_id, version)) WITHOUT ROWID;
  ]],
  [10] = [[
    -- a job submitted with payment_amount is held (not offered to miners)
    -- until its escrow lock is in a block; the queue indexes leave it out
    ALTER TABLE jobs ADD COLUMN held INTEGER;
    DROP INDEX jobs_queue;
    CREATE INDEX jobs_queue ON jobs(requested_at) WHERE state = 'QUEUED' AND held IS NULL;
    DROP INDEX jobs_queue_model;
    CREATE INDEX jobs_queue_model ON jobs(model_key, requested_at) WHERE state = 'QUEUED' AND held IS NULL;
  ]],
  [11] = [[
    -- governance (DESIGN.md §10): chain parameters, set at genesis and then
    -- only by passed proposals; each row the value from a height on
    ALTER TABLE chain_blocks ADD COLUMN params TEXT; -- genesis: the parameters its hash covers (NULL: the defaults)
    CREATE TABLE chain_params (
      chain_id TEXT NOT NULL, name TEXT NOT NULL, height INTEGER NOT NULL, value TEXT NOT NULL, proposal_id TEXT,
      PRIMARY KEY (chain_id, name, height)) WITHOUT ROWID;
    -- proposals: pending (not in a block yet), active (voting), passed or rejected
    CREATE TABLE gov_proposals (
      chain_id TEXT NOT NULL, proposal_id TEXT NOT NULL, tx_hash TEXT NOT NULL UNIQUE, proposer TEXT NOT NULL,
      title TEXT NOT NULL, description TEXT NOT NULL, deposit INTEGER NOT NULL, changes TEXT NOT NULL,
      voting_period INTEGER NOT NULL, quorum TEXT NOT NULL, threshold TEXT NOT NULL, status TEXT NOT NULL,
      submitted_at REAL NOT NULL, start_height INTEGER, end_height INTEGER, total_power INTEGER,
      tally TEXT, tally_tx TEXT, PRIMARY KEY (chain_id, proposal_id)) WITHOUT ROWID;
    CREATE INDEX gov_proposals_open ON gov_proposals(chain_id, end_height) WHERE status IN ('pending', 'active');
    CREATE INDEX gov_proposals_time ON gov_proposals(chain_id, submitted_at);
    -- one vote per voter and proposal (a later one replaces it); power in base units of stake
    CREATE TABLE gov_votes (
      chain_id TEXT NOT NULL, proposal_id TEXT NOT NULL, voter TEXT NOT NULL, choice TEXT NOT NULL,
      power INTEGER NOT NULL, tx_hash TEXT NOT NULL, voted_at REAL NOT NULL,
      PRIMARY KEY (chain_id, proposal_id, voter)) WITHOUT ROWID;
    CREATE INDEX gov_votes_voter ON gov_votes(chain_id, voter);
    -- stake at a height (voting power at a proposal's snapshot) from the sealed stake and unstake transactions
    CREATE INDEX chain_txs_stake ON chain_txs(chain_id, sender, block_height) WHERE type IN ('stake', 'unstake');
    -- a completed job's miner reward (NULL: due; jobs completed before rewards existed are owed none)
    ALTER TABLE jobs ADD COLUMN reward_status TEXT;
    ALTER TABLE jobs ADD COLUMN reward_tx TEXT;
    UPDATE jobs SET reward_status = 'none' WHERE state = 'COMPLETED';
    CREATE INDEX jobs_reward_due ON jobs(finished_at) WHERE state = 'COMPLETED' AND reward_status IS NULL;
  ]],
  [12] = [[
    -- direct GPU rental: a booking holds a listing for some hours, paid from
    -- its escrow account rent:ID to the provider hour by hour
    CREATE TABLE bookings (
      booking_id TEXT PRIMARY KEY, listing_id TEXT NOT NULL, renter_key_id TEXT NOT NULL, renter_address TEXT NOT NULL,
      provider_key_id TEXT NOT NULL, miner_id TEXT, payout_address TEXT NOT NULL, model TEXT NOT NULL,
      hours INTEGER NOT NULL, rate_units INTEGER NOT NULL, total_units INTEGER NOT NULL, chain_id TEXT NOT NULL,
      lock_tx TEXT NOT NULL, status TEXT NOT NULL, period REAL NOT NULL, created_at REAL NOT NULL,
      starts_at REAL NOT NULL, ends_at REAL NOT NULL, hours_paid INTEGER NOT NULL DEFAULT 0,
      paid_units INTEGER NOT NULL DEFAULT 0, refunded_units INTEGER NOT NULL DEFAULT 0,
      ended_at REAL, end_reason TEXT, bid_id TEXT) WITHOUT ROWID;
    CREATE INDEX bookings_listing ON bookings(listing_id) WHERE status = 'active';
    CREATE INDEX bookings_miner ON bookings(miner_id) WHERE status = 'active';
    CREATE INDEX bookings_renter ON bookings(renter_key_id, created_at);
    CREATE INDEX bookings_provider ON bookings(provider_key_id, created_at);
    -- a renter's jobs go to the booked miner only
    ALTER TABLE jobs ADD COLUMN booking_id TEXT;
    CREATE INDEX jobs_booking_queue ON jobs(booking_id, requested_at) WHERE state = 'QUEUED' AND booking_id IS NOT NULL;
    -- ratings of providers: one per completed booking or job (subject booking:ID | job:ID), 1 to 5 stars
    CREATE TABLE ratings (
      subject TEXT PRIMARY KEY, provider_key_id TEXT NOT NULL, listing_id TEXT, rater_key_id TEXT NOT NULL,
      stars INTEGER NOT NULL, comment TEXT, created_at REAL NOT NULL) WITHOUT ROWID;
    CREATE INDEX ratings_provider ON ratings(provider_key_id, created_at);
    CREATE INDEX ratings_listing ON ratings(listing_id, created_at);
    -- bids: what a client would pay for GPU hours, its escrow locked when
    -- posted (in rent:ID of the booking it becomes when a provider accepts)
    CREATE TABLE bids (
      bid_id TEXT PRIMARY KEY, booking_id TEXT NOT NULL, key_id TEXT NOT NULL, address TEXT NOT NULL, model TEXT,
      model_key TEXT, min_vram_gb REAL, region TEXT, hours INTEGER NOT NULL, rate_units INTEGER NOT NULL,
      total_units INTEGER NOT NULL, chain_id TEXT NOT NULL, lock_tx TEXT NOT NULL, notes TEXT, status TEXT NOT NULL,
      created_at REAL NOT NULL, expires_at REAL NOT NULL, listing_id TEXT, ended_at REAL) WITHOUT ROWID;
    CREATE INDEX bids_open ON bids(created_at) WHERE status = 'open';
    CREATE INDEX bids_key ON bids(key_id, created_at);
    -- the end of a listing's active booking (NULL: not booked), kept with the booking: offers count
    -- what is available from one index (status, provider, booked) instead of a lookup per listing
    ALTER TABLE listings ADD COLUMN booked_until REAL;
    CREATE INDEX listings_available ON listings(status, key_id, booked_until, updated_at);
    CREATE INDEX listings_rate ON listings(rate_units);
  ]],
  [13] = [[
    -- users own API keys; suspending a user disables all their keys at once
    CREATE TABLE users (
      user_id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, role TEXT NOT NULL, status TEXT NOT NULL,
      note TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, suspended_at REAL, suspended_reason TEXT)
      WITHOUT ROWID;
    CREATE UNIQUE INDEX users_name ON users(name);
    ALTER TABLE api_keys ADD COLUMN user_id TEXT;
    -- every key there is becomes the key of a user of its own, and keeps working
    INSERT INTO users (user_id, name, role, status, created_at, updated_at)
      SELECT 'user_' || substr(key_id, 5), coalesce(name, 'key') || ' (' || key_id || ')', role, 'active', created_at,
        created_at FROM api_keys;
    UPDATE api_keys SET user_id = 'user_' || substr(key_id, 5);
    CREATE INDEX api_keys_user ON api_keys(user_id);
  ]],
  [14] = [[
    -- the metrics history: a row a minute (resolution 60), after a day
    -- folded into 15-minute rows (resolution 900), kept 30 days
    CREATE TABLE metrics_history (
      minute INTEGER NOT NULL, resolution INTEGER NOT NULL, jobs_submitted INTEGER NOT NULL DEFAULT 0,
      jobs_completed INTEGER NOT NULL DEFAULT 0, jobs_failed INTEGER NOT NULL DEFAULT 0, queue_depth REAL,
      running REAL, queue_wait_avg REAL, queue_wait_max REAL, miners_online REAL, gpu_utilization REAL,
      gpu_temperature_max REAL, gpus INTEGER, blocks INTEGER NOT NULL DEFAULT 0, transactions INTEGER NOT NULL DEFAULT 0,
      cpu_percent REAL, memory_percent REAL, disk_percent REAL, requests INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (minute)) WITHOUT ROWID;
    -- a miner's latest GPU readings (NVML, from its heartbeats)
    ALTER TABLE miners ADD COLUMN gpu_stats TEXT;
  ]],
  [15] = [[
    -- peers (serve --peer, POST /v1/admin/peers): other nodes whose chains
    -- this node follows and to which it relays agent messages; name = 'self'
    -- in node_settings is this node's own URL
    CREATE TABLE peers (
      url TEXT PRIMARY KEY, node_key TEXT, chains TEXT, state TEXT NOT NULL, reason TEXT, last_seen REAL,
      added_at REAL NOT NULL) WITHOUT ROWID;
    CREATE TABLE node_settings (name TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
    -- a chain's agent directory (kept by the node that hosts the chain):
    -- registrations signed by the agent's key
    CREATE TABLE agent_directory (
      chain_id TEXT NOT NULL, agent_id TEXT NOT NULL, public_key TEXT NOT NULL, capabilities TEXT NOT NULL,
      owner_key_id TEXT, record TEXT NOT NULL, signature TEXT NOT NULL, registered_at REAL NOT NULL,
      updated_at REAL NOT NULL, PRIMARY KEY (chain_id, agent_id)) WITHOUT ROWID;
    -- agent messages: 'out' rows wait in the sender node's outbox until the
    -- target's node returns a receipt; 'in' rows are the target's inbox
    CREATE TABLE agent_messages (
      message_id TEXT NOT NULL, direction TEXT NOT NULL, sender TEXT NOT NULL, sender_chain TEXT NOT NULL,
      target TEXT NOT NULL, target_chain TEXT NOT NULL, envelope TEXT NOT NULL, signature TEXT NOT NULL,
      status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL, last_error TEXT,
      relayed_to TEXT, receipt TEXT, reply_to TEXT, created_at REAL NOT NULL, delivered_at REAL, read_at REAL,
      PRIMARY KEY (message_id, direction)) WITHOUT ROWID;
    CREATE INDEX agent_messages_outbox ON agent_messages(next_attempt_at) WHERE direction = 'out' AND status = 'pending';
    CREATE INDEX agent_messages_inbox ON agent_messages(target_chain, target, created_at) WHERE direction = 'in';
    CREATE INDEX agent_messages_sender ON agent_messages(sender_chain, sender, created_at);
    -- swarms: pools of agents per task type, tasks, and each member's work (a job)
    CREATE TABLE swarm_members (
      task_type TEXT NOT NULL, agent_id TEXT NOT NULL, owner_key_id TEXT NOT NULL, joined_at REAL NOT NULL,
      PRIMARY KEY (task_type, agent_id)) WITHOUT ROWID;
    CREATE TABLE swarm_tasks (
      task_id TEXT PRIMARY KEY, owner_key_id TEXT NOT NULL, task_type TEXT NOT NULL, spec TEXT NOT NULL,
      status TEXT NOT NULL, strategy TEXT, run_id TEXT, members TEXT, result TEXT, error TEXT,
      created_at REAL NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID;
    CREATE INDEX swarm_tasks_active ON swarm_tasks(updated_at) WHERE status = 'running';
    CREATE UNIQUE INDEX swarm_tasks_run ON swarm_tasks(run_id) WHERE run_id IS NOT NULL;
    CREATE TABLE swarm_work (
      task_id TEXT NOT NULL, seq INTEGER NOT NULL, stage TEXT NOT NULL, part INTEGER NOT NULL, agent_id TEXT NOT NULL,
      job_id TEXT NOT NULL, state TEXT NOT NULL, tried TEXT NOT NULL, output TEXT, created_at REAL NOT NULL,
      PRIMARY KEY (task_id, seq)) WITHOUT ROWID;
  ]],
}
M.SCHEMA_VERSION = #MIGRATIONS

-- Rows from before leases have no run timeout: they get jobs.lua's default.
M.DEFAULT_RUN_TIMEOUT = 600

--- open(path) -> store | nil, err.  Runs pending migrations.
function M.open(path)
  -- 1 KiB pages: a commit writes whole pages to the WAL, and a job's rows
  -- and index entries are small, so small pages mean less to write and copy.
  local conn, err = db.open(path, { synchronous = "NORMAL", page_size = 1024, write_lock = "aitbc.node.db:" .. path })
  if not conn then return nil, err end
  local self = setmetatable({ db = conn, path = path, audit_queue = "aitbc.node.audit:" .. path }, Store)
  -- Checkpoints run from the supervisor (Store:checkpoint), not inside a
  -- worker's commit while it holds the write lock.
  check(conn:exec("PRAGMA wal_autocheckpoint = 0"))
  local ok, merr = pcall(self.migrate, self)
  if not ok then conn:close() return nil, tostring(merr) end
  return self
end

function Store:migrate()
  local version = assert(self.db:first("PRAGMA user_version")).user_version
  if version > M.SCHEMA_VERSION then
    error(string.format("database schema %d is newer than this aitbc (%d)", version, M.SCHEMA_VERSION), 0)
  end
  for v = version + 1, M.SCHEMA_VERSION do
    self.db:transaction(function()
      assert(self.db:exec(MIGRATIONS[v]))
      assert(self.db:exec("PRAGMA user_version = " .. v))
    end)
  end
end

function Store:close() self.db:close() end

--- Copies the WAL back into the database: first without blocking writers
-- (the bulk, and its fsync), then briefly under the write lock so that the
-- WAL restarts from its beginning instead of growing under steady load.
function Store:checkpoint()
  check(self.db:first("PRAGMA wal_checkpoint(PASSIVE)"))
  local lock = self.db.lock
  lock:lock()
  local ok, row = pcall(self.db.first, self.db, "PRAGMA wal_checkpoint(RESTART)")
  lock:unlock()
  if not ok then error(row, 0) end
  return row
end

function Store:transaction(fn) return self.db:transaction(fn) end

-- ---- API keys ----

function Store:key_create(k)
  check(self.db:transaction(function()
    if not k.user_id then -- every key has a user: one made without gets a user of its own
      k.user_id = "user_" .. k.key_id:sub(5)
      check(self.db:run([[INSERT INTO users (user_id, name, role, status, created_at, updated_at)
        VALUES (:user_id, coalesce(:name, 'key') || ' (' || :key_id || ')', :role, 'active', :created_at, :created_at)]], k))
    end
    return check(self.db:run([[INSERT INTO api_keys (key_id, hash, role, name, environment, created_at, expires_at, user_id)
      VALUES (:key_id, :hash, :role, :name, :environment, :created_at, :expires_at, :user_id)]], k))
  end))
end

--- A key with its user's name and status.
function Store:key_get(key_id)
  return check(self.db:first([[SELECT k.*, u.name AS user_name, u.status AS user_status FROM api_keys k
    LEFT JOIN users u ON u.user_id = k.user_id WHERE k.key_id = ?]], key_id)) or nil
end

function Store:keys_list()
  return check(self.db:query([[SELECT k.*, (SELECT max(time) FROM audit a WHERE a.key_id = k.key_id) AS last_used_at
    FROM api_keys k ORDER BY created_at]]))
end

function Store:key_last_used(key_id)
  return check(self.db:first("SELECT max(time) AS t FROM audit WHERE key_id = ?", key_id)).t
end

--- Keys of a role that can be used now: not revoked and not expired.
function Store:keys_count(role, now)
  return check(self.db:first([[SELECT count(*) AS n FROM api_keys WHERE role = ? AND revoked_at IS NULL
    AND (expires_at IS NULL OR expires_at > ?) AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = api_keys.user_id
    AND u.status = 'suspended')]], role, now)).n
end

--- Revokes a key, but never the last usable admin key (without one nobody
-- can manage the node).  Checked and written in one transaction, so two
-- admins revoking each other at once cannot both succeed.  Returns
-- "revoked", "not_found", "already_revoked" or "last_admin_key".
function Store:key_revoke(key_id, now, reason)
  return check(self.db:transaction(function()
    local k = check(self.db:first("SELECT role, revoked_at, expires_at FROM api_keys WHERE key_id = ?", key_id))
    if not k then return "not_found" end
    if k.revoked_at then return "already_revoked" end
    local usable = not k.expires_at or k.expires_at > now
    if k.role == "admin" and usable and self:keys_count("admin", now) <= 1 then return "last_admin_key" end
    check(self.db:run("UPDATE api_keys SET revoked_at = ?, revoked_reason = ? WHERE key_id = ?", now, reason, key_id))
    return "revoked"
  end))
end

-- ---- audit ----
-- Workers queue audit rows (process-wide); one writer thread
-- (node/audit_writer.lua) commits them in batches and marks them committed,
-- and the server holds each answer until its row is: an acknowledged request
-- always has its audit row, even after kill -9.

--- Queues a row; returns its sequence number (what the answer waits for).
function Store:audit_push(row)
  return sys.queue_push(self.audit_queue, json.encode(row))
end

--- Takes queued rows (waiting up to `wait` seconds for some) -> rows, last_seq;
-- nil once the queue is closed and empty.
function Store:audit_take(wait)
  local items, last = sys.queue_take(self.audit_queue, 20000, wait)
  if not items then return nil end
  local rows = {}
  for i, item in ipairs(items) do rows[i] = json.decode(item) end
  return rows, last
end

-- Refused requests (401) go through a queue of their own and are counted
-- per (client address, minute, outcome, key) when flushed.  A minute holds
-- at most REFUSED_GROUPS_PER_MINUTE such rows; refusals beyond them are
-- counted in one row per outcome with remote '*', so that a flood from many
-- addresses cannot grow the log without bound either.
local REFUSED_GROUPS_PER_MINUTE = 100
M.REFUSED_GROUPS_PER_MINUTE = REFUSED_GROUPS_PER_MINUTE

function Store:audit_refused_push(row)
  sys.queue_push(self.audit_queue .. ":refused", json.encode(row))
end

--- Waits until the refusals queued so far are counted in the database.
function Store:audit_refused_sync(timeout)
  return sys.queue_sync(self.audit_queue .. ":refused", timeout or 5)
end

local REFUSED_FIND = [[SELECT id FROM audit WHERE minute = :minute AND remote = :remote AND outcome = :outcome
  AND coalesce(key_id, '') = :key]]

function Store:audit_refused_flush()
  local items, last = sys.queue_drain(self.audit_queue .. ":refused", 20000)
  if #items == 0 then return 0 end
  -- counted in memory first: one write per group, not per request
  local groups, order = {}, {}
  for _, text in ipairs(items) do
    local r = json.decode(text)
    r.minute = math.floor(r.time / 60)
    local id = table.concat({ r.minute, r.remote or "-", r.outcome, r.key_id or "" }, "|")
    local g = groups[id]
    if g then
      g.count, g.last_time = g.count + 1, math.max(g.last_time, r.time)
    else
      r.count, r.last_time, r.remote = 1, r.time, r.remote or "-"
      groups[id], order[#order + 1] = r, id
    end
  end
  check(self.db:transaction(function()
    for _, id in ipairs(order) do
      local g = groups[id]
      g.key = g.key_id or ""
      local row = check(self.db:first(REFUSED_FIND, g))
      if not row then
        local n = check(self.db:first("SELECT count(*) AS n FROM audit WHERE minute = ? AND remote <> '*'", g.minute)).n
        if n >= REFUSED_GROUPS_PER_MINUTE then -- too many addresses this minute: counted together
          g.remote, g.key_id, g.key, g.path, g.request_id = "*", nil, "", nil, nil
          row = check(self.db:first(REFUSED_FIND, g))
        end
      end
      if row then
        check(self.db:run("UPDATE audit SET count = count + ?, last_time = max(last_time, ?) WHERE id = ?",
          g.count, g.last_time, row.id))
      else
        check(self.db:run([[INSERT INTO audit (time, key_id, role, method, route, path, status, remote, request_id,
          count, outcome, minute, last_time) VALUES (:time, :key_id, :role, :method, :route, coalesce(:path, '(various)'),
          :status, :remote, :request_id, :count, :outcome, :minute, :last_time)]], g))
      end
    end
    return true
  end))
  sys.queue_commit(self.audit_queue .. ":refused", last)
  return #items
end

--- Writes rows in small transactions, so that requests waiting for the
-- write lock never wait behind the whole backlog.
function Store:audit_write(rows)
  for first = 1, #rows, 64 do
    self:audit_append(table.move(rows, first, math.min(first + 63, #rows), 1, {}))
  end
end

function Store:audit_commit(seq) sys.queue_commit(self.audit_queue, seq) end

--- Waits until every row queued so far is written (a report then includes
-- every request before it); false after timeout seconds.
function Store:audit_sync(timeout)
  return sys.queue_sync(self.audit_queue, timeout or 5)
end

function Store:audit_close() sys.queue_close(self.audit_queue) end

function Store:audit_append(rows)
  if #rows == 0 then return end
  check(self.db:transaction(function()
    for _, r in ipairs(rows) do
      check(self.db:run([[INSERT INTO audit (time, key_id, role, method, route, path, status, remote, request_id)
        VALUES (:time, :key_id, :role, :method, :route, :path, :status, :remote, :request_id)]], r))
    end
    return true
  end))
end

--- Audit rows since a time, optionally for one key, newest first.
function Store:audit_since(since, key_id, limit)
  if key_id then
    return check(self.db:query("SELECT * FROM audit WHERE time >= ? AND key_id = ? ORDER BY time DESC LIMIT ?",
      since, key_id, limit or 10000))
  end
  return check(self.db:query("SELECT * FROM audit WHERE time >= ? ORDER BY time DESC LIMIT ?", since, limit or 10000))
end

-- ---- miners ----

--- Registers a miner id for m.key_id, or updates it when that key already
-- holds it.  The check and the write are one transaction, so two keys
-- racing for a new id never both win.  Returns "created" or "updated", or
-- nil when another key holds the id (nothing is written then).
function Store:miner_register(m)
  return check(self.db:transaction(function()
    local owner = check(self.db:first("SELECT key_id FROM miners WHERE miner_id = ?", m.miner_id))
    if owner and owner.key_id ~= m.key_id then return false end
    check(self.db:run([[INSERT INTO miners (miner_id, key_id, capabilities, concurrency, region, price_units,
        payout_address, status, registered_at, last_seen, session_token)
      VALUES (:miner_id, :key_id, :capabilities, :concurrency, :region, :price_units, :payout_address, 'ONLINE',
        :now, :now, :session_token)
      ON CONFLICT(miner_id) DO UPDATE SET capabilities = excluded.capabilities, concurrency = excluded.concurrency,
        region = excluded.region, price_units = excluded.price_units, payout_address = excluded.payout_address,
        status = 'ONLINE', last_seen = excluded.last_seen, session_token = excluded.session_token
      WHERE miners.key_id = excluded.key_id]], m))
    return owner and "updated" or "created"
  end)) or nil
end

function Store:miner_get(miner_id)
  return check(self.db:first("SELECT * FROM miners WHERE miner_id = ?", miner_id)) or nil
end

function Store:miners_of_key(key_id)
  return check(self.db:query("SELECT * FROM miners WHERE key_id = ? ORDER BY registered_at", key_id))
end

function Store:miners_list()
  return check(self.db:query([[SELECT m.*, (SELECT count(*) FROM jobs j WHERE j.miner_id = m.miner_id
    AND j.state = 'RUNNING') AS inflight FROM miners m ORDER BY registered_at]]))
end

function Store:miner_touch(miner_id, now, status)
  check(self.db:transaction(function()
    return check(self.db:run("UPDATE miners SET last_seen = ?, status = coalesce(?, 'ONLINE') WHERE miner_id = ?",
      now, status, miner_id))
  end))
end

function Store:miners_online(cutoff)
  return check(self.db:first("SELECT count(*) AS n FROM miners WHERE status = 'ONLINE' AND last_seen >= ?", cutoff)).n
end

-- ---- jobs ----

function Store:job_insert(j)
  check(self.db:transaction(function()
    return check(self.db:run([[INSERT INTO jobs (job_id, client_key_id, state, payload, model, model_key, constraints,
        ttl_seconds, requested_at, expires_at, run_timeout, job_type, needs, payment_amount, payment_status, held,
        booking_id) VALUES (:job_id, :client_key_id, 'QUEUED', :payload, :model, :model_key, :constraints, :ttl_seconds,
        :requested_at, :expires_at, :run_timeout, coalesce(:job_type, 'inference'), :needs, :payment_amount,
        :payment_status, :held, :booking_id)]], j))
  end))
end

function Store:job_get(job_id)
  return check(self.db:first("SELECT * FROM jobs WHERE job_id = ?", job_id)) or nil
end

--- filter: {client_key_id?, state?, miner_id?, model?, job_type?, booking_id?,
-- from_time?, to_time? (requested), limit, offset} -> rows, total
function Store:jobs_list(f)
  local where, args = {}, {}
  for _, col in ipairs { "client_key_id", "state", "miner_id", "model", "job_type", "booking_id" } do
    if f[col] then where[#where + 1] = col .. " = :" .. col args[col] = f[col] end
  end
  if f.from_time then where[#where + 1] = "requested_at >= :from_time" args.from_time = f.from_time end
  if f.to_time then where[#where + 1] = "requested_at <= :to_time" args.to_time = f.to_time end
  local clause = #where > 0 and (" WHERE " .. table.concat(where, " AND ")) or ""
  args.limit, args.offset = f.limit or 50, f.offset or 0
  local rows = check(self.db:query("SELECT * FROM jobs" .. clause
    .. " ORDER BY requested_at DESC LIMIT :limit OFFSET :offset", args))
  local total = check(self.db:first("SELECT count(*) AS n FROM jobs" .. clause, args)).n
  return rows, total
end

function Store:jobs_by_state()
  local out = {}
  for _, r in ipairs(check(self.db:query("SELECT state, count(*) AS n FROM jobs GROUP BY state"))) do out[r.state] = r.n end
  return out
end

-- Queued jobs are read a page at a time, oldest first, until one fits the
-- miner (at most MAX_CANDIDATES): reading 256 rows and matching each on
-- every poll held the full job cycle to ~500 jobs/s, where the first page
-- nearly always has a fit.
local PAGE, MAX_CANDIDATES = 32, 256
-- (held jobs wait for their escrow: not offered)
-- (a booking's jobs are for its miner only: they come from queued_for_booking)
local QUEUED_ANY = [[SELECT job_id, model, constraints, needs, requested_at FROM jobs WHERE state = 'QUEUED'
  AND held IS NULL AND booking_id IS NULL AND expires_at > ? ORDER BY requested_at LIMIT ? OFFSET ?]]
local QUEUED_MODEL = [[SELECT job_id, model, constraints, needs, requested_at FROM jobs WHERE state = 'QUEUED'
  AND held IS NULL AND booking_id IS NULL AND model_key = ? AND expires_at > ? ORDER BY requested_at LIMIT ? OFFSET ?]]
local QUEUED_NO_MODEL = [[SELECT job_id, model, constraints, needs, requested_at FROM jobs WHERE state = 'QUEUED'
  AND held IS NULL AND booking_id IS NULL AND model_key IS NULL AND expires_at > ? ORDER BY requested_at
  LIMIT ? OFFSET ?]]

--- A page of the oldest queued jobs a miner with these model keys (nil:
-- any model) could run, oldest first: index range scans, outside the write
-- lock.  Each source's page starts at offset.
function Store:queued_for(model_keys, now, offset)
  offset = offset or 0
  if not model_keys then return check(self.db:query(QUEUED_ANY, now, PAGE, offset)) end
  local rows = check(self.db:query(QUEUED_NO_MODEL, now, PAGE, offset))
  for _, key in ipairs(model_keys) do
    local page = check(self.db:query(QUEUED_MODEL, key, now, PAGE, offset))
    table.move(page, 1, #page, #rows + 1, rows)
  end
  table.sort(rows, function(a, b) return a.requested_at < b.requested_at end)
  return rows
end

--- Assigns the oldest queued job that fits(job_row) to the miner, if the
-- miner has a free slot.  Candidates are read without the write lock; the
-- claim itself is atomic: a job goes to exactly one miner.  booking_id: the
-- miner is booked, and takes only that booking's jobs.
function Store:job_claim(miner, now, fits, model_keys, booking_id)
  local fitting = {}
  if booking_id then
    for _, row in ipairs(self:queued_for_booking(booking_id, now)) do
      if fits(row) then fitting[#fitting + 1] = row.job_id end
    end
  else
    for offset = 0, MAX_CANDIDATES - PAGE, PAGE do
      local candidates = self:queued_for(model_keys, now, offset)
      for _, row in ipairs(candidates) do
        if fits(row) then fitting[#fitting + 1] = row.job_id end
      end
      if #fitting > 0 or #candidates == 0 then break end
    end
  end
  if #fitting == 0 then return nil end
  return check(self.db:transaction(function()
    local busy = check(self.db:first("SELECT count(*) AS n FROM jobs WHERE miner_id = ? AND state = 'RUNNING'",
      miner.miner_id)).n
    if busy >= miner.concurrency then return false end
    for _, job_id in ipairs(fitting) do -- the first one no other miner took meanwhile
      local n = check(self.db:run([[UPDATE jobs SET state = 'RUNNING', miner_id = ?, started_at = ?,
        attempts = attempts + 1, lease_expires_at = min(expires_at, ? + coalesce(run_timeout, ?))
        WHERE job_id = ? AND state = 'QUEUED' AND held IS NULL AND expires_at > ?]], miner.miner_id, now, now,
        M.DEFAULT_RUN_TIMEOUT, job_id, now))
      if n > 0 then return check(self.db:first("SELECT * FROM jobs WHERE job_id = ?", job_id)) end
    end
    return false
  end)) or nil
end

--- Ends a running job of this miner.  fields: {state, result, metrics, error,
-- receipt, finished_at}.  Returns false when the job is not running there.
function Store:job_finish(job_id, miner_id, fields, counter)
  return check(self.db:transaction(function()
    fields.job_id, fields.miner_id = job_id, miner_id
    local n = check(self.db:run([[UPDATE jobs SET state = :state, result = :result, metrics = :metrics,
      error = :error, receipt = :receipt, finished_at = :finished_at
      WHERE job_id = :job_id AND miner_id = :miner_id AND state = 'RUNNING']], fields))
    if n > 0 then
      check(self.db:run("UPDATE miners SET " .. counter .. " = " .. counter .. " + 1, last_seen = ? WHERE miner_id = ?",
        fields.finished_at, miner_id))
    end
    return n > 0
  end))
end

--- A running job of this miner goes back to the queue as if never taken
-- (the miner cannot run it): its attempt is not counted.  Returns false
-- when the job is not running there.
function Store:job_release(job_id, miner_id)
  return check(self.db:transaction(function()
    return check(self.db:run([[UPDATE jobs SET state = 'QUEUED', miner_id = NULL, started_at = NULL,
      lease_expires_at = NULL, attempts = max(attempts - 1, 0)
      WHERE job_id = ? AND miner_id = ? AND state = 'RUNNING']], job_id, miner_id)) > 0
  end))
end

--- How many jobs this miner holds (running).
function Store:miner_inflight(miner_id)
  return check(self.db:first("SELECT count(*) AS n FROM jobs WHERE miner_id = ? AND state = 'RUNNING'", miner_id)).n
end

--- Cancels a queued or running job; returns true if it was cancelable.
function Store:job_cancel(job_id, now)
  return check(self.db:transaction(function()
    return check(self.db:run([[UPDATE jobs SET state = 'CANCELED', error = 'canceled by client', finished_at = ?
      WHERE job_id = ? AND state IN ('QUEUED', 'RUNNING')]], now, job_id)) > 0
  end))
end

--- Queued or running jobs past their TTL become EXPIRED; returns how many.
-- A miner that let a running job expire has it on its record.
function Store:expire_due(now)
  return check(self.db:transaction(function()
    check(self.db:run([[UPDATE miners SET jobs_expired = jobs_expired + (SELECT count(*) FROM jobs j
      WHERE j.miner_id = miners.miner_id AND j.state = 'RUNNING' AND j.expires_at <= ?)
      WHERE miner_id IN (SELECT miner_id FROM jobs WHERE state = 'RUNNING' AND expires_at <= ?)]], now, now))
    return check(self.db:run([[UPDATE jobs SET state = 'EXPIRED', error = 'expired: not completed within ttl_seconds',
      finished_at = ? WHERE state IN ('QUEUED', 'RUNNING') AND expires_at <= ?]], now, now))
  end))
end

--- Running jobs whose lease ran out: back to the queue, or FAILED once
-- they had max_attempts; the miner's record counts it as expired.  Returns
-- how many were re-queued and how many failed.
function Store:requeue_lapsed(now, max_attempts)
  return table.unpack(check(self.db:transaction(function()
    check(self.db:run([[UPDATE miners SET jobs_expired = jobs_expired + (SELECT count(*) FROM jobs j
      WHERE j.miner_id = miners.miner_id AND j.state = 'RUNNING' AND j.lease_expires_at <= :now)
      WHERE miner_id IN (SELECT miner_id FROM jobs WHERE state = 'RUNNING' AND lease_expires_at <= :now)]], { now = now }))
    local failed = check(self.db:run([[UPDATE jobs SET state = 'FAILED', finished_at = :now,
      error = 'LEASE_EXPIRED: no miner answered within ' || coalesce(run_timeout, :default) || ' s, ' || attempts || ' attempts'
      WHERE state = 'RUNNING' AND lease_expires_at <= :now AND attempts >= :max]],
      { now = now, max = max_attempts, default = M.DEFAULT_RUN_TIMEOUT }))
    local requeued = check(self.db:run([[UPDATE jobs SET state = 'QUEUED', miner_id = NULL, started_at = NULL,
      lease_expires_at = NULL WHERE state = 'RUNNING' AND lease_expires_at <= ?]], now))
    return { requeued, failed }
  end)))
end

--- Miners silent since before cutoff go OFFLINE and their running jobs go
-- back to the queue.  Returns the number of jobs re-queued.
function Store:requeue_stale(cutoff)
  return check(self.db:transaction(function()
    local n = check(self.db:run([[UPDATE jobs SET state = 'QUEUED', miner_id = NULL, started_at = NULL,
      lease_expires_at = NULL WHERE state = 'RUNNING'
      AND miner_id IN (SELECT miner_id FROM miners WHERE last_seen < ?)]], cutoff))
    check(self.db:run("UPDATE miners SET status = 'OFFLINE' WHERE status = 'ONLINE' AND last_seen < ?", cutoff))
    return n
  end))
end

-- ---- job events ----

M.EVENTS_PER_JOB = 20000

--- Appends events {type, data (JSON text)} after the job's last one;
-- returns the last sequence number, or nil when the job already has
-- EVENTS_PER_JOB of them.
function Store:events_append(job_id, events, now)
  return check(self.db:transaction(function()
    local last = check(self.db:first("SELECT coalesce(max(seq), 0) AS s FROM job_events WHERE job_id = ?", job_id)).s
    if last + #events > M.EVENTS_PER_JOB then return false end
    for _, e in ipairs(events) do
      last = last + 1
      check(self.db:run("INSERT INTO job_events (job_id, seq, time, type, data) VALUES (?, ?, ?, ?, ?)",
        job_id, last, now, e.type, e.data))
    end
    return last
  end)) or nil
end

--- Events after seq (oldest first, at most limit).
function Store:events_after(job_id, after, limit)
  return check(self.db:query("SELECT seq, time, type, data FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    job_id, after, limit))
end

-- ---- agents ----

function Store:agent_insert(a, definition, now)
  check(self.db:transaction(function()
    check(self.db:run([[INSERT INTO agents (agent_id, owner_key_id, name, type, version, created_at, updated_at)
      VALUES (?, ?, ?, ?, 1, ?, ?)]], a.agent_id, a.owner_key_id, a.name, a.type, now, now))
    return check(self.db:run([[INSERT INTO agent_versions (agent_id, version, definition, created_at, note)
      VALUES (?, 1, ?, ?, 'created')]], a.agent_id, definition, now))
  end))
end

--- An agent with its current definition (or the given version's).
function Store:agent_get(agent_id, version)
  return check(self.db:first([[SELECT a.*, v.definition, v.version AS defined_version, v.created_at AS version_created_at
    FROM agents a JOIN agent_versions v ON v.agent_id = a.agent_id AND v.version = coalesce(?, a.version)
    WHERE a.agent_id = ?]], version, agent_id)) or nil
end

function Store:agents_of(owner_key_id, limit, offset)
  local rows = check(self.db:query([[SELECT a.*, v.definition FROM agents a JOIN agent_versions v
    ON v.agent_id = a.agent_id AND v.version = a.version WHERE a.owner_key_id = ? ORDER BY a.created_at
    LIMIT ? OFFSET ?]], owner_key_id, limit, offset))
  local total = check(self.db:first("SELECT count(*) AS n FROM agents WHERE owner_key_id = ?", owner_key_id)).n
  return rows, total
end

--- A new version becomes current; returns its number.  expected: the
-- version the change was made against (nil: any).
function Store:agent_new_version(agent_id, definition, name, note, now, expected)
  return check(self.db:transaction(function()
    local a = check(self.db:first("SELECT version FROM agents WHERE agent_id = ?", agent_id))
    if not a then return false end
    if expected and a.version ~= expected then return false end
    local v = check(self.db:first("SELECT max(version) AS v FROM agent_versions WHERE agent_id = ?", agent_id)).v + 1
    check(self.db:run("INSERT INTO agent_versions (agent_id, version, definition, created_at, note) VALUES (?, ?, ?, ?, ?)",
      agent_id, v, definition, now, note))
    check(self.db:run("UPDATE agents SET version = ?, name = coalesce(?, name), updated_at = ? WHERE agent_id = ?",
      v, name, now, agent_id))
    return v
  end)) or nil
end

function Store:agent_versions(agent_id)
  return check(self.db:query([[SELECT version, created_at, note, length(definition) AS size FROM agent_versions
    WHERE agent_id = ? ORDER BY version]], agent_id))
end

function Store:agent_delete(agent_id)
  return check(self.db:transaction(function()
    check(self.db:run("DELETE FROM agent_versions WHERE agent_id = ?", agent_id))
    return check(self.db:run("DELETE FROM agents WHERE agent_id = ?", agent_id)) > 0
  end))
end

-- ---- chain ----

function Store:chain_account(chain_id, address)
  return check(self.db:first("SELECT * FROM chain_accounts WHERE chain_id = ? AND address = ?", chain_id, address))
    or { chain_id = chain_id, address = address, balance = 0, staked = 0, nonce = 0 }
end

function Store:chain_put_account(a)
  check(self.db:run([[INSERT INTO chain_accounts (chain_id, address, balance, staked, nonce)
    VALUES (:chain_id, :address, :balance, :staked, :nonce) ON CONFLICT(chain_id, address) DO UPDATE SET
    balance = excluded.balance, staked = excluded.staked, nonce = excluded.nonce]], a))
end

function Store:chain_tx_insert(t)
  check(self.db:run([[INSERT INTO chain_txs (hash, chain_id, type, sender, recipient, amount, nonce, body, received_at)
    VALUES (:hash, :chain_id, :type, :sender, :recipient, :amount, :nonce, :body, :received_at)]], t))
end

function Store:chain_tx(hash)
  return check(self.db:first("SELECT * FROM chain_txs WHERE hash = ?", hash)) or nil
end

function Store:chain_pending(chain_id, limit)
  return check(self.db:query("SELECT seq, hash FROM chain_txs WHERE chain_id = ? AND block_height IS NULL ORDER BY seq LIMIT ?",
    chain_id, limit))
end

function Store:chain_seal(chain_id, height, last_seq)
  check(self.db:run("UPDATE chain_txs SET block_height = ? WHERE chain_id = ? AND block_height IS NULL AND seq <= ?",
    height, chain_id, last_seq))
  -- a payment sealed in a block funds its job, and a job held for it may now run
  local released = check(self.db:query([[SELECT job_id, model FROM jobs WHERE held IS NOT NULL
    AND payment_status = 'pending' AND payment_id IN (SELECT hash FROM chain_txs WHERE chain_id = ? AND block_height = ?)]],
    chain_id, height))
  check(self.db:run([[UPDATE jobs SET payment_status = 'funded', held = NULL WHERE payment_status = 'pending'
    AND payment_id IN (SELECT hash FROM chain_txs WHERE chain_id = ? AND block_height = ?)]], chain_id, height))
  return released
end

--- A follower seals every transaction it applied for a block.
function Store:chain_seal_all(chain_id, height)
  check(self.db:run("UPDATE chain_txs SET block_height = ? WHERE chain_id = ? AND block_height IS NULL", height, chain_id))
end

function Store:job_payment(job_id, fields)
  fields.job_id = job_id
  check(self.db:run([[UPDATE jobs SET payment_id = coalesce(:payment_id, payment_id),
    payment_status = coalesce(:payment_status, payment_status), payment_amount = coalesce(:payment_amount, payment_amount),
    payment_chain = coalesce(:payment_chain, payment_chain), payer = coalesce(:payer, payer),
    settlement_id = coalesce(:settlement_id, settlement_id) WHERE job_id = :job_id]], fields))
end

--- Escrow accounts holding coins that no unsettled job payment accounts for.
function Store:chain_stranded_escrows()
  return check(self.db:query([[SELECT a.chain_id, a.address, a.balance FROM chain_accounts a
    WHERE a.address LIKE 'escrow:%' AND a.balance > 0 AND NOT EXISTS (SELECT 1 FROM jobs j
      WHERE j.job_id = substr(a.address, 8) AND j.payment_chain = a.chain_id AND j.payment_status IN ('pending', 'funded'))]]))
end

--- The escrow locks paid into an account, oldest first: {sender, amount}.
function Store:chain_locks_into(chain_id, address)
  return check(self.db:query([[SELECT sender, amount FROM chain_txs WHERE recipient = ? AND chain_id = ?
    AND type = 'escrow_lock' ORDER BY seq]], address, chain_id))
end

--- The job a payment (its escrow lock's hash) pays for, or nil.
function Store:job_by_payment(payment_id)
  return check(self.db:first("SELECT * FROM jobs WHERE payment_id = ?", payment_id)) or nil
end

--- Signed receipts, newest first.  f: {client_key_id?, miner_key_id?, job_id?, limit, offset}
function Store:receipts_list(f)
  local where = { "j.receipt IS NOT NULL" }
  if f.client_key_id then where[#where + 1] = "j.client_key_id = :client_key_id" end
  if f.miner_key_id then where[#where + 1] = "m.key_id = :miner_key_id" end
  if f.job_id then where[#where + 1] = "j.job_id = :job_id" end
  local from = " FROM jobs j LEFT JOIN miners m ON m.miner_id = j.miner_id WHERE " .. table.concat(where, " AND ")
  local rows = check(self.db:query("SELECT j.job_id, j.miner_id, j.state, j.receipt, j.finished_at" .. from
    .. " ORDER BY j.finished_at DESC, j.job_id LIMIT :limit OFFSET :offset", f))
  return rows, check(self.db:first("SELECT count(*) AS n" .. from, f)).n
end

--- A chain's blocks, newest first: a page of them.
function Store:chain_blocks_page(chain_id, limit, offset)
  return check(self.db:query("SELECT * FROM chain_blocks WHERE chain_id = ? ORDER BY height DESC LIMIT ? OFFSET ?",
    chain_id, limit, offset))
end

--- Jobs that ended with their escrow funded (its lock in a block) and not
-- yet released or refunded.
function Store:jobs_to_settle()
  return check(self.db:query([[SELECT j.*, m.payout_address FROM jobs j LEFT JOIN miners m ON m.miner_id = j.miner_id
    WHERE j.payment_status IN ('pending', 'funded') AND j.payment_status = 'funded' -- the IN: jobs_unsettled's clause
      AND j.state IN ('COMPLETED', 'FAILED', 'CANCELED', 'EXPIRED')]]))
end

--- What an address has locked in escrow for jobs not yet settled: units, jobs.
function Store:chain_escrowed_by(chain_id, address)
  local r = check(self.db:first([[SELECT coalesce(sum(payment_amount), 0) AS units, count(*) AS jobs FROM jobs
    WHERE payer = ? AND payment_chain = ? AND payment_status IN ('pending', 'funded')]], address, chain_id))
  return r.units, r.jobs
end

--- A miner's payout address (nil when it has none or is unknown).
function Store:miner_payout(miner_id)
  local r = check(self.db:first("SELECT payout_address FROM miners WHERE miner_id = ?", miner_id))
  return r and r.payout_address or nil
end

function Store:chain_block_insert(b)
  check(self.db:run([[INSERT INTO chain_blocks (chain_id, height, hash, prev_hash, timestamp, tx_count, tx_root, proposer,
    signature, params) VALUES (:chain_id, :height, :hash, :prev_hash, :timestamp, :tx_count, :tx_root, :proposer, :signature,
    :params)]], b))
end

function Store:chain_head(chain_id)
  return check(self.db:first("SELECT * FROM chain_blocks WHERE chain_id = ? ORDER BY height DESC LIMIT 1", chain_id)) or nil
end

--- Height of the chain's newest block, or nil before genesis; an index seek.
function Store:chain_height(chain_id)
  return check(self.db:first("SELECT max(height) AS h FROM chain_blocks WHERE chain_id = ?", chain_id)).h
end

function Store:chain_block(chain_id, ref)
  local h = math.tointeger(tonumber(ref))
  if h then return check(self.db:first("SELECT * FROM chain_blocks WHERE chain_id = ? AND height = ?", chain_id, h)) or nil end
  return check(self.db:first("SELECT * FROM chain_blocks WHERE chain_id = ? AND hash = ?", chain_id, ref)) or nil
end

function Store:chain_block_txs(chain_id, height)
  return check(self.db:query("SELECT hash FROM chain_txs WHERE chain_id = ? AND block_height = ? ORDER BY seq", chain_id, height))
end

--- An address's transactions, newest first: a page of them and how many there are.
function Store:chain_history(chain_id, address, limit, offset)
  local args = { c = chain_id, a = address, l = limit, o = offset or 0 }
  local rows = check(self.db:query([[SELECT * FROM chain_txs WHERE chain_id = :c AND (sender = :a OR recipient = :a)
    ORDER BY seq DESC LIMIT :l OFFSET :o]], args))
  local total = check(self.db:first("SELECT count(*) AS n FROM chain_txs WHERE chain_id = :c AND (sender = :a OR recipient = :a)",
    args)).n
  return rows, total
end

--- The faucet's grants on a chain since a time, oldest first, to one API
-- key (by = "key_id") or one address (by = "address").
function Store:faucet_grants(chain_id, by, value, since)
  assert(by == "key_id" or by == "address", "faucet grants by key_id or address")
  return check(self.db:query("SELECT amount, granted_at FROM faucet_grants WHERE chain_id = ? AND " .. by
    .. " = ? AND granted_at > ? ORDER BY granted_at", chain_id, value, since))
end

--- Records a grant and forgets those older than keep_since.
function Store:faucet_grant(g, keep_since)
  check(self.db:run([[INSERT INTO faucet_grants (chain_id, key_id, address, amount, granted_at)
    VALUES (:chain_id, :key_id, :address, :amount, :granted_at)]], g))
  check(self.db:run("DELETE FROM faucet_grants WHERE granted_at <= ?", keep_since))
end

-- ---- governance ----

--- A chain parameter's value now (the row of the highest height), or nil.
function Store:param(chain_id, name)
  local r = check(self.db:first([[SELECT value FROM chain_params WHERE chain_id = ? AND name = ?
    ORDER BY height DESC LIMIT 1]], chain_id, name))
  return r and r.value or nil
end

--- Every value a chain's parameters have had: {name, height, value, proposal_id}, newest last.
function Store:params_history(chain_id)
  return check(self.db:query("SELECT * FROM chain_params WHERE chain_id = ? ORDER BY name, height", chain_id))
end

function Store:param_set(chain_id, name, height, value, proposal_id)
  check(self.db:run([[INSERT INTO chain_params (chain_id, name, height, value, proposal_id) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT(chain_id, name, height) DO UPDATE SET value = excluded.value, proposal_id = excluded.proposal_id]],
    chain_id, name, height, value, proposal_id))
end

function Store:genesis_params(chain_id)
  local r = check(self.db:first("SELECT params FROM chain_blocks WHERE chain_id = ? AND height = 0", chain_id))
  return r and r.params or nil
end

function Store:genesis_params_set(chain_id, params)
  check(self.db:run("UPDATE chain_blocks SET params = ? WHERE chain_id = ? AND height = 0", params, chain_id))
end

function Store:proposal_insert(p)
  check(self.db:run([[INSERT INTO gov_proposals (chain_id, proposal_id, tx_hash, proposer, title, description, deposit,
    changes, voting_period, quorum, threshold, status, submitted_at) VALUES (:chain_id, :proposal_id, :tx_hash, :proposer,
    :title, :description, :deposit, :changes, :voting_period, :quorum, :threshold, 'pending', :submitted_at)]], p))
end

function Store:proposal_get(chain_id, proposal_id)
  return check(self.db:first("SELECT * FROM gov_proposals WHERE chain_id = ? AND proposal_id = ?", chain_id,
    proposal_id)) or nil
end

--- A page of a chain's proposals, newest first (status: one, or nil for all), and how many there are.
function Store:proposals(chain_id, status, limit, offset)
  local args = { c = chain_id, s = status, l = limit, o = offset }
  local where = "chain_id = :c" .. (status and " AND status = :s" or "")
  local rows = check(self.db:query("SELECT * FROM gov_proposals WHERE " .. where
    .. " ORDER BY submitted_at DESC, proposal_id LIMIT :l OFFSET :o", args))
  return rows, check(self.db:first("SELECT count(*) AS n FROM gov_proposals WHERE " .. where, args)).n
end

--- Proposals whose transaction was sealed at height start voting there:
-- the period they were submitted with, the total stake at the snapshot
-- (the block before) as the power that can vote.
function Store:proposals_activate(chain_id, height)
  check(self.db:run([[UPDATE gov_proposals SET status = 'active', start_height = :h, end_height = :h + voting_period,
    total_power = (SELECT coalesce(sum(CASE type WHEN 'stake' THEN amount ELSE -amount END), 0) FROM chain_txs
      WHERE chain_id = :c AND type IN ('stake', 'unstake') AND block_height < :h)
    WHERE chain_id = :c AND status = 'pending'
      AND (SELECT block_height FROM chain_txs WHERE hash = gov_proposals.tx_hash) = :h]], { c = chain_id, h = height }))
end

--- Active proposals whose voting ends at or before height.
function Store:proposals_due(chain_id, height)
  return check(self.db:query([[SELECT * FROM gov_proposals WHERE chain_id = ? AND status = 'active' AND end_height <= ?
    ORDER BY end_height, proposal_id]], chain_id, height))
end

function Store:proposal_decide(chain_id, proposal_id, status, tally, tally_tx)
  check(self.db:run("UPDATE gov_proposals SET status = ?, tally = ?, tally_tx = ? WHERE chain_id = ? AND proposal_id = ?",
    status, tally, tally_tx, chain_id, proposal_id))
end

--- An address's stake at the end of block height (from its sealed stake and unstake transactions).
function Store:stake_at(chain_id, address, height)
  return check(self.db:first([[SELECT coalesce(sum(CASE type WHEN 'stake' THEN amount ELSE -amount END), 0) AS units
    FROM chain_txs WHERE chain_id = ? AND sender = ? AND type IN ('stake', 'unstake') AND block_height <= ?]],
    chain_id, address, height)).units
end

function Store:vote_get(chain_id, proposal_id, voter)
  return check(self.db:first("SELECT * FROM gov_votes WHERE chain_id = ? AND proposal_id = ? AND voter = ?", chain_id,
    proposal_id, voter)) or nil
end

function Store:vote_put(v)
  check(self.db:run([[INSERT INTO gov_votes (chain_id, proposal_id, voter, choice, power, tx_hash, voted_at)
    VALUES (:chain_id, :proposal_id, :voter, :choice, :power, :tx_hash, :voted_at)
    ON CONFLICT(chain_id, proposal_id, voter) DO UPDATE SET choice = excluded.choice, power = excluded.power,
      tx_hash = excluded.tx_hash, voted_at = excluded.voted_at]], v))
end

--- A proposal's votes: power by choice {yes, no, abstain} and how many voters.
function Store:vote_totals(chain_id, proposal_id)
  local totals, voters = { yes = 0, no = 0, abstain = 0 }, 0
  for _, r in ipairs(check(self.db:query([[SELECT choice, sum(power) AS power, count(*) AS n FROM gov_votes
    WHERE chain_id = ? AND proposal_id = ? GROUP BY choice]], chain_id, proposal_id))) do
    totals[r.choice], voters = r.power, voters + r.n
  end
  return totals, voters
end

function Store:votes(chain_id, proposal_id, limit, offset)
  return check(self.db:query([[SELECT * FROM gov_votes WHERE chain_id = ? AND proposal_id = ?
    ORDER BY power DESC, voter LIMIT ? OFFSET ?]], chain_id, proposal_id, limit, offset))
end

--- Stake an address has voted with on proposals still open: locked until
-- they are tallied (each token votes once per proposal, so the most on any one).
function Store:stake_locked(chain_id, voter)
  return check(self.db:first([[SELECT coalesce(max(v.power), 0) AS units FROM gov_votes v JOIN gov_proposals p
    ON p.chain_id = v.chain_id AND p.proposal_id = v.proposal_id
    WHERE v.chain_id = ? AND v.voter = ? AND p.status = 'active']], chain_id, voter)).units
end

--- Completed jobs whose miner reward is due, oldest first.
function Store:jobs_to_reward(limit)
  return check(self.db:query([[SELECT j.job_id, j.miner_id, j.payment_chain, m.payout_address FROM jobs j
    LEFT JOIN miners m ON m.miner_id = j.miner_id WHERE j.state = 'COMPLETED' AND j.reward_status IS NULL
    ORDER BY j.finished_at LIMIT ?]], limit))
end

function Store:job_reward(job_id, status, tx)
  check(self.db:run("UPDATE jobs SET reward_status = ?, reward_tx = ? WHERE job_id = ?", status, tx, job_id))
end

-- ---- rental, ratings, bids ----

function Store:booking_insert(b)
  check(self.db:run([[INSERT INTO bookings (booking_id, listing_id, renter_key_id, renter_address, provider_key_id,
    miner_id, payout_address, model, hours, rate_units, total_units, chain_id, lock_tx, status, period, created_at,
    starts_at, ends_at, bid_id) VALUES (:booking_id, :listing_id, :renter_key_id, :renter_address, :provider_key_id,
    :miner_id, :payout_address, :model, :hours, :rate_units, :total_units, :chain_id, :lock_tx, 'active', :period,
    :created_at, :starts_at, :ends_at, :bid_id)]], b))
  check(self.db:run("UPDATE listings SET booked_until = ? WHERE listing_id = ?", b.ends_at, b.listing_id))
end

function Store:booking_get(booking_id)
  return check(self.db:first("SELECT * FROM bookings WHERE booking_id = ?", booking_id)) or nil
end

--- The active booking of a listing, or of a miner (by = "listing_id" | "miner_id").
function Store:booking_active(by, value)
  assert(by == "listing_id" or by == "miner_id", "active booking by listing_id or miner_id")
  return check(self.db:first("SELECT * FROM bookings WHERE " .. by .. " = ? AND status = 'active'", value)) or nil
end

function Store:bookings_active()
  return check(self.db:query("SELECT b.*, m.last_seen, m.status AS miner_status FROM bookings b "
    .. "LEFT JOIN miners m ON m.miner_id = b.miner_id WHERE b.status = 'active' ORDER BY b.starts_at"))
end

--- A page of bookings, newest first, of a renter or a provider (by = "renter_key_id" | "provider_key_id").
function Store:bookings_of(by, key_id, status, limit, offset)
  assert(by == "renter_key_id" or by == "provider_key_id", "bookings by renter or provider")
  local args = { k = key_id, s = status, l = limit, o = offset }
  local where = by .. " = :k" .. (status and " AND status = :s" or "")
  local rows = check(self.db:query("SELECT * FROM bookings WHERE " .. where
    .. " ORDER BY created_at DESC LIMIT :l OFFSET :o", args))
  return rows, check(self.db:first("SELECT count(*) AS n FROM bookings WHERE " .. where, args)).n
end

--- Records what a settlement paid and refunded; status and end when it ends.
function Store:booking_settled(booking_id, f)
  f.booking_id = booking_id
  check(self.db:run([[UPDATE bookings SET hours_paid = coalesce(:hours_paid, hours_paid),
    paid_units = paid_units + coalesce(:paid, 0), refunded_units = refunded_units + coalesce(:refunded, 0),
    status = coalesce(:status, status), ended_at = coalesce(:ended_at, ended_at),
    end_reason = coalesce(:end_reason, end_reason) WHERE booking_id = :booking_id]], f))
  if f.status and f.status ~= "active" then
    check(self.db:run([[UPDATE listings SET booked_until = NULL
      WHERE listing_id = (SELECT listing_id FROM bookings WHERE booking_id = ?)]], booking_id))
  end
end

--- The queued jobs of a booking, oldest first (the booked miner's queue).
function Store:queued_for_booking(booking_id, now)
  return check(self.db:query([[SELECT job_id, model, constraints, needs, requested_at, booking_id FROM jobs
    WHERE booking_id = ? AND state = 'QUEUED' AND held IS NULL AND expires_at > ? ORDER BY requested_at LIMIT 256]],
    booking_id, now))
end

--- A booking ended: its jobs still queued will not run (nobody is booked for them).
function Store:booking_jobs_cancel(booking_id, now, why)
  check(self.db:run([[UPDATE jobs SET state = 'CANCELED', error = ?, finished_at = ? WHERE booking_id = ?
    AND state = 'QUEUED']], why, now, booking_id))
end

function Store:rating_insert(r)
  check(self.db:run([[INSERT INTO ratings (subject, provider_key_id, listing_id, rater_key_id, stars, comment,
    created_at) VALUES (:subject, :provider_key_id, :listing_id, :rater_key_id, :stars, :comment, :created_at)]], r))
end

function Store:rating_get(subject)
  return check(self.db:first("SELECT * FROM ratings WHERE subject = ?", subject)) or nil
end

--- A provider's (or a listing's) ratings, newest first, and their count and sum.
function Store:ratings_of(by, value, limit, offset)
  assert(by == "provider_key_id" or by == "listing_id", "ratings by provider or listing")
  local rows = check(self.db:query("SELECT * FROM ratings WHERE " .. by .. " = ? ORDER BY created_at DESC LIMIT ? OFFSET ?",
    value, limit, offset))
  local agg = check(self.db:first("SELECT count(*) AS n, coalesce(sum(stars), 0) AS stars FROM ratings WHERE " .. by
    .. " = ?", value))
  return rows, agg.n, agg.stars
end

--- The renter's newest completed booking of a listing not yet rated.
function Store:booking_to_rate(listing_id, renter_key_id)
  return check(self.db:first([[SELECT * FROM bookings b WHERE listing_id = ? AND renter_key_id = ?
    AND status IN ('completed', 'released') AND NOT EXISTS (SELECT 1 FROM ratings r WHERE r.subject = 'booking:' || b.booking_id)
    ORDER BY created_at DESC LIMIT 1]], listing_id, renter_key_id)) or nil
end

function Store:bid_insert(b)
  check(self.db:run([[INSERT INTO bids (bid_id, booking_id, key_id, address, model, model_key, min_vram_gb, region, hours,
    rate_units, total_units, chain_id, lock_tx, notes, status, created_at, expires_at) VALUES (:bid_id, :booking_id,
    :key_id, :address, :model, :model_key, :min_vram_gb, :region, :hours, :rate_units, :total_units, :chain_id, :lock_tx,
    :notes, 'open', :created_at, :expires_at)]], b))
end

function Store:bid_get(bid_id)
  return check(self.db:first("SELECT * FROM bids WHERE bid_id = ?", bid_id)) or nil
end

--- A page of bids, newest first: open ones (key_id nil), or a client's own.
function Store:bids(f)
  local where, args = {}, { l = f.limit, o = f.offset }
  if f.key_id then where[#where + 1] = "key_id = :k" args.k = f.key_id end
  if f.status then where[#where + 1] = "status = :s" args.s = f.status end
  if f.model_key then where[#where + 1] = "model_key = :m" args.m = f.model_key end
  local clause = #where > 0 and (" WHERE " .. table.concat(where, " AND ")) or ""
  local rows = check(self.db:query("SELECT * FROM bids" .. clause .. " ORDER BY created_at DESC LIMIT :l OFFSET :o", args))
  return rows, check(self.db:first("SELECT count(*) AS n FROM bids" .. clause, args)).n
end

function Store:bid_end(bid_id, status, now, listing_id)
  return check(self.db:run("UPDATE bids SET status = ?, ended_at = ?, listing_id = coalesce(?, listing_id) "
    .. "WHERE bid_id = ? AND status = 'open'", status, now, listing_id, bid_id)) > 0
end

function Store:bids_expired(now)
  return check(self.db:query("SELECT * FROM bids WHERE status = 'open' AND expires_at <= ?", now))
end

--- Hourly rates (units) of bookings of a model since `since` that paid an
-- hour or more, or came from an accepted bid: what renters actually paid.
function Store:booked_rates(model_key, since)
  local rows = check(self.db:query([[SELECT b.rate_units AS rate FROM bookings b JOIN listings l
    ON l.listing_id = b.listing_id WHERE l.model_key = ? AND (b.paid_units > 0 OR b.bid_id IS NOT NULL)
    AND b.created_at >= ?]], model_key, since))
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.rate end
  return out
end

-- ---- following another node ----

--- A follower starts: every chain it follows is "following", nothing else
-- is listed (a leader passes no chains).
function Store:chain_follow_reset(leader, chains, now)
  check(self.db:transaction(function()
    check(self.db:run("DELETE FROM chain_follow"))
    for _, c in ipairs(chains) do
      check(self.db:run("INSERT INTO chain_follow (chain_id, leader, state, since) VALUES (?, ?, 'following', ?)",
        c, leader, now))
    end
    return true
  end))
end

--- state: following | unreachable | halted; height: the block refused (halted).
function Store:chain_follow_set(chain_id, state, height, reason, now)
  check(self.db:transaction(function()
    return check(self.db:run("UPDATE chain_follow SET state = ?, height = ?, reason = ?, since = ? WHERE chain_id = ?",
      state, height, reason, now, chain_id))
  end))
end

function Store:chain_follow_states()
  return check(self.db:query("SELECT * FROM chain_follow ORDER BY chain_id"))
end

function Store:chain_follow_get(chain_id)
  return check(self.db:first("SELECT * FROM chain_follow WHERE chain_id = ?", chain_id)) or nil
end

--- A peer's chain is followed from leader (a peer's URL): listed "following" unless it is already.
function Store:chain_follow_add(chain_id, leader, now)
  check(self.db:transaction(function()
    return check(self.db:run([[INSERT INTO chain_follow (chain_id, leader, state, since) VALUES (?, ?, 'following', ?)
      ON CONFLICT (chain_id) DO UPDATE SET leader = excluded.leader WHERE leader <> excluded.leader]], chain_id, leader, now))
  end))
end

-- ---- peers ----

function Store:setting_get(name)
  local r = check(self.db:first("SELECT value FROM node_settings WHERE name = ?", name))
  return r and r.value or nil
end

function Store:setting_set(name, value)
  check(self.db:transaction(function()
    return check(self.db:run("INSERT INTO node_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
      .. "SET value = excluded.value", name, value))
  end))
end

--- Adds a peer (nothing when it is listed); true when it was new.
function Store:peer_add(url, now)
  return check(self.db:transaction(function()
    return check(self.db:run("INSERT OR IGNORE INTO peers (url, state, added_at) VALUES (?, 'new', ?)", url, now)) > 0
  end))
end

--- What a peer answered: {node_key, chains (JSON), state, reason, last_seen}.  A
-- node that moved (the same key at another URL) is listed once, at its new URL.
function Store:peer_update(url, f)
  check(self.db:transaction(function()
    if f.node_key then
      check(self.db:run("DELETE FROM peers WHERE node_key = ? AND url <> ?", f.node_key, url))
      check(self.db:run("DELETE FROM chain_follow WHERE leader NOT IN (SELECT url FROM peers) AND leader LIKE 'http%'"))
    end
    return check(self.db:run([[UPDATE peers SET node_key = coalesce(:node_key, node_key), chains = coalesce(:chains, chains),
      state = :state, reason = :reason, last_seen = coalesce(:last_seen, last_seen) WHERE url = :url]],
      { url = url, node_key = f.node_key, chains = f.chains, state = f.state, reason = f.reason, last_seen = f.last_seen }))
  end))
end

function Store:peer_remove(url)
  return check(self.db:transaction(function()
    check(self.db:run("DELETE FROM chain_follow WHERE leader = ?", url))
    return check(self.db:run("DELETE FROM peers WHERE url = ?", url)) > 0
  end))
end

function Store:peers_list()
  return check(self.db:query("SELECT * FROM peers ORDER BY added_at, url"))
end

--- Followed peers' chains with their host's key: {chain_id, leader, node_key, state}.
function Store:peer_chains()
  return check(self.db:query([[SELECT f.chain_id, f.leader, f.state, p.node_key FROM chain_follow f
    JOIN peers p ON p.url = f.leader ORDER BY f.chain_id]]))
end

-- ---- agent directory and messages ----

function Store:directory_get(chain_id, agent_id)
  return check(self.db:first("SELECT * FROM agent_directory WHERE chain_id = ? AND agent_id = ?", chain_id, agent_id)) or nil
end

function Store:directory_put(r)
  check(self.db:transaction(function()
    return check(self.db:run([[INSERT INTO agent_directory (chain_id, agent_id, public_key, capabilities, owner_key_id,
      record, signature, registered_at, updated_at) VALUES (:chain_id, :agent_id, :public_key, :capabilities,
      :owner_key_id, :record, :signature, :now, :now) ON CONFLICT (chain_id, agent_id) DO UPDATE SET
      capabilities = excluded.capabilities, record = excluded.record, signature = excluded.signature,
      owner_key_id = coalesce(excluded.owner_key_id, owner_key_id), updated_at = excluded.updated_at]], r))
  end))
end

--- A chain's agents with a capability (any when nil), with their record:
-- delivered (messages in their inbox) and answered (of those, replied to).
function Store:directory_find(chain_id, capability, limit)
  return check(self.db:query([[SELECT d.*,
      (SELECT count(*) FROM agent_messages m WHERE m.direction = 'in' AND m.target_chain = d.chain_id
        AND m.target = d.agent_id) AS delivered,
      (SELECT count(*) FROM agent_messages m WHERE m.direction = 'in' AND m.target_chain = d.chain_id
        AND m.target = d.agent_id AND EXISTS (SELECT 1 FROM agent_messages r WHERE r.reply_to = m.message_id
        AND r.sender = d.agent_id)) AS answered
    FROM agent_directory d WHERE d.chain_id = :chain_id AND (:cap IS NULL OR d.capabilities LIKE :pattern)
    ORDER BY d.registered_at LIMIT :limit]],
    { chain_id = chain_id, cap = capability, pattern = capability and ('%"' .. capability .. '"%'), limit = limit or 100 }))
end

function Store:message_get(message_id, direction)
  if direction then
    return check(self.db:first("SELECT * FROM agent_messages WHERE message_id = ? AND direction = ?", message_id,
      direction)) or nil
  end
  return check(self.db:first("SELECT * FROM agent_messages WHERE message_id = ? ORDER BY direction DESC LIMIT 1",
    message_id)) or nil
end

--- Inserts a message row (m: the columns); false when that id and direction exist (a replay).
function Store:message_insert(m)
  return check(self.db:transaction(function()
    return check(self.db:run([[INSERT OR IGNORE INTO agent_messages (message_id, direction, sender, sender_chain, target,
      target_chain, envelope, signature, status, attempts, next_attempt_at, receipt, reply_to, created_at, delivered_at)
      VALUES (:message_id, :direction, :sender, :sender_chain, :target, :target_chain, :envelope, :signature, :status, 0,
      :next_attempt_at, :receipt, :reply_to, :created_at, :delivered_at)]], m)) > 0
  end))
end

--- An outbox row's fate: f {status, receipt, relayed_to, delivered_at, attempts, next_attempt_at, last_error}.
function Store:message_update(message_id, direction, f)
  f.message_id, f.direction = message_id, direction
  check(self.db:transaction(function()
    return check(self.db:run([[UPDATE agent_messages SET status = coalesce(:status, status),
      receipt = coalesce(:receipt, receipt), relayed_to = coalesce(:relayed_to, relayed_to),
      delivered_at = coalesce(:delivered_at, delivered_at), attempts = coalesce(:attempts, attempts),
      next_attempt_at = :next_attempt_at, last_error = :last_error WHERE message_id = :message_id
      AND direction = :direction]], f))
  end))
end

function Store:outbox_due(now, limit)
  return check(self.db:query([[SELECT * FROM agent_messages WHERE direction = 'out' AND status = 'pending'
    AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?]], now, limit or 50))
end

function Store:inbox(chain_id, agent_id, limit)
  return check(self.db:query([[SELECT * FROM agent_messages WHERE direction = 'in' AND target_chain = ? AND target = ?
    ORDER BY created_at DESC LIMIT ?]], chain_id, agent_id, limit or 50))
end

function Store:inbox_read(chain_id, agent_id, now)
  check(self.db:transaction(function()
    return check(self.db:run([[UPDATE agent_messages SET read_at = ? WHERE direction = 'in' AND target_chain = ?
      AND target = ? AND read_at IS NULL]], now, chain_id, agent_id))
  end))
end

-- ---- swarms ----

--- Joins a pool; false when the agent was in it already.
function Store:swarm_join(m)
  return check(self.db:transaction(function()
    return check(self.db:run([[INSERT OR IGNORE INTO swarm_members (task_type, agent_id, owner_key_id, joined_at)
      VALUES (:task_type, :agent_id, :owner_key_id, :joined_at)]], m)) > 0
  end))
end

function Store:swarm_leave(task_type, agent_id)
  return check(self.db:transaction(function()
    return check(self.db:run("DELETE FROM swarm_members WHERE task_type = ? AND agent_id = ?", task_type, agent_id)) > 0
  end))
end

--- A pool's members (task_type nil: every pool), oldest first.
function Store:swarm_members(task_type)
  return check(self.db:query([[SELECT * FROM swarm_members WHERE (? IS NULL OR task_type = ?) ORDER BY joined_at,
    agent_id]], task_type, task_type))
end

function Store:swarm_task_insert(t)
  check(self.db:transaction(function()
    return check(self.db:run([[INSERT INTO swarm_tasks (task_id, owner_key_id, task_type, spec, status, created_at,
      updated_at) VALUES (:task_id, :owner_key_id, :task_type, :spec, 'created', :now, :now)]], t))
  end))
end

function Store:swarm_task(task_id)
  return check(self.db:first("SELECT * FROM swarm_tasks WHERE task_id = ?", task_id)) or nil
end

function Store:swarm_task_update(task_id, f)
  f.task_id = task_id
  check(self.db:transaction(function()
    return check(self.db:run([[UPDATE swarm_tasks SET status = coalesce(:status, status),
      strategy = coalesce(:strategy, strategy), run_id = coalesce(:run_id, run_id), members = coalesce(:members, members),
      result = coalesce(:result, result), error = coalesce(:error, error), updated_at = :now WHERE task_id = :task_id]], f))
  end))
end

function Store:swarm_running()
  return check(self.db:query("SELECT * FROM swarm_tasks WHERE status = 'running' ORDER BY updated_at LIMIT 100"))
end

function Store:swarm_work(task_id)
  return check(self.db:query([[SELECT w.*, j.state AS job_state, j.result AS job_result, j.error AS job_error,
    j.receipt AS job_receipt, j.payment_status AS job_payment_status,
    j.payment_amount AS job_payment_amount FROM swarm_work w LEFT JOIN jobs j ON j.job_id = w.job_id WHERE w.task_id = ?
    ORDER BY w.seq]], task_id))
end

function Store:swarm_work_insert(w)
  check(self.db:transaction(function()
    return check(self.db:run([[INSERT INTO swarm_work (task_id, seq, stage, part, agent_id, job_id, state, tried,
      created_at) VALUES (:task_id, (SELECT coalesce(max(seq), 0) + 1 FROM swarm_work WHERE task_id = :task_id), :stage,
      :part, :agent_id, :job_id, 'running', :tried, :created_at)]], w))
  end))
end

function Store:swarm_work_set(task_id, seq, state, output)
  check(self.db:transaction(function()
    return check(self.db:run("UPDATE swarm_work SET state = ?, output = coalesce(?, output) WHERE task_id = ? AND seq = ?",
      state, output, task_id, seq))
  end))
end

-- ---- marketplace ----

--- Registers a listing, or updates the provider's listing of the same GPU
-- (key, miner, model, memory, region): registering a GPU twice must not
-- offer it twice.  Returns the listing's id and, when it existed, its row before.
function Store:listing_register(l)
  local id, before = self.db:transaction(function()
    local before = check(self.db:first([[SELECT * FROM listings WHERE key_id = :key_id AND model_key = :model_key
      AND vram_gb = :vram_gb AND coalesce(miner_id, '') = coalesce(:miner_id, '') AND coalesce(region, '') =
      coalesce(:region, '') ORDER BY created_at LIMIT 1]], l))
    if not before then
      check(self.db:run([[INSERT INTO listings (listing_id, key_id, miner_id, model, model_key, vram_gb, count,
        rate_units, region, payout_address, status, created_at, updated_at) VALUES (:listing_id, :key_id, :miner_id,
        :model, :model_key, :vram_gb, :count, :rate_units, :region, :payout_address, 'active', :now, :now)]], l))
      return l.listing_id
    end
    l.listing_id = before.listing_id
    check(self.db:run([[UPDATE listings SET model = :model, count = :count, rate_units = :rate_units,
      payout_address = coalesce(:payout_address, payout_address), status = 'active', updated_at = :now
      WHERE listing_id = :listing_id]], l))
    return l.listing_id, before or false
  end)
  check(id, before) -- (check alone would drop the row before)
  return id, before or nil
end

function Store:listing_get(listing_id)
  return check(self.db:first("SELECT * FROM listings WHERE listing_id = ?", listing_id)) or nil
end

function Store:listing_update(listing_id, fields)
  local sets, args = {}, { listing_id = listing_id }
  for _, col in ipairs { "rate_units", "status", "region", "count", "vram_gb", "payout_address", "updated_at" } do
    if fields[col] ~= nil then sets[#sets + 1] = col .. " = :" .. col args[col] = fields[col] end
  end
  check(self.db:transaction(function()
    return check(self.db:run("UPDATE listings SET " .. table.concat(sets, ", ") .. " WHERE listing_id = :listing_id", args))
  end))
end

function Store:listing_delete(listing_id)
  return check(self.db:transaction(function()
    return check(self.db:run("DELETE FROM listings WHERE listing_id = ?", listing_id)) > 0
  end))
end

--- Each provider's job record (over its miners) and ratings.
local PROVIDERS = [[
  SELECT key_id, sum(jobs_completed) AS completed, sum(jobs_failed) AS failed, sum(jobs_expired) AS expired
  FROM miners GROUP BY key_id]]
local RATINGS = [[SELECT provider_key_id AS key_id, count(*) AS n, sum(stars) AS stars FROM ratings GROUP BY provider_key_id]]
--- Reputation (README "GPU rental, ratings and bids"): the job record's score (completed + 1) / (jobs + 2)
-- and the ratings' score (sum of (stars - 1) / 4, plus 1) / (ratings + 2), each weighted by its
-- evidence (jobs + 2, ratings + 2): 0.5 for a newcomer.
local REPUTATION = [[((coalesce(p.completed, 0) + 1.0)
  + ((coalesce(r.stars, 0) - coalesce(r.n, 0)) / 4.0 + 1.0))
  / (coalesce(p.completed, 0) + coalesce(p.failed, 0) + coalesce(p.expired, 0) + coalesce(r.n, 0) + 4.0)]]
--- Available: active, not booked, and its provider has a miner online (heard
-- from since cutoff) — or, for a provider without any miner, the listing
-- was touched lately.  Columns of l only, so that counting reads one index.
local AVAILABLE = [[(l.status = 'active' AND l.booked_until IS NULL
  AND (l.key_id IN (SELECT key_id FROM miners WHERE status = 'ONLINE' AND last_seen >= :cutoff)
    OR (l.updated_at >= :fresh_since AND l.key_id NOT IN (SELECT key_id FROM miners))))]]
-- The same, kept off listings_available ("+" makes a column no index's): a
-- page walks the index of its order (price, model) and stops at its limit,
-- and a count with other filters starts from theirs.
local AVAILABLE_UNINDEXED = AVAILABLE:gsub("l%.", "+l.")

--- Offers: listings with their provider's record.  f: {model_key, min_vram,
-- max_rate, region, key_id, listing_id, available_only, fresh_since, cutoff, order, limit, offset}.
-- The page's ids are chosen from listings alone (the providers' records
-- join its rows only), unless it is ordered by reputation.
function Store:offers(f)
  local where, args = {}, { cutoff = f.cutoff, fresh_since = f.fresh_since or 0 }
  if f.model_key then where[#where + 1] = "l.model_key = :model_key" args.model_key = f.model_key end
  if f.min_vram then where[#where + 1] = "l.vram_gb >= :min_vram" args.min_vram = f.min_vram end
  if f.max_rate then where[#where + 1] = "l.rate_units <= :max_rate" args.max_rate = f.max_rate end
  if f.region then where[#where + 1] = "l.region = :region" args.region = f.region end
  if f.key_id then where[#where + 1] = "l.key_id = :key_id" args.key_id = f.key_id end
  if f.listing_id then where[#where + 1] = "l.listing_id = :listing_id" args.listing_id = f.listing_id end
  local filtered = #where > 0
  if f.available_only then where[#where + 1] = AVAILABLE_UNINDEXED end
  local clause = #where > 0 and (" WHERE " .. table.concat(where, " AND ")) or ""
  args.limit, args.offset = f.limit or 50, f.offset or 0
  local order = f.order .. ", l.listing_id"
  local joins = " LEFT JOIN (" .. PROVIDERS .. ") p ON p.key_id = l.key_id LEFT JOIN (" .. RATINGS
    .. ") r ON r.key_id = l.key_id"
  -- the page's ids first (sorting ids, not rows), then their rows; CROSS JOIN keeps the page the outer
  -- loop (with its LIMIT bound, the planner would walk every listing instead: 6.5 ms, not 0.6)
  local page = "SELECT l.listing_id FROM listings l" .. clause .. " ORDER BY " .. order .. " LIMIT :limit OFFSET :offset"
  if f.order:find("reputation", 1, true) then
    page, order = self:offers_by_reputation(clause, args, f.order:find("DESC", 1, true) ~= nil)
  end
  local rows = check(self.db:query("SELECT l.*, coalesce(p.completed, 0) AS completed, coalesce(p.failed, 0) AS failed, "
    .. "coalesce(p.expired, 0) AS expired, coalesce(r.n, 0) AS ratings, coalesce(r.stars, 0) AS stars, "
    .. AVAILABLE .. " AS available, " .. REPUTATION .. " AS reputation FROM (" .. page .. ") k "
    .. "CROSS JOIN listings l ON l.listing_id = k.listing_id" .. joins .. " ORDER BY " .. order, args))
  -- available and nothing else: counted from listings_available alone
  if f.available_only and not filtered then clause = " WHERE " .. AVAILABLE end
  local total = check(self.db:first("SELECT count(*) AS n FROM listings l" .. clause, args)).n
  return rows, total
end

--- A page of offers by reputation, which is a provider's: providers in
-- its order (then by key), each one's listings by id, until the page is
-- full.  Returns the page as SQL (its ids in args.ids) and its order.
function Store:offers_by_reputation(clause, args, descending)
  local providers = check(self.db:query("SELECT k.key_id, " .. REPUTATION
    .. " AS reputation FROM (SELECT key_id FROM listings GROUP BY key_id) k LEFT JOIN (" .. PROVIDERS
    .. ") p ON p.key_id = k.key_id LEFT JOIN (" .. RATINGS .. ") r ON r.key_id = k.key_id ORDER BY reputation "
    .. (descending and "DESC" or "ASC") .. ", k.key_id"))
  local skip, ids = args.offset, {}
  local where = clause == "" and " WHERE l.key_id = :provider" or (clause .. " AND l.key_id = :provider")
  for _, p in ipairs(providers) do
    args.provider, args.want = p.key_id, skip + args.limit - #ids
    for _, r in ipairs(check(self.db:query("SELECT l.listing_id FROM listings l" .. where
      .. " ORDER BY l.listing_id LIMIT :want", args))) do
      if skip > 0 then skip = skip - 1 else ids[#ids + 1] = r.listing_id end
    end
    if #ids >= args.limit then break end
  end
  args.provider, args.want, args.ids = nil, nil, json.encode(json.array(ids))
  return "SELECT value AS listing_id, key AS n FROM json_each(:ids)", "k.n"
end

--- Hourly rates (units) of jobs completed since `since` and paid (their
-- escrow released to the miner) on miners whose capabilities mention the
-- model: what the market actually paid.  A job never paid paid nothing.
function Store:completed_rates(model_pattern, since)
  local rows = check(self.db:query([[SELECT m.price_units AS rate FROM jobs j JOIN miners m ON j.miner_id = m.miner_id
    WHERE j.state = 'COMPLETED' AND j.payment_status = 'released' AND j.finished_at >= ? AND m.price_units IS NOT NULL
    AND lower(m.capabilities) LIKE ?]], since, model_pattern))
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.rate end
  return out
end

-- ---- operations: admin status, health checks, restarts ----

--- The database's own figures: pages, free pages, page size, journal mode, schema.
function Store:db_stats()
  local function pragma(name) return check(self.db:first("PRAGMA " .. name))[name] end
  return { page_count = pragma("page_count"), freelist_count = pragma("freelist_count"), page_size = pragma("page_size"),
    journal_mode = pragma("journal_mode"), schema_version = pragma("user_version") }
end

--- SQLite's integrity check (full = integrity_check, else quick_check):
-- the problems it found (empty when the database is sound), at most max.
function Store:integrity(full, max)
  local rows = check(self.db:query("PRAGMA " .. (full and "integrity_check" or "quick_check") .. "(" .. (max or 20) .. ")"))
  local problems = {}
  for _, r in ipairs(rows) do
    local text = r.integrity_check or r.quick_check
    if text ~= "ok" then problems[#problems + 1] = text end
  end
  return problems
end

--- A chain's newest blocks, newest first.
function Store:chain_blocks_recent(chain_id, limit)
  return check(self.db:query("SELECT * FROM chain_blocks WHERE chain_id = ? ORDER BY height DESC LIMIT ?", chain_id, limit))
end

--- Blocks of a chain since a time (its block rate).
function Store:chain_blocks_since(chain_id, since)
  return check(self.db:first("SELECT count(*) AS n FROM chain_blocks WHERE chain_id = ? AND timestamp >= ?",
    chain_id, since)).n
end

--- When the oldest job still waiting for a miner was submitted (nil: none).
function Store:oldest_queued()
  return check(self.db:first("SELECT min(requested_at) AS t FROM jobs WHERE state = 'QUEUED' AND held IS NULL")).t
end

--- Bytes the chain's tables and their indexes take (a chain backup's estimate).
function Store:chain_bytes()
  return check(self.db:first([[SELECT coalesce(sum(pgsize), 0) AS n FROM dbstat('main', 1)
    WHERE name LIKE 'chain\_%' ESCAPE '\' OR name LIKE 'sqlite_autoindex_chain\_%' ESCAPE '\']])).n
end

--- Refused requests (401) counted since a time.
function Store:refused_since(since)
  return check(self.db:first("SELECT coalesce(sum(count), 0) AS n FROM audit WHERE status = 401 AND time >= ?", since)).n
end

-- ---- users: who owns the API keys ----

local USER_VIEW = [[SELECT u.*,
    (SELECT count(*) FROM api_keys k WHERE k.user_id = u.user_id) AS keys,
    (SELECT count(*) FROM api_keys k WHERE k.user_id = u.user_id AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > :now)) AS active_keys,
    (SELECT max(a.time) FROM audit a JOIN api_keys k ON a.key_id = k.key_id WHERE k.user_id = u.user_id) AS last_seen,
    (SELECT coalesce(sum(a.count), 0) FROM audit a JOIN api_keys k ON a.key_id = k.key_id
      WHERE k.user_id = u.user_id AND a.time >= :since) AS requests
  FROM users u]]

--- Users with their keys and activity (requests since `since`).  f: {role, status, user_id, now, since}
function Store:users_list(f)
  local where, args = {}, { now = f.now, since = f.since }
  for _, col in ipairs { "role", "status", "user_id" } do
    if f[col] then where[#where + 1] = "u." .. col .. " = :" .. col args[col] = f[col] end
  end
  return check(self.db:query(USER_VIEW .. (#where > 0 and (" WHERE " .. table.concat(where, " AND ")) or "")
    .. " ORDER BY u.created_at", args))
end

function Store:user_get(user_id, now, since)
  return self:users_list { user_id = user_id, now = now, since = since }[1]
end

function Store:user_by_name(name)
  return check(self.db:first("SELECT * FROM users WHERE name = ?", name)) or nil
end

function Store:user_insert(u)
  check(self.db:transaction(function()
    return check(self.db:run([[INSERT INTO users (user_id, name, email, role, status, note, created_at, updated_at)
      VALUES (:user_id, :name, :email, :role, 'active', :note, :now, :now)]], u))
  end))
end

--- Usable admin keys that do not belong to this user (the last-admin guard).
local OTHER_ADMINS = [[SELECT count(*) AS n FROM api_keys k JOIN users u ON u.user_id = k.user_id
  WHERE k.role = 'admin' AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?)
  AND u.status = 'active' AND u.user_id <> ?]]

--- Changes a user: {name, email, note, role (its keys follow), status
-- ("active" | "suspended", reason)}.  Returns "ok", "not_found" or
-- "last_admin" (nobody could manage the node any more: nothing changed).
function Store:user_update(user_id, f, now)
  return check(self.db:transaction(function()
    local u = check(self.db:first("SELECT * FROM users WHERE user_id = ?", user_id))
    if not u then return "not_found" end
    local loses_admin = u.role == "admin" and u.status == "active"
      and ((f.role and f.role ~= "admin") or f.status == "suspended")
    if loses_admin and check(self.db:first(OTHER_ADMINS, now, user_id)).n == 0 then return "last_admin" end
    check(self.db:run([[UPDATE users SET name = coalesce(:name, name), email = coalesce(:email, email),
      note = coalesce(:note, note), role = coalesce(:role, role), status = coalesce(:status, status),
      suspended_at = CASE WHEN :status = 'suspended' THEN :now WHEN :status = 'active' THEN NULL ELSE suspended_at END,
      suspended_reason = CASE WHEN :status = 'suspended' THEN :reason WHEN :status = 'active' THEN NULL
        ELSE suspended_reason END, updated_at = :now WHERE user_id = :user_id]],
      { name = f.name, email = f.email, note = f.note, role = f.role, status = f.status, reason = f.reason, now = now,
        user_id = user_id }))
    if f.role then check(self.db:run("UPDATE api_keys SET role = ? WHERE user_id = ?", f.role, user_id)) end
    return "ok"
  end))
end

function Store:user_keys(user_id)
  return check(self.db:query("SELECT * FROM api_keys WHERE user_id = ? ORDER BY created_at", user_id))
end

--- A user's requests from the audit log, newest first, and per route.
function Store:user_activity(user_id, since, limit)
  local rows = check(self.db:query([[SELECT a.time, a.key_id, a.method, a.route, a.path, a.status, a.remote, a.count
    FROM audit a JOIN api_keys k ON a.key_id = k.key_id WHERE k.user_id = ? AND a.time >= ?
    ORDER BY a.time DESC LIMIT ?]], user_id, since, limit))
  local routes = check(self.db:query([[SELECT a.route, coalesce(sum(a.count), 0) AS requests,
    sum(CASE WHEN a.status >= 400 THEN a.count ELSE 0 END) AS errors, max(a.time) AS last
    FROM audit a JOIN api_keys k ON a.key_id = k.key_id WHERE k.user_id = ? AND a.time >= ?
    GROUP BY a.route ORDER BY requests DESC]], user_id, since))
  return rows, routes
end

-- ---- the metrics history (aitbc.node.metrics) and miners' GPU readings ----

function Store:miner_gpu_stats(miner_id, stats_json)
  check(self.db:run("UPDATE miners SET gpu_stats = ? WHERE miner_id = ?", stats_json, miner_id))
end

--- Online miners' latest GPU readings.
function Store:miners_gpu_readings(cutoff)
  return check(self.db:query([[SELECT miner_id, gpu_stats FROM miners WHERE status = 'ONLINE' AND last_seen >= ?
    AND gpu_stats IS NOT NULL ORDER BY miner_id]], cutoff))
end

--- What a rollup reads now, each from a small table or a partial index:
-- the queue and its ages, running jobs, miners' job counters (persisted:
-- their change over a minute is the jobs ended in it), chains' heights,
-- online miners' GPU readings.
function Store:metrics_snapshot(now, online_cutoff)
  local q = check(self.db:first([[SELECT count(*) AS n, avg(? - requested_at) AS wait_avg,
    max(? - requested_at) AS wait_max FROM jobs WHERE state = 'QUEUED']], now, now))
  local running = check(self.db:first("SELECT count(*) AS n FROM jobs WHERE state = 'RUNNING'")).n
  local m = check(self.db:first([[SELECT coalesce(sum(jobs_completed), 0) AS completed,
    coalesce(sum(jobs_failed), 0) AS failed FROM miners]]))
  local miners = check(self.db:query([[SELECT gpu_stats FROM miners WHERE status = 'ONLINE' AND last_seen >= ?]],
    online_cutoff))
  local heights = {}
  for _, r in ipairs(check(self.db:query("SELECT chain_id, max(height) AS h FROM chain_blocks GROUP BY chain_id"))) do
    heights[r.chain_id] = r.h
  end
  return { queue_depth = q.n, queue_wait_avg = q.wait_avg, queue_wait_max = q.wait_max, running = running,
    completed = m.completed, failed = m.failed, miners = miners, heights = heights }
end

--- Transactions in a chain's blocks above one height (a range of its key).
function Store:chain_txs_above(chain_id, height)
  return check(self.db:first([[SELECT coalesce(sum(tx_count), 0) AS n FROM chain_blocks
    WHERE chain_id = ? AND height > ?]], chain_id, height)).n
end

local METRIC_COLUMNS = { "minute", "resolution", "jobs_submitted", "jobs_completed", "jobs_failed", "queue_depth",
  "running", "queue_wait_avg", "queue_wait_max", "miners_online", "gpu_utilization", "gpu_temperature_max", "gpus",
  "blocks", "transactions", "cpu_percent", "memory_percent", "disk_percent", "requests" }

function Store:metrics_put(row)
  local names, marks = {}, {}
  for i, c in ipairs(METRIC_COLUMNS) do names[i], marks[i] = c, ":" .. c end
  check(self.db:run("INSERT OR REPLACE INTO metrics_history (" .. table.concat(names, ", ") .. ") VALUES ("
    .. table.concat(marks, ", ") .. ")", row))
end

--- Folds minute rows older than `before` into 15-minute rows (counts
-- summed, levels averaged, maxima kept) and drops rows older than `drop`.
function Store:metrics_downsample(before, drop)
  return check(self.db:transaction(function()
    check(self.db:run("DELETE FROM metrics_history WHERE minute < ?", drop))
    local rows = check(self.db:query([[SELECT (minute / 900) * 900 AS bucket, sum(jobs_submitted) AS jobs_submitted,
      sum(jobs_completed) AS jobs_completed, sum(jobs_failed) AS jobs_failed, avg(queue_depth) AS queue_depth,
      avg(running) AS running, avg(queue_wait_avg) AS queue_wait_avg, max(queue_wait_max) AS queue_wait_max,
      avg(miners_online) AS miners_online, avg(gpu_utilization) AS gpu_utilization,
      max(gpu_temperature_max) AS gpu_temperature_max, max(gpus) AS gpus, sum(blocks) AS blocks,
      sum(transactions) AS transactions, avg(cpu_percent) AS cpu_percent, avg(memory_percent) AS memory_percent,
      avg(disk_percent) AS disk_percent, sum(requests) AS requests
      FROM metrics_history WHERE resolution = 60 AND minute < ? GROUP BY bucket]], (before // 900) * 900))
    if #rows == 0 then return 0 end
    check(self.db:run("DELETE FROM metrics_history WHERE resolution = 60 AND minute < ?", (before // 900) * 900))
    for _, r in ipairs(rows) do
      r.minute, r.resolution, r.bucket = r.bucket, 900, nil
      self:metrics_put(r)
    end
    return #rows
  end))
end

function Store:metrics_range(since, until_, limit)
  return check(self.db:query([[SELECT * FROM metrics_history WHERE minute >= ? AND minute <= ?
    ORDER BY minute DESC LIMIT ?]], since, until_, limit))
end

-- ---- optimize: the network's own history, self-optimisation's probes ----

--- Per-interval history from the jobs table, over [from, to): buckets
-- (0-based, interval seconds each) with jobs submitted, queue waits of the
-- jobs that started (sum, count, max), service times of the completed ones
-- (sum, sum of squares, count) and the miners that started a job in it;
-- plus the miners' presence spans (registered_at .. last_seen) and the
-- first job's time.  -> {buckets = {[b] = row}, miners = {[b] = {id = true}},
-- spans = {{miner_id, from, to, concurrency}}, first = time | nil}
function Store:job_history(from, to, interval)
  local args = { from = from, to = to, interval = interval }
  local out = { buckets = {}, miners = {}, spans = {} }
  for _, r in ipairs(check(self.db:query([[SELECT CAST((requested_at - :from) / :interval AS INTEGER) AS b,
      count(*) AS jobs, count(started_at) AS waited, coalesce(sum(started_at - requested_at), 0) AS wait_sum,
      coalesce(max(started_at - requested_at), 0) AS wait_max FROM jobs
      WHERE requested_at >= :from AND requested_at < :to GROUP BY b]], args))) do
    out.buckets[r.b] = r
  end
  for _, r in ipairs(check(self.db:query([[SELECT CAST((started_at - :from) / :interval AS INTEGER) AS b, miner_id,
      count(CASE WHEN state = 'COMPLETED' THEN 1 END) AS served,
      coalesce(sum(CASE WHEN state = 'COMPLETED' THEN finished_at - started_at END), 0) AS service_sum,
      coalesce(sum(CASE WHEN state = 'COMPLETED' THEN (finished_at - started_at) * (finished_at - started_at) END), 0)
        AS service_sq FROM jobs
      WHERE started_at >= :from AND started_at < :to AND miner_id IS NOT NULL GROUP BY b, miner_id]], args))) do
    out.miners[r.b] = out.miners[r.b] or {}
    out.miners[r.b][r.miner_id] = r
  end
  out.spans = check(self.db:query([[SELECT miner_id, registered_at AS "from", last_seen AS "to", concurrency FROM miners
    WHERE last_seen >= :from AND registered_at < :to]], args))
  out.first = check(self.db:first("SELECT min(requested_at) AS t FROM jobs")).t
  return out
end

--- Imports past jobs (history from elsewhere, for forecasts): rows
-- {job_id, client_key_id, model, requested_at, started_at, finished_at,
-- miner_id}, stored COMPLETED as job type "imported", owed no reward, in
-- one transaction.  -> the number imported
function Store:jobs_import(rows)
  return check(self.db:transaction(function()
    for _, j in ipairs(rows) do
      check(self.db:run([[INSERT INTO jobs (job_id, client_key_id, state, payload, model, model_key, constraints,
          ttl_seconds, requested_at, expires_at, started_at, finished_at, miner_id, attempts, job_type, reward_status)
        VALUES (:job_id, :client_key_id, 'COMPLETED', '{"imported":true}', :model, lower(:model), '{}', 0,
          :requested_at, :requested_at, :started_at, :finished_at, :miner_id, 1, 'imported', 'none')]], j))
    end
    return #rows
  end))
end

--- The inputs an agent was last run on (its owner's runs, trials of the
-- optimiser left out), newest first.
function Store:agent_recent_inputs(agent_id, limit)
  local rows = check(self.db:query([[SELECT json_extract(payload, '$.input') AS input FROM jobs
    WHERE job_type = 'agent' AND json_extract(payload, '$.agent.agent_id') = ?
      AND json_extract(payload, '$.trial') IS NULL AND json_extract(payload, '$.input') IS NOT NULL
    ORDER BY requested_at DESC LIMIT ?]], agent_id, limit))
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.input end
  return out
end

return M
