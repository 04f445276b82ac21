--- The `analysis` workflow: a ReAct loop with Ollama's native tool calling.
-- Each model turn either calls tools (its text is a thought; each call and
-- its output are events and go back to the model as `tool` messages) or
-- answers.  At a limit it asks once more for a best-effort answer from what
-- it has, rather than stopping empty-handed.
local json = require "aitbc.json"

local DEFAULT_SYSTEM = "You are a careful analyst. Use the tools to look things up and to compute; never guess a "
  .. "number you can compute. When you have what you need, answer in plain text."

local function system_prompt(ctx)
  local text = ctx.definition.system_prompt or DEFAULT_SYSTEM
  local data = ctx.describe_data()
  if data ~= "" then text = text .. "\n\nDatasets you can query with the tools:\n" .. data end
  return text
end

--- The assistant turn as Ollama wants it back in the conversation.
local function assistant_turn(reply)
  local calls = json.array()
  for i, c in ipairs(reply.tool_calls) do calls[i] = { ["function"] = { name = c.name, arguments = c.arguments } } end
  return { role = "assistant", content = reply.content, tool_calls = calls }
end

local function best_effort(ctx, messages)
  local limit, value = ctx.limit_reached()
  ctx.emit("limit_reached", { limit = limit, value = value })
  messages[#messages + 1] = { role = "user", content = "You have reached your limit of " .. tostring(limit)
    .. ". Give your best final answer now, from what you have found so far." }
  local ok, reply = pcall(ctx.chat, { messages = messages, final = true })
  local text = ok and reply.content ~= "" and reply.content
    or ("(no answer: the " .. tostring(limit) .. " limit was reached before the model answered)")
  ctx.emit("answer", { text = text, partial = true })
  return { answer = text, partial = true, limit = limit }
end

return function(ctx)
  local messages = { { role = "system", content = system_prompt(ctx) }, { role = "user", content = ctx.input } }
  while not ctx.limit_reached() do
    ctx.usage.steps = ctx.usage.steps + 1
    ctx.emit("step", { n = ctx.usage.steps })
    local reply = ctx.chat { messages = messages, tools = ctx.tool_names }
    if #reply.tool_calls == 0 then
      ctx.emit("message_output", { text = reply.content })
      ctx.emit("answer", { text = reply.content })
      return { answer = reply.content }
    end
    if reply.content ~= "" then ctx.emit("thought", { text = reply.content }) end
    messages[#messages + 1] = assistant_turn(reply)
    for _, call in ipairs(reply.tool_calls) do
      local output = ctx.call_tool(call.name, call.arguments, call.id)
      messages[#messages + 1] = { role = "tool", content = json.encode(output), tool_name = call.name }
    end
  end
  return best_effort(ctx, messages)
end
