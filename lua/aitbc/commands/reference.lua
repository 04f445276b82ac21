--- aitbc reference: the Markdown command reference, from the declarations.
return {
  name = "reference",
  category = "Tools",
  summary = "Print the command reference (Markdown) generated from the declarations",
  run = function()
    io.stdout:write(require("aitbc.cli.help").reference())
  end,
}
