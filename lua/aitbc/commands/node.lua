--- aitbc node: the fleet — nodes kept in AITBC_HOME/nodes.json (aitbc.fleet),
-- their connectivity (node test) and which chains each hosts and how far
-- it is (node chains, aitbc.fleet.probe).
local errors = require "aitbc.errors"
local json = require "aitbc.json"

local function fleet() return require "aitbc.fleet" end

--- The stored keys of the nodes: name -> key.
local function keys_of(ctx, nodes)
  local keys = {}
  for _, n in ipairs(nodes) do keys[n.name] = fleet().key(ctx.config.file, n.name) end
  return keys
end

local function save_config(ctx)
  local ok, err = require("aitbc.config").write_file(ctx.config.path, ctx.config.file)
  if not ok then error(err, 0) end
end

local function view(ctx, node)
  local key = fleet().key(ctx.config.file, node.name)
  local apikey = require "aitbc.protocol.apikey"
  return { name = node.name, host = node.host, port = node.port, type = node.type, scheme = node.scheme,
    added_at = node.added_at, url = fleet().url(node),
    api_key = key and (ctx.opts.reveal and key or apikey.mask(key)) or nil,
    api_key_id = key and (apikey.identity(key)) or nil }
end

local function add(ctx)
  local o = ctx.opts
  local name, host, port, scheme = o.name or ctx.args.id, o.host, o.port, o.scheme
  if ctx.args.url then
    if o.host then errors.raise("usage", "give the node's URL or --host/--port, not both") end
    host, port, scheme = fleet().parse_url(ctx.args.url)
    port, scheme = o.port or port, o.scheme or scheme
  end
  if not name then errors.raise("usage", "missing --name", "e.g. aitbc node add --name us-east-1 --host 10.0.0.5 "
    .. "--port 8080 --type validator", { field = "name" }) end
  if not host then errors.raise("usage", "missing --host", "the node's address, e.g. --host 10.0.0.5",
    { field = "host" }) end
  if o.api_key then -- checked before anything is stored
    local ok, why, fix = require("aitbc.protocol.apikey").check(o.api_key)
    if not ok then errors.raise("usage", "--api-key " .. why, fix, { field = "api_key" }) end
  end
  local node = fleet().add({ name = name, host = host, port = port, type = o.type, scheme = scheme })
  if o.api_key then
    fleet().set_key(ctx.config.file, node.name, o.api_key, "aitbc node add")
    save_config(ctx)
  end
  local r = view(ctx, node)
  r.registry = fleet().path()
  return r, function(v, out)
    out:success(string.format("node %s added successfully: %s (%s), stored in %s", v.name, v.url, v.type, v.registry))
    if v.api_key then out:print("its API key " .. v.api_key_id .. " is kept in " .. ctx.config.path .. " (mode 0600)") end
    out:print("nothing was contacted; check it with: aitbc node test --node " .. v.name)
  end
end

local function list(ctx)
  local items = json.array()
  for _, n in ipairs(fleet().read().nodes) do items[#items + 1] = view(ctx, n) end
  return { items = items, registry = fleet().path() }, function(v, out)
    if #v.items == 0 then
      out:print("no nodes yet; add one: aitbc node add --name us-east-1 --host 10.0.0.5 --port 8080 --type validator")
      return
    end
    out:print(out:format_table(v.items, { { "name", "name", keep = true }, "url", "type", { "api_key_id", "api key" },
      "added_at" }))
  end
end

local function show(ctx)
  local r = view(ctx, fleet().get(ctx.args.name))
  return r, function(v, out)
    out:print(out:format_record(v, { "name", "url", "host", "port", "scheme", "type", "added_at",
      { "api_key", "api key" }, { "api_key_id", "api key id" } }))
  end
end

local function remove(ctx)
  local node = fleet().remove(ctx.args.name)
  if fleet().key(ctx.config.file, node.name) then
    fleet().set_key(ctx.config.file, node.name, nil)
    save_config(ctx)
  end
  return { name = node.name, url = fleet().url(node), removed = true }, function(v, out)
    out:success("node " .. v.name .. " removed successfully (" .. v.url .. ")")
  end
end

local function render_test(v, out)
  out:print(out:style("node " .. v.name, "bold") .. " · " .. v.url .. " · " .. v.type)
  local l = v.latency_ms
  local rows = {
    reachable = string.format("yes (%d/%d probes answered)", v.probes - v.failed_probes, v.probes),
    latency = string.format("min %.2f ms · p50 %.2f ms · p95 %.2f ms · max %.2f ms", l.min, l.p50, l.p95, l.max),
    version = v.version and ("aitbc " .. v.version) or "-",
    status = tostring(v.status) .. (v.uptime_seconds and string.format(", up %d s", v.uptime_seconds) or ""),
    node_key = v.node_key,
  }
  if v.api_key then
    rows.api_key = v.api_key.key_id .. (v.api_key.accepted and (": accepted, a " .. tostring(v.api_key.role) .. " key")
      or (": refused (HTTP " .. tostring(v.api_key.status) .. ")"))
  end
  out:print(out:format_record(rows, { "reachable", "latency", "version", "status", { "node_key", "node key" },
    { "api_key", "api key" } }))
  if #v.chains > 0 then
    local t = {}
    for i, c in ipairs(v.chains) do
      t[i] = { chain_id = c.chain_id, height = c.height, head = type(c.hash) == "string" and c.hash:sub(1, 12) or "-",
        sync = require("aitbc.fleet.probe").cell_text { status = c.sync, behind = c.behind }
          .. (c.note and (" (" .. c.note .. ")") or ""),
        reference = c.reference == v.name and "this node" or c.reference }
    end
    out:print("")
    out:print(out:format_table(t, { { "chain_id", "chain", keep = true }, "height", "head", "sync",
      { "reference", "compared with" } }))
  else
    out:print("chains      none")
  end
  if v.compared_with == 0 then
    out:print(out:style("no other node registered to compare heights with (aitbc node add ...)", "dim"))
  end
  if v.status == "ok" then out:success(v.name .. " is reachable and healthy")
  else out:warn(string.format("%s is reachable but not healthy: status %s", v.name, tostring(v.status))) end
end

local function test(ctx)
  local name = ctx.opts.node or ctx.args.name
  if not name then errors.raise("usage", "which node? --node NAME", "see 'aitbc node list'", { field = "node" }) end
  local node = fleet().get(name)
  local nodes = fleet().read().nodes
  local report, why = require("aitbc.fleet.probe").test(node, nodes, keys_of(ctx, nodes),
    { timeout = ctx.opts.timeout, probes = ctx.opts.probes })
  if not report then
    local url = fleet().url(node)
    if why.not_a_node then
      errors.raise("failure", string.format("node %s (%s) answers, but not as an aitbc node: HTTP %s from /health",
        node.name, url, tostring(why.not_a_node)),
        "is that the node's API port? check its address with 'aitbc node show " .. node.name .. "'",
        { code = "not_a_node", details = { status = why.not_a_node } })
    end
    local err = why.unreachable
    if err.kind == "interrupted" then error(err, 0) end
    local reason = ({ connect = "connection refused or host unreachable", resolve = "host name not found",
      timeout = "no answer within " .. ctx.opts.timeout .. " s" })[err.code] or err.detail or err.message
    errors.raise("network", string.format("node %s (%s) is unreachable: %s", node.name, url, reason),
      "is it running there? check its address with 'aitbc node show " .. node.name .. "'",
      { code = "node_unreachable", details = { probes_sent = why.sent } })
  end
  -- reachable but not healthy (a follower halted on a block it refuses ...): the report, and exit 1
  if report.status ~= "ok" then ctx.exit_code = 1 end
  return report, render_test
end

local function chains(ctx)
  local nodes = fleet().read().nodes
  if #nodes == 0 then
    errors.raise("not_found", "no nodes registered", "add one: aitbc node add --name NAME --host HOST --port PORT "
      .. "(aitbc devnet up registers its own)", { code = "no_nodes" })
  end
  local m = require("aitbc.fleet.probe").matrix(nodes, keys_of(ctx, nodes), ctx.opts.timeout)
  return m, function(v, out)
    local probe = require "aitbc.fleet.probe"
    local columns, rows = { { "node", "node", keep = true } }, {}
    for _, c in ipairs(v.chains) do columns[#columns + 1] = { c.chain_id, c.chain_id } end
    for i, n in ipairs(v.nodes) do
      local row = { node = n.name }
      for _, c in ipairs(v.chains) do row[c.chain_id] = probe.cell_text(n.chains[c.chain_id]) end
      if #v.chains == 0 then row.node = n.name .. (n.reachable and "" or " (unreachable)") end
      rows[i] = row
    end
    -- headers as the chain ids are spelled (the table upper-cases titles)
    local text = out:format_table(rows, columns)
    for _, c in ipairs(v.chains) do text = text:gsub(c.chain_id:upper():gsub("_", " "):gsub("%p", "%%%0"), c.chain_id, 1) end
    out:print(text)
    for _, c in ipairs(v.chains) do
      out:print(out:style(string.format("%s: height %s at %s (the reference)", c.chain_id, tostring(c.height),
        tostring(c.reference)), "dim"))
    end
    for _, n in ipairs(v.nodes) do
      if not n.reachable then out:print(out:style(n.name .. ": " .. tostring(n.error), "dim")) end
    end
  end
end

local name_arg = { "name", help = "the node's name", complete = "node" }
local timeout_opt = { "--timeout", type = "number", min = 0.1, max = 60, default = 2, metavar = "SECONDS",
  help = "how long to wait for each node" }

return {
  name = "node",
  category = "Node",
  summary = "The nodes you work with: a local registry, their connectivity and their chains",
  description = "Nodes are kept in AITBC_HOME/nodes.json; adding one contacts nothing. 'aitbc devnet up' registers "
    .. "its node as 'devnet'. An unreachable node makes 'node test' exit 5.",
  commands = {
    {
      name = "add",
      summary = "Register a node (stored only; nothing is contacted)",
      args = { { "id", optional = true, help = "the node's name (or --name)" },
        { "url", optional = true, help = "its URL, e.g. http://10.0.0.5:8080 (or --host/--port)" } },
      fields = { "name", "host", "port", "type", "scheme", "added_at", "url", "api_key", "api_key_id", "registry" },
      id_field = "name",
      options = {
        { "--name", metavar = "NAME", help = "the node's name, e.g. us-east-1" },
        { "--host", metavar = "HOST", help = "its address: an IP address or a host name" },
        { "--port", type = "integer", min = 1, max = 65535, metavar = "PORT", help = "its API port (default 8000)" },
        { "--type", choices = fleet().TYPES, default = "full",
          help = "validator (seals a chain), full (follows and verifies), archive, coordinator" },
        { "--scheme", choices = fleet().SCHEMES, help = "http (default) or https" },
        { "--api-key", metavar = "KEY", help = "the key to send it (optional; kept in the config file, mode 0600)" },
      },
      examples = { 'aitbc node add --name "us-east-1" --host "10.0.0.5" --port 8080 --type "validator"',
        "aitbc node add eu-west-1 https://node.example.org:8443" },
      run = add,
    },
    { name = "list", summary = "The registered nodes", list = "items", id_field = "name",
      fields = { "name", "host", "port", "type", "scheme", "added_at", "url", "api_key", "api_key_id" },
      options = { { "--reveal", type = "boolean", help = "show API keys unmasked" } }, run = list },
    { name = "show", summary = "One registered node", args = { name_arg },
      options = { { "--reveal", type = "boolean", help = "show its API key unmasked" } }, run = show },
    { name = "remove", summary = "Forget a node (and its stored key)", args = { name_arg }, run = remove },
    {
      name = "test",
      summary = "Reach a node: latency (min/p50/p95/max), version, chains and how its heights compare",
      description = "Probes GET /health --probes times (the first opens the connection), reads /v1/node and "
        .. "/v1/chains, and compares its chains with the other registered nodes'. Exits 5 when it does not answer.",
      args = { { "name", optional = true, help = "the node (or --node)", complete = "node" } },
      fields = { "name", "url", "type", "reachable", "probes", "failed_probes", "latency_ms", "status", "version",
        "node_key", "started_at", "uptime_seconds", "chains", "compared_with", "api_key" },
      options = {
        { "--node", metavar = "NAME", help = "the node's name", complete = "node" },
        { "--probes", type = "integer", min = 1, max = 1000, default = 5, metavar = "N", help = "how many probes" },
        timeout_opt,
      },
      examples = { 'aitbc node test --node "us-east-1"' },
      run = test,
    },
    {
      name = "chains",
      summary = "Nodes × chains: synced, behind N, diverged, not hosted or unreachable in each cell",
      description = "Every registered node is asked at once (--timeout each). A chain's reference is the node that "
        .. "seals it, else the one with the highest head; 'behind N' is N blocks lower on the same chain, "
        .. "'diverged' the same height with another hash (or a head not on the reference's chain).",
      fields = { "nodes", "chains", "seconds" },
      options = { timeout_opt },
      examples = { "aitbc node chains", "aitbc node chains -o json" },
      run = chains,
    },
  },
}
