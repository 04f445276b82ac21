--- --watch [SECONDS] on the commands that declare `watch = true`: the
-- command runs again every SECONDS until Ctrl-C (exit 130).  On a terminal
-- each frame replaces the last (screen cleared, a header line with the
-- time); off one the frames follow each other, a blank line between them in
-- table mode, one compact JSON document per line in json mode (NDJSON).
-- A failure of the first run ends the command as usual; a later one is shown
-- and the watch goes on (a node restarting must not end it).  Ctrl-C is the
-- way out: exit 130, without an error message; on a terminal, q too (exit 0).
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local M = {}

M.DEFAULT_INTERVAL = 2

local function interrupted(e)
  return sys.interrupted() or (errors.is(e) and e.kind == "interrupted")
    or (type(e) == "string" and e:find("interrupted", 1, true) ~= nil)
end

--- run(decl, ctx, interval, emit): emit(result, render) prints one frame.
-- Returns the exit code (130: Ctrl-C, wherever it came).
function M.run(decl, ctx, interval, emit)
  local ok, code = pcall(M.loop, decl, ctx, interval, emit)
  if ok then return code end
  if interrupted(code) then return errors.EXIT.interrupted end
  error(code, 0)
end

--- Waits interval seconds; with keys (a terminal on stdin) a q ends the
-- wait early.  Returns "next", "quit" or "interrupted".
local function pause(interval, keys)
  local deadline = sys.monotonic() + interval
  while keys do
    local left = deadline - sys.monotonic()
    if left <= 0 then return "next" end
    local key, why = sys.read_key(left)
    if key == "q" or key == "Q" then return "quit" end
    if why == "interrupted" or sys.interrupted() then return "interrupted" end
    if why == "timeout" then return "next" end
    if why == "not a terminal" then break end
  end
  local slept, why = pcall(sys.sleep, math.max(0, deadline - sys.monotonic()))
  if not slept or why == "interrupted" or sys.interrupted() then return "interrupted" end
  return "next"
end

function M.loop(decl, ctx, interval, emit)
  if interval == true then interval = M.DEFAULT_INTERVAL end
  local out = ctx.out
  local tty = out.tty and out.format == "table" and not out.shape
  local keys = tty and sys.isatty(0)
  out.compact = true
  local frames = 0
  while true do
    local ok, result, render = pcall(decl.run, ctx)
    if not ok and interrupted(result) then return errors.EXIT.interrupted end
    if not ok and frames == 0 then error(result, 0) end
    if tty then
      io.stdout:write("\27[H\27[2J", out:style(string.format("every %gs: aitbc %s    %s    (%s to stop)", interval,
        table.concat({ decl.path, table.unpack(ctx.raw) }, " "), os.date("%H:%M:%S"), keys and "q or Ctrl-C" or "Ctrl-C"),
        "dim"), "\n\n")
    elseif frames > 0 and out.format == "table" and not out.shape then
      io.stdout:write("\n")
    end
    if ok then
      emit(result, render)
    else
      out:error(errors.is(result) and result or errors.new("failure", tostring(result)))
    end
    io.stdout:flush()
    frames = frames + 1
    local after = pause(interval, keys)
    if after == "quit" then return errors.EXIT.ok end
    if after == "interrupted" then return errors.EXIT.interrupted end
  end
end

return M
