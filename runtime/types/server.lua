---@meta aitbc.native.server
-- Type stubs (LuaLS) for runtime/server.c (libmicrohttpd, loaded on first use).
-- The handler module returns factory(config) -> handle(request) -> response;
-- each connection thread borrows its own Lua state.
local server = {}
server.mhd_version = ""

---@class aitbc.server
local srv = {}
---@return integer
function srv:port() end
---@param grace_seconds? number  time for requests in flight (default 10)
function srv:stop(grace_seconds) end
---@return {inflight: integer, requests: integer, states: integer}
function srv:stats() end

---@param opts {handler: string, host?: string, port?: integer, config?: string, max_body?: integer, slots?: integer}
---@return aitbc.server|nil, string? err
function server.start(opts) end

return server
