--- busted helper (named in .busted): processes a test started through
-- support.cli or support.node (nodes, miners, simulated Ollamas) are stopped
-- when the test ends, and those of setup hooks when the spec file ends,
-- together with its temporary directories (node databases, admin keys,
-- wallets) — also when a test failed before its own clean-up.
local busted = require "busted"
local cli = require "support.cli"

local marks = {}

busted.subscribe({ "test", "start" }, function()
  marks[#marks + 1] = cli.spawned()
  return nil, true
end)

busted.subscribe({ "test", "end" }, function()
  cli.stop_since(table.remove(marks) or 0)
  return nil, true
end)

busted.subscribe({ "file", "end" }, function()
  cli.cleanup()
  return nil, true
end)
