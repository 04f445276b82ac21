--- Checks a node's health and prints one line; exits 0 healthy, 5 unreachable.
--   aitbc run scripts/node_health.lua [URL]
local aitbc = require "aitbc"

local url = arg[1] or aitbc.config.resolve().values.url
local api = require("aitbc.api").new { url = url, timeout = 5 }

local health, err = api:request("GET", "/health")
if not health then
  io.stderr:write("unhealthy: ", err.message, "\n")
  return aitbc.errors.exit_code(err)
end
print(string.format("%s: %s", url, aitbc.json.encode(health)))
return 0
