--- HTTP/1.1 server (epoll, a pool of Lua workers) with Lua handlers; see runtime/server.c.
--   local srv = assert(require("aitbc.server").start{port = 0, handler = "my.app"})
--   srv:port(); srv:stop()
return require "aitbc.native.server"
