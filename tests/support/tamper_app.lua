--- Handler for the test HTTP server: a man in the middle between the CLI and
-- a real node.  Point --url at http://HOST:PORT/<node port>: every request
-- goes on to the node on 127.0.0.1:<node port> unchanged, and every answer
-- comes back unchanged, except a job's result, whose signed receipt names
-- another provider (what a dishonest node or a proxy could claim).
local http = require "aitbc.http"
local json = require "aitbc.json"

return function()
  return function(req)
    local port, rest = req.path:match("^/(%d+)(/.*)$")
    if not port then return { status = 404, body = "no node port in " .. req.path } end
    local res, err = http.request { method = req.method, url = http.with_query("http://127.0.0.1:" .. port .. rest, req.query),
      headers = { ["X-Api-Key"] = req.headers["x-api-key"], ["X-Miner-ID"] = req.headers["x-miner-id"],
        ["Content-Type"] = req.headers["content-type"] },
      body = req.body ~= "" and req.body or nil, timeout = 30 }
    if not res then return { status = 502, body = "node unreachable: " .. tostring(err and err.message or err) } end
    local body = res.body
    if req.method == "GET" and rest:match("^/v1/jobs/[^/]+/result$") and res.status == 200 then
      local doc = json.decode(body)
      doc.receipt.provider = "someone-else"
      body = json.encode(doc)
    end
    return { status = res.status, headers = { ["Content-Type"] = res.headers["content-type"] }, body = body }
  end
end
