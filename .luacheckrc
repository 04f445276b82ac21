-- luacheck configuration (make lint).
std = "lua54"
max_line_length = 130
-- a function with more paths than this is split into named steps
max_cyclomatic_complexity = 25
files["tests/"] = { std = "+busted", max_line_length = false }
files["lua/aitbc/commands/run.lua"] = { globals = { "arg" } }
files["lua/aitbc/commands/test.lua"] = { globals = { "arg" } }
self = false -- methods keep `self` for a uniform call style
-- custom agent workflows run in the sandbox, which hands them these
files["scripts/agents/"] = { read_globals = { "llm", "tools", "emit" } }
