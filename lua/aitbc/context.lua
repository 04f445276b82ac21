--- The user's configuration as domain code reads it: the part of a
-- command's context that is not the CLI's (no options, output or exit
-- codes).  Commands pass their own ctx; scripts get one from here:
--   local ctx = require("aitbc.context").new()                      -- as `aitbc` with no flags
--   local ctx = require("aitbc.context").new { url = "http://127.0.0.1:8000", environment = "production" }
-- flags are the global options a command line would give (url, api_key,
-- environment, chain, timeout, config); the environment variables and the
-- config file fill in the rest, with the CLI's precedence.
local context = {}

local default

function context.new(flags)
  flags = flags or {}
  local resolved = require("aitbc.config").resolve(flags)
  return { settings = resolved.values, config = resolved, globals = flags }
end

--- The context scripts run with: the one `aitbc run` was given (its global
-- options: `aitbc --environment production run x.lua`), else a new one.
function context.default()
  default = default or context.new()
  return default
end

--- Sets the default (aitbc run, before the script starts).
function context.set_default(ctx) default = ctx end

return context
