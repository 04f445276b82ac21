--- Images and text together, on the agent's vision model (a multimodal job).
return function(ctx)
  ctx.usage.steps = 1
  ctx.emit("step", { n = 1 })
  local list = {}
  for i, img in ipairs(ctx.images or {}) do list[i] = img.data end
  local messages = {}
  if ctx.definition.system_prompt then messages[1] = { role = "system", content = ctx.definition.system_prompt } end
  messages[#messages + 1] = { role = "user", content = ctx.input ~= "" and ctx.input or "Describe the image.", images = list }
  local reply = ctx.chat { messages = messages, model = ctx.definition.models.vision }
  ctx.emit("message_output", { text = reply.content })
  ctx.emit("answer", { text = reply.content })
  return { answer = reply.content, images = #list }
end
