--- Job types, each a module declared once (DESIGN.md §8): what the node
-- checks at submit (`validate`, raising through v.invalid with the field
-- named), what a miner needs to run one (`needs`: models, vision, tools,
-- custom workflows), and how a miner runs it (`run`, lua/aitbc/mining/).
--   inference   a prompt or chat for one model (clients submit these)
--   agent       an agent's workflow on its input (POST /v1/agents/{id}/execute)
--   multimodal  an agent's vision model on images and text (the same route, with images)
local M = {}

local TYPES = { inference = true, agent = true, multimodal = true }
M.NAMES = { "inference", "agent", "multimodal" }

--- The module of a job type, or nil and why.
function M.get(name)
  if not TYPES[name] then
    return nil, "unknown job type " .. tostring(name) .. " (one of: " .. table.concat(M.NAMES, ", ") .. ")"
  end
  return require("aitbc.jobs." .. name)
end

--- For clients, before they send: the types they submit directly
-- (the others come from their own commands).  -> true | nil, reason
function M.check_type(name)
  if TYPES[name] and M.get(name).direct then return true end
  if TYPES[name] then
    return nil, name .. " jobs come from their own commands (aitbc agent execute, aitbc multimodal process)"
  end
  return nil, string.format("unknown job type '%s': this network runs inference jobs (and agents: aitbc agent "
    .. "execute)", tostring(name))
end

local function model_name(name) return name and (name:lower():gsub(":latest$", "")) end
M.model_name = model_name

--- Does a miner with these capabilities meet these needs?  caps: {models =
-- {...}, model_capabilities = {model = {"completion", "vision", "tools"}},
-- allow_custom_workflows}.  A miner that declared no models takes any model;
-- a model whose capabilities it did not report is assumed able.  -> ok, why
function M.meets(needs, caps)
  if not needs then return true end
  local have = {}
  for _, m in ipairs(caps.models or {}) do have[model_name(m)] = true end
  local listed = next(have) ~= nil
  local per_model = caps.model_capabilities or {}
  local function capable(model, what)
    local list = per_model[model] or per_model[model_name(model)]
    if not list then return true end
    for _, c in ipairs(list) do if c == what then return true end end
    return false
  end
  for _, m in ipairs(needs.models or {}) do
    if listed and not have[model_name(m)] then return false, "model " .. m .. " is not on this miner" end
  end
  if needs.vision then
    if not needs.vision_model or not capable(needs.vision_model, "vision") then
      return false, "no vision model"
    end
  end
  if needs.tools and needs.models and needs.models[1] and not capable(needs.models[1], "tools") then
    return false, "the model has no tool calling"
  end
  if needs.custom_workflow and not caps.allow_custom_workflows then
    return false, "this miner does not run custom workflows"
  end
  return true
end

return M
