--- The `summarize` workflow: the input and any text datasets, cut into
-- pieces that fit the model's context, each summarised, then the pieces'
-- summaries combined into one (map, then reduce).
local SYSTEM = "You summarise text faithfully: keep names, numbers and conclusions; add nothing."

local function pieces(text, size)
  local out, at = {}, 1
  while at <= #text do
    local stop = math.min(#text, at + size - 1)
    if stop < #text then -- end on a sentence or line when one is near
      local cut = text:sub(at, stop):match(".*()[%.\n]%s")
      if cut and cut > size // 2 then stop = at + cut - 1 end
    end
    out[#out + 1] = text:sub(at, stop)
    at = stop + 1
  end
  return out
end

local function summarize(ctx, text, what)
  ctx.usage.steps = ctx.usage.steps + 1
  ctx.emit("step", { n = ctx.usage.steps, what = what })
  local reply = ctx.chat { messages = { { role = "system", content = ctx.definition.system_prompt or SYSTEM },
    { role = "user", content = "Summarise this " .. what .. ":\n\n" .. text } }, final = ctx.limit_reached() ~= nil }
  ctx.emit("message_output", { text = reply.content, what = what })
  return reply.content
end

return function(ctx)
  local text = ctx.input
  for name, d in pairs(ctx.data) do text = text .. "\n\n[" .. name .. "]\n" .. d.content end
  -- about 4 characters a token, half the context for the text
  local size = math.max(1000, ((ctx.definition.parameters or {}).num_ctx or 4096) * 2)
  local parts = pieces(text, size)
  if #parts == 1 then
    local answer = summarize(ctx, parts[1], "text")
    ctx.emit("answer", { text = answer })
    return { answer = answer }
  end
  local summaries = {}
  for i, part in ipairs(parts) do
    if ctx.limit_reached() then break end
    summaries[#summaries + 1] = summarize(ctx, part, string.format("part %d of %d", i, #parts))
  end
  local answer = summarize(ctx, table.concat(summaries, "\n\n"), "set of partial summaries")
  local partial = #summaries < #parts
  ctx.emit("answer", { text = answer, partial = partial or nil })
  return { answer = answer, partial = partial or nil, pieces = #parts }
end
