--- Command-line parsing against declarations.
-- Global options may appear anywhere; a command's own option of the same
-- name wins after the command's name (e.g. `auth export --output FILE`).
local errors = require "aitbc.errors"
local suggest = require "aitbc.cli.suggest"

local parser = {}

local function opt(long, fields)
  fields[1] = long
  fields.long = long
  fields.key = long:sub(3):gsub("-", "_")
  fields.type = fields.type or (fields.choices and "choice") or "string"
  return fields
end

parser.GLOBALS = {
  opt("--url", { metavar = "URL", help = "node URL (env AITBC_URL; default http://127.0.0.1:8000)" }),
  opt("--api-key", { metavar = "KEY", help = "API key sent as X-Api-Key (env AITBC_API_KEY)" }),
  opt("--output", { short = "-o", choices = { "table", "json", "yaml" }, metavar = "FORMAT",
                    help = "table (default), json or yaml; json prints exactly one document" }),
  opt("--config", { metavar = "FILE", help = "config file (env AITBC_CONFIG; default ~/.aitbc/config.json)" }),
  opt("--environment", { metavar = "NAME", help = "environment whose keys and URL to use (env AITBC_ENVIRONMENT)" }),
  opt("--timeout", { type = "number", metavar = "SECONDS", help = "network timeout (env AITBC_TIMEOUT; default 30)" }),
  opt("--json", { metavar = "[FIELDS]", optional_value = true,
                  help = "JSON output with only these comma-separated fields (alone: list the fields)" }),
  opt("--jq", { metavar = "EXPR", help = "filter the JSON output with a jq expression (strings print raw)" }),
  opt("--quiet", { short = "-q", type = "boolean", help = "print only the id of what the command created (or listed)" }),
  opt("--verbose", { short = "-v", type = "count",
                     help = "show each HTTP request on stderr; -vv adds headers (keys masked) and bodies" }),
  opt("--debug", { type = "boolean", help = "tracebacks on errors, and the requests -v shows" }),
  opt("--no-color", { type = "boolean", help = "no colours (also NO_COLOR=1)" }),
  opt("--yes", { short = "-y", type = "boolean", help = "answer yes to confirmations" }),
  opt("--help", { short = "-h", type = "boolean", help = "show help for the command" }),
  opt("--version", { type = "boolean", help = "print the version and exit" }),
}

local function index(decls)
  local by = {}
  for _, d in ipairs(decls) do
    by[d.long] = by[d.long] or d
    if d.short then by[d.short] = by[d.short] or d end
  end
  return by
end

parser.GLOBAL_INDEX = index(parser.GLOBALS)

local function takes_value(d) return d.type ~= "boolean" and d.type ~= "count" end

--- Whether the token after an option with an optional value is its value:
-- a number for a number option, else anything that is not an option.
local function optional_value_fits(d, tok)
  if tok == nil then return false end
  if d.type == "number" or d.type == "integer" then return tonumber(tok) ~= nil end
  return tok:sub(1, 1) ~= "-" or tok == "-"
end
parser.optional_value_fits = optional_value_fits

local function usage(message, hint, where)
  errors.raise("usage", message, hint or (where and ("see 'aitbc " .. where .. " --help'")), { code = "usage_error" })
end

--- Converts and checks one option value.
local function convert(d, raw, where)
  local name = d.long
  if d.type == "integer" then
    local n = math.tointeger(tonumber(raw))
    if not n then usage(string.format("option %s expects a whole number, got '%s'", name, raw), nil, where) end
    raw = n
  elseif d.type == "number" then
    local n = tonumber(raw)
    if not n or n ~= n then usage(string.format("option %s expects a number, got '%s'", name, raw), nil, where) end
    raw = n
  elseif d.type == "choice" then
    local ok = false
    for _, c in ipairs(d.choices) do if c == raw then ok = true end end
    if not ok then
      local near = suggest.nearest(raw, d.choices)
      usage(string.format("option %s must be one of %s, got '%s'", name, table.concat(d.choices, ", "), raw),
        near and ("did you mean '" .. near .. "'?"), where)
    end
  end
  if type(raw) == "number" then
    if d.min and raw < d.min then usage(string.format("option %s must be at least %s, got %s", name, d.min, raw), nil, where) end
    if d.max and raw > d.max then usage(string.format("option %s must be at most %s, got %s", name, d.max, raw), nil, where) end
  end
  return raw
end

local function store(values, d, value)
  if d.repeatable then
    values[d.key] = values[d.key] or {}
    table.insert(values[d.key], value)
  elseif d.type == "count" then
    values[d.key] = (values[d.key] or 0) + 1
  else
    values[d.key] = value
  end
end

local function unknown(name, by, where)
  local longs = {}
  for k in pairs(by) do if k:sub(1, 2) == "--" then longs[#longs + 1] = k end end
  table.sort(longs)
  local near = suggest.nearest(name, longs)
  usage(string.format("unknown option '%s'%s", name, where and (" for 'aitbc " .. where .. "'") or ""),
    near and ("did you mean '" .. near .. "'?") or ("see 'aitbc " .. (where or "") .. " --help'"):gsub("  ", " "))
end

--- A long option at tokens[i] (--name, --name=value, --name value,
-- --no-name for a boolean); returns the index of its last token.
local function long_option(tokens, i, by, values, where)
  local tok = tokens[i]
  local name, inline = tok:match("^(%-%-[^=]+)=(.*)$")
  name = name or tok
  local d = by[name]
  if not d and name:sub(1, 5) == "--no-" then
    local base = by["--" .. name:sub(6)]
    if base and base.type == "boolean" then d, inline = base, false end
  end
  if not d then unknown(name, by, where) end
  if not takes_value(d) then
    if inline ~= nil and inline ~= false then usage("option " .. name .. " takes no value", nil, where) end
    store(values, d, inline ~= false)
    return i
  end
  if inline == nil and d.optional_value and not optional_value_fits(d, tokens[i + 1]) then
    store(values, d, true) -- given without its value
    return i
  end
  if inline == nil then
    i = i + 1
    inline = tokens[i]
    if inline == nil then
      usage("option " .. name .. " needs a value" .. (d.metavar and (" (" .. d.metavar .. ")") or ""), nil, where)
    end
  end
  store(values, d, convert(d, inline, where))
  return i
end

--- Short options at tokens[i]: -v, -vv, -o json, -ojson; returns the
-- index of their last token.
local function short_options(tokens, i, by, values, where)
  local tok = tokens[i]
  for j = 2, #tok do
    local d = by["-" .. tok:sub(j, j)]
    if not d then unknown("-" .. tok:sub(j, j), by, where) end
    if takes_value(d) then
      local v = tok:sub(j + 1)
      if v == "" then
        i = i + 1
        v = tokens[i]
        if v == nil then usage("option -" .. tok:sub(j, j) .. " needs a value", nil, where) end
      end
      store(values, d, convert(d, v, where))
      return i
    end
    store(values, d, true)
  end
  return i
end

--- parse(tokens, decls, where) -> values (by key), positionals
-- decls: option declarations, earlier ones win on a name clash.
function parser.parse(tokens, decls, where)
  local by = index(decls)
  local values, positionals = {}, {}
  local i = 1
  while i <= #tokens do
    local tok = tokens[i]
    if tok == "--" then
      for j = i + 1, #tokens do positionals[#positionals + 1] = tokens[j] end
      break
    elseif tok:sub(1, 2) == "--" and #tok > 2 then
      i = long_option(tokens, i, by, values, where)
    elseif tok:sub(1, 1) == "-" and #tok > 1 and not tonumber(tok) then
      i = short_options(tokens, i, by, values, where)
    else
      positionals[#positionals + 1] = tok
    end
    i = i + 1
  end
  return values, positionals
end

--- How many tokens a global option at argv[i] spans (1 or 2), or nil
-- when the token is not a global option.  An option whose value is
-- optional takes the next token unless it fits no value or names a command
-- (is_command(word)).
local function global_span(tok, next_tok, is_command)
  if tok:sub(1, 2) == "--" then
    local name, eq = tok:match("^(%-%-[^=]+)(=?)")
    local d = parser.GLOBAL_INDEX[name]
    if not d and name:sub(1, 5) == "--no-" then
      d = parser.GLOBAL_INDEX["--" .. name:sub(6)]
      if d and d.type ~= "boolean" then d = nil end
    end
    if not d then return nil end
    if d.optional_value and eq == "" then
      return (optional_value_fits(d, next_tok) and not is_command(next_tok)) and 2 or 1
    end
    return (takes_value(d) and eq == "") and 2 or 1
  end
  local d = parser.GLOBAL_INDEX["-" .. tok:sub(2, 2)]
  if not d then return nil end
  if takes_value(d) then return #tok == 2 and 2 or 1 end
  for j = 3, #tok do
    local e = parser.GLOBAL_INDEX["-" .. tok:sub(j, j)]
    if not e or takes_value(e) then return nil end
  end
  return 1
end

--- Splits argv into the command path and the rest.  Tokens before and
-- between the command words may only be global options.
-- resolve(node, word) returns the child declaration (raising for an
-- unknown name), is_command(node, word) whether there is one.  Returns the
-- declaration reached (nil for none), the index of the first token after
-- the path, and the global option tokens seen.
function parser.locate(argv, resolve, is_command)
  local globals_tokens = {}
  local i, node = 1, nil
  while i <= #argv do
    local tok = argv[i]
    -- after a command's own name everything is its to parse (its options win)
    if tok == "--" or (node and not node.commands) then break end
    if tok:sub(1, 1) == "-" and #tok > 1 then
      local span = global_span(tok, argv[i + 1], function(word)
        return is_command ~= nil and (node == nil or node.commands ~= nil) and is_command(node, word)
      end)
      if not span then
        if node then break end -- a command option: the path ends here
        unknown(tok:match("^(%-%-?[^=]+)"), parser.GLOBAL_INDEX)
      end
      for k = i, i + span - 1 do globals_tokens[#globals_tokens + 1] = argv[k] end
      i = i + span
    else
      if node and not node.commands then break end
      node = resolve(node, tok)
      i = i + 1
    end
  end
  return node, i, globals_tokens
end

return parser
