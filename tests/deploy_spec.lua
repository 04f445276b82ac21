--- Deployments (spec §8) on a real container engine: aitbc's own Podman
-- service in a temporary AITBC_HOME, the aitbc-api image built once for
-- this file, real aitbc nodes in containers.  Without a working engine the
-- engine tests are skipped, with the reason.  The parts that need no
-- engine (addresses, log frames, ELF, the image's context, validation, no
-- engine at all) always run.
local cli = require "support.cli"
local engine_support = require "support.engine"
local engine = require "aitbc.deploy.engine"
local image = require "aitbc.deploy.image"
local http = require "aitbc.http"
local json = require "aitbc.json"
local sys = require "aitbc.sys"

--- The names in a tar (ustar) archive.
local function tar_names(tar)
  local names, at = {}, 1
  while at + 512 <= #tar do
    local name = tar:sub(at, at + 99):match("^[^%z]*")
    if name == "" then break end
    local size = tonumber(tar:sub(at + 124, at + 135):match("^[0-7]+"), 8)
    names[name] = true
    at = at + 512 + math.ceil(size / 512) * 512
  end
  return names
end

describe("deploy without an engine", function()
  it("reads engine addresses as --engine, CONTAINER_HOST and DOCKER_HOST spell them", function()
    assert.same("/run/podman/podman.sock", engine.parse_address("unix:///run/podman/podman.sock").socket)
    assert.same("/tmp/x.sock", engine.parse_address("/tmp/x.sock").socket)
    assert.same("http://127.0.0.1:2375", engine.parse_address("tcp://127.0.0.1:2375").url)
    local none, why = engine.parse_address("ssh://core@host/run/podman.sock")
    assert.is_nil(none)
    assert.matches("unix://", why)
  end)

  it("splits the engine's log frames whatever the chunks", function()
    local frame = function(stream, text) return string.char(stream, 0, 0, 0) .. string.pack(">I4", #text) .. text end
    local stream = frame(1, "out line\n") .. frame(2, "err: ") .. frame(2, "line\n")
    for cut = 1, #stream - 1 do
      local got = {}
      local feed = engine.log_demuxer(function(text, which) got[#got + 1] = which .. text end)
      feed(stream:sub(1, cut))
      feed(stream:sub(cut + 1))
      assert.same({ "1out line\n", "2err: ", "2line\n" }, got)
    end
  end)

  it("reads the loader and SONAMEs from ELF files", function()
    local exe = assert(sys.exe_path())
    assert.equal("/lib64/ld-linux-x86-64.so.2", image.elf_info(assert(sys.read_file(exe))).interp)
    local libs = image.libraries()
    local sonames = {}
    for _, l in ipairs(libs) do sonames[l.soname] = l.path end
    assert.is_string(sonames["libc.so.6"])
    assert.is_string(sonames["libcurl.so.4"], "libcurl is dlopened: it must be in the image")
    assert.is_string(sonames["libjq.so.1"], "libjq is dlopened: it must be in the image")
    assert.is_string(sonames["libsodium.so.23"])
  end)

  it("puts the binary, every library under its SONAME, the loader and CA certificates in the context", function()
    local tar, what = image.context()
    local names = tar_names(tar)
    assert.is_true(names["Dockerfile"])
    assert.is_true(names["rootfs/usr/bin/aitbc"])
    assert.is_true(names["rootfs/lib64/ld-linux-x86-64.so.2"])
    assert.is_true(names["rootfs/etc/ssl/certs/ca-certificates.crt"])
    assert.is_true(names["data/"])
    for _, l in ipairs(image.libraries()) do
      assert.is_true(names["rootfs" .. l.path:match("^(.*)/") .. "/" .. l.soname], l.soname)
    end
    assert.is_true(#what.libraries >= 10)
    local dockerfile = image.dockerfile()
    assert.matches("FROM scratch", dockerfile)
    assert.matches('ENTRYPOINT %["/usr/bin/aitbc", "serve", "%-%-listen", "0%.0%.0%.0:8000"%]', dockerfile)
    assert.matches('HEALTHCHECK [^\n]*CMD %["/usr/bin/aitbc"[^\n]*"api", "/health"%]', dockerfile)
  end)

  it("refuses bad values at create naming the field, before any engine is needed", function()
    local home = cli.tempdir()
    local function create(extra)
      local args = { "-o", "json", "deploy", "create", "--name", "prod-api", "--image", "aitbc-api:latest",
        "--engine", "unix:///nonexistent/podman.sock" }
      for _, a in ipairs(extra) do args[#args + 1] = a end
      return cli.run(args, { home = home })
    end
    for field, extra in pairs {
      name = { "--name", "bad name!" }, image = { "--image", "no spaces allowed" }, bind = { "--bind", "localhost" },
      memory = { "--memory", "1k" }, env = { "--env", "NOEQUALS" }, port = { "--port", "65535", "--instances", "3" },
    } do
      local r = create(extra)
      assert.equal(2, r.code, field .. ": " .. r.out)
      assert.equal(field, r.json().error.field)
    end
    assert.equal(2, create({ "--instances", "0" }).code)
    assert.equal(2, create({ "--cpus", "1000" }).code)
    local busy = cli.echo_server()
    local r = create { "--port", tostring(busy:port()) }
    assert.equal(2, r.code)
    assert.matches("in use", r.json().error.message)
    busy:stop(0)
    assert.is_nil(sys.stat(home .. "/deployments/prod-api.json"))
  end)

  it("says which engine does not answer: exit 5", function()
    local r = cli.run { "deploy", "list", "--engine", "unix:///nonexistent/podman.sock" }
    assert.equal(0, r.code) -- nothing to list needs no engine
    r = cli.run { "-o", "json", "deploy", "engine", "status", "--engine", "unix:///nonexistent/podman.sock" }
    assert.equal(5, r.code)
    assert.matches("cannot reach the container engine at unix:///nonexistent/podman.sock", r.json().error.message)
    assert.matches("from %-%-engine", r.json().error.message)
    r = cli.run({ "-o", "json", "deploy", "engine", "status" }, { env = { CONTAINER_HOST = "ssh://x/y" } })
    assert.equal(2, r.code)
    assert.equal("invalid_engine", r.json().error.code)
  end)

  it("where containers cannot run (no cgroup filesystem) says so before starting Podman (exit 5)", function()
    if not engine.which("podman") then return pending("podman is not installed") end
    local home = cli.tempdir()
    local env = { CONTAINER_HOST = false, DOCKER_HOST = false, XDG_RUNTIME_DIR = home }
    local r
    if not sys.stat("/sys/fs/cgroup") then -- this machine is one (a chroot without /sys)
      r = cli.run({ "-o", "json", "deploy", "engine", "start" }, { home = home, env = env })
    else -- hide /sys in a private mount namespace, as a chroot without it has
      if not engine.which("unshare") then return pending("cannot hide /sys here: no unshare") end
      local line = "mount -t tmpfs tmpfs /sys && exec " .. cli.shell_quote(cli.bin) .. " -o json deploy engine start"
      local proc = assert(sys.spawn { argv = { "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
        line }, env = { AITBC_HOME = home, CONTAINER_HOST = false, DOCKER_HOST = false, XDG_RUNTIME_DIR = home },
        stdout = "pipe", stderr = "pipe" })
      local code, out, err = proc:communicate(nil, 30)
      if code ~= 5 and err:find("unshare", 1, true) then return pending("unshare refused (not root?): " .. err) end
      r = { code = code, json = function() return json.decode(out) end }
    end
    assert.equal(5, r.code)
    local e = r.json().error
    assert.equal("no_engine", e.code)
    assert.matches("no container engine can run here: this machine has no cgroup filesystem", e.message)
    assert.is_nil(sys.stat(home .. "/engine/podman.pid"), "podman was not started")
  end)

  it("with no engine at all names what to install (exit 5)", function()
    for _, p in ipairs { "/run/podman/podman.sock", "/var/run/docker.sock" } do
      if sys.stat(p) then return pending("an engine answers at " .. p .. " on this machine") end
    end
    local home = cli.tempdir()
    local r = cli.run({ "-o", "json", "deploy", "engine", "status" },
      { home = home, env = { PATH = "/nonexistent", HOME = home, XDG_RUNTIME_DIR = home, CONTAINER_HOST = false,
        DOCKER_HOST = false } })
    assert.equal(5, r.code)
    local e = r.json().error
    assert.equal("no_engine", e.code)
    assert.matches("podman is not installed", e.message)
    assert.matches("apt%-get install podman runc", e.hint)
  end)
end)

local skip = engine_support.unavailable()
if skip then
  io.write("skip: deployments on a container engine: " .. skip .. "\n")
  describe("deployments on a container engine", function()
    pending("skipped: " .. skip)
  end)
  return
end

describe("deployments on a container engine (Podman)", function()
  local e, why

  setup(function()
    e, why = engine_support.start()
    if e then
      local ok, out = engine_support.build_image(e)
      assert(ok, "building aitbc-api:latest failed: " .. tostring(out))
    end
  end)

  teardown(function()
    engine_support.cleanup(e)
  end)

  --- The engine's containers of a deployment (by its label).
  local function containers(name)
    return e.engine:containers { ["aitbc.deployment"] = name }
  end

  local function need_engine()
    if not e then
      io.write("skip: " .. tostring(why) .. "\n")
      pending("no working engine: " .. tostring(why))
      return false
    end
    return true
  end

  it("runs the spec's life cycle: create, start (created → started → healthy → running), real nodes", function()
    if not need_engine() then return end
    local r = e.run { "deploy", "create", "--name", "prod-api", "--image", "aitbc-api:latest", "--instances", "3" }
    assert.equal(0, r.code, r.err)
    assert.matches("deployment prod%-api saved and validated: 3 × aitbc%-api:latest", r.out)
    local st = assert(sys.stat(e.home .. "/deployments/prod-api.json"))
    assert.equal(tonumber("600", 8), st.mode)
    local again = e.run { "deploy", "create", "--name", "prod-api", "--image", "aitbc-api:latest" }
    assert.equal(1, again.code)
    assert.matches("already exists", again.err)

    r = e.run { "deploy", "start", "prod-api" }
    assert.equal(0, r.code, r.out .. r.err)
    for n = 1, 3 do
      local name = "prod%-api%-" .. n
      local created = r.out:find(name .. "%s+created")
      local started = r.out:find(name .. "%s+started%s+127%.0%.0%.1:%d+")
      local healthy = r.out:find(name .. "%s+healthy")
      assert.is_truthy(created and started and healthy and created < started and started < healthy, r.out)
    end
    assert.matches("prod%-api running: 3/3 instances healthy", r.out)

    -- three real aitbc nodes, labelled, published on 127.0.0.1 only
    local list = containers("prod-api")
    assert.equal(3, #list)
    local show = e.run({ "-o", "json", "deploy", "show", "prod-api" }).json()
    assert.equal("running", show.state)
    for _, inst in ipairs(show.instances_list) do
      assert.equal("healthy", inst.health)
      assert.matches("^127%.0%.0%.1:%d+$", inst.address)
      local res = assert(http.request { url = inst.url .. "/v1/node", timeout = 5 })
      assert.equal(200, res.status)
      assert.equal(sys.version, res.json.version)
      local c = e.engine:inspect(inst.instance)
      assert.equal("prod-api", c.Config.Labels["aitbc.deployment"])
      assert.equal("127.0.0.1", c.HostConfig.PortBindings["8000/tcp"][1].HostIp)
    end

    -- start again: already running, nothing new
    r = e.run { "deploy", "start", "prod-api" }
    assert.equal(0, r.code)
    assert.matches("already running", r.out)
    assert.equal(3, #containers("prod-api"))
  end)

  it("monitors CPU, memory, network and health per instance: --once, JSON frames, q on a terminal", function()
    if not need_engine() then return end
    local r = e.run { "-o", "json", "deploy", "monitor", "prod-api", "--once" }
    assert.equal(0, r.code, r.out .. r.err)
    local frame = r.json()
    assert.equal(3, #frame.instances)
    for _, inst in ipairs(frame.instances) do
      assert.equal("healthy", inst.health)
      assert.is_number(inst.cpu_percent)
      assert.is_true(inst.memory_bytes > 0)
      assert.is_true(inst.net_rx_bytes >= 0 and inst.net_tx_bytes >= 0)
      assert.is_true(inst.pids >= 1)
    end
    r = e.run { "deploy", "monitor", "prod-api", "--once" }
    assert.matches("INSTANCE%s+HEALTH%s+CPU%s+MEMORY%s+NET RX / TX", r.out)
    -- off a terminal: one compact JSON document per frame until Ctrl-C
    local env = { AITBC_HOME = e.home, CONTAINER_HOST = false, DOCKER_HOST = false }
    local proc = assert(cli.spawn { argv = { cli.bin, "-o", "json", "deploy", "monitor", "prod-api", "--interval", "0.5" },
      env = env, stdout = "pipe", stderr = "pipe" })
    local seen = ""
    while select(2, seen:gsub("\n", "")) < 2 do
      local chunk = proc:read(30)
      assert.is_string(chunk, "frames stopped coming")
      seen = seen .. chunk
    end
    proc:kill(2)
    assert.equal(130, (proc:communicate(nil, 10)))
    for line in seen:gmatch("[^\n]+") do assert.equal("prod-api", json.decode(line).deployment) end
    -- on a terminal: redrawn in place; q leaves (exit 0)
    local code, shown = cli.on_terminal({ "deploy", "monitor", "prod-api" }, env, nil, "q")
    assert.equal(0, code, shown)
    assert.matches("\27%[H\27%[2J", shown)
    assert.matches("q or Ctrl%-C to stop", shown)
    assert.matches("prod%-api%-3%s+healthy", shown)
  end)

  it("scales one at a time, restarts one at a time, keeps data across stop and start, shows logs", function()
    if not need_engine() then return end
    local r = e.run { "deploy", "scale", "prod-api", "4" }
    assert.equal(0, r.code, r.err)
    assert.matches("prod%-api%-4%s+healthy", r.out)
    assert.equal(4, #containers("prod-api"))
    assert.equal(4, json.decode(sys.read_file(e.home .. "/deployments/prod-api.json")).instances)
    r = e.run { "deploy", "scale", "prod-api", "--instances", "2" }
    assert.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("prod%-api%-4%s+removed") < r.out:find("prod%-api%-3%s+removed"))
    assert.equal(2, #containers("prod-api"))

    local url = e.run({ "-o", "json", "deploy", "show", "prod-api" }).json().instances_list[1].url
    local key = assert(http.request { url = url .. "/v1/node" }).json.node_key
    r = e.run { "deploy", "restart", "prod-api" }
    assert.equal(0, r.code, r.err)
    assert.is_truthy(r.out:find("prod%-api%-1%s+healthy") < r.out:find("prod%-api%-2%s+stopped"), r.out)
    r = e.run { "deploy", "stop", "prod-api" }
    assert.equal(0, r.code, r.err)
    for _, c in ipairs(containers("prod-api")) do assert.equal("exited", c.State) end
    assert.equal("stopped", e.run({ "-o", "json", "deploy", "list" }).json().items[1].state)
    r = e.run { "deploy", "start", "prod-api" }
    assert.equal(0, r.code, r.err)
    url = e.run({ "-o", "json", "deploy", "show", "prod-api" }).json().instances_list[1].url
    assert.equal(key, assert(http.request { url = url .. "/v1/node" }).json.node_key, "the node's data survived")

    r = e.run { "deploy", "logs", "prod-api", "--tail", "3" }
    assert.equal(0, r.code, r.err)
    assert.matches("prod%-api%-1 | aitbc node listening on http://0%.0%.0%.0:8000", r.out)
    assert.matches("prod%-api%-2 | ", r.out)
    -- -f follows every instance at once until Ctrl-C (exit 130, no error)
    local proc = assert(cli.spawn { argv = { cli.bin, "deploy", "logs", "prod-api", "-f", "--tail", "1" },
      env = { AITBC_HOME = e.home, CONTAINER_HOST = false, DOCKER_HOST = false }, stdout = "pipe", stderr = "pipe" })
    local seen = ""
    while not (seen:find("prod%-api%-1 | ") and seen:find("prod%-api%-2 | ")) do
      local chunk = proc:read(30)
      assert.is_string(chunk, "no log lines: " .. seen)
      seen = seen .. chunk
    end
    proc:kill(2)
    local code, _, err = proc:communicate(nil, 10)
    assert.equal(130, code)
    assert.equal("", err)
  end)

  it("shows whole last lines of a container that writes its lines in pieces", function()
    if not need_engine() then return end
    -- an image FROM aitbc-api whose entry point writes each line in two pieces, a moment apart
    local w = image.tar_writer()
    w.file("Dockerfile", table.concat({ "FROM aitbc-api:latest", "COPY pieces.lua /pieces.lua", "HEALTHCHECK NONE",
      'ENTRYPOINT ["/usr/bin/aitbc", "run", "/pieces.lua"]', "" }, "\n"))
    w.file("pieces.lua", table.concat({ 'local sys = require "aitbc.sys"',
      'for i = 1, 4 do io.stdout:write("line ", i, " begins") io.stdout:flush() sys.sleep(0.2)',
      '  io.stdout:write(" and ends\\n") io.stdout:flush() end',
      'io.stdout:write("done\\n") io.stdout:flush()', "sys.sleep(3600)", "" }, "\n"))
    e.engine:build(w.finish(), "aitbc-pieces:test")
    assert.equal(0, e.run({ "deploy", "create", "--name", "pieces", "--image", "aitbc-pieces:test" }).code)
    local r = e.run { "deploy", "start", "pieces" }
    assert.equal(0, r.code, r.out .. r.err)
    cli.wait_for("the last line", function() return e.run({ "deploy", "logs", "pieces" }).out:find("done\n") end)
    r = e.run { "deploy", "logs", "pieces", "--tail", "2" }
    assert.equal(0, r.code, r.err)
    assert.equal("line 4 begins and ends\ndone\n", r.out)
    -- -f starts from the same two lines
    local proc = assert(cli.spawn { argv = { cli.bin, "deploy", "logs", "pieces", "-f", "--tail", "2" },
      env = { AITBC_HOME = e.home, CONTAINER_HOST = false, DOCKER_HOST = false }, stdout = "pipe", stderr = "pipe" })
    local seen = ""
    while not seen:find("done\n") do
      local chunk = proc:read(30)
      assert.is_string(chunk, "no log lines: " .. seen)
      seen = seen .. chunk
    end
    proc:kill(2)
    assert.equal(130, (proc:communicate(nil, 10)))
    assert.equal("line 4 begins and ends\ndone\n", seen)
    assert.equal(0, e.run({ "deploy", "destroy", "pieces", "--yes" }).code)
  end)

  it("stops a start whose instance fails its health check, shows its last log lines and rolls back", function()
    if not need_engine() then return end
    -- the node listens on 9000, its health check asks 8000: unhealthy, for real
    local r = e.run { "deploy", "create", "--name", "sick", "--image", "aitbc-api:latest", "--instances", "2",
      "--command", "--listen 0.0.0.0:9000" }
    assert.equal(0, r.code, r.err)
    r = e.run { "-o", "json", "deploy", "start", "sick" }
    assert.equal(1, r.code)
    local err = r.json().error
    assert.equal("unhealthy", err.code)
    assert.matches("health check failed", err.message)
    assert.matches("listening on http://0%.0%.0%.0:9000", err.details.logs)
    assert.equal(0, #containers("sick"), "rolled back")

    -- an instance that exits at once; --keep-failed leaves what was made
    assert.equal(0, e.run({ "deploy", "create", "--name", "broken", "--image", "aitbc-api:latest",
      "--command", "--block-time 0" }).code)
    r = e.run { "deploy", "start", "broken", "--keep-failed" }
    assert.equal(1, r.code)
    assert.matches("broken%-1%s+failed%s+it exited %(code 2%)", r.err)
    assert.matches("last log lines of broken%-1:\n[^\n]*%-%-block%-time must be at least 0%.05", r.err)
    assert.equal(1, #containers("broken"))
    r = e.run { "deploy", "destroy", "broken", "--yes" }
    assert.equal(0, r.code, r.err)
    assert.equal(0, #containers("broken"))
    assert.equal(0, e.run({ "deploy", "destroy", "sick", "--yes" }).code)
  end)

  it("rolls back a start interrupted by Ctrl-C (exit 130)", function()
    if not need_engine() then return end
    -- unhealthy only after the image's start period: Ctrl-C comes while start waits
    assert.equal(0, e.run({ "deploy", "create", "--name", "halt", "--image", "aitbc-api:latest", "--instances", "2",
      "--command", "--listen 0.0.0.0:9000" }).code)
    local proc = assert(cli.spawn { argv = { cli.bin, "deploy", "start", "halt" },
      env = { AITBC_HOME = e.home, CONTAINER_HOST = false, DOCKER_HOST = false }, stdout = "pipe", stderr = "pipe" })
    local seen = ""
    while not seen:find("halt%-2%s+started") do
      local chunk = proc:read(30)
      assert.is_string(chunk, "no start lines: " .. seen)
      seen = seen .. chunk
    end
    proc:kill(2)
    local code, rest = proc:communicate(nil, 60)
    assert.equal(130, code)
    assert.matches("halt%-1%s+removed", seen .. rest)
    assert.equal(0, #containers("halt"), "rolled back")
    assert.equal(0, e.run({ "deploy", "destroy", "halt", "--yes" }).code)
  end)

  it("never touches a container that is not its own, and undoes a start the engine refused half-way", function()
    if not need_engine() then return end
    local foreign = e.engine:create("clash-2", { Image = "aitbc-api:latest" })
    assert.equal(0, e.run({ "deploy", "create", "--name", "clash", "--image", "aitbc-api:latest", "--instances", "2" })
      .code)
    local r = e.run { "deploy", "start", "clash" }
    assert.equal(1, r.code)
    assert.matches("a container named clash%-2 exists that is not part of this deployment", r.err)
    assert.matches("clash%-1%s+removed", r.out)
    assert.equal(0, #containers("clash"))
    assert.equal(0, e.run({ "deploy", "destroy", "clash", "--yes" }).code)
    assert.equal(foreign, e.engine:inspect("clash-2").Id, "the foreign container is still there")
    e.engine:remove(foreign)
  end)

  it("offers to build a missing aitbc-api image, and refuses other missing images", function()
    if not need_engine() then return end
    local r = e.run { "-o", "json", "deploy", "create", "--name", "x", "--image", "aitbc-api:other" }
    assert.equal(3, r.code)
    assert.equal("image", r.json().error.field)
    assert.matches("%-%-yes", r.json().error.hint)
    r = e.run { "--yes", "deploy", "create", "--name", "x", "--image", "aitbc-api:other" }
    assert.equal(0, r.code, r.err)
    assert.matches("built aitbc%-api:other", r.out)
    assert.truthy(e.engine:image("aitbc-api:other"))
    r = e.run { "deploy", "destroy", "x", "--yes" }
    assert.equal(0, r.code, r.err)
    assert.matches("image aitbc%-api:other removed", r.out)
    assert.is_nil(e.engine:image("aitbc-api:other"))
    r = e.run { "-o", "json", "deploy", "create", "--name", "y", "--image", "nosuch/image:1" }
    assert.equal(3, r.code)
    assert.matches("podman pull", r.json().error.hint)
  end)

  it("speaks HTTP over the engine's unix socket (aitbc.http unix_socket)", function()
    if not need_engine() then return end
    local res = assert(http.request { url = "http://localhost/_ping", unix_socket = e.socket })
    assert.equal(200, res.status)
    assert.equal("OK", res.body)
    local many = http.request_many { { url = "http://localhost/_ping", unix_socket = e.socket },
      { url = "http://localhost/version", unix_socket = e.socket } }
    assert.equal(200, many[1].status)
    assert.matches("Podman", many[2].body)
    local none, err = http.request { url = "file:///etc/passwd", unix_socket = e.socket }
    assert.is_nil(none)
    assert.equal("url", err.code, "still http and https only")
  end)

  it("destroys everything a deployment made", function()
    if not need_engine() then return end
    local r = e.run { "deploy", "destroy", "prod-api" }
    assert.equal(2, r.code, "no prompt off a terminal without --yes")
    assert.equal(2, #containers("prod-api"))
    r = e.run { "deploy", "destroy", "prod-api", "--yes" }
    assert.equal(0, r.code, r.err)
    assert.equal(0, #containers("prod-api"))
    assert.is_nil(sys.stat(e.home .. "/deployments/prod-api.json"))
    assert.equal(3, e.run({ "deploy", "show", "prod-api" }).code)
    assert.truthy(e.engine:image("aitbc-api:latest"), "an image create did not build stays")
  end)
end)
