--- A custom agent workflow: the steps are yours, in Lua, instead of the
-- model's.  It runs on the miner in the sandbox (no io, os, require or
-- load; memory, instruction and time limits), with
--   job                  {input, data = {name = text}, tools = {...}, limits}
--   llm.chat{messages}   the agent's model (Ollama's /api/chat) -> {content, ...}
--   llm.generate{prompt} -> {response, ...}
--   tools.call(name, args) -> the tool's output, or {error = why}
--   emit(type, data)     an event the client sees live
-- and returns its answer: text, or {answer = text, data = what it found}.
--   aitbc agent create --name q3_margin --type custom --config scripts/agents/q3_margin.json
--   aitbc agent execute <agent_id> --input "Is the margin healthy?"
return function(job)
  local totals = {}
  for _, column in ipairs { "revenue", "costs" } do
    emit("thought", { text = "summing " .. column .. " over the regions" })
    local out = tools.call("csv_query", { dataset = "q3", aggregate = { column = column, fn = "sum" } })
    if out.error then return "cannot read the Q3 data: " .. out.error end
    totals[column] = out.result[1].sum
  end
  local margin = tools.call("calculator",
    { expression = string.format("(%s - %s) / %s * 100", totals.revenue, totals.costs, totals.revenue) })
  if margin.error then return "cannot compute the margin: " .. margin.error end
  local facts = string.format("Q3 revenue %s, costs %s, margin %.1f%%.", totals.revenue, totals.costs, margin.result)
  local reply = llm.chat { messages = { { role = "user", content = facts .. " " .. job.input } } }
  return { answer = facts .. " " .. reply.content,
    data = { revenue = totals.revenue, costs = totals.costs, margin_percent = margin.result } }
end
