--- The output contract: results go to stdout in the chosen format (one
-- JSON document in json mode, nothing else); messages, progress and
-- prompts go to stderr.  Colours only on a terminal, never with NO_COLOR.
local json = require "aitbc.json"
local sys = require "aitbc.sys"

local Output = {}
Output.__index = Output

local M = {}

local STYLES = { bold = "1", dim = "2", red = "31", green = "32", yellow = "33", cyan = "36" }

--- The width tables fit on a terminal: COLUMNS when it holds a width, else
-- the terminal's, else 80.
local function terminal_width(fd)
  local columns = math.tointeger(tonumber(sys.getenv("COLUMNS") or ""))
  if columns and columns > 0 then return columns end
  return (sys.term_size(fd)) or 80
end
M.terminal_width = terminal_width

--- settings: {format, color = "auto"|"always"|"never", no_color, verbose, debug}
function M.new(settings)
  settings = settings or {}
  local function wants_color(fd)
    if settings.no_color or (sys.getenv("NO_COLOR") or "") ~= "" or settings.color == "never" then return false end
    if settings.color == "always" then return true end
    return sys.isatty(fd) and sys.getenv("TERM") ~= "dumb"
  end
  local tty = sys.isatty(1)
  return setmetatable({
    format = settings.format or "table",
    color = wants_color(1),
    err_color = wants_color(2),
    verbose = settings.verbose or 0,
    debug = settings.debug or false,
    tty = tty,
    width = tty and terminal_width(1) or nil, -- nil: off a terminal, whole values
  }, Output)
end

function Output:style(text, style, stream_color)
  if stream_color == nil then stream_color = self.color end
  if not stream_color or not STYLES[style] then return text end
  return "\27[" .. STYLES[style] .. "m" .. text .. "\27[0m"
end

--- Display width of a UTF-8 string (one column per code point).
local function width(s)
  return utf8.len(s) or #s
end
M.width = width

local function truncate(s, w)
  if width(s) <= w then return s end
  if w <= 1 then return "…" end
  local cut = utf8.offset(s, w) or (w + 1)
  return s:sub(1, cut - 1) .. "…"
end

local function cell(v)
  if v == nil or v == json.null then return "-" end
  if type(v) == "table" then return json.encode(v) end
  if type(v) == "boolean" then return v and "yes" or "no" end
  return (tostring(v):gsub("[\r\n\t]", " "))
end
M.cell = cell

local function table_columns(columns)
  local cols = {}
  for i, c in ipairs(columns) do
    if type(c) == "table" then cols[i] = { key = c[1], title = c[2] or c[1], keep = c.keep }
    else cols[i] = { key = c, title = c } end
    cols[i].title = cols[i].title:upper():gsub("_", " ")
  end
  return cols
end

--- Shortens the widest columns not marked keep (ids) until the row fits.
local function fit(widths, cols, room)
  local budget = math.max(room, 40) - 2 * (#cols - 1)
  local total = 0
  for _, w in ipairs(widths) do total = total + w end
  while total > budget do
    local wi
    for i, w in ipairs(widths) do
      if not cols[i].keep and (not wi or w > widths[wi]) then wi = i end
    end
    if not wi or widths[wi] <= 6 then break end
    widths[wi] = widths[wi] - 1
    total = total - 1
  end
end

--- rows: list of records; columns: list of keys or {key, title, keep=}.
-- On a terminal: aligned, fitting its width by shortening the widest
-- columns not marked keep (ids), cuts marked "…".  Off a terminal (a pipe,
-- a file): the header and whole values, separated by tabs, as gh prints
-- them, so that grep, cut and awk -F'\t' see every value whole.
function Output:format_table(rows, columns)
  local cols = table_columns(columns)
  local cells, widths = {}, {}
  for i, c in ipairs(cols) do widths[i] = width(c.title) end
  for r, row in ipairs(rows) do
    cells[r] = {}
    for i, c in ipairs(cols) do
      cells[r][i] = cell(row[c.key])
      widths[i] = math.max(widths[i], width(cells[r][i]))
    end
  end
  local titles = {}
  for i, c in ipairs(cols) do titles[i] = c.title end
  if not self.width then
    local lines = { self:style(table.concat(titles, "\t"), "bold") }
    for _, r in ipairs(cells) do lines[#lines + 1] = table.concat(r, "\t") end
    return table.concat(lines, "\n")
  end
  fit(widths, cols, self.width)
  local lines = {}
  local function line(values, style)
    local parts = {}
    for i, v in ipairs(values) do
      local text = truncate(v, widths[i])
      if i < #values then text = text .. string.rep(" ", widths[i] - width(text)) end
      parts[i] = text
    end
    local text = table.concat(parts, "  ")
    lines[#lines + 1] = style and self:style(text, style) or text
  end
  line(titles, "bold")
  for _, r in ipairs(cells) do line(r) end
  return table.concat(lines, "\n")
end

--- record: table; fields: ordered keys or {key, label} pairs (default: sorted keys).
function Output:format_record(record, fields)
  if not fields then
    fields = {}
    for k in pairs(record) do fields[#fields + 1] = k end
    table.sort(fields, function(a, b) return tostring(a) < tostring(b) end)
  end
  local labels, w = {}, 0
  for i, f in ipairs(fields) do
    local key, label = f, tostring(f):gsub("_", " ")
    if type(f) == "table" then key, label = f[1], f[2] or tostring(f[1]):gsub("_", " ") end -- explicit labels stay as written
    labels[i] = { key = key, label = label }
    w = math.max(w, width(labels[i].label))
  end
  local lines = {}
  for _, l in ipairs(labels) do
    local pad = string.rep(" ", w - width(l.label))
    lines[#lines + 1] = self:style(l.label, "dim") .. pad .. "  " .. cell(record[l.key])
  end
  return table.concat(lines, "\n")
end

local function is_records(v)
  return type(v) == "table" and json.is_array(v) and type(v[1]) == "table"
end

--- Default human rendering of any value.
function Output:format_value(v)
  if type(v) ~= "table" then return cell(v) end
  if is_records(v) then
    local keys, seen = {}, {}
    for k in pairs(v[1]) do if not seen[k] then keys[#keys + 1] = k seen[k] = true end end
    table.sort(keys)
    return self:format_table(v, keys)
  end
  if json.is_array(v) then
    local lines = {}
    for _, item in ipairs(v) do lines[#lines + 1] = cell(item) end
    return table.concat(lines, "\n")
  end
  return self:format_record(v)
end

function Output:print(text)
  io.stdout:write(text, "\n")
end

--- Emits a command's result.  render(data, out) draws the human form; in
-- json and yaml modes the data itself is printed (one compact line per
-- document when out.compact: --watch).  out.shape (aitbc.cli.present)
-- applies --json FIELDS, --jq and -q first.
function Output:emit(data, render)
  if data == nil then return end
  if self.shape then
    data = self.shape:apply(data)
    if data == nil then return end
    render = nil
  end
  if self.format == "json" then
    io.stdout:write(json.encode(data, { pretty = not self.compact }), "\n")
  elseif self.format == "yaml" then
    io.stdout:write(require("aitbc.yaml").encode(data))
  elseif render then
    render(data, self)
  else
    self:print(self:format_value(data))
  end
end

--- Messages on stderr.
function Output:info(msg)
  io.stderr:write(msg, "\n")
end

function Output:verbose_info(level, msg)
  if self.verbose >= level or self.debug then io.stderr:write(msg, "\n") end
end

function Output:warn(msg)
  io.stderr:write(self:style("warning:", "yellow", self.err_color), " ", msg, "\n")
end

--- A line of success for people (table mode only; json carries the data,
-- -q/--json/--jq print only what they select).
function Output:success(msg)
  if self.format == "table" and not self.shape then self:print(self:style("✓", "green") .. " " .. msg) end
end

--- Progress on stderr, only when stderr is a terminal.
function Output:progress(msg)
  if sys.isatty(2) then io.stderr:write("\r\27[K", msg) io.stderr:flush() end
end

function Output:progress_done()
  if sys.isatty(2) then io.stderr:write("\r\27[K") io.stderr:flush() end
end

--- An error: a JSON document on stdout in json mode (not with --jq, whose
-- stdout is the filter's), else text on stderr.
function Output:error(e)
  if self.format == "json" and not (self.shape and self.shape.jq) then
    io.stdout:write(json.encode(require("aitbc.errors").to_json(e), { pretty = not self.compact }), "\n")
    if self.debug and e.traceback then io.stderr:write(e.traceback, "\n") end
    return
  end
  io.stderr:write(self:style("error:", "red", self.err_color), " ", e.message, "\n")
  if e.hint then io.stderr:write("  ", self:style("hint:", "dim", self.err_color), " ", e.hint, "\n") end
  if self.debug and e.traceback then io.stderr:write(e.traceback, "\n") end
end

return M
