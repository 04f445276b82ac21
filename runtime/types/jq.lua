---@meta aitbc.native.jq
-- Type stubs (LuaLS) for runtime/jq.c: the jq language through libjq
-- (Debian's libjq1), loaded with dlopen on first use.
local jq = {}
---The soname the build found (libjq.so.1); AITBC_LIBJQ names another library.
jq.soname = ""

---Loads libjq (default: AITBC_LIBJQ, else jq.soname); true once loaded.
---@param soname? string
---@return true|nil ok, string? message
function jq.load(soname) end

---@class aitbc.jq.program
local program = {}

---Runs the program on one JSON document; emit(text) gets each result:
---compact JSON, or with raw a string result's own text (jq -r).
---@param json_text string
---@param raw boolean
---@param emit fun(text: string)
---@return true|nil ok, string? message  "jq: error: ..." for a run-time error
function program:run(json_text, raw, emit) end

---@param expr string
---@return aitbc.jq.program|nil program, string? message, "unavailable"|"compile"|nil kind
function jq.compile(expr) end

return jq
