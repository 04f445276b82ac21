--- aitbc run: run a Lua automation script with the aitbc API available.
local errors = require "aitbc.errors"

return {
  name = "run",
  category = "Tools",
  summary = "Run a Lua automation script (require \"aitbc\" gives it the API)",
  description = "Arguments after the script are passed to it as ... and in the global 'arg'. "
    .. "A script that returns an integer sets the exit code.",
  passthrough = true,
  args = {
    { "script", help = "path of the .lua file" },
    { "args", variadic = true, optional = true, help = "arguments for the script" },
  },
  examples = { "aitbc run scripts/node_health.lua", "aitbc run scripts/config_report.lua --json" },
  run = function(ctx)
    local path = ctx.args.script
    local chunk, err = loadfile(require("aitbc.config").expand(path))
    if not chunk then
      require("aitbc.config").read_input(path, "script") -- raises why it cannot be read, if that is why
      errors.raise("usage", "cannot load script: " .. err)
    end
    local args = ctx.args.args
    _G.arg = { [0] = path, table.unpack(args) }
    require("aitbc.context").set_default(ctx) -- require("aitbc").client uses this run's settings
    local ok, result = xpcall(chunk, function(e)
      if errors.is(e) then return e end
      if require("aitbc.sys").interrupted() then return errors.new("interrupted", "interrupted") end
      return errors.new("failure", "script failed: " .. tostring(e), nil,
        { code = "script_error", traceback = debug.traceback(nil, 2) })
    end, table.unpack(args))
    if not ok then error(result, 0) end
    if math.type(result) == "integer" then ctx.exit_code = result end
  end,
}
