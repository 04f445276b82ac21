---@meta aitbc.native.sandbox
-- Type stubs (LuaLS) for runtime/sandbox.c: untrusted Lua in a fresh state
-- with memory, instruction and wall-clock limits (sticky once tripped),
-- text chunks only, no io/os/package/debug, metered patterns (lpattern.c),
-- and only the host functions handed in.  Values cross JSON-shaped.
local sandbox = {}

---@class aitbc.sandbox.stats
---@field instructions integer  approximate, in steps of 1000
---@field memory_peak integer   bytes
---@field seconds number
---@field output string         what print wrote (at most 64 KiB)

---@class aitbc.sandbox.run
---@field code string           Lua text (never bytecode)
---@field name? string          chunk name in messages (default "sandbox")
---@field input? any            JSON-shaped: the chunk's `...`, and the argument of a function it returns
---@field functions? table      name = host function (or a table of them): globals in the sandbox
---@field memory? integer       bytes (default 64 MiB)
---@field instructions? integer (default 100,000,000)
---@field seconds? number       wall clock, host calls included (default 30)

---@param opts aitbc.sandbox.run
---@return true|nil ok, any result_or_message, string|aitbc.sandbox.stats kind_or_stats, aitbc.sandbox.stats? stats
---kinds: "syntax", "error", "memory", "instructions", "time"
function sandbox.run(opts) end

sandbox.defaults = { memory = 0, instructions = 0, seconds = 0 }

return sandbox
