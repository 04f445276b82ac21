--- Errors a user can act on, and the process exit codes they map to.
-- Raise with `errors.raise(kind, message, hint)`; expected failures inside
-- library code return `nil, err` where err is one of these objects.
local errors = {}

--- timeout: a wait (aitbc wait, --wait) whose state was not reached in time, 124
-- as timeout(1) exits; a request that timed out is `network` (5).
errors.EXIT = {
  ok = 0, failure = 1, usage = 2, not_found = 3, auth = 4, network = 5, timeout = 124, interrupted = 130,
}

local Error = {}
Error.__index = Error
Error.__tostring = function(e)
  return e.hint and (e.message .. " (" .. e.hint .. ")") or e.message
end

--- kind: one of the EXIT keys; fields.code: a stable machine-readable name
-- (defaults to the kind); other fields are kept for --output json.
function errors.new(kind, message, hint, fields)
  assert(errors.EXIT[kind], "unknown error kind " .. tostring(kind))
  local e = setmetatable({ kind = kind, code = kind, message = message, hint = hint }, Error)
  for k, v in pairs(fields or {}) do e[k] = v end
  return e
end

function errors.raise(kind, message, hint, fields)
  error(errors.new(kind, message, hint, fields), 0)
end

function errors.is(value)
  return getmetatable(value) == Error
end

--- A stop by signal exits 128 + the signal, as shells report it: 130 for
-- Ctrl-C (SIGINT), 143 for SIGTERM.
function errors.signal_exit(signal)
  return signal == 15 and 143 or errors.EXIT.interrupted
end

function errors.exit_code(e)
  if e.kind == "interrupted" then return errors.signal_exit(e.signal or require("aitbc.sys").interrupted()) end
  return errors.EXIT[e.kind] or 1
end

--- For --output json: {"error":{"code","message","hint"}}.
function errors.to_json(e)
  local out = { code = e.code, message = e.message, hint = e.hint, field = e.field }
  if e.details then out.details = e.details end
  return { error = out }
end

local TRANSPORT = {
  connect = "connection refused or host unreachable",
  resolve = "host name not found",
  timeout = "no answer in time",
  tls = "TLS certificate could not be verified",
}

--- Maps a transport failure of aitbc.http (message, kind) to an error.
function errors.from_http(message, kind, url)
  if kind == "interrupted" then return errors.new("interrupted", "interrupted") end
  local hint
  if kind == "connect" or kind == "resolve" then
    hint = "is the node running? start one with 'aitbc serve', or point --url / AITBC_URL at a node"
  elseif kind == "timeout" then
    hint = "raise --timeout, or check the node's health"
  end
  local origin = url and url:match("^(%a+://[^/]+)") or url or "the server"
  local text = TRANSPORT[kind] and ("cannot reach " .. origin .. " (" .. TRANSPORT[kind] .. ")")
    or (message .. (url and (" (" .. url .. ")") or ""))
  return errors.new((kind == "url") and "usage" or "network", text, hint, { code = kind, detail = message })
end

return errors
