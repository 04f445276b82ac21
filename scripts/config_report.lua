--- Prints the effective settings and where each came from, as JSON or text.
--   aitbc run scripts/config_report.lua [--json]
local aitbc = require "aitbc"

local resolved = aitbc.context.default().config -- with the flags `aitbc run` was given
local report = {}
for _, key in ipairs(aitbc.config.key_names()) do
  local value = resolved.values[key]
  if aitbc.config.keys[key].secret then value = aitbc.config.mask(value) end
  report[key] = { value = value, source = resolved.sources[key] }
end

if arg[1] == "--json" then
  print(aitbc.json.encode(report, { pretty = true }))
else
  for _, key in ipairs(aitbc.config.key_names()) do
    print(string.format("%-12s %-28s %s", key, tostring(report[key].value), report[key].source))
  end
end
