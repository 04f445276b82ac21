--- aitbc api: a raw request to the node, for scripts and debugging.
local errors = require "aitbc.errors"

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true, HEAD = true }

local function read_data(spec)
  if spec:sub(1, 1) ~= "@" then return spec end
  return require("aitbc.config").read_input(spec:sub(2), "--data file")
end

return {
  name = "api",
  category = "Tools",
  summary = "Send a request to the node's HTTP API and print the JSON answer",
  description = "METHOD defaults to GET, or POST when --data is given. The key sent is the one of the role the "
    .. "route needs (/v1/jobs: client, /v1/miners and /v1/marketplace/gpu: miner, /v1/admin: admin) by the usual "
    .. "precedence, or --role's; for other routes --api-key, AITBC_API_KEY, api_key, else a stored key. HTTP errors "
    .. "map to exit codes (401/403 -> 4, 404 -> 3, others -> 1); an unreachable node exits 5.",
  args = {
    { "method_or_path", help = "HTTP method, or the path when the method is omitted" },
    { "path", optional = true, help = "path under the node URL, e.g. /v1/health" },
  },
  options = {
    { "--data", short = "-d", metavar = "JSON", help = "request body (JSON text, or @file)" },
    { "--query", short = "-q", metavar = "K=V", repeatable = true, help = "query parameter" },
    { "--header", short = "-H", metavar = "'NAME: VALUE'", repeatable = true, help = "extra request header" },
    { "--role", choices = { "client", "miner", "admin" },
      help = "send the key of this role (default: the role the route needs, else any configured key)" },
  },
  examples = { "aitbc api /health", "aitbc api GET /v1/jobs -q state=QUEUED", "aitbc api POST /v1/jobs -d @job.json" },
  run = function(ctx)
    local method, path = ctx.args.method_or_path, ctx.args.path
    if not path then method, path = (ctx.opts.data and "POST" or "GET"), method end
    method = method:upper()
    if not METHODS[method] then
      errors.raise("usage", "unknown HTTP method '" .. method .. "'", "use GET, POST, PUT, PATCH, DELETE or HEAD")
    end
    if path:sub(1, 1) ~= "/" then path = "/" .. path end
    local query, headers = {}, { }
    for _, q in ipairs(ctx.opts.query or {}) do
      local k, v = q:match("^([^=]+)=(.*)$")
      if not k then errors.raise("usage", "--query expects K=V, got '" .. q .. "'") end
      query[k] = v
    end
    for _, h in ipairs(ctx.opts.header or {}) do
      local k, v = h:match("^([^:]+):%s*(.*)$")
      if not k then errors.raise("usage", "--header expects 'Name: value', got '" .. h .. "'") end
      headers[k] = v
    end
    local body
    if ctx.opts.data then
      body = read_data(ctx.opts.data)
      local _, err = require("aitbc.json").decode(body)
      if err then errors.raise("usage", "--data is not valid JSON: " .. err) end
      headers["Content-Type"] = "application/json"
    end
    local role = ctx.opts.role or require("aitbc.auth.keys").role_for(method, path)
    local client = require("aitbc.api").from_context(ctx, { role = role })
    local data = client:call(method, path, { query = query, headers = headers, body = body })
    return data, function(d, out)
      if type(d) == "table" then out:print(require("aitbc.json").encode(d, { pretty = true }))
      else out:print(tostring(d)) end
    end
  end,
}
