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
-- is JSON when JSON was asked for (--json; not --jq, whose stdout is the filter's).
local function early_format(argv)
  if argv_has(argv, "--jq") then return "table" end
  for i, a in ipairs(argv) do
    if a == "--json" or a:match("^%-%-json=") then return "json" end
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
      if not found and word == "help" then return { help_of = node, options = {}, args = {} } end -- aitbc GROUP help
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

local function make_context(decl, args, opts, globals, raw, shape)
  local config = require "aitbc.config"
  local output = require "aitbc.cli.output"
  local resolved = config.resolve(globals, decl.creates_config)
  local settings = resolved.values
  if globals.json or globals.jq then settings.output = "json" end -- --json and --jq imply JSON
  local out = output.new {
    format = settings.output, color = settings.color, no_color = globals.no_color,
    verbose = globals.verbose, debug = globals.debug,
  }
  out.shape = shape or nil
  local ctx = {
    command = decl, args = args, opts = opts, globals = globals, raw = raw,
    settings = settings, config = resolved, out = out,
    -- --limit/--offset of a list the node pages: aitbc.api adds them to that route's query
    page = decl.paged and { route = decl.paged, limit = opts.limit, offset = opts.offset } or nil,
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

--- `aitbc GROUP help [COMMAND...]`: the help of GROUP or of its command.
local function group_help(decl, words)
  for _, w in ipairs(words) do
    if w:sub(1, 1) == "-" then break end -- options: the help is the same
    local sub = decl.commands and decl.by_name[w]
    if not sub then
      errors.raise("usage", "unknown command '" .. w .. "' for 'aitbc " .. decl.path .. "'",
        "run 'aitbc " .. decl.path .. " --help'", { code = "unknown_command" })
    end
    decl = sub
  end
  io.stdout:write(require("aitbc.cli.help").command(decl), "\n")
  return 0
end

local function is_command(registry)
  return function(node, word)
    if node == nil then return registry.get(word) ~= nil end
    return node.by_name[word] ~= nil
  end
end

local function dispatch(argv, state)
  local registry = require "aitbc.cli.registry"
  local parser = require "aitbc.cli.parser"
  local help = require "aitbc.cli.help"
  if #argv == 0 then
    io.stdout:write(help.top(), "\n")
    return 0
  end
  local decl, rest_index, global_tokens = parser.locate(argv, resolver(registry, require "aitbc.cli.suggest"),
    is_command(registry))
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
  if decl.help_of then return group_help(decl.help_of, rest) end
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
  local present = require "aitbc.cli.present"
  local shape = present.prepare(decl, globals)
  if shape == false then return 0 end -- --json alone listed the fields
  local ctx = make_context(decl, args, opts, globals, rest, shape)
  state.out = ctx.out
  local level = math.max(globals.verbose or 0, state.debug and 1 or 0)
  if level > 0 then require("aitbc.cli.trace").install(level) end
  local function emit(result, render)
    ctx.out:emit(present.page_locally(decl, opts, result), render or decl.render)
  end
  if opts.watch then return require("aitbc.cli.watch").run(decl, ctx, opts.watch, emit) end
  emit(decl.run(ctx))
  io.stdout:flush()
  return ctx.exit_code or 0
end

return function(argv)
  local args = {}
  for i = 1, #argv do args[i] = argv[i] end
  local state = { debug = argv_has(args, "--debug") or (sys.getenv("AITBC_DEBUG") or "") ~= "" }
  local ok, result = xpcall(dispatch, function(e)
    if errors.is(e) then
      if state.debug then e.traceback = e.traceback or debug.traceback("raised here:", 2) end
      return e
    end
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
