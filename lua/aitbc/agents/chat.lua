--- The `chat` workflow: one turn with the agent's model and system prompt.
return function(ctx)
  ctx.usage.steps = 1
  ctx.emit("step", { n = 1 })
  local messages = {}
  if ctx.definition.system_prompt then messages[1] = { role = "system", content = ctx.definition.system_prompt } end
  messages[#messages + 1] = { role = "user", content = ctx.input }
  local reply = ctx.chat { messages = messages }
  ctx.emit("message_output", { text = reply.content })
  ctx.emit("answer", { text = reply.content })
  return { answer = reply.content }
end
