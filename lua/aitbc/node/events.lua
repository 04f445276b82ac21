--- Job events (DESIGN.md §8): the miner running a job posts what happens
-- (tokens, an agent's thoughts, tool calls and their outputs, its answer) in
-- batches; the node keeps them in order with its own state changes (store
-- triggers: job.queued, job.running, job.completed, ...), and clients read
-- them after the last one they saw, waiting for more without holding a
-- worker.  A client that reconnects resumes from its `after`: nothing lost,
-- nothing repeated.
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local util = require "aitbc.node.util"

local fail, invalid = util.fail, util.invalid

local M = { MAX_BATCH = 500, MAX_DATA = 64 * 1024, MAX_WAIT = 30 }

local ENDED = { COMPLETED = true, FAILED = true, CANCELED = true, EXPIRED = true }

local function event_view(e)
  return { seq = e.seq, time = util.iso(e.time), type = e.type, data = e.data and json.decode(e.data) or nil }
end

--- POST /v1/miners/{job_id}/events {events: [{type, data}]}: only the miner
-- running the job.
function M.post(ctx, job_id, miner)
  local body = ctx:body_object()
  local list = body.events
  if type(list) ~= "table" or #list == 0 or #list > M.MAX_BATCH then
    invalid("events", "must be a list of 1 to " .. M.MAX_BATCH .. " {type, data} events")
  end
  local rows = {}
  for i, e in ipairs(list) do
    local at = "events[" .. i .. "]"
    if type(e) ~= "table" then invalid(at, "must be an object {type, data}") end
    if type(e.type) ~= "string" or not e.type:match("^[%a][%w_%.%-]*$") or #e.type > 64 or e.type:match("^job%.") then
      invalid(at .. ".type", "must be a name like token, thought, tool_called (job.* are the node's)")
    end
    local data = e.data ~= nil and json.encode(e.data) or nil
    if data and #data > M.MAX_DATA then invalid(at .. ".data", "must be at most 64 KiB of JSON") end
    rows[i] = { type = e.type, data = data }
  end
  local job = ctx.store:job_get(job_id)
  if not job then fail(404, "job_not_found", "job " .. job_id .. " not found") end
  if job.miner_id ~= miner.miner_id or job.state ~= "RUNNING" then
    fail(409, "not_assigned", "job " .. job_id .. " is " .. job.state .. ", not running on miner " .. miner.miner_id)
  end
  local last = ctx.store:events_append(job_id, rows, ctx.now)
  if not last then fail(413, "too_many_events", "job " .. job_id .. " has its " .. 20000 .. " events already") end
  sys.notify("job:" .. job_id)
  return 200, { job_id = job_id, last_seq = last }
end

--- The events as a text/event-stream: each with its seq as its id (an
-- EventSource that reconnects sends it back as Last-Event-ID), its type as
-- the event name, its view as the data; "end" once the job's last event is
-- out.  The stream closes after each batch (a long poll); the client's
-- reconnection resumes it.
local function event_stream(events, done, state)
  local out = { "retry: 500\n\n" }
  for _, e in ipairs(events) do
    out[#out + 1] = string.format("id: %d\nevent: %s\ndata: %s\n\n", e.seq, e.type, json.encode(e))
  end
  if done then out[#out + 1] = "event: end\ndata: " .. json.encode { state = state } .. "\n\n" end
  return table.concat(out)
end

--- GET /v1/jobs/{id}/events?after=SEQ&wait=SECONDS&limit=N -> {events,
-- next, state, done}; waits (suspended) while there is nothing new and the
-- job has not ended.  With Accept: text/event-stream, the same as an event
-- stream (after: Last-Event-ID, else the query; wait: 25 s unless given),
-- and 204 once the job has ended and its last event was sent (which tells
-- an EventSource to stop reconnecting).
function M.get(ctx, job_id, own_job)
  local sse = (ctx.headers.accept or ""):find("text/event-stream", 1, true) ~= nil
  local after = util.query_integer(ctx.query, "after", 0, 1 << 40, 0)
  if sse and ctx.headers["last-event-id"] then
    after = util.query_integer({ ["Last-Event-ID"] = ctx.headers["last-event-id"] }, "Last-Event-ID", 0, 1 << 40)
  end
  local wait = util.query_number(ctx.query, "wait", 0, 3600, sse and M.MAX_WAIT or 0)
  local limit = util.query_integer(ctx.query, "limit", 1, 5000, 1000)
  local job = own_job(ctx, job_id)
  local rows = ctx.store:events_after(job_id, after, limit)
  local done = ENDED[job.state] and #rows < limit
  if #rows == 0 and not ENDED[job.state] then
    local left = math.min(wait, M.MAX_WAIT) - (ctx.req.waited or 0)
    if left > 0.01 and ctx.req.resumed ~= "shutdown" and not sys.interrupted() then
      return util.SUSPEND, { seconds = left, wake = { "job:" .. job_id } }
    end
  end
  local events = json.array()
  for i, e in ipairs(rows) do events[i] = event_view(e) end
  if sse then
    if done and #rows == 0 then return 204 end
    ctx.reply_headers = { ["Cache-Control"] = "no-cache" }
    return 200, event_stream(events, done, job.state), "text/event-stream"
  end
  return 200, { job_id = job_id, events = events, next = #rows > 0 and rows[#rows].seq or after, state = job.state,
    done = done and true or false }
end

return M
