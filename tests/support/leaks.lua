--- Leak checks for specs of the native modules: open file descriptors of
-- this process, and fault injection into its Lua allocator
-- (tests/support/alloc_fail.c, built by `make` beside the binary).
local sys = require "aitbc.sys"

local M = {}

--- How many file descriptors this process has open, after a full
-- collection (so that what userdata finalizers close is closed).
function M.open_fds()
  collectgarbage()
  collectgarbage()
  return #assert(sys.list_dir("/proc/self/fd"))
end

--- The alloc_fail module built beside the binary under test.
function M.alloc_fail()
  local path = assert(sys.exe_path()):match("^(.*)/") .. "/test/alloc_fail.so"
  local open = package.loadlib(path, "luaopen_alloc_fail")
  assert(open, "cannot load " .. path .. ": build it with `make`")
  return open()
end

return M
