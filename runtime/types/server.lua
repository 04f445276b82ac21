---@meta aitbc.native.server
-- Type stubs (LuaLS) for runtime/server.c: an HTTP/1.1 server over epoll
-- (server_io.c) with a pool of workers, each with its own Lua state.
-- The handler module returns factory(config) -> handle(request) -> response.
local server = {}

---@class aitbc.server.request
---@field method string
---@field path string         percent-decoded, without the query
---@field query table<string,string>
---@field headers table<string,string>  lower-case names; repeated fields joined with ", "
---@field body string
---@field remote string
---@field connected fun(): boolean  false once the client hung up or the request is over
---@field resumed? "woken"|"timeout"|"shutdown"  set when a suspended request runs again
---@field waited? number      seconds since it first suspended

---@class aitbc.server.response
---@field status? integer     100..599 (default 200)
---@field headers? table<string,string|number>
---@field body? string
---@field stream? fun(): string|nil  chunks until nil
---@field suspend? number     wait this long (or until woken) and run the handler again
---@field wake? string[]      keys sys.notify wakes it on ("ns:value"; "ns:*" matches any in ns for notify-one)
---@field after? {queue: string, seq: integer}  hold the answer until sys.queue_commit(queue, >= seq)

---@class aitbc.server
local srv = {}
---@return integer
function srv:port() end
---@param grace_seconds? number  time for requests in flight (default 10)
function srv:stop(grace_seconds) end
---@return {inflight: integer, requests: integer, states: integer, workers: integer}
function srv:stats() end

---fd: serve on this inherited listening socket (sys.listen in aitbc serve's supervisor) instead of opening one
---@param opts {handler: string, host?: string, port?: integer, fd?: integer, config?: string, max_body?: integer, workers?: integer, max_connections?: integer, max_per_address?: integer, idle_timeout?: number, head_timeout?: number, log_queue?: string}
---@return aitbc.server|nil, string? err
function server.start(opts) end

return server
