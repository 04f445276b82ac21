local sys = require "aitbc.sys"
local cli = require "support.cli"
local leaks = require "support.leaks"

describe("sys", function()
  after_each(cli.cleanup)

  it("writes files atomically with the requested mode", function()
    local dir = cli.tempdir()
    local path = dir .. "/secret.json"
    assert(sys.write_file(path, "one", tonumber("600", 8)))
    assert(sys.write_file(path, "two", tonumber("600", 8)))
    assert.equal("two", sys.read_file(path))
    assert.equal(tonumber("600", 8), sys.stat(path).mode)
    assert.same({ "secret.json" }, sys.list_dir(dir)) -- no temporary files left
    local ok, err = sys.write_file("/nonexistent/x", "y")
    assert.is_nil(ok)
    assert.matches("No such file", err)
  end)

  it("creates nested directories and reports what it cannot", function()
    local dir = cli.tempdir()
    assert(sys.mkdir(dir .. "/a/b/c"))
    assert.equal("directory", sys.stat(dir .. "/a/b/c").type)
    assert(sys.mkdir(dir .. "/a/b/c")) -- already there: fine
    assert(sys.write_file(dir .. "/f", "x"))
    assert.is_nil((sys.mkdir(dir .. "/f/g")))
  end)

  it("removes a tree without following its symbolic links, dangling ones included", function()
    local outside, tree = cli.tempdir(), cli.tempdir()
    assert(sys.write_file(outside .. "/keep", "x"))
    assert(sys.mkdir(tree .. "/a/l"))
    assert(sys.mkdir(tree .. "/a/target"))
    for _, link in ipairs { { outside, tree .. "/a/l/out" }, { "../target", tree .. "/a/l/in" },
                            { "../gone", tree .. "/a/l/dangling" } } do
      local p = assert(sys.spawn { argv = { "ln", "-s", link[1], link[2] } })
      assert.equal(0, p:wait())
    end
    assert.is_true(sys.remove_tree(tree))
    assert.is_nil(sys.stat(tree))
    assert.equal("x", sys.read_file(outside .. "/keep"))
  end)

  it("spawns a process, feeds stdin, captures stdout, stderr and the exit code", function()
    local p = assert(sys.spawn { argv = { "/bin/sh", "-c", "cat; echo oops >&2; exit 3" },
      stdin = "pipe", stdout = "pipe", stderr = "pipe" })
    local code, out, err = p:communicate("hello")
    assert.equal(3, code)
    assert.equal("hello", out)
    assert.equal("oops\n", err)
  end)

  it("passes environment changes to the child only", function()
    local p = assert(sys.spawn { argv = { "/bin/sh", "-c", "echo $AITBC_T1-${HOME:+home}" },
      env = { AITBC_T1 = "set", HOME = false }, stdout = "pipe" })
    local _, out = p:communicate()
    assert.equal("set-\n", out)
    assert.is_nil(sys.getenv("AITBC_T1"))
  end)

  it("kills a child and reports the signal as 128+N; times out a slow one", function()
    local p = assert(cli.spawn { argv = { "sleep", "30" } })
    assert.is_nil(p:wait(true))
    assert.is_true(p:kill(9))
    assert.equal(137, p:wait())
    local slow = assert(cli.spawn { argv = { "sleep", "30" }, stdout = "pipe" })
    local code, why = slow:communicate(nil, 0.2)
    assert.is_nil(code)
    assert.equal("timeout", why)
  end)

  it("says clearly when a program cannot be run", function()
    local p, err = sys.spawn { argv = { "/no/such/program" } }
    assert.is_nil(p)
    assert.matches("cannot run /no/such/program: No such file", err)
  end)

  it("refuses a bad env entry before opening anything (no descriptor leaks)", function()
    local log = cli.tempdir() .. "/child.log"
    local before = leaks.open_fds()
    for _, env in ipairs { { [true] = "x" }, { [1] = "x" }, { ["A=B"] = "x" }, { X = {} }, { X = true }, { X = "a\0b" } } do
      for _ = 1, 5 do
        local ok, err = pcall(sys.spawn, { argv = { "true" }, stdin = "pipe", stdout = "pipe", stderr = "pipe",
          log = log, env = env })
        assert.is_false(ok)
        assert.equal(before, leaks.open_fds())
        assert.matches("^env", err)
      end
    end
    local p, err = sys.spawn { argv = { "true" }, stdout = "pipe", log = "/nonexistent/dir/child.log" }
    assert.is_nil(p)
    assert.matches("/nonexistent/dir/child.log", err)
    assert.equal(before, leaks.open_fds())
  end)

  it("closes a directory it was listing when a name cannot be allocated", function()
    local dir = cli.tempdir()
    for i = 1, 40 do assert(sys.write_file(("%s/list-dir-leak-%d"):format(dir, i), "")) end
    local alloc = leaks.alloc_fail()
    local before = leaks.open_fds()
    for _ = 1, 10 do
      collectgarbage("stop") -- no collector step (and finalizer) between here and list_dir
      alloc.fail(2, 5) -- the sixth allocation (a name, some way into the listing) fails
      local ok, err = pcall(sys.list_dir, dir)
      collectgarbage("restart")
      assert.is_false(ok)
      assert.matches("not enough memory", err)
      assert.equal(0, alloc.pending())
    end
    assert.equal(before, leaks.open_fds())
    assert.equal(40, #sys.list_dir(dir))
  end)

  it("reads clocks, sleeps, and reads /proc", function()
    local t0 = sys.monotonic()
    assert.is_true(sys.sleep(0.01))
    assert.is_true(sys.monotonic() > t0)
    assert.is_true(sys.time() > 1.7e9)
    local cpu = assert(sys.cpu_times())
    assert.is_true(cpu.total > 0)
    local mem = assert(sys.memory())
    assert.is_true(mem.total > mem.available and mem.available > 0)
    assert.is_table(assert(sys.network()).lo)
    assert.is_true(assert(sys.disk_usage("/")).total > 0)
    assert.equal(3, #assert(sys.loadavg()))
    assert.is_false(sys.interrupted())
  end)

  it("has no terminal when output is piped", function()
    local p = assert(sys.spawn { argv = { cli.bin, "run", "/dev/stdin" }, stdin = "pipe", stdout = "pipe" })
    local _, out = p:communicate([[print(require("aitbc.sys").isatty(1), require("aitbc.sys").term_size(1))]])
    assert.equal("false\n", out)
  end)
  it("holds an exclusive file lock that another process cannot take until it is released", function()
    local dir = cli.tempdir()
    local lock = assert(sys.lock_file(dir .. "/node.lock"))
    local probe = [[local l, e = require("aitbc.sys").lock_file(arg[1]) io.write(l and "taken" or e)]]
    local p = assert(sys.spawn { argv = { cli.bin, "run", "/dev/stdin", dir .. "/node.lock" }, stdin = "pipe", stdout = "pipe" })
    local _, out = p:communicate(probe)
    assert.equal("busy", out)
    lock:unlock()
    p = assert(sys.spawn { argv = { cli.bin, "run", "/dev/stdin", dir .. "/node.lock" }, stdin = "pipe", stdout = "pipe" })
    _, out = p:communicate(probe)
    assert.equal("taken", out)
    assert(sys.fsync(dir .. "/node.lock"))
    assert.is_nil((sys.fsync(dir .. "/missing")))
  end)

  it("opens a listening socket that a child inherits and serves on (the supervisor's hand-over)", function()
    local fd, port = assert(sys.listen("127.0.0.1", 0))
    assert.is_true(port > 0)
    local script = cli.tempdir() .. "/serve.lua"
    assert(sys.write_file(script, [[
      local srv = assert(require("aitbc.server").start { fd = tonumber(arg[1]), handler = "support.echo_app" })
      io.write("up ", srv:port(), "\n") io.stdout:flush()
      io.read("l") srv:stop(1)]]))
    local p = assert(sys.spawn { argv = { cli.bin, "run", script, tostring(fd) }, stdin = "pipe", stdout = "pipe",
      env = { LUA_PATH = "tests/?.lua;;" } })
    local line = assert(p:read(10))
    assert.equal("up " .. port .. "\n", line)
    local res = assert(require("aitbc.http").request { url = "http://127.0.0.1:" .. port .. "/health" })
    assert.equal(200, res.status)
    p:close_stdin()
    assert.equal(0, p:communicate(nil, 10))
    assert.is_nil((sys.listen("not an address", 0)))
  end)
end)
