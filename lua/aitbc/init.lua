--- require "aitbc": the API that commands, scripts and scenarios share.
-- Sub-modules load on first use:
--   aitbc.http, aitbc.crypto, aitbc.db, aitbc.sys, aitbc.json, aitbc.yaml,
--   aitbc.config, aitbc.errors, aitbc.scenario, aitbc.server
local MODULES = {
  http = "aitbc.http", crypto = "aitbc.crypto", db = "aitbc.db", sys = "aitbc.sys",
  json = "aitbc.json", yaml = "aitbc.yaml", config = "aitbc.config", errors = "aitbc.errors",
  scenario = "aitbc.scenario", server = "aitbc.server",
}

local aitbc = { version = require("aitbc.native.sys").version }

return setmetatable(aitbc, {
  __index = function(t, key)
    local name = MODULES[key]
    if not name then return nil end
    local mod = require(name)
    rawset(t, key, mod)
    return mod
  end,
})
