---@meta aitbc.native.net
-- Type stubs (LuaLS) for runtime/net.c: plain TCP, for tests and benchmarks
-- that speak raw HTTP or hold many connections.
local net = {}

---@class aitbc.net.conn
local conn = {}
---@return integer|nil sent, string? err
function conn:send(data, timeout) end
---@return string|nil data, string? "timeout"|"closed"|err
function conn:recv(max, timeout) end
function conn:shutdown() end
function conn:close() end
---@return integer
function conn:fd() end

---@param opts? {source?: string, timeout?: number}
---@return aitbc.net.conn|nil, string? err
function net.connect(host, port, opts) end

return net
