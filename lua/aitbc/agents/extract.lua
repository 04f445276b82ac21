--- The `extract` workflow: the fields the definition names, pulled out of
-- the input as a JSON object (Ollama's format "json"); a reply that is not
-- such an object is sent back once with what was wrong.
local json = require "aitbc.json"

local function check(text, fields)
  local obj = json.decode(text)
  if type(obj) ~= "table" or json.is_array(obj) then return nil, "that is not a JSON object" end
  local out = {}
  for _, f in ipairs(fields) do
    if obj[f] == nil then return nil, "the key " .. f .. " is missing" end
    out[f] = obj[f]
  end
  return out
end

return function(ctx)
  local fields = ctx.definition.fields
  local messages = {
    { role = "system", content = ctx.definition.system_prompt
      or "You extract data exactly as written in the text. Use null for what the text does not say." },
    { role = "user", content = "Return a JSON object with the keys: " .. table.concat(fields, ", ")
      .. ".\n\nText:\n" .. ctx.input },
  }
  for attempt = 1, 2 do
    ctx.usage.steps = ctx.usage.steps + 1
    ctx.emit("step", { n = ctx.usage.steps })
    local reply = ctx.chat { messages = messages, format = "json", final = attempt == 2 }
    local obj, why = check(reply.content, fields)
    if obj then
      ctx.emit("answer", { text = reply.content, data = obj })
      return { answer = json.encode(obj), data = obj }
    end
    ctx.emit("thought", { text = "the reply was not usable: " .. why })
    messages[#messages + 1] = { role = "assistant", content = reply.content }
    messages[#messages + 1] = { role = "user", content = why .. ". Return only the JSON object with the keys: "
      .. table.concat(fields, ", ") .. "." }
  end
  error("the model did not return the fields " .. table.concat(fields, ", ") .. " as JSON", 0)
end
