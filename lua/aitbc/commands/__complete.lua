--- Hidden: completion candidates for the words typed so far.
local function option_words(decl, out)
  for _, o in ipairs(decl and decl.options or {}) do out[#out + 1] = o.long end
  for _, o in ipairs(require("aitbc.cli.parser").GLOBALS) do out[#out + 1] = o.long end
end

local function candidates(words)
  local registry = require "aitbc.cli.registry"
  local parser = require "aitbc.cli.parser"
  local node
  for _, w in ipairs(words) do
    if w:sub(1, 1) ~= "-" then
      local next_node
      if node == nil then next_node = registry.get(w)
      elseif node.commands then next_node = node.by_name[w] end
      if next_node then node = next_node end
    end
  end
  local out = {}
  local last = words[#words]
  local all = {}
  for _, o in ipairs(node and node.options or {}) do all[o.long] = o end
  for _, o in ipairs(parser.GLOBALS) do all[o.long] = all[o.long] or o end
  local prev = last and all[last]
  if prev and prev.choices then
    for _, c in ipairs(prev.choices) do out[#out + 1] = c end
    return out
  end
  if prev and prev.type ~= "boolean" and prev.type ~= "count" then return out end
  if node == nil then
    for _, name in ipairs(registry.names()) do
      local d = registry.get(name)
      if d and not d.hidden then out[#out + 1] = name end
    end
  elseif node.commands then
    for _, c in ipairs(node.commands) do if not c.hidden then out[#out + 1] = c.name end end
  else
    option_words(node, out)
  end
  return out
end

return {
  name = "__complete",
  hidden = true,
  summary = "completion candidates (used by the completion scripts)",
  passthrough = true,
  args = { { "words", variadic = true, optional = true } },
  run = function(ctx)
    io.stdout:write(table.concat(candidates(ctx.args.words), "\n"), "\n")
  end,
}
