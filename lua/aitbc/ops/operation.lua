--- Following an operation the node runs (a restart, an update): its record
-- is polled and each new step shown as it happens, until it ends.
local errors = require "aitbc.errors"
local sys = require "aitbc.sys"

local M = {}

M.RECORD = { id = "string", kind = "string", state = "string", steps = "array" }

--- Polls GET /v1/admin/operations/{id} until the operation ends or
-- `timeout` seconds pass; on_step(step) for each new step.  Returns the
-- last record; raises a failure when the wait runs out (the node keeps
-- going; the record says what became of it).
function M.follow(client, op, on_step, timeout)
  local api = require "aitbc.api"
  local path = api.path("/v1/admin/operations/{id}", { id = op.id })
  local shown, deadline = 0, sys.monotonic() + timeout
  while true do
    local steps = op.steps or {}
    for i = shown + 1, #steps do on_step(steps[i]) end
    shown = #steps
    if op.state == "succeeded" or op.state == "failed" then return op end
    if sys.monotonic() > deadline then
      errors.raise("failure", string.format("%s %s is still %s after %g s; the node carries on with it", op.kind, op.id,
        op.state, timeout), "watch it: aitbc admin operations " .. op.id, { code = "operation_timeout" })
    end
    sys.sleep(0.1)
    -- a node being replaced answers from the old or the new process, or
    -- keeps the connection waiting a moment: a dropped GET is retried
    local latest, err = client:request("GET", path, { expect = M.RECORD, timeout = 10 })
    if latest then op = latest elseif err.kind ~= "network" then error(err, 0) end
  end
end

return M
