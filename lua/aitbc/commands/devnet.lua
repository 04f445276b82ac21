--- aitbc devnet: a whole local network in one directory — a node, an
-- Ollama (the real one if it answers, else the simulated one), miners, and
-- keys and URLs written into the local config so the spec's commands work.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function dir_of(ctx)
  return require("aitbc.config").expand(ctx.opts.dir or (require("aitbc.config").home() .. "/devnet"))
end

local function state_path(dir) return dir .. "/devnet.json" end

local function read_state(dir)
  local text = require("aitbc.sys").read_file(state_path(dir))
  return text and json.decode(text) or nil
end

local function admin_call(url, admin, body)
  return require("aitbc.api").new { url = url, api_key = admin }:call("POST", "/v1/admin/keys",
    { json = body, expect = { key = "string" } })
end

local function up(ctx)
  local sys = require "aitbc.sys"
  local daemon = require "aitbc.daemon"
  local dir = dir_of(ctx)
  local existing = read_state(dir)
  if existing and daemon.alive(existing.node.pid) then
    errors.raise("failure", "a devnet is already running in " .. dir .. " (node " .. existing.node.url .. ")",
      "stop it first: aitbc devnet down" .. (ctx.opts.dir and (" --dir " .. ctx.opts.dir) or ""))
  end
  assert(sys.mkdir(dir .. "/node", tonumber("700", 8)))
  local out = ctx.out
  local state = { dir = dir, started_at = os.date("!%Y-%m-%dT%H:%M:%SZ"), miners = json.array() }
  -- the node
  local node = daemon.start { args = { "serve", "--listen", "127.0.0.1:" .. ctx.opts.port, "--data-dir", dir .. "/node",
    "--url-file", dir .. "/node/node.url", "--pid-file", dir .. "/node/node.pid" },
    ready_file = dir .. "/node/node.url", log = dir .. "/node/serve.out" }
  state.node = { pid = node.pid, url = node.url, data_dir = dir .. "/node" }
  out:info("node       " .. node.url .. " (pid " .. node.pid .. ")")
  -- Ollama: the real one if it answers, else the simulated one
  local ollama = require "aitbc.ollama"
  local real_url = ollama.normalize(ctx.opts.ollama_url)
  local version, simulated = ollama.new(real_url):version()
  if version and not simulated and not ctx.opts.simulate then
    state.ollama = { url = real_url, simulated = false, version = version }
    out:info("ollama     " .. real_url .. " (Ollama " .. version .. ")")
  else
    assert(sys.mkdir(dir .. "/ollama", tonumber("700", 8)))
    local sim = daemon.start { args = { "ollama", "serve-sim", "--listen", "127.0.0.1:0", "--url-file", dir .. "/ollama/url" },
      ready_file = dir .. "/ollama/url", log = dir .. "/ollama/ollama-sim.log" }
    state.ollama = { url = sim.url, simulated = true, pid = sim.pid }
    out:warn(string.format("no Ollama answers at %s: started the SIMULATED Ollama at %s (synthetic answers)", real_url, sim.url))
  end
  -- keys
  local admin = assert(sys.read_file(dir .. "/node/admin.key")):gsub("%s+$", "")
  local client = admin_call(node.url, admin, { role = "client", name = "devnet client", environment = "devnet" })
  local miner = admin_call(node.url, admin, { role = "miner", name = "devnet miner", environment = "devnet" })
  -- the local config: the spec's commands work against this devnet
  local config = require "aitbc.config"
  local keys = require "aitbc.auth.keys"
  local file = ctx.config.file
  file.url = node.url
  file.ollama_url = state.ollama.url
  local env = ctx.settings.environment
  keys.put(file, env, "client", { key = client.key, source = "aitbc devnet up", imported_at = state.started_at })
  keys.put(file, env, "miner", { key = miner.key, source = "aitbc devnet up", imported_at = state.started_at })
  keys.put(file, env, "admin", { key = admin, source = "aitbc devnet up", imported_at = state.started_at })
  assert(config.write_file(ctx.config.path, file))
  state.config_file = ctx.config.path
  -- miners
  for i = 1, ctx.opts.miners do
    local id = "devnet-miner-" .. i
    local log = dir .. "/" .. id .. ".log"
    local proc = assert(sys.spawn { argv = { sys.exe_path(), "--url", node.url, "miner", "mine-ollama", "--model", ctx.opts.model,
      "--continuous", "--miner-id", id, "--ollama-url", state.ollama.url, "--gpus", ctx.opts.gpus },
      env = { AITBC_MINER_KEY = miner.key, AITBC_HOME = dir .. "/" .. id }, setsid = true, stdin = "null",
      stdout = "null", stderr = "null", log = log })
    state.miners[#state.miners + 1] = { id = id, pid = proc:pid(), log = log }
    out:info(string.format("miner      %s (pid %d, log %s)", id, proc:pid(), log))
  end
  assert(sys.write_file(state_path(dir), json.encode(state, { pretty = true }) .. "\n", tonumber("600", 8)))
  return state, function(d, o)
    o:success(string.format("devnet up in %s: node %s, %d miner(s), %s Ollama", d.dir, d.node.url, #d.miners,
      d.ollama.simulated and "SIMULATED" or "real"))
    o:print("config " .. d.config_file .. " now points at it (client, miner and admin keys stored). Try:")
    o:print([[  aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']])
    o:print("  aitbc devnet status   ·   aitbc devnet down")
  end
end

local function down(ctx)
  local daemon = require "aitbc.daemon"
  local dir = dir_of(ctx)
  local state = read_state(dir)
  if not state then errors.raise("not_found", "no devnet in " .. dir) end
  local stopped = json.array()
  for _, m in ipairs(state.miners or {}) do stopped[#stopped + 1] = { what = m.id, result = daemon.stop(m.pid) } end
  if state.ollama and state.ollama.pid then
    stopped[#stopped + 1] = { what = "simulated ollama", result = daemon.stop(state.ollama.pid) }
  end
  stopped[#stopped + 1] = { what = "node", result = daemon.stop(state.node.pid, 20) }
  os.remove(state_path(dir))
  return { dir = dir, stopped = stopped }, function(d, out)
    for _, s in ipairs(d.stopped) do out:print(string.format("%-18s %s", s.what, s.result)) end
    out:success("devnet in " .. d.dir .. " is down (its data stays in " .. d.dir .. ")")
  end
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

local function status(ctx)
  local daemon = require "aitbc.daemon"
  local dir = dir_of(ctx)
  local state = read_state(dir)
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
  return { dir = dir, parts = rows }, function(d, out)
    out:print(out:format_table(d.parts, { "part", "state", "pid", { "where", "url / log" } }))
  end
end

local dir_opt = { "--dir", metavar = "DIR", help = "devnet directory (default AITBC_HOME/devnet)" }

return {
  name = "devnet",
  category = "Node",
  summary = "A whole local network: node, Ollama (real or simulated) and miners",
  commands = {
    {
      name = "up",
      creates_config = true,
      summary = "Start a node, an Ollama and miners; point the local config at them",
      options = {
        dir_opt,
        { "--miners", type = "integer", min = 0, max = 32, default = 1, help = "how many miners" },
        { "--port", type = "integer", min = 0, max = 65535, default = 0, help = "node port (0: any free one)" },
        { "--model", default = "llama3", metavar = "MODEL", help = "the miners' model" },
        { "--gpus", default = "1x RTX 4090", metavar = "LIST", help = "what the miners declare" },
        { "--ollama-url", metavar = "URL", help = "the real Ollama to use if it answers (default OLLAMA_HOST)" },
        { "--simulate", type = "boolean", help = "use the simulated Ollama even if a real one answers" },
      },
      examples = { "aitbc devnet up", "aitbc devnet up --miners 3 --dir /tmp/devnet" },
      run = up,
    },
    { name = "down", summary = "Stop everything the devnet started", options = { dir_opt }, run = down },
    { name = "status", summary = "What runs in the devnet, and whether it answers", options = { dir_opt }, run = status },
  },
}
