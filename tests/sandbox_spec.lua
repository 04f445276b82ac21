-- The sandbox (runtime/sandbox.c, lpattern.c): each limit trips with a clear
-- error and cannot be swallowed, nothing of the host is reachable, values
-- cross JSON-shaped, and metered patterns behave exactly as Lua's own.
local json = require "aitbc.json"
local sandbox = require "aitbc.native.sandbox"

local function run(code, opts)
  local o = { code = code, seconds = 5, instructions = 2e7, memory = 16 << 20 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return sandbox.run(o)
end

--- ok, result only (without the stats)
local function result(code, opts)
  local ok, value = run(code, opts)
  return ok, value
end

local function fails(code, kind, message, opts)
  local ok, err, got_kind, stats = run(code, opts)
  assert.is_nil(ok, "it ran: " .. tostring(err))
  assert.equal(kind, got_kind, err)
  if message then assert.matches(message, err) end
  assert.is_table(stats)
  return err, stats
end

describe("the sandbox", function()
  it("runs a chunk on its input and returns its result (or calls a returned function)", function()
    local ok, value, stats = run("local t = ... return {sum = t.a + t.b, list = {1, 'two', true}}",
      { input = { a = 1, b = 2 } })
    assert.is_true(ok)
    assert.same({ sum = 3, list = { 1, "two", true } }, value)
    assert.is_number(stats.memory_peak)
    assert.same({ true, 42 }, { result("return function(input) return input * 2 end", { input = 21 }) })
  end)

  it("stops endless loops, also under pcall and in coroutines", function()
    fails("while true do end", "instructions", "instruction limit exceeded")
    fails("while true do pcall(function() while true do end end) end", "instructions")
    fails("local co = coroutine.wrap(function() while true do end end) co()", "instructions")
    fails("while true do pcall(coroutine.wrap(function() while true do end end)) end", "instructions")
    fails("while true do end", "time", "time limit exceeded", { seconds = 0.2, instructions = 1e12 })
    fails("local ok = xpcall(function() while true do end end, function() while true do end end) return ok",
      "instructions")
  end)

  it("caps memory: a string doubling loop, a growing table, a huge string.rep", function()
    fails("local s = 'x' while true do s = s .. s end", "memory", "not enough memory")
    fails("local t = {} for i = 1, 1e9 do t[i] = i end", "memory")
    fails("return #string.rep('x', 1e9)", "memory")
    -- a caught memory error leaves the limit in place
    assert.same({ true, { false, true } },
      { result("local ok = pcall(string.rep, 'x', 1e9) return {ok, collectgarbage('count') < 16384}") })
  end)

  it("takes text only, and offers nothing of the host", function()
    fails(string.dump(function() return 1 end), "syntax", "binary chunk")
    fails("return (", "syntax")
    fails("return os.execute('id')", "error", "global 'os'")
    for _, name in ipairs { "io", "os", "package", "debug", "require", "dofile", "loadfile" } do
      assert.same({ true, true }, { result("return " .. name .. " == nil") }, name)
    end
    assert.same({ true, true }, { result("return string.dump == nil") })
    assert.same({ true, "string" }, { result("return getmetatable('')") })
    assert.same({ true, true }, { result("return load(..., 'x', 'b') == nil", { input = string.dump(function() end) }) })
    assert.same({ true, 42 }, { result("return load('return 40 + 2')()") })
    assert.same({ true, 7 }, { result("local env = {x = 7} return load('return x', 'c', 't', env)()") })
    fails("return setmetatable({}, {__gc = function() end})", "error", "__gc")
    -- the host's globals are not its globals
    _G.aitbc_sandbox_probe = "secret"
    assert.same({ true, true }, { result("return aitbc_sandbox_probe == nil") })
    _G.aitbc_sandbox_probe = nil
  end)

  it("charges pattern matching: a pathological pattern stops at the limit", function()
    fails("return string.find(string.rep('a', 5000), string.rep('a-', 20) .. 'b')", "instructions")
    fails("return (string.rep('a', 3000)):match(string.rep('a*', 12) .. 'b')", "time", nil,
      { seconds = 0.3, instructions = 1e12 })
    fails("return string.find('x', '(' .. string.rep('(', 40))", "error", "too many captures")
  end)

  it("matches patterns exactly as Lua's string library does", function()
    local subjects = { "", "hello world", "  padded  ", "a,b,,c", "x=1, y=22, z=333", "[[nested [b] ]]",
      "THE (quick) brown fox", "caf\xc3\xa9 cr\xc3\xa8me", "aaa", "abcabcabc", "key = value # note", "\0nul\0" }
    local patterns = { "%a+", "^%s*(.-)%s*$", "(%w+)=(%d+)", "[^,]*", "%b[]", "%f[%w]%w+", "()ll()", "(a)(b)%1",
      "^", "$", ".-b", "[%a-]+", "%d?%d", "[]]", "[^%s]+", "(h)(e)(l)", "x*", "%u+", "[a-c]+", "%.", "%%", "\0",
      "(%a+) (%a+)", "%s+$", "b*", ".", "%z", "[%w_]+%s*=%s*(.*)",
      -- malformed: the same errors
      "[a", "%", "(()", "%b", "%f", "%1", "a)", "(a", "%fx", "[%" }
    local box = [[
      local subjects, patterns = ...
      local out = {}
      for _, s in ipairs(subjects) do
        for _, p in ipairs(patterns) do
          local r = {}
          local ok, e = pcall(function()
            r.find = {string.find(s, p)}
            r.find3 = {string.find(s, p, 3)}
            r.match = {string.match(s, p)}
            local g = {} for a, b in string.gmatch(s, p) do g[#g + 1] = tostring(a) .. '|' .. tostring(b) end
            r.gmatch = g
            r.gsub = {string.gsub(s, p, '<%0>')}
            r.gsubf = {string.gsub(s, p, function(x) return '{' .. tostring(x) .. '}' end, 3)}
            r.gsubt = {string.gsub(s, p, {a = 'A', hello = 'HI'})}
          end)
          out[#out + 1] = ok and r or {error = (e:gsub('^.-:%d+: ', ''))}
        end
      end
      return out
    ]]
    local expected = assert(load(box))(subjects, patterns)
    local ok, got = run("return function(input) local f = load(input.code) return f(input.s, input.p) end",
      { input = { code = box, s = subjects, p = patterns }, instructions = 1e9 })
    assert.is_true(ok, tostring(got))
    assert.equal(#expected, #got)
    for i = 1, #expected do
      assert.equal(json.encode(expected[i]), json.encode(got[i]), "subject/pattern #" .. i)
    end
  end)

  it("calls host functions with JSON-shaped values; their errors are ordinary errors", function()
    local seen
    local functions = { llm = { chat = function(req) seen = req return { answer = req.prompt .. "!" } end },
      fail = function() error("no model", 0) end, bad = function() return print end }
    assert.same({ true, { answer = "hi!" } }, { result("return llm.chat({prompt = 'hi', n = 2})", { functions = functions }) })
    assert.same({ prompt = "hi", n = 2 }, seen)
    assert.same({ true, "no model" }, { result("local ok, e = pcall(fail) return e", { functions = functions }) })
    fails("return bad()", "error", "cannot take", { functions = functions })
    fails("return llm.chat(print)", "error", "argument 1", { functions = functions })
    fails("return llm", "error", "cannot leave", { functions = functions })
    fails("local t = {} t.self = t return t", "error", "nested more than 32")
    fails("return {1, 2, x = 3}", "error", "list")
    -- a host call that overruns the clock trips the time limit when it returns
    fails("slow() return 1", "time", nil, { seconds = 0.1,
      functions = { slow = function() require("aitbc.sys").sleep(0.3) end } })
    -- a host function may run a sandbox of its own
    local nested = { eval = function(code) return select(2, sandbox.run { code = code }) end }
    assert.same({ true, 6 }, { result("return eval('return 1 + 2 + 3')", { functions = nested }) })
  end)

  it("collects print output, bounded, in the stats", function()
    local ok, _, stats = run("for i = 1, 3 do print('line', i) end print(string.rep('x', 100000)) return 1")
    assert.is_true(ok)
    assert.matches("^line\t1\nline\t2\nline\t3\n", stats.output)
    assert.is_true(#stats.output <= 64 * 1024)
  end)
end)
