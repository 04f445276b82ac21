--- Checks a node's health and prints one line; exits 0 healthy, 5 unreachable.
--   aitbc run scripts/node_health.lua [URL]      (default: the configured node, e.g. the devnet's)
local aitbc = require "aitbc"

local node = arg[1] and aitbc.api.new { url = arg[1], timeout = 5 } or aitbc.node()

local health, err = node:request("GET", "/health")
if not health then
  io.stderr:write("unhealthy: ", err.message, "\n")
  return aitbc.errors.exit_code(err)
end
print(string.format("%s: %s", node.url, aitbc.json.encode(health)))
return 0
