--- Hidden: completion candidates for the words typed so far (the word being
-- completed is not among them: the shell filters by its prefix).
-- Commands, subcommands and options come from the declarations; an option's
-- choices, the fields after --json, and live ids where an argument or an
-- option declares `complete`: jobs from the node (a short timeout, so a
-- node that does not answer costs a second at most), wallets and stored API
-- keys from this machine.
local COMPLETE_TIMEOUT = 1 -- seconds to wait for the node

local function node_client(ctx)
  local client = require("aitbc.api").from_context(ctx, { role = "client" })
  client.timeout, client.retries = COMPLETE_TIMEOUT, 0
  return client
end

--- Live ids by kind; each returns a list (and may raise: no candidates then).
local LIVE = {
  job = function(ctx)
    local res = node_client(ctx):call("GET", "/v1/jobs", { query = { limit = 50 } })
    local ids = {}
    for _, j in ipairs(type(res) == "table" and res.items or {}) do ids[#ids + 1] = j.job_id end
    return ids
  end,
  tx = function(ctx)
    local api = require "aitbc.api"
    local address = require("aitbc.wallet").read(require("aitbc.wallet").active_name(ctx)).address
    local res = node_client(ctx):call("GET", api.path("/v1/chain/{chain}/accounts/{address}/transactions",
      { chain = ctx.settings.chain, address = address }), { query = { limit = 20 } })
    local ids = {}
    for _, t in ipairs(type(res) == "table" and res.items or {}) do ids[#ids + 1] = t.hash end
    return ids
  end,
  wallet = function() return require("aitbc.wallet").names() end,
  deployment = function()
    local names = {}
    for _, d in ipairs(require("aitbc.deploy").all()) do names[#names + 1] = d.name end
    return names
  end,
  node = function()
    local names = {}
    for _, n in ipairs(require("aitbc.fleet").read().nodes) do names[#names + 1] = n.name end
    return names
  end,
  key = function(ctx)
    local ids = {}
    for _, e in ipairs(require("aitbc.auth.keys").of_environment(ctx.config.file)) do ids[#ids + 1] = e.key_id end
    return ids
  end,
}

local WAIT_KINDS = { "job", "tx", "proposal", "deployment" }

--- The candidates of a `complete` declaration at a position: `positionals`
-- are the command's arguments typed before it.
local function live(ctx, what, positionals, out)
  if what == "wait" then -- aitbc wait KIND ID: the kinds, then the ids of that kind
    if #positionals == 0 then
      for _, k in ipairs(WAIT_KINDS) do out[#out + 1] = k end
      return
    end
    what = positionals[1]
  end
  local fetch = LIVE[what]
  if not fetch then return end
  local ok, ids = pcall(fetch, ctx)
  if ok and type(ids) == "table" then
    for _, id in ipairs(ids) do out[#out + 1] = tostring(id) end
  end
end

local function option_index(node)
  local parser = require "aitbc.cli.parser"
  local all = {}
  for _, o in ipairs(node and node.options or {}) do
    all[o.long] = o
    if o.short then all[o.short] = o end
  end
  for _, o in ipairs(parser.GLOBALS) do
    all[o.long] = all[o.long] or o
    if o.short then all[o.short] = all[o.short] or o end
  end
  return all
end

local function takes_value(o) return o.type ~= "boolean" and o.type ~= "count" end

--- The declaration the words reach (nil: none yet), and the words after its path.
local function locate(words)
  local registry = require "aitbc.cli.registry"
  local node, rest = nil, {}
  for _, w in ipairs(words) do
    local next_node
    if w:sub(1, 1) ~= "-" and (node == nil or node.commands) then
      if node == nil then next_node = registry.get(w) else next_node = node.by_name[w] end
    end
    if next_node then node = next_node else rest[#rest + 1] = w end
  end
  return node, rest
end

--- What may follow an option that takes a value (true: it was handled,
-- even with no candidate: nothing else may come there).
local function option_value(ctx, node, prev, out)
  if not prev then return false end
  if prev.long == "--json" then -- the fields it may pick
    for _, f in ipairs(node and node.fields or {}) do out[#out + 1] = f end
    return true
  end
  if prev.choices then
    for _, c in ipairs(prev.choices) do out[#out + 1] = c end
    return true
  end
  if prev.complete then
    live(ctx, prev.complete, {}, out)
    return true
  end
  return takes_value(prev) and not prev.optional_value
end

--- The command's arguments typed so far (options and their values skipped).
local function positionals_of(rest, all)
  local positionals, i = {}, 1
  while i <= #rest do
    local w = rest[i]
    local o = all[w:match("^(%-%-?[^=]+)") or ""]
    if o and takes_value(o) and not w:find("=", 1, true) and not o.optional_value then i = i + 1
    elseif not o and w:sub(1, 1) ~= "-" then positionals[#positionals + 1] = w end
    i = i + 1
  end
  return positionals
end

local function candidates(ctx, words)
  local registry = require "aitbc.cli.registry"
  local node, rest = locate(words)
  local out = {}
  local all = option_index(node)
  if option_value(ctx, node, words[#words] and all[words[#words]], out) then return out end
  if node == nil then
    for _, name in ipairs(registry.names()) do
      local d = registry.get(name)
      if d and not d.hidden then out[#out + 1] = name end
    end
    return out
  end
  if node.commands then
    for _, c in ipairs(node.commands) do if not c.hidden then out[#out + 1] = c.name end end
    out[#out + 1] = "help"
    return out
  end
  local positionals = positionals_of(rest, all)
  local arg = node.args[#positionals + 1]
  if arg and arg.complete then live(ctx, arg.complete, positionals, out) end
  for _, o in ipairs(node.options or {}) do out[#out + 1] = o.long end
  for _, o in ipairs(require("aitbc.cli.parser").GLOBALS) do out[#out + 1] = o.long end
  return out
end

return {
  name = "__complete",
  hidden = true,
  summary = "completion candidates (used by the completion scripts)",
  passthrough = true,
  args = { { "words", variadic = true, optional = true } },
  run = function(ctx)
    io.stdout:write(table.concat(candidates(ctx, ctx.args.words), "\n"), "\n")
  end,
}
