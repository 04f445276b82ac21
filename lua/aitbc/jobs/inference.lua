--- The inference job: a prompt (or chat messages) for one model, run on the
-- miner's Ollama, tokens streamed as events.
local M = { name = "inference", run_timeout = 600, direct = true }

local ROLES = { system = true, user = true, assistant = true, tool = true }
local OPTIONS = { temperature = { 0, 2 }, top_p = { 0, 1 }, top_k = { 1, 1000 }, num_ctx = { 128, 1048576 },
  num_predict = { -2, 1048576 }, num_batch = { 1, 65536 }, num_thread = { 1, 1024 }, seed = { -2 ^ 53, 2 ^ 53 },
  repeat_penalty = { 0, 10 }, min_p = { 0, 1 } }
M.OPTIONS = OPTIONS

--- Ollama options a job may set: known names, finite numbers in range.
function M.check_options(options, field, v)
  if options == nil then return end
  if type(options) ~= "table" then v.invalid(field, "must be an object") end
  for name, value in pairs(options) do
    local range = OPTIONS[name]
    if not range then v.invalid(field .. "." .. tostring(name), "is not an option aitbc passes to Ollama") end
    if type(value) ~= "number" or value ~= value or value < range[1] or value > range[2] then
      v.invalid(field .. "." .. name, string.format("must be a number from %s to %s", range[1], range[2]))
    end
  end
end

--- payload: {prompt | messages, system?, options?}; model from the job.
function M.validate(payload, model, v)
  local prompt, messages = payload.prompt, payload.messages
  if prompt == nil and messages == nil then v.invalid("payload.prompt", "is required (or payload.messages)") end
  if prompt ~= nil and (type(prompt) ~= "string" or #prompt > 256 * 1024) then
    v.invalid("payload.prompt", "must be text of at most 256 KiB")
  end
  if messages ~= nil then
    if type(messages) ~= "table" or #messages == 0 or #messages > 500 then
      v.invalid("payload.messages", "must be a list of 1 to 500 {role, content} messages")
    end
    for i, m in ipairs(messages) do
      local at = "payload.messages[" .. i .. "]"
      if type(m) ~= "table" or not ROLES[m.role] then v.invalid(at .. ".role", "must be system, user, assistant or tool") end
      if type(m.content) ~= "string" then v.invalid(at .. ".content", "must be text") end
    end
  end
  if payload.system ~= nil and type(payload.system) ~= "string" then v.invalid("payload.system", "must be text") end
  M.check_options(payload.options, "payload.options", v)
  return { models = model and { model } or nil }
end

return M
