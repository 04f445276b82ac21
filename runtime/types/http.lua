---@meta aitbc.native.http
-- Type stubs (LuaLS) for runtime/http.c (libcurl, loaded on first use).
local http = {}
http.curl_version = ""

---@class aitbc.http.request
---@field url string                http:// or https:// only (other schemes: kind "url")
---@field method? string            GET by default; an HTTP token (else it raises)
---@field headers? table<string,string>  names are tokens, values without CR, LF or NUL
---@field body? string
---@field timeout? number           seconds for the whole transfer (default 30; 0 none; max 1e9)
---@field connect_timeout? number   seconds (default 10)
---@field insecure? boolean         skip TLS verification (on by default)
---@field on_data? fun(chunk: string): boolean?  stream the body; return false to stop
---@field unix_socket? string       connect to this unix socket instead of the URL's host (still http(s)://)

---@class aitbc.http.response
---@field status integer
---@field headers table<string,string>  lower-case names
---@field body string|nil              nil when on_data consumed it
---@field time number                  seconds

---@param req aitbc.http.request
---@return aitbc.http.response|nil res, string? message, string? kind
---kind: connect, resolve, timeout, tls, url, aborted, interrupted, network
function http.request(req) end

---@param reqs aitbc.http.request[]
---@return (aitbc.http.response|{error: string, kind: string})[]
function http.request_many(reqs) end

return http
