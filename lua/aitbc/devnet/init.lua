--- A whole local network in one directory: a node, an Ollama (the real
-- one if it answers, else the simulated one), miners, and keys and URLs
-- written into the local config so the spec's commands work against it.
-- Its state (what runs where) is DIR/devnet.json.
local daemon = require "aitbc.daemon"
local errors = require "aitbc.errors"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local devnet = {}

local function state_path(dir) return dir .. "/devnet.json" end

--- The state of the devnet in dir, or nil when none was started there.
function devnet.read_state(dir)
  local text = sys.read_file(state_path(dir))
  return text and json.decode(text) or nil
end

local function new_key(url, admin, role)
  return require("aitbc.api").new { url = url, api_key = admin }:call("POST", "/v1/admin/keys",
    { json = { role = role, name = "devnet " .. role, environment = "devnet" }, expect = { key = "string" } }).key
end

local function start_node(dir, port, say)
  local node = daemon.start { args = { "serve", "--listen", "127.0.0.1:" .. port, "--data-dir", dir .. "/node",
    "--url-file", dir .. "/node/node.url", "--pid-file", dir .. "/node/node.pid" },
    ready_file = dir .. "/node/node.url", log = dir .. "/node/serve.out" }
  say("info", "node       " .. node.url .. " (pid " .. node.pid .. ")")
  return { pid = node.pid, url = node.url, data_dir = dir .. "/node" }
end

--- The real Ollama at ollama_url if it answers (and simulate is not set), else a simulated one started here.
local function start_ollama(dir, ollama_url, simulate, say)
  local ollama = require "aitbc.ollama"
  local real_url = ollama.normalize(ollama_url)
  local version, simulated = ollama.new(real_url):version()
  if version and not simulated and not simulate then
    say("info", "ollama     " .. real_url .. " (Ollama " .. version .. ")")
    return { url = real_url, simulated = false, version = version }
  end
  assert(sys.mkdir(dir .. "/ollama", tonumber("700", 8)))
  local sim = daemon.start { args = { "ollama", "serve-sim", "--listen", "127.0.0.1:0", "--url-file", dir .. "/ollama/url" },
    ready_file = dir .. "/ollama/url", log = dir .. "/ollama/ollama-sim.log" }
  say("warn", string.format("no Ollama answers at %s: started the SIMULATED Ollama at %s (synthetic answers)",
    real_url, sim.url))
  return { url = sim.url, simulated = true, pid = sim.pid }
end

--- Points the config file at the devnet: its URL, Ollama, and a client,
-- a miner and the admin key for `environment`.  Returns the miner key.
local function configure(config, environment, state)
  local keys = require "aitbc.auth.keys"
  local admin = assert(sys.read_file(state.node.data_dir .. "/admin.key")):gsub("%s+$", "")
  local client, miner = new_key(state.node.url, admin, "client"), new_key(state.node.url, admin, "miner")
  local file, source = config.file, { source = "aitbc devnet up", imported_at = state.started_at }
  file.url, file.ollama_url = state.node.url, state.ollama.url
  for key_type, key in pairs { client = client, miner = miner, admin = admin } do
    keys.put(file, environment, key_type, { key = key, source = source.source, imported_at = source.imported_at })
  end
  assert(require("aitbc.config").write_file(config.path, file))
  return miner
end

local function start_miners(dir, opts, state, miner_key, say)
  for i = 1, opts.miners do
    local id = "devnet-miner-" .. i
    local log = dir .. "/" .. id .. ".log"
    -- its own wallet, so that the jobs it completes are paid to it (payout address)
    local payout = require("aitbc.wallet").ensure_unattended(dir .. "/" .. id, id)
    local proc = assert(sys.spawn { argv = { sys.exe_path(), "--url", state.node.url, "miner", "mine-ollama",
      "--model", opts.model, "--continuous", "--miner-id", id, "--ollama-url", state.ollama.url, "--gpus", opts.gpus },
      env = { AITBC_MINER_KEY = miner_key, AITBC_HOME = dir .. "/" .. id }, setsid = true, stdin = "null",
      stdout = "null", stderr = "null", log = log })
    state.miners[#state.miners + 1] = { id = id, pid = proc:pid(), log = log, payout_address = payout }
    say("info", string.format("miner      %s (pid %d, log %s)", id, proc:pid(), log))
  end
end

--- Starts a devnet in dir.  opts: port, miners, model, gpus, ollama_url,
-- simulate, dir (as the user wrote it, for hints); config: the CLI's config
-- {path, file}; environment: where its keys go; say(level, text) tells what
-- starts.  Returns its state.
function devnet.up(dir, opts, config, environment, say)
  local existing = devnet.read_state(dir)
  if existing and daemon.alive(existing.node.pid) then
    errors.raise("failure", "a devnet is already running in " .. dir .. " (node " .. existing.node.url .. ")",
      "stop it first: aitbc devnet down" .. (opts.dir and (" --dir " .. opts.dir) or ""))
  end
  assert(sys.mkdir(dir .. "/node", tonumber("700", 8)))
  local state = { dir = dir, started_at = os.date("!%Y-%m-%dT%H:%M:%SZ"), miners = json.array() }
  state.node = start_node(dir, opts.port, say)
  state.ollama = start_ollama(dir, opts.ollama_url, opts.simulate, say)
  local miner_key = configure(config, environment, state)
  state.config_file = config.path
  start_miners(dir, opts, state, miner_key, say)
  assert(sys.write_file(state_path(dir), json.encode(state, { pretty = true }) .. "\n", tonumber("600", 8)))
  return state
end

--- Stops everything the devnet in dir started; returns {what, result} per part.
function devnet.down(dir)
  local state = devnet.read_state(dir)
  if not state then errors.raise("not_found", "no devnet in " .. dir) end
  local stopped = json.array()
  for _, m in ipairs(state.miners or {}) do stopped[#stopped + 1] = { what = m.id, result = daemon.stop(m.pid) } end
  if state.ollama and state.ollama.pid then
    stopped[#stopped + 1] = { what = "simulated ollama", result = daemon.stop(state.ollama.pid) }
  end
  stopped[#stopped + 1] = { what = "node", result = daemon.stop(state.node.pid, 20) }
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

--- What runs in the devnet in dir: {part, where, pid, state} per part.
function devnet.status(dir)
  local state = devnet.read_state(dir)
  if not state then errors.raise("not_found", "no devnet in " .. dir, "start one: aitbc devnet up") end
  local rows = json.array()
  rows[#rows + 1] = { part = "node", where = state.node.url, pid = state.node.pid,
    state = daemon.alive(state.node.pid) and node_health(state.node.url) or "stopped" }
  local version = require("aitbc.ollama").new(state.ollama.url):version()
  rows[#rows + 1] = { part = state.ollama.simulated and "ollama (simulated)" or "ollama", where = state.ollama.url,
    pid = state.ollama.pid or "-", state = version and "answering" or "not answering" }
  for _, m in ipairs(state.miners) do
    rows[#rows + 1] = { part = m.id, where = m.log, pid = m.pid, state = daemon.alive(m.pid) and "running" or "stopped" }
  end
  return rows
end

return devnet
