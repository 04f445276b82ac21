--- Entry point of the `aitbc` binary: finds the command, parses its
-- options, resolves settings, runs it, renders the result and maps any
-- failure to an exit code.  Returns the exit code.
local errors = require "aitbc.errors"
local sys = require "aitbc.native.sys"

local function argv_has(argv, flag)
  for _, a in ipairs(argv) do if a == flag then return true end end
  return false
end

--- The output format before anything is parsed, so that even a usage error
-- is JSON when JSON was asked for.
local function early_format(argv)
  for i, a in ipairs(argv) do
    if a == "--output" or a == "-o" then return argv[i + 1] end
    local v = a:match("^%-%-output=(.*)$") or a:match("^%-o(%a+)$")
    if v then return v end
  end
  return sys.getenv("AITBC_OUTPUT")
end

local function resolver(registry, suggest)
  return function(node, word)
    local found
    if node == nil then
      found = registry.get(word)
      if not found then
        local near = suggest.nearest(word, registry.names())
        errors.raise("usage", "unknown command '" .. word .. "'",
          (near and ("did you mean '" .. near .. "'? ") or "") .. "run 'aitbc --help' to see all commands",
          { code = "unknown_command" })
      end
    else
      found = node.by_name[word]
      if not found then
        local names = {}
        for _, c in ipairs(node.commands) do names[#names + 1] = c.name end
        local near = suggest.nearest(word, names)
        errors.raise("usage", "unknown command '" .. word .. "' for 'aitbc " .. node.path .. "'",
          (near and ("did you mean '" .. near .. "'? ") or "") .. "run 'aitbc " .. node.path .. " --help'",
          { code = "unknown_command" })
      end
    end
    return found
  end
end

--- Splits parsed values into the command's options and global options.
local function split_values(decl, values, globals)
  local opts, own = {}, {}
  for _, o in ipairs(decl.options) do own[o.key] = true end
  for k, v in pairs(values) do
    if own[k] then opts[k] = v else globals[k] = v end
  end
  for _, o in ipairs(decl.options) do
    if opts[o.key] == nil and o.default ~= nil then opts[o.key] = o.default end
    if o.required and opts[o.key] == nil then
      errors.raise("usage", "missing required option " .. o.long, "see 'aitbc " .. decl.path .. " --help'",
        { code = "usage_error" })
    end
  end
  return opts
end

local function bind_args(decl, positionals)
  local args, i = {}, 1
  for _, a in ipairs(decl.args) do
    local key = a[1]:gsub("-", "_")
    if a.variadic then
      args[key] = { table.unpack(positionals, i) }
      i = #positionals + 1
    else
      args[key] = positionals[i]
      if args[key] == nil and not a.optional then
        errors.raise("usage", "missing argument " .. a[1]:upper() .. " for 'aitbc " .. decl.path .. "'",
          "usage: " .. require("aitbc.cli.help").usage_line(decl), { code = "usage_error" })
      end
      i = i + 1
    end
  end
  if positionals[i] ~= nil then
    errors.raise("usage", "unexpected argument '" .. positionals[i] .. "' for 'aitbc " .. decl.path .. "'",
      "usage: " .. require("aitbc.cli.help").usage_line(decl), { code = "usage_error" })
  end
  return args
end

local function make_context(decl, args, opts, globals, raw)
  local config = require "aitbc.config"
  local output = require "aitbc.cli.output"
  local resolved = config.resolve(globals, decl.creates_config)
  local settings = resolved.values
  local out = output.new {
    format = settings.output, color = settings.color, no_color = globals.no_color,
    verbose = globals.verbose, debug = globals.debug,
  }
  local ctx = {
    command = decl, args = args, opts = opts, globals = globals, raw = raw,
    settings = settings, config = resolved, out = out,
  }
  --- Asks before doing something that cannot be undone.  --yes answers;
  -- without a terminal (or in json mode) there is nobody to ask.
  function ctx.confirm(question)
    if globals.yes then return true end
    if settings.output ~= "table" or not sys.isatty(0) then
      errors.raise("usage", question .. " — confirmation needed", "add --yes to confirm without a prompt")
    end
    io.stderr:write(question, " [y/N] ")
    local answer = io.read("l")
    return answer ~= nil and answer:lower():match("^y") ~= nil
  end
  return ctx
end

local function dispatch(argv, state)
  local registry = require "aitbc.cli.registry"
  local parser = require "aitbc.cli.parser"
  local help = require "aitbc.cli.help"
  if #argv == 0 then
    io.stdout:write(help.top(), "\n")
    return 0
  end
  local decl, rest_index, global_tokens = parser.locate(argv, resolver(registry, require "aitbc.cli.suggest"))
  local globals = parser.parse(global_tokens, parser.GLOBALS)
  state.debug = state.debug or globals.debug
  if not decl then
    if globals.version then
      io.stdout:write("aitbc ", sys.version, "\n")
    else
      io.stdout:write(help.top(), "\n")
    end
    return 0
  end
  local rest = { table.unpack(argv, rest_index) }
  if decl.commands then
    if globals.help or #rest == 0 then
      io.stdout:write(help.command(decl), "\n")
      return 0
    end
    parser.parse(rest, parser.GLOBALS, decl.path) -- reports the unknown option
    errors.raise("usage", "missing command for 'aitbc " .. decl.path .. "'", "run 'aitbc " .. decl.path .. " --help'")
  end
  local opts, positionals = {}, rest
  if not decl.passthrough then
    local decls = {}
    for _, o in ipairs(decl.options) do decls[#decls + 1] = o end
    for _, o in ipairs(parser.GLOBALS) do decls[#decls + 1] = o end
    local values
    values, positionals = parser.parse(rest, decls, decl.path)
    if values.help or globals.help then
      io.stdout:write(help.command(decl), "\n")
      return 0
    end
    opts = split_values(decl, values, globals)
    state.debug = state.debug or globals.debug
  elseif globals.help or rest[1] == "--help" or rest[1] == "-h" then
    io.stdout:write(help.command(decl), "\n")
    return 0
  end
  local args = bind_args(decl, positionals)
  local ctx = make_context(decl, args, opts, globals, rest)
  state.out = ctx.out
  local result, render = decl.run(ctx)
  ctx.out:emit(result, render or decl.render)
  io.stdout:flush()
  return ctx.exit_code or 0
end

return function(argv)
  local args = {}
  for i = 1, #argv do args[i] = argv[i] end
  local state = { debug = argv_has(args, "--debug") or (sys.getenv("AITBC_DEBUG") or "") ~= "" }
  local ok, result = xpcall(dispatch, function(e)
    if errors.is(e) then return e end
    if sys.interrupted() then return errors.new("interrupted", "interrupted") end
    return errors.new("failure", "internal error: " .. tostring(e),
      state.debug and nil or "re-run with --debug for the traceback, and please report it",
      { code = "internal", traceback = debug.traceback(nil, 2) })
  end, args, state)
  if ok then return result end
  local out = state.out
  if not out then
    out = require("aitbc.cli.output").new { format = early_format(args), debug = state.debug }
  end
  out.debug = state.debug
  out:error(result)
  return errors.exit_code(result)
end
