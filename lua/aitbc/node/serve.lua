--- `aitbc serve`: start-up, the supervisor loop and shutdown of a node.
local apikey = require "aitbc.protocol.apikey"
local crypto = require "aitbc.crypto"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local store_mod = require "aitbc.node.store"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local M = {}

--- "A.B.C.D:PORT" -> host, port | a usage error, raised before anything is
-- created: four decimal octets 0..255 without leading zeros, a port 0..65535.
function M.parse_listen(text)
  local a, b, c, d, port = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+):(%d+)$")
  local ok = a ~= nil and #port <= 5 and tonumber(port) <= 65535
  for _, octet in ipairs { a, b, c, d } do
    ok = ok and #octet <= 3 and tonumber(octet) <= 255 and not octet:match("^0%d")
  end
  if not ok then
    errors.raise("usage", "--listen must be IPv4:PORT with each of the four numbers 0..255 and the port 0..65535, "
      .. "e.g. 127.0.0.1:8000 (port 0 picks a free one), got '" .. text .. "'")
  end
  return table.concat({ a, b, c, d }, "."), math.tointeger(tonumber(port))
end

local function ensure_node_key(path)
  if sys.stat(path) then return end
  local ok, err = sys.write_file(path, crypto.hex(crypto.random(32)) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write the node key " .. path .. ": " .. err) end
end

--- The first start creates an admin key, writes it (0600) to the data
-- directory, and says where.  So does a start that finds no usable admin
-- key (every one revoked or expired): otherwise nobody could manage the node.
local function ensure_admin_key(store, data_dir, say)
  local now = sys.time()
  if store:keys_count("admin", now) > 0 then return nil end
  local unusable = 0
  for _, k in ipairs(store:keys_list()) do
    if k.role == "admin" then unusable = unusable + 1 end
  end
  local key = apikey.generate("admin")
  local key_id, hash = apikey.identity(key)
  store:key_create { key_id = key_id, hash = hash, role = "admin",
    name = unusable > 0 and "admin key made at start-up: no usable one was left" or "initial admin key",
    environment = "default", created_at = now }
  local path = data_dir .. "/admin.key"
  local ok, err = sys.write_file(path, key .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. err) end
  if unusable > 0 then
    local note = string.format("no usable admin API key (%d admin key(s), all revoked or expired): created a new one, "
      .. "%s; it is in %s (mode 0600)", unusable, key_id, path)
    say("warn", note)
    return note
  end
  say("info", "created the admin API key " .. key_id .. "; it is in " .. path .. " (mode 0600)")
  return nil
end

-- What the node writes in its data directory (SQLite's -wal and -shm take
-- the database's mode).
local DATA_FILES = { "node.db", "node.db-wal", "node.db-shm", "node.log", "node.key", "admin.key", "node.url",
  "node.pid", "serve.out" }

--- The data directory holds keys and the database: private to this user.
-- Every file the node creates is 0600 (umask 077 for this process), a
-- directory it owns is tightened to 0700 (and files an older version left
-- readable to 0600); one it cannot make private stops the start.
function M.private_data_dir(dir)
  sys.umask(tonumber("077", 8))
  local ok, err = sys.mkdir(dir, tonumber("700", 8))
  if not ok then errors.raise("failure", "cannot create the data directory: " .. err) end
  local st = assert(sys.stat(dir))
  local mode = string.format("%04o", st.mode)
  if st.mode & tonumber("1000", 8) ~= 0 then
    errors.raise("failure", "the data directory " .. dir .. " is a shared directory (mode " .. mode .. ", like /tmp); "
      .. "the node keeps its keys there and will not share it", "give the node a directory of its own, e.g. --data-dir "
      .. (dir:gsub("/$", "")) .. "/aitbc-node")
  end
  if st.mode & tonumber("077", 8) ~= 0 then
    if st.uid ~= sys.geteuid() then
      errors.raise("failure", string.format("the data directory %s is open to other users (mode %s) and belongs to "
        .. "uid %d, not to this user (uid %d), so the node cannot make it private", dir, mode, st.uid, sys.geteuid()),
        "as its owner run: chmod 700 " .. dir .. " — or choose another --data-dir")
    end
    ok, err = sys.chmod(dir, tonumber("700", 8))
    if not ok then errors.raise("failure", "cannot make the data directory private (chmod 700): " .. err) end
  end
  for _, name in ipairs(DATA_FILES) do
    local f = sys.stat(dir .. "/" .. name)
    if f and f.type == "file" and f.mode & tonumber("077", 8) ~= 0 and f.uid == sys.geteuid() then
      sys.chmod(dir .. "/" .. name, tonumber("600", 8))
    end
  end
end

--- A follower of another node's chains: the chains and the authority key
-- come from the leader (or --authority), blocks are fetched and verified.
-- Its state per chain (following, unreachable, halted with the block and
-- the reason) goes to the database, where /health and /v1/chains read it.
function M.follower(url, authority)
  local api = require("aitbc.api").new { url = url, timeout = 10, retries = 1 }
  local info, err = api:request("GET", "/v1/chains")
  if not info then errors.raise("network", "cannot follow " .. url .. ": " .. err.message) end
  -- `authority` is what a leader or a follower announces; older nodes only said `node_key`
  local announced = info.authority or info.node_key
  local key = authority or announced
  local public = crypto.unbase64(key or "", "urlsafe")
  if not public or #public ~= 32 then errors.raise("usage", "--authority must be a node key (32 bytes, base64url)") end
  if authority and authority ~= announced then
    errors.raise("failure", url .. " announces another authority key than --authority", "check which node you follow")
  end
  local chains = {}
  for _, c in ipairs(info.items) do chains[#chains + 1] = c.chain_id end
  local chain = require "aitbc.node.chain"
  local states = {} -- chain -> state last written
  local f = { chains = chains, authority = key }

  local function set(store, c, state, height, reason)
    if states[c] == state then return end
    store:chain_follow_set(c, state, height, reason, sys.time())
    states[c] = state
  end

  function f.start(store)
    store:chain_follow_reset(url, chains, sys.time())
    for _, c in ipairs(chains) do states[c] = "following" end
  end

  --- Each chain: up to chain.BLOCKS_PER_PULL blocks from the leader; a refused block halts it.
  function f.sync(store, logger)
    for _, c in ipairs(chains) do
      if states[c] ~= "halted" then
        local ok, height, why = pcall(chain.pull_blocks, store, api, c, public)
        if not ok then
          if states[c] ~= "unreachable" then
            logger:warn("cannot read " .. c .. " from the leader for now", { chain = c, leader = url, error = tostring(height) })
          end
          set(store, c, "unreachable", nil, "the leader " .. url .. " does not answer: " .. tostring(height))
        elseif height then
          set(store, c, "halted", height, why)
          logger:error("refused a block from the leader; stopped following " .. c, { chain = c, height = height, reason = why })
          io.stderr:write("aitbc: refused block ", height, " of ", c, " from ", url, ": ", tostring(why), "\n")
        else
          set(store, c, "following")
        end
      end
    end
  end
  return f
end

--- --param NAME=VALUE, repeated -> {name = value} in their one spelling | a usage error.
function M.genesis_params(list)
  local gp = require "aitbc.protocol.governance"
  local params = {}
  for _, item in ipairs(list or {}) do
    local name, value = item:match("^([%w_]+)=(.+)$")
    if not name then errors.raise("usage", "--param " .. item .. ": write NAME=VALUE, e.g. voting_period=10") end
    local norm, why = gp.normalize(name, value)
    if not norm then errors.raise("usage", "--param " .. name .. " " .. why) end
    params[name] = norm
  end
  return params
end

--- The node's configuration file, DATA_DIR/node.json (optional): the
-- release channel and its pinned key ("release": {"channel", "public_key"}),
-- "thresholds" for admin status and its health checks, "alerts":
-- {"webhook"}.  A file that is not a JSON object stops the start.
function M.node_settings(data_dir)
  local path = data_dir .. "/node.json"
  local text = sys.read_file(path)
  if not text then return {} end
  local settings, err = json.decode(text)
  if type(settings) ~= "table" or json.is_array(settings) then
    errors.raise("usage", path .. " is not a JSON object" .. (err and (": " .. tostring(err)) or ""),
      "fix it, or remove it to run with the defaults")
  end
  return settings
end

--- The chains this node keeps (from --chains) | a usage error.
local function chain_names(text)
  local chains = {}
  for c in text:gmatch("[^,%s]+") do
    if not c:match("^[%w][%w_%-%.]*$") then errors.raise("usage", "--chains: '" .. c .. "' is not a chain name") end
    chains[#chains + 1] = c
  end
  return chains
end

--- Opens the data directory's database and keys and sets up the chains:
-- a follower's come from its leader; a leader's get their genesis.
-- Returns the node's state {store, node_key, chains, follow, faucet_chains, admin_note}.
local function open_node(opts, say)
  local db_path = opts.data_dir .. "/node.db"
  local store, serr = store_mod.open(db_path)
  if not store then errors.raise("failure", "cannot open " .. db_path .. ": " .. tostring(serr)) end
  ensure_node_key(opts.data_dir .. "/node.key")
  local node = { store = store, db_path = db_path, started_at = sys.time(), faucet_chains = json.array() }
  node.admin_note = ensure_admin_key(store, opts.data_dir, say)
  node.chains = chain_names(opts.chains)
  node.node_key = util.read_node_key(opts.data_dir .. "/node.key")
  node.follow = opts.follow and M.follower(opts.follow, opts.authority)
  if node.follow then
    node.chains = node.follow.chains
    return node
  end
  local chain = require "aitbc.node.chain"
  node.genesis_params = M.genesis_params(opts.param)
  for _, c in ipairs(node.chains) do
    if opts.faucet == "on" or (opts.faucet == "auto" and chain.is_devnet(c)) then
      node.faucet_chains[#node.faucet_chains + 1] = c
    end
  end
  return node
end

--- The node's duties (producing or following blocks, sweeps, checkpoints,
-- the metrics history) belong to one process at a time: the one holding
-- DATA_DIR/node.lock.  A new process started by the supervisor serves
-- requests at once, and takes the duties when the old one has exited:
-- two processes never both produce blocks.  Returns whether it has them.
local function take_duties(opts, node, say)
  if node.duties then return true end
  local lock = sys.lock_file(opts.data_dir .. "/node.lock")
  if not lock then return false end
  node.duties = lock
  local store = node.store
  if node.follow then
    node.follow.start(store)
    return true
  end
  local chain = require "aitbc.node.chain"
  store:chain_follow_reset(nil, {}, sys.time())
  for _, c in ipairs(node.chains) do
    local kept = chain.genesis(store, c, node.node_key, sys.time(), node.genesis_params)
    if #kept > 0 then
      say("warn", c .. " exists: its " .. table.concat(kept, ", ") .. " stay as they are (--param sets a new chain's; "
        .. "change them with 'aitbc governance propose --set NAME=VALUE')")
    end
  end
  local refunds = chain.refund_stranded(store, node.node_key, sys.time())
  if refunds > 0 then say("info", "refunded " .. refunds .. " escrow lock(s) that no job payment accounted for") end
  return true
end

--- What every worker's Lua state and the audit writer read (aitbc.node.app).
local function node_config(opts, node)
  return {
    chains = json.array(node.chains), block_time = opts.block_time, follow = opts.follow,
    authority = node.follow and node.follow.authority or node.node_key.id, faucet_chains = node.faucet_chains,
    db_path = node.db_path, log_path = opts.data_dir .. "/node.log", log_level = opts.log_level,
    node_key_path = opts.data_dir .. "/node.key", heartbeat_timeout = opts.heartbeat_timeout,
    started_at = node.started_at, environment = opts.environment, rental_hour = opts.rental_hour,
    data_dir = opts.data_dir, supervised = opts.listen_fd ~= nil, started_mono = sys.monotonic(),
    thresholds = opts.settings and opts.settings.thresholds, alerts = opts.settings and opts.settings.alerts,
    release = opts.settings and opts.settings.release,
  }
end

--- Starts the HTTP server (on the supervisor's socket when there is one); returns it.
local function start_server(opts, node, config)
  local srv, lerr = require("aitbc.server").start { host = opts.host, port = opts.port, fd = opts.listen_fd,
    handler = "aitbc.node.app", config = json.encode(config), max_body = opts.max_body, workers = opts.handler_slots,
    max_connections = opts.max_connections, max_per_address = opts.max_per_address,
    idle_timeout = opts.idle_timeout, log_queue = "aitbc.node.log:" .. config.log_path }
  if not srv then
    node.store:audit_close()
    node.audit_writer:join()
    errors.raise("failure", lerr, "choose another port with --listen, or stop what uses it")
  end
  return srv
end

--- A supervised process's own listener on a free loopback port: the
-- supervisor checks this process's health there before any client reaches
-- it on the shared socket.
local function start_control_server(node, config)
  local srv, err = require("aitbc.server").start { host = "127.0.0.1", port = 0, handler = "aitbc.node.app",
    config = json.encode(config), workers = 1, max_connections = 64, log_queue = "aitbc.node.log:" .. config.log_path }
  if not srv then
    node.store:audit_close()
    node.audit_writer:join()
    errors.raise("failure", "cannot start the control listener: " .. tostring(err))
  end
  return srv
end

--- Tells the supervisor (stdout is its pipe): one JSON object a line.
local function emit(event)
  io.stdout:write(json.encode(event), "\n")
  io.stdout:flush()
end

--- Waits for the supervisor's word to serve (its health check passed);
-- false when it never comes (the supervisor went, or a signal).
local function wait_to_serve(timeout)
  local deadline, got = sys.monotonic() + timeout, ""
  while sys.monotonic() < deadline and not sys.interrupted() do
    local chunk, why = sys.read_input(0.1)
    if chunk then got = got .. chunk elseif why == "eof" then return false end
    if got:find("serve\n", 1, true) then return true end
  end
  return false
end

--- An emergency start checks the database and the chains before serving,
-- and logs what fails (critical) for the operator.
local function integrity_checks(node, logger)
  local status = require "aitbc.node.status"
  local problems = node.store:integrity(false, 20)
  status.save_integrity(node.config, problems, false, sys.time())
  local out = { database = #problems == 0 and "ok" or table.concat(problems, "; "), chains = {} }
  if #problems > 0 then logger:critical("database quick check failed", { problems = table.concat(problems, "; ") }) end
  for _, c in ipairs(node.chains) do
    local v = status.verify_chain(node.store, c, node.config.authority, 20)
    out.chains[c] = #v.problems == 0 and ("ok up to height " .. tostring(v.height)) or table.concat(v.problems, "; ")
    if #v.problems > 0 then
      logger:critical("chain tip verification failed", { chain = c, problems = table.concat(v.problems, "; ") })
    end
  end
  logger:info("start-up integrity checks", { database = out.database })
  return out
end

--- Produces the blocks that are due (a leader), or syncs from the leader
-- (a follower); returns when the next block is due.
local function produce_blocks(opts, node, logger, next_block)
  local chain = require "aitbc.node.chain"
  if node.follow then
    local ok, err = pcall(node.follow.sync, node.store, logger)
    if not ok then logger:error("following " .. opts.follow .. " failed", { error = tostring(err) }) end
    return sys.monotonic() + 0.2
  end
  if sys.monotonic() < next_block then return next_block end
  for _, c in ipairs(node.chains) do
    local ok, err = pcall(chain.produce, node.store, c, node.node_key, sys.time())
    if not ok then logger:error("block production failed", { chain = c, error = tostring(err) }) end
  end
  next_block = next_block + opts.block_time
  if next_block < sys.monotonic() then next_block = sys.monotonic() + opts.block_time end
  return next_block
end

--- Expiry, dead-miner and lapsed-job re-queueing, escrow settlement; wakes
-- waiting long polls when anything changed.
local function sweep(opts, node, logger)
  local store, now = node.store, sys.time()
  local ok, changed = pcall(function()
    local requeued, failed = store:requeue_lapsed(now, require("aitbc.node.jobs").MAX_ATTEMPTS)
    local n = store:expire_due(now) + store:requeue_stale(now - opts.heartbeat_timeout) + requeued + failed
    local chain = require "aitbc.node.chain"
    chain.settle_jobs(store, node.node_key, now) -- escrows of jobs that ended
    if not node.follow then
      chain.reward_jobs(store, node.node_key, now, node.chains[1]) -- miners' rewards
      n = n + require("aitbc.node.rental").sweep(store, node.node_key, now, opts.heartbeat_timeout) -- rental hours
      -- peers' chains, the agent messages' outbox, swarm tasks
      n = n + require("aitbc.node.peers").tick(node, logger, now, sys.monotonic())
        + require("aitbc.node.swarm").sweep(store, now)
    end
    return n
  end)
  if not ok then
    logger:error("sweep failed", { error = tostring(changed) })
  elseif changed > 0 then
    logger:info("sweep", { changed = changed })
    sys.notify()
  end
end

--- The main loop: blocks, WAL checkpoints (often, so each holds the write
-- lock only briefly), sweeps (twice a second) — with the duties, and while
-- their service serves — plus resource samples, operations (a service's
-- restart) and log writing; until a signal.
local function supervise(opts, node, logger, writer)
  local services = require "aitbc.node.services"
  local status = require "aitbc.node.status"
  local runner = require("aitbc.node.maintenance").new(node, logger, node.emit)
  local sampler = status.sampler()
  local backup = require "aitbc.node.backup"
  local rollup = require("aitbc.node.metrics").rollup(node.store, opts.heartbeat_timeout, opts.data_dir)
  local next_sweep, next_block, next_prune = 0, sys.monotonic() + opts.block_time, 0
  node.hooks = {
    chain_restart = function() next_block = sys.monotonic() end,
    sweep = function() sweep(opts, node, logger) end,
    monitoring_restart = function() sampler = status.sampler() end,
  }
  while not sys.interrupted() do
    if not node.duties and take_duties(opts, node, function(_, text) logger:info(text) end) then
      logger:info("took over the node's duties (blocks, sweeps, checkpoints)", { pid = sys.getpid() })
      next_block = sys.monotonic()
      if node.emit then node.emit { event = "duties" } end
    end
    if node.duties then
      if services.serving("blockchain-node") then next_block = produce_blocks(opts, node, logger, next_block) end
      -- a backup holds a read transaction: a checkpoint would wait for it, holding the write lock
      if not backup.running() then
        local ok, err = pcall(node.store.checkpoint, node.store)
        if not ok then logger:error("checkpoint failed", { error = tostring(err) }) end
      end
      if sys.monotonic() >= next_prune then
        pcall(backup.prune, opts.data_dir, sys.time())
        next_prune = sys.monotonic() + 60
      end
      if sys.monotonic() >= next_sweep and services.serving("coordinator") then
        sweep(opts, node, logger)
        next_sweep = sys.monotonic() + 0.5
      elseif not node.follow and services.serving("coordinator") then
        -- running swarm tasks move on as their members' jobs end, not at the next sweep
        local ok, err = pcall(require("aitbc.node.swarm").sweep, node.store, sys.time())
        if not ok then logger:error("swarm sweep failed", { error = tostring(err) }) end
      end
    end
    if services.serving("monitoring") then
      sampler:tick(2)
      if node.duties then
        local ok, err = pcall(rollup.tick, rollup, sys.time()) -- the metrics history: a row a minute
        if not ok then logger:error("metrics rollup failed", { error = tostring(err) }) end
      end
    end
    runner:tick()
    writer:drain()
    local pause = runner:busy() and 0.01 or math.min(0.1, math.max(0.01, next_block - sys.monotonic()))
    sys.sleep(node.duties and pause or 0.05)
  end
end

--- Runs the node in the foreground until SIGTERM or Ctrl-C.  opts: the
-- serve command's options with host, port (from --listen), data_dir (a
-- private directory: M.private_data_dir), pid_file and environment; with
-- listen_fd, a process of the supervisor (aitbc.node.supervisor): it serves
-- on that socket once the supervisor, having checked its health on its own
-- listener, says so.  say(level, text) tells the operator what happens.
function M.run(opts, say)
  local node = open_node(opts, say)
  local config = node_config(opts, node)
  node.config, node.data_dir, node.opts = config, opts.data_dir, opts
  sys.on_interrupt("flag")
  local log = require "aitbc.node.log"
  local writer, werr = log.writer(config.log_path)
  if not writer then errors.raise("failure", "cannot open " .. config.log_path .. ": " .. tostring(werr)) end
  local logger = log.open(config.log_path, opts.log_level, "node")
  take_duties(opts, node, say)
  local checks = opts.integrity_check and integrity_checks(node, logger) or nil
  -- audit rows are committed by a thread of their own; answers wait for theirs
  node.audit_writer = assert(sys.thread("aitbc.node.audit_writer", json.encode(config)))
  local control, srv
  if opts.listen_fd then
    node.emit = emit
    control = start_control_server(node, config)
    emit { event = "ready", pid = sys.getpid(), version = sys.version, control = "http://127.0.0.1:" .. control:port(),
      duties = node.duties ~= nil, integrity = checks }
    writer:drain()
    if not wait_to_serve(opts.serve_timeout or 120) then
      logger:warn("the supervisor did not let this process serve; stopping", { pid = sys.getpid() })
      control:stop(0)
      node.store:audit_close()
      node.audit_writer:join()
      writer:close()
      node.store:close()
      return
    end
  end
  srv = start_server(opts, node, config)
  local url = string.format("http://%s:%d", opts.host, srv:port())
  logger:info("node started", { url = url, pid = sys.getpid(), data_dir = opts.data_dir, version = sys.version,
    duties = node.duties ~= nil })
  if node.admin_note then logger:warn(node.admin_note) end
  writer:drain()
  if not node.follow then require("aitbc.node.peers").start(node.store, url, opts.peer, sys.time()) end
  if opts.listen_fd then
    emit { event = "serving", pid = sys.getpid() }
  else
    if opts.pid_file then sys.write_file(opts.pid_file, sys.getpid() .. "\n", tonumber("600", 8)) end
    if opts.url_file then sys.write_file(opts.url_file, url .. "\n", tonumber("600", 8)) end
    io.stdout:write("aitbc node listening on ", url, "\n")
    io.stdout:flush()
    say("info", "data dir " .. opts.data_dir .. "; log " .. config.log_path .. "; Ctrl-C stops")
  end
  supervise(opts, node, logger, writer)
  logger:info("shutting down", { signal = sys.interrupted(), pid = sys.getpid() })
  srv:stop(opts.grace) -- long polls answer at once; requests in flight get the grace period
  if control then control:stop(0) end
  node.store:audit_close()
  local joined, why = node.audit_writer:join()
  if not joined then logger:error("the audit writer failed", { error = tostring(why) }) end
  logger:info("stopped", { pid = sys.getpid() })
  writer:close()
  node.store:close()
  if opts.pid_file and not opts.listen_fd then os.remove(opts.pid_file) end
  if not opts.listen_fd then say("info", "node stopped") end
end

return M
