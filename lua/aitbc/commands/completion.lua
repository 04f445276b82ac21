--- aitbc completion: shell completion scripts.  The scripts ask the binary
-- itself (`aitbc __complete WORDS...`), so completions always match the
-- declarations.
local errors = require "aitbc.errors"

local SCRIPTS = {
  bash = [[
# aitbc bash completion: eval "$(aitbc completion bash)"
_aitbc() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$(aitbc __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _aitbc aitbc
]],
  zsh = [[
#compdef aitbc
# aitbc zsh completion: eval "$(aitbc completion zsh)"
_aitbc() {
  local -a words_
  words_=("${(@f)$(aitbc __complete ${words[2,CURRENT-1]} 2>/dev/null)}")
  compadd -a words_
}
compdef _aitbc aitbc
]],
  fish = [[
# aitbc fish completion: aitbc completion fish | source
complete -c aitbc -f -a '(aitbc __complete (commandline -opc)[2..-1])'
]],
}

return {
  name = "completion",
  category = "Tools",
  summary = "Print a shell completion script (bash, zsh or fish)",
  args = { { "shell", help = "bash, zsh or fish" } },
  examples = { 'eval "$(aitbc completion bash)"', "aitbc completion fish | source" },
  run = function(ctx)
    local script = SCRIPTS[ctx.args.shell]
    if not script then
      errors.raise("usage", "unsupported shell '" .. ctx.args.shell .. "'", "choose bash, zsh or fish")
    end
    io.stdout:write(script)
  end,
}
