--- aitbc wait: one way to wait for anything the network does, for scripts.
--   aitbc wait job ID [--for completed] [--timeout 300]
--   aitbc wait tx HASH [--for included]
--   aitbc wait proposal ID [--for passed,rejected]
-- Exit 0 once the state is reached; 124 (errors.EXIT.timeout) when
-- --timeout passes first; 1 when the thing ends in another final state (a
-- job that FAILED while waiting for completed); 3 when there is no such
-- thing.  Each change of state is reported on stderr.
local errors = require "aitbc.errors"
local json = require "aitbc.json"

--- What can be waited for: how to read its state from the node, its states,
-- and the final ones (after which nothing changes).
local KINDS = {
  job = {
    noun = "job", default = "COMPLETED", role = "client",
    states = { "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED" },
    final = { COMPLETED = true, FAILED = true, CANCELED = true, EXPIRED = true },
    path = function(_, api, id) return api.path("/v1/jobs/{job_id}", { job_id = id }) end,
    expect = { job_id = "string", state = "string" },
    state = function(v) return v.state end,
    detail = function(v)
      local miner = v.assigned_miner_id ~= json.null and v.assigned_miner_id or nil
      local err = v.error ~= json.null and v.error or nil
      return (miner and (" on " .. miner) or "") .. (err and (": " .. tostring(err)) or "")
    end,
  },
  tx = {
    noun = "transaction", default = "INCLUDED",
    states = { "PENDING", "INCLUDED" },
    final = { INCLUDED = true },
    path = function(ctx, api, id)
      return api.path("/v1/chain/{chain}/transactions/{hash}", { chain = ctx.settings.chain, hash = id })
    end,
    expect = { hash = "string", status = "string", block_height = "integer?" },
    state = function(v) return v.status:upper() end,
    detail = function(v) return v.block_height and (" in block " .. v.block_height) or "" end,
  },
  proposal = {
    noun = "proposal", default = "PASSED,REJECTED",
    states = { "PENDING", "ACTIVE", "PASSED", "REJECTED" },
    final = { PASSED = true, REJECTED = true },
    path = function(ctx, api, id)
      return api.path("/v1/chain/{chain}/proposals/{id}", { chain = ctx.settings.chain, id = id })
    end,
    expect = { proposal_id = "string", status = "string", timeline = "object" },
    state = function(v) return v.status:upper() end,
    detail = function(v)
      local t = v.timeline
      return v.status == "active" and t.blocks_left and (", " .. t.blocks_left .. " block(s) left") or ""
    end,
  },
  -- section 8 of the spec: not in this version yet
  deployment = { unavailable = "deployments" },
}

local KIND_NAMES = { "job", "tx", "proposal", "deployment" }

local function wanted_states(kind, text)
  local want, names = {}, {}
  local allowed = {}
  for _, s in ipairs(kind.states) do allowed[s] = true end
  for word in (text or kind.default):gmatch("[^,%s]+") do
    local s = word:upper()
    if not allowed[s] then
      errors.raise("usage", string.format("a %s is never '%s'", kind.noun, word),
        "--for takes one or more of " .. table.concat(kind.states, ", "):lower() .. " (comma-separated)",
        { code = "usage_error", field = "for" })
    end
    if not want[s] then want[s] = true names[#names + 1] = s end
  end
  return want, names
end

local function elapsed_text(seconds) return string.format("%.1f s", seconds) end

local function wait_for(ctx, kind, id)
  local sys = require "aitbc.sys"
  local api = require "aitbc.api"
  local want, names = wanted_states(kind, ctx.opts["for"])
  local target = table.concat(names, " or ")
  local client = api.from_context(ctx, { role = kind.role })
  local path = kind.path(ctx, api, id)
  local started = sys.monotonic()
  local deadline = started + ctx.opts.timeout
  local pause, last = 0.2, nil
  while true do
    local view = client:call("GET", path, { expect = kind.expect })
    local state = kind.state(view)
    local waited = sys.monotonic() - started
    if state ~= last then
      ctx.out:progress_done()
      ctx.out:info(string.format("%s %s: %s%s (%s)", kind.noun, id, state:lower(), kind.detail(view), elapsed_text(waited)))
      last, pause = state, 0.2
    end
    if want[state] then
      ctx.out:progress_done()
      return { kind = ctx.args.kind, id = id, state = state, waited_seconds = math.floor(waited * 1000 + 0.5) / 1000,
        object = view }
    end
    if kind.final[state] then
      errors.raise("failure", string.format("%s %s ended %s%s; it will never be %s", kind.noun, id, state,
        kind.detail(view), target), nil, { code = "state_unreachable" })
    end
    if sys.monotonic() + pause > deadline then
      ctx.out:progress_done()
      errors.raise("timeout", string.format("%s %s is still %s after %s; it was to become %s", kind.noun, id, state,
        elapsed_text(ctx.opts.timeout), target), "wait longer with --timeout SECONDS",
        { code = "wait_timeout" })
    end
    ctx.out:progress(string.format("%s %s: %s, waiting for %s … %s", kind.noun, id, state:lower(), target:lower(),
      elapsed_text(waited)))
    sys.sleep(pause)
    pause = math.min(pause * 1.5, 2)
  end
end

return {
  name = "wait",
  category = "Workflows",
  summary = "Wait until a job, a transaction or a proposal reaches a state (exit 0), or --timeout passes (exit 124)",
  description = "Job states: queued, running, completed, failed, canceled, expired (default: completed). "
    .. "Transaction states: pending, included (default: included; chain: the --chain setting). "
    .. "--for takes several, comma-separated: any of them ends the wait. A job that ends in another final "
    .. "state exits 1 at once. Progress goes to stderr; the result (kind, id, state, waited_seconds, object: "
    .. "the job or transaction as the node shows it) to stdout. Proposal states: pending, active, passed, rejected "
    .. "(default: passed,rejected — decided). Deployments are not available yet.",
  args = {
    { "kind", help = "job, tx, proposal or deployment", complete = "wait" },
    { "id", help = "the job's id or the transaction's hash", complete = "wait" },
  },
  options = {
    { "--for", metavar = "STATE", help = "the state(s) to wait for, e.g. completed or running,completed" },
    { "--timeout", type = "number", min = 0, default = 300, metavar = "SECONDS", help = "give up after (exit 124)" },
  },
  id_field = "id",
  fields = { "kind", "id", "state", "waited_seconds", "object" },
  examples = { "aitbc wait job 0192af3c51d2e4c7a81f09b3c6d2e1f0 --for completed --timeout 120",
               "J=$(aitbc client submit -q --model llama3 --prompt hi) && aitbc wait job $J && aitbc client result $J",
               "aitbc wait tx $(aitbc wallet send -q ait1... 5)" },
  run = function(ctx)
    local kind = KINDS[ctx.args.kind]
    if not kind then
      local near = require("aitbc.cli.suggest").nearest(ctx.args.kind, KIND_NAMES)
      errors.raise("usage", "cannot wait for a '" .. ctx.args.kind .. "'",
        (near and ("did you mean '" .. near .. "'? ") or "") .. "choose job, tx, proposal or deployment",
        { code = "usage_error", field = "kind" })
    end
    if kind.unavailable then
      errors.raise("usage", "aitbc wait " .. ctx.args.kind .. ": " .. kind.unavailable
        .. " are not available yet in this version of aitbc",
        "'aitbc --help' lists what exists; job, tx and proposal can be waited for", { code = "not_available" })
    end
    return wait_for(ctx, kind, ctx.args.id), function(d, out)
      out:success(string.format("%s %s is %s (after %s)", KINDS[d.kind].noun, d.id, d.state:lower(),
        elapsed_text(d.waited_seconds)))
    end
  end,
}
