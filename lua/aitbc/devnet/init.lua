--- A whole local network in one directory: a node, an Ollama (the real
-- one if it answers, else the simulated one), miners, and keys and URLs
-- written into the local config so the spec's commands work against it.
-- Its state (what runs where) is DIR/devnet.json, written as each part
-- starts, so that `down` finds whatever `up` left behind.
--
-- `up` and `down` are idempotent: `up` on a running devnet brings back any
-- part that stopped and points the config at it again; `down` with nothing
-- running stops nothing and says so.  An `up` that fails stops what it
-- started.  The devnet's own miners use a miner key of their own
-- (DIR/miners.key), and `up` takes whichever admin key the node still
-- accepts (the config's, then DIR/node/admin.key), so rotating the keys in
-- the config (`aitbc auth rotate`) leaves the devnet working.
local daemon = require "aitbc.daemon"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local devnet = {}

local function state_path(dir) return dir .. "/devnet.json" end

--- The state of the devnet in dir, or nil when none was started there.
function devnet.read_state(dir)
  local text = sys.read_file(state_path(dir))
  local state = text and json.decode(text)
  return type(state) == "table" and state or nil
end

local function save(state)
  local ok, err = sys.write_file(state_path(state.dir), json.encode(state, { pretty = true }) .. "\n", tonumber("600", 8))
  if not ok then errors.raise("failure", "cannot write " .. state_path(state.dir) .. ": " .. tostring(err)) end
end

--- Whether pid is alive and is a process this devnet started (its command
-- line or environment names the devnet's directory): a pid reused by
-- another program after a reboot is never signalled.
local function ours(pid, dir)
  pid = math.tointeger(pid)
  if not (pid and daemon.alive(pid)) then return false end
  local cmdline = sys.read_file("/proc/" .. pid .. "/cmdline")
  if cmdline == nil or cmdline:find(dir, 1, true) then return true end
  local environ = sys.read_file("/proc/" .. pid .. "/environ")
  return environ ~= nil and environ:find(dir, 1, true) ~= nil
end

local function stop(pid, dir, timeout)
  if not ours(pid, dir) then return "not running" end
  return daemon.stop(pid, timeout)
end

-- ---- keys ----

--- The role the node gives key, or nil and why it refused it.
local function role_of(url, key)
  if not key then return nil, "none" end
  local who, err = require("aitbc.api").new { url = url, api_key = key, timeout = 10 }
    :request("GET", "/v1/auth/whoami", { expect = { role = "string" } })
  if not who then
    if err.kind == "network" then error(err, 0) end
    return nil, err.message
  end
  return who.role
end

--- An admin key the node accepts: the one the config holds for this
-- environment (where `auth rotate` puts a new one), else the node's first
-- one (DIR/node/admin.key).
local function admin_key(state, file, environment)
  local keys = require "aitbc.auth.keys"
  local stored = keys.stored(file, environment).admin
  local path = state.node.data_dir .. "/admin.key"
  local from_file = (sys.read_file(path) or ""):gsub("%s+$", "")
  local why = {}
  for _, c in ipairs { { key = type(stored) == "table" and stored.key or nil, where = "the config's admin key" },
                       { key = from_file ~= "" and from_file or nil, where = path } } do
    local role, reason = role_of(state.node.url, c.key)
    if role == "admin" then return c.key end
    if c.key then why[#why + 1] = c.where .. ": " .. (role and ("a " .. role .. " key") or reason) end
  end
  errors.raise("auth", "no admin key that the devnet's node accepts (" .. table.concat(why, "; ") .. ")",
    "import the node's current admin key (AITBC_ADMIN_KEY=... aitbc auth import-env --key-type admin), then run "
      .. "'aitbc devnet up' again", { code = "no_admin_key" })
end

--- key if the node accepts it with this role, else a new key of that role.
local function usable_or_new(url, admin, role, key, name)
  if key and role_of(url, key) == role then return key, false end
  local created = require("aitbc.api").new { url = url, api_key = admin }:call("POST", "/v1/admin/keys",
    { json = { role = role, name = name, environment = "devnet" }, expect = { key = "string" } })
  return created.key, true
end

--- The miner key of the devnet's own miners (DIR/miners.key, 0600): kept
-- apart from the config's keys, which the user may rotate or revoke.
local function miners_key(state, admin)
  local path = state.dir .. "/miners.key"
  local old = (sys.read_file(path) or ""):gsub("%s+$", "")
  local key, created = usable_or_new(state.node.url, admin, "miner", old ~= "" and old or nil, "devnet miners")
  if created then
    local ok, err = sys.write_file(path, key .. "\n", tonumber("600", 8))
    if not ok then errors.raise("failure", "cannot write " .. path .. ": " .. tostring(err)) end
  end
  return key
end

--- Points the config file at the devnet: its URL, its Ollama, and a
-- client, a miner and an admin key for `environment` (the ones stored
-- there already when the node accepts them, else new ones).
local function configure(config, environment, state, admin)
  local keys = require "aitbc.auth.keys"
  local file = config.file
  local stored = keys.stored(file, environment)
  file.url, file.ollama_url = state.node.url, state.ollama.url
  for _, role in ipairs { "client", "miner", "admin" } do
    local old = type(stored[role]) == "table" and stored[role] or {}
    local key, created = admin, old.key ~= admin
    if role ~= "admin" then key, created = usable_or_new(state.node.url, admin, role, old.key, "devnet " .. role) end
    if created then
      keys.put(file, environment, role, { key = key, source = "aitbc devnet up", imported_at = os.date("!%Y-%m-%dT%H:%M:%SZ") })
    end
  end
  local ok, err = require("aitbc.config").write_file(config.path, file)
  if not ok then error(err, 0) end
end

-- ---- parts ----

--- A devnet's chain votes on proposals for this many blocks (2 s each):
-- long enough to vote by hand, short enough to see the tally.
devnet.VOTING_PERIOD = 10

local function start_node(state, port, voting_period, say)
  local dir = state.dir
  local node = daemon.start { args = { "serve", "--listen", "127.0.0.1:" .. port, "--data-dir", dir .. "/node",
    "--url-file", dir .. "/node/node.url", "--pid-file", dir .. "/node/node.pid",
    "--param", "voting_period=" .. (voting_period or devnet.VOTING_PERIOD) },
    ready_file = dir .. "/node/node.url", log = dir .. "/node/serve.out", env = { AITBC_CONFIG = false },
    -- it is up in a tenth of a second; a slow start (once in a full test run) is given what serve's own
    -- supervisor gives its node process before it gives up, and says why when it does
    timeout = 45 }
  state.node = { pid = node.pid, url = node.url, data_dir = dir .. "/node" }
  save(state)
  say("info", "node       " .. node.url .. " (pid " .. node.pid .. ")")
end

--- Where to look for a real Ollama: --ollama-url, else the ollama_url
-- setting, unless that is the URL of a simulated Ollama an earlier devnet
-- here wrote into the config (then the default address).
local function ollama_to_try(dir, opts, config)
  if opts.ollama_url then return opts.ollama_url end
  local url, source = config.values and config.values.ollama_url, config.sources and config.sources.ollama_url
  local last_sim = (sys.read_file(dir .. "/ollama/url") or ""):gsub("%s+$", "")
  if source == "file" and url == last_sim then return nil end
  return url
end

--- The real Ollama at url if it answers (and simulate is not set), else a simulated one started here.
local function start_ollama(state, url, simulate, say)
  local ollama = require "aitbc.ollama"
  local dir = state.dir
  local real_url = ollama.normalize(url or ollama.DEFAULT)
  local version, simulated = ollama.new(real_url):version()
  if version and not simulated and not simulate then
    say("info", "ollama     " .. real_url .. " (Ollama " .. version .. ")")
    state.ollama = { url = real_url, simulated = false, version = version }
    save(state)
    return
  end
  assert(sys.mkdir(dir .. "/ollama", tonumber("700", 8)))
  local sim = daemon.start { args = { "ollama", "serve-sim", "--listen", "127.0.0.1:0", "--url-file", dir .. "/ollama/url" },
    ready_file = dir .. "/ollama/url", log = dir .. "/ollama/ollama-sim.log", env = { AITBC_CONFIG = false } }
  state.ollama = { url = sim.url, simulated = true, pid = sim.pid }
  save(state)
  say("warn", string.format("no Ollama answers at %s: started the SIMULATED Ollama at %s (synthetic answers)",
    real_url, sim.url))
end

local function start_miner(state, i, key, say, node)
  node = node or state.node
  local id = (node.index and ("devnet-n" .. node.index .. "-miner-") or "devnet-miner-") .. i
  local log = state.dir .. "/" .. id .. ".log"
  -- its own wallet, so that the jobs it completes are paid to it (payout address)
  local payout = require("aitbc.wallet").ensure_unattended(state.dir .. "/" .. id, id)
  local proc = assert(sys.spawn { argv = { sys.exe_path(), "--url", node.url, "miner", "mine-ollama",
    "--model", state.model, "--continuous", "--miner-id", id, "--ollama-url", state.ollama.url, "--gpus", state.gpus,
    -- your own devnet runs your own agents' Lua (still in the sandbox)
    "--allow-custom-workflows" },
    env = { AITBC_MINER_KEY = key, AITBC_HOME = state.dir .. "/" .. id, AITBC_CONFIG = false, AITBC_API_KEY = false,
      AITBC_ENVIRONMENT = false }, setsid = true, stdin = "null", stdout = "null", stderr = "null", log = log })
  local list = node.index and node.miners or state.miners
  list[i] = { id = id, pid = proc:pid(), log = log, payout_address = payout }
  save(state)
  say("info", string.format("miner      %s (pid %d, log %s)", id, proc:pid(), log))
end

-- ---- more nodes (devnet up --nodes N): each hosts a chain of its own and
-- peers with the others, following their chains ----

--- The chain node i hosts: ait-devnet (the first), ait-healthchain, ...
devnet.CHAINS = { "ait-devnet", "ait-healthchain", "ait-financechain", "ait-researchchain" }
function devnet.chain_of(i) return devnet.CHAINS[i] or ("ait-chain" .. i) end

--- The URLs of the running nodes other than node `except` (an index; 1 is state.node).
local function node_urls(state, except)
  local urls = {}
  if except ~= 1 and state.node then urls[#urls + 1] = state.node.url end
  for _, n in ipairs(state.nodes or {}) do
    if n.index ~= except and n.url and ours(n.pid, state.dir) then urls[#urls + 1] = n.url end
  end
  return urls
end

local function start_extra_node(state, i, voting_period, say)
  local dir = state.dir .. "/node" .. i
  assert(sys.mkdir(dir, tonumber("700", 8)))
  local args = { "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--url-file", dir .. "/node.url",
    "--pid-file", dir .. "/node.pid", "--chains", devnet.chain_of(i), "--faucet", "on",
    "--param", "voting_period=" .. (voting_period or devnet.VOTING_PERIOD) }
  for _, url in ipairs(node_urls(state, i)) do args[#args + 1] = "--peer" args[#args + 1] = url end
  os.remove(dir .. "/node.url")
  local proc = daemon.start { args = args, ready_file = dir .. "/node.url", log = dir .. "/serve.out",
    env = { AITBC_CONFIG = false }, timeout = 45 } -- (as the first node's)
  local n = state.nodes[i - 1] or { index = i, miners = json.array() }
  n.index, n.chain, n.pid, n.url, n.data_dir = i, devnet.chain_of(i), proc.pid, proc.url, dir
  n.miners = json.array(n.miners or {})
  state.nodes[i - 1] = n
  save(state)
  say("info", string.format("node %d     %s hosting %s (pid %d)", i, proc.url, n.chain, proc.pid))
  return n
end

--- The admin key of node n (its first one, in its data directory).
local function extra_admin(n) return ((sys.read_file(n.data_dir .. "/admin.key") or ""):gsub("%s+$", "")) end

--- Every node learns every other node's URL (POST /v1/admin/peers: a URL it
-- knows already changes nothing), so that a node restarted on a new port
-- is followed again.
local function mesh(state, admin)
  local api = require "aitbc.api"
  local all = { { url = state.node.url, key = admin } }
  for _, o in ipairs(state.nodes) do
    if ours(o.pid, state.dir) then all[#all + 1] = { url = o.url, key = extra_admin(o) } end
  end
  for _, a in ipairs(all) do
    for _, b in ipairs(all) do
      if a ~= b then
        api.new { url = b.url, api_key = b.key, timeout = 10 }:call("POST", "/v1/admin/peers", { json = { url = a.url } })
      end
    end
  end
  -- ready once every node follows the others' chains (each polls its peers every second)
  local deadline = sys.monotonic() + 20
  for _, b in ipairs(all) do
    local client = api.new { url = b.url, timeout = 5 }
    while true do
      local chains = client:call("GET", "/v1/chains")
      if #chains.items >= #all then break end
      if sys.monotonic() > deadline then
        errors.raise("failure", "node " .. b.url .. " does not follow its peers' chains after 20 s",
          "see its log: " .. state.dir .. "/node*/node.log")
      end
      sys.sleep(0.2)
    end
  end
end

--- Nodes 2..N: started when not running (peering with the others), each with its miners.
local function bring_up_extra(state, opts, admin, say, started)
  for i = 2, state.node_count do
    local n = state.nodes[i - 1]
    if not (n and ours(n.pid, state.dir)) then
      n = start_extra_node(state, i, opts.voting_period, say)
      started[#started + 1] = n.pid
    end
    if state.miner_count > 0 then
      local old = (sys.read_file(n.data_dir .. "/miners.key") or ""):gsub("%s+$", "")
      local key = usable_or_new(n.url, extra_admin(n), "miner", old ~= "" and old or nil, "devnet miners")
      assert(sys.write_file(n.data_dir .. "/miners.key", key .. "\n", tonumber("600", 8)))
      for m = 1, state.miner_count do
        if not (n.miners[m] and ours(n.miners[m].pid, state.dir)) then
          start_miner(state, m, key, say, n)
          started[#started + 1] = n.miners[m].pid
        end
      end
    end
  end
  if state.node_count > 1 then mesh(state, admin) end
end

--- Stops the parts in `started` (pids), newest first.
local function stop_started(state, started)
  for i = #started, 1, -1 do stop(started[i], state.dir, 20) end
end

--- Brings every part of state up: what runs is kept, what does not is
-- started (its pid added to `started`).  opts: port, miners, model, gpus,
-- ollama_url, simulate, voting_period (blocks; a new chain's only).
local function bring_up(state, opts, config, environment, say, started)
  if not (state.node and ours(state.node.pid, state.dir)) then
    start_node(state, opts.port, opts.voting_period, say)
    started[#started + 1] = state.node.pid
  end
  if not state.ollama or (state.ollama.simulated and not ours(state.ollama.pid, state.dir))
    or (not state.ollama.simulated and not require("aitbc.ollama").new(state.ollama.url):version()) then
    start_ollama(state, ollama_to_try(state.dir, opts, config), opts.simulate, say)
    if state.ollama.pid then started[#started + 1] = state.ollama.pid end
  end
  local admin = admin_key(state, config.file, environment)
  configure(config, environment, state, admin)
  local key = state.miner_count > 0 and miners_key(state, admin) or nil
  for i = 1, state.miner_count do
    local m = state.miners[i]
    if not (m and ours(m.pid, state.dir)) then
      start_miner(state, i, key, say)
      started[#started + 1] = state.miners[i].pid
    end
  end
  bring_up_extra(state, opts, admin, say, started)
end

--- Starts a devnet in dir, or completes the one running there.  opts:
-- port, miners, model, gpus, ollama_url, simulate; config: the CLI's
-- resolved config {path, file, values, sources}; environment: where its
-- keys go; say(level, text) tells what starts.  Returns its state, with
-- `already` = true when everything was running already.
function devnet.up(dir, opts, config, environment, say)
  assert(sys.mkdir(dir, tonumber("700", 8)))
  assert(sys.mkdir(dir .. "/node", tonumber("700", 8)))
  local state = devnet.read_state(dir)
  local running = state and state.node and ours(state.node.pid, dir)
  if not running then
    if state then devnet.down(dir) end -- whatever a crashed devnet left behind
    state = { dir = dir, started_at = os.date("!%Y-%m-%dT%H:%M:%SZ"), miners = json.array(),
      miner_count = opts.miners, model = opts.model, gpus = opts.gpus, node_count = opts.nodes or 1, nodes = json.array() }
  else
    state.miners = json.array(state.miners or {})
    state.nodes = json.array(state.nodes or {})
    -- `up --nodes N` on a running devnet with fewer adds the missing ones
    state.node_count = math.max(state.node_count or 1, opts.nodes or 1)
    state.miner_count = state.miner_count or #state.miners
    state.model, state.gpus = state.model or opts.model, state.gpus or opts.gpus
  end
  local started = {}
  local ok, err = pcall(bring_up, state, opts, config, environment, say, started)
  if not ok then
    stop_started(state, started)
    if not (state.node and ours(state.node.pid, dir)) then os.remove(state_path(dir)) end
    error(err, 0)
  end
  state.config_file = config.path
  save(state)
  -- the fleet registry (AITBC_HOME/nodes.json): `aitbc node test|chains` know the devnet's node as "devnet"
  local registered, why = pcall(require("aitbc.fleet").register, "devnet", state.node.url, "validator")
  if not registered then say("warn", "could not register the node in the fleet registry: " .. tostring(why)) end
  state.already = running and #started == 0 or nil
  state.extended = running and #started > 0 or nil -- `up --nodes N` added nodes to a running devnet
  return state
end

--- Stops everything the devnet in dir started; returns {what, result} per
-- part, or nil when no devnet was started there (nothing to do).
function devnet.down(dir)
  local state = devnet.read_state(dir)
  local stopped = json.array()
  if not state then
    -- a node a devnet started whose state was lost: its pid file names it
    local pid = tonumber((sys.read_file(dir .. "/node/node.pid") or ""):match("%d+"))
    if not (pid and ours(pid, dir)) then return nil end
    stopped[1] = { what = "node", result = stop(pid, dir, 20) }
    return stopped
  end
  for _, m in ipairs(state.miners or {}) do stopped[#stopped + 1] = { what = m.id, result = stop(m.pid, dir) } end
  for _, n in ipairs(state.nodes or {}) do
    for _, m in ipairs(n.miners or {}) do stopped[#stopped + 1] = { what = m.id, result = stop(m.pid, dir) } end
    stopped[#stopped + 1] = { what = "node " .. n.index .. " (" .. n.chain .. ")", result = stop(n.pid, dir, 20) }
  end
  if state.ollama and state.ollama.pid then
    stopped[#stopped + 1] = { what = "simulated ollama", result = stop(state.ollama.pid, dir) }
  end
  if state.node then stopped[#stopped + 1] = { what = "node", result = stop(state.node.pid, dir, 20) } end
  os.remove(state_path(dir))
  return stopped
end

--- "healthy", "not answering", or "degraded: WHY" from the node's /health
-- (which answers 503 with the reason when, say, a followed chain halted).
local function node_health(url)
  local res = require("aitbc.http").request { method = "GET", url = url .. "/health", timeout = 3 }
  local h = res and type(res.json) == "table" and res.json
  if not h then return "not answering" end
  if h.status == "ok" then return "healthy" end
  local why = {}
  for _, c in ipairs(type(h.following) == "table" and h.following.chains or {}) do
    if c.state == "halted" then
      why[#why + 1] = string.format("%s halted at block %s: %s", c.chain_id, tostring(c.refused_height), tostring(c.reason))
    end
  end
  for name, v in pairs(type(h.services) == "table" and h.services or {}) do
    if v ~= "ok" and name ~= "chain" then why[#why + 1] = name .. " " .. tostring(v) end
  end
  return tostring(h.status) .. (#why > 0 and (": " .. table.concat(why, "; ")) or "")
end

--- The miners of nodes 2..N, as rows of devnet.status.
local function extra_miner_rows(state, rows)
  for _, n in ipairs(state.nodes or {}) do
    for _, m in ipairs(n.miners or {}) do
      rows[#rows + 1] = { part = m.id, where = m.log, pid = m.pid, state = ours(m.pid, state.dir) and "running" or "stopped" }
    end
  end
end

--- What runs in the devnet in dir: {part, where, pid, state} per part.
function devnet.status(dir)
  local state = devnet.read_state(dir)
  if not (state and state.node) then errors.raise("not_found", "no devnet in " .. dir, "start one: aitbc devnet up") end
  local rows = json.array()
  rows[#rows + 1] = { part = #(state.nodes or {}) > 0 and "node 1 (ait-devnet)" or "node", where = state.node.url,
    pid = state.node.pid, state = ours(state.node.pid, dir) and node_health(state.node.url) or "stopped" }
  for _, n in ipairs(state.nodes or {}) do
    rows[#rows + 1] = { part = "node " .. n.index .. " (" .. n.chain .. ")", where = n.url, pid = n.pid,
      state = ours(n.pid, dir) and node_health(n.url) or "stopped" }
  end
  if state.ollama then
    local version = require("aitbc.ollama").new(state.ollama.url):version()
    rows[#rows + 1] = { part = state.ollama.simulated and "ollama (simulated)" or "ollama", where = state.ollama.url,
      pid = state.ollama.pid or "-", state = version and "answering" or "not answering" }
  end
  for _, m in ipairs(state.miners or {}) do
    rows[#rows + 1] = { part = m.id, where = m.log, pid = m.pid, state = ours(m.pid, dir) and "running" or "stopped" }
  end
  extra_miner_rows(state, rows)
  return rows
end

return devnet
