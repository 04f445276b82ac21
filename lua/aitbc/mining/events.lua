--- A running job's events, posted to the node as they happen: a step, a
-- tool call or an answer at once; tokens gathered and sent every tenth of a
-- second (or every hundred; a token after a quiet tenth at once), so a client following the job sees them live
-- at little cost.  Events are best effort: a failed post is logged, and the
-- job goes on (its result does not depend on them).
local api = require "aitbc.api"
local sys = require "aitbc.sys"

local M = { FLUSH_SECONDS = 0.1, FLUSH_COUNT = 100 }

--- poster(client, job_id, log) -> {emit(type, data), flush()}
function M.poster(client, job_id, log)
  local path = api.path("/v1/miners/{job_id}/events", { job_id = job_id })
  -- tokens_sent: when tokens last went; the first of a burst goes at once (time to first token is real)
  local buffer, tokens_sent, warned = {}, -math.huge, false
  local p = {}
  function p.flush()
    if #buffer == 0 then return end
    local batch = buffer
    buffer = {}
    if batch[#batch].type == "token" then tokens_sent = sys.monotonic() end
    local ok, err = client:request("POST", path, { json = { events = batch }, ignore_interrupt = true })
    if not ok and not warned then
      warned = true
      log("cannot post the job's events (" .. tostring(err and err.message) .. "); the job goes on")
    end
  end
  function p.emit(kind, data)
    buffer[#buffer + 1] = { type = kind, data = data }
    if kind ~= "token" or #buffer >= M.FLUSH_COUNT or sys.monotonic() - tokens_sent >= M.FLUSH_SECONDS then p.flush() end
  end
  return p
end

return M
