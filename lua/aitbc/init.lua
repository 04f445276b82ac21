--- require "aitbc": the API that commands, scripts and scenarios share.
-- Modules load on first use:
--   aitbc.http, aitbc.crypto, aitbc.db, aitbc.sys, aitbc.json, aitbc.yaml,
--   aitbc.config, aitbc.errors, aitbc.scenario, aitbc.server, aitbc.money,
--   aitbc.api (the node's HTTP client: api.new{url, api_key}, api.path),
--   aitbc.ollama (Ollama: ollama.new(url):models(), :generate{...}),
--   aitbc.wallet (keys and keystores), aitbc.context (the user's configuration).
-- With the user's configuration — the flags `aitbc run` was given, the
-- environment (AITBC_URL, AITBC_CLIENT_KEY, ...) and the config file, as
-- for any command — the client's work, what `aitbc client` runs:
--   local job = aitbc.client.submit { model = "llama3", prompt = "Hello AITBC" }   -- the node's job view
--   aitbc.client.status(id), .wait(id, {timeout}), .result(id, {wait = true}), .pay(id, "10"),
--   .cancel(id), .list { state = "completed" }                  -- see lua/aitbc/client/init.lua
--   aitbc.node()               -- an aitbc.api client for the configured node, with the client's key
--   aitbc.node { role = "admin" }
--   local prod = aitbc.connect { environment = "production" }  -- the same, with other settings:
--   prod.client.submit { ... }, prod.node()
-- Errors are raised as aitbc errors (message, hint, kind: aitbc.errors.exit_code(e)).
local MODULES = {
  http = "aitbc.http", crypto = "aitbc.crypto", db = "aitbc.db", sys = "aitbc.sys",
  json = "aitbc.json", yaml = "aitbc.yaml", config = "aitbc.config", errors = "aitbc.errors",
  scenario = "aitbc.scenario", server = "aitbc.server", money = "aitbc.money", api = "aitbc.api",
  ollama = "aitbc.ollama", wallet = "aitbc.wallet", context = "aitbc.context",
}

-- The client functions that take the user's configuration first.
local CLIENT = { "submit", "status", "wait", "result", "pay", "cancel", "list" }

--- The client's functions and the node client, bound to a context (a
-- function returning it, so that the configuration is read when first used).
local function bound(get_ctx)
  local client = { payload = function(spec) return require("aitbc.client").payload(spec) end }
  for _, name in ipairs(CLIENT) do
    client[name] = function(...) return require("aitbc.client")[name](get_ctx(), ...) end
  end
  local function node(opts)
    opts = opts or {}
    return require("aitbc.api").from_context(get_ctx(), { role = opts.role or "client", url = opts.url,
      api_key = opts.api_key })
  end
  return client, node
end

local aitbc = { version = require("aitbc.native.sys").version }

aitbc.client, aitbc.node = bound(function() return require("aitbc.context").default() end)

--- The client and node with settings of their own: flags as on a command
-- line (url, api_key, environment, chain, timeout, config).
function aitbc.connect(flags)
  local ctx
  local client, node = bound(function()
    ctx = ctx or require("aitbc.context").new(flags)
    return ctx
  end)
  return { client = client, node = node }
end

return setmetatable(aitbc, {
  __index = function(t, key)
    local name = MODULES[key]
    if not name then return nil end
    local mod = require(name)
    rawset(t, key, mod)
    return mod
  end,
})
