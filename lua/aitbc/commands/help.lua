--- aitbc help [COMMAND...]: the same help as `aitbc COMMAND... --help`.
local errors = require "aitbc.errors"

return {
  name = "help",
  category = "Tools",
  summary = "Show the help of aitbc or of a command (aitbc help client submit = aitbc client submit --help)",
  passthrough = true,
  args = { { "command", variadic = true, optional = true, help = "a command and its subcommands" } },
  examples = { "aitbc help client", "aitbc help client submit", "aitbc client help submit" },
  run = function(ctx)
    local help = require "aitbc.cli.help"
    local words = ctx.args.command
    if #words == 0 then
      io.stdout:write(help.top(), "\n")
      return
    end
    local registry = require "aitbc.cli.registry"
    local decl = registry.get(words[1])
    if not decl or decl.hidden then
      local near = require("aitbc.cli.suggest").nearest(words[1], registry.names())
      errors.raise("usage", "unknown command '" .. words[1] .. "'",
        (near and ("did you mean '" .. near .. "'? ") or "") .. "run 'aitbc --help' to see all commands",
        { code = "unknown_command" })
    end
    for i = 2, #words do
      local sub = decl.commands and decl.by_name[words[i]]
      if not sub then
        errors.raise("usage", "unknown command '" .. words[i] .. "' for 'aitbc " .. decl.path .. "'",
          "run 'aitbc " .. decl.path .. " --help'", { code = "unknown_command" })
      end
      decl = sub
    end
    io.stdout:write(help.command(decl), "\n")
  end,
}
