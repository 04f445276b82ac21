--- aitbc devnet: a whole local network in one directory (aitbc.devnet) —
-- a node, an Ollama (real or simulated), miners, and the local config
-- pointed at them.

local function dir_of(ctx)
  return require("aitbc.config").expand(ctx.opts.dir or (require("aitbc.config").home() .. "/devnet"))
end

local function up(ctx)
  local state = require("aitbc.devnet").up(dir_of(ctx), ctx.opts, ctx.config, ctx.settings.environment,
    function(level, text) ctx.out[level](ctx.out, text) end)
  return state, function(d, o)
    local what = string.format("node %s, %d miner(s), %s Ollama", d.node.url, #d.miners,
      d.ollama.simulated and "SIMULATED" or "real")
    for _, n in ipairs(d.nodes or {}) do
      what = what .. string.format("; node %d %s hosting %s, %d miner(s)", n.index, n.url, n.chain, #n.miners)
    end
    if d.extended then -- (the phrase scripts look for: it was running, so whoever started it stops it)
      o:success("devnet already running in " .. d.dir .. ", now with " .. (#(d.nodes or {}) + 1) .. " nodes: " .. what)
      return
    end
    if d.already then
      o:success("devnet already running in " .. d.dir .. ": " .. what)
      o:print("config " .. d.config_file .. " points at it. To change it: aitbc devnet down, then aitbc devnet up "
        .. "with other options.")
      return
    end
    o:success("devnet up in " .. d.dir .. ": " .. what)
    o:print("config " .. d.config_file .. " now points at it (node URL, Ollama URL, client, miner and admin keys). Try:")
    o:print([[  aitbc client submit --type inference --model "llama3" --data '{"prompt":"Hello AITBC"}']])
    o:print("  aitbc devnet status   ·   aitbc devnet down")
  end
end

local function down(ctx)
  local dir = dir_of(ctx)
  local stopped = require("aitbc.devnet").down(dir)
  return { dir = dir, stopped = stopped or require("aitbc.json").array() }, function(d, out)
    if not stopped then
      out:success("no devnet running in " .. d.dir .. "; nothing to stop")
      return
    end
    for _, s in ipairs(d.stopped) do out:print(string.format("%-18s %s", s.what, s.result)) end
    out:success("devnet in " .. d.dir .. " is down (its data stays in " .. d.dir .. ")")
  end
end

local function status(ctx)
  local dir = dir_of(ctx)
  return { dir = dir, parts = require("aitbc.devnet").status(dir) }, function(d, out)
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
      description = "Idempotent: on a running devnet it starts only what stopped and points the config at it "
        .. "again. A start that fails stops what it started.",
      options = {
        dir_opt,
        { "--miners", type = "integer", min = 0, max = 32, default = 1, help = "how many miners (per node)" },
        { "--nodes", type = "integer", min = 1, max = 8, default = 1,
          help = "how many nodes: each hosts its own chain (ait-devnet, ait-healthchain, ...) and follows the others'" },
        { "--port", type = "integer", min = 0, max = 65535, default = 0, help = "node port (0: any free one)" },
        { "--model", default = "llama3", metavar = "MODEL", help = "the miners' model" },
        { "--gpus", default = "1x RTX 4090", metavar = "LIST", help = "what the miners declare" },
        { "--ollama-url", metavar = "URL", help = "the real Ollama to use if it answers (default: the ollama_url setting)" },
        { "--simulate", type = "boolean", help = "use the simulated Ollama even if a real one answers" },
        { "--voting-period", type = "integer", min = 1, max = 1000000, metavar = "BLOCKS",
          help = "how long governance votes stay open on a new devnet chain (default 10 blocks of 2 s)" },
      },
      examples = { "aitbc devnet up", "aitbc devnet up --miners 3 --dir /tmp/devnet", "aitbc devnet up --nodes 2" },
      run = up,
    },
    { name = "down", summary = "Stop everything the devnet started (nothing running: says so, exit 0)",
      options = { dir_opt }, run = down },
    { name = "status", summary = "What runs in the devnet, and whether it answers", options = { dir_opt }, run = status,
      list = "parts", fields = { "part", "state", "pid", "where" }, watch = true },
  },
}
