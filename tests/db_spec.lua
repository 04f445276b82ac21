local db = require "aitbc.db"
local cli = require "support.cli"
local leaks = require "support.leaks"

describe("db (SQLite)", function()
  local dir, conn
  before_each(function()
    dir = cli.tempdir()
    conn = assert(db.open(dir .. "/t.db"))
    assert(conn:exec("CREATE TABLE t (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, note TEXT, data BLOB)"))
  end)
  after_each(function() conn:close() cli.cleanup() end)

  it("keeps integers exact, text, blobs and NULL", function()
    local big = (1 << 62) + 7
    assert.equal(1, conn:run("INSERT INTO t (amount, note, data) VALUES (?, ?, ?)", big, "héllo", db.blob("\0\1\2")))
    local row = conn:first("SELECT * FROM t")
    assert.equal(big, row.amount)
    assert.equal("integer", math.type(row.amount))
    assert.equal("héllo", row.note)
    assert.equal("\0\1\2", row.data)
    conn:run("INSERT INTO t (amount) VALUES (?)", 1)
    assert.is_nil(conn:first("SELECT note FROM t WHERE amount = 1").note)
  end)

  it("binds named parameters and reuses prepared statements", function()
    for i = 1, 50 do conn:run("INSERT INTO t (amount, note) VALUES (:amount, :note)", { amount = i, note = "n" .. i }) end
    local rows = conn:query("SELECT amount FROM t WHERE amount > ? ORDER BY amount", 45)
    assert.same({ 46, 47, 48, 49, 50 }, (function() local o = {} for _, r in ipairs(rows) do o[#o + 1] = r.amount end return o end)())
    assert.is_false(conn:first("SELECT * FROM t WHERE amount = 999"))
  end)

  it("returns nil, err for SQL errors and constraint violations", function()
    local ok, err = conn:run("INSERT INTO t (amount) VALUES (NULL)")
    assert.is_nil(ok)
    assert.matches("NOT NULL", err)
    local st, perr = conn:statement("SELEC nonsense")
    assert.is_nil(st)
    assert.matches("syntax error", perr)
  end)

  it("refuses a value SQLite cannot bind, naming the parameter, instead of storing NULL", function()
    assert.equal(1000000000, conn:limit("length", 1000))
    local ok, err = conn:run("INSERT INTO t (amount, note) VALUES (:amount, :note)",
      { amount = 1, note = string.rep("x", 2000) })
    assert.is_nil(ok)
    assert.equal("cannot bind parameter :note (#2): string or blob too big", err)
    ok, err = conn:run("INSERT INTO t (amount, data) VALUES (?, ?)", 2, db.blob(string.rep("x", 2000)))
    assert.is_nil(ok)
    assert.equal("cannot bind parameter #2: string or blob too big", err)
    assert.equal(0, conn:first("SELECT count(*) AS n FROM t").n)
    assert.equal(1, conn:run("INSERT INTO t (amount, note) VALUES (?, ?)", 3, "short"))
  end)

  it("frees SQLite's error message even when pushing it fails", function()
    -- checked by LeakSanitizer (make asan): the message is SQLite's until pushed
    local alloc = leaks.alloc_fail()
    for i = 1, 5 do
      local sql = "SELECT * FROM no_such_table_" .. i -- a message never pushed before: it must be allocated
      collectgarbage("stop")
      alloc.fail(2)
      local ok, err = pcall(conn.exec, conn, sql)
      collectgarbage("restart")
      assert.is_false(ok)
      assert.matches("not enough memory", err)
      assert.equal(0, alloc.pending())
    end
    local ok, err = conn:exec("SELECT * FROM no_such_table")
    assert.is_nil(ok)
    assert.equal("no such table: no_such_table", err)
  end)

  it("rolls a failed transaction back completely", function()
    assert.has_error(function()
      conn:transaction(function()
        conn:run("INSERT INTO t (amount) VALUES (1)")
        error("boom")
      end)
    end, "boom")
    assert.equal(0, conn:first("SELECT count(*) AS n FROM t").n)
    assert.equal(42, conn:transaction(function() conn:run("INSERT INTO t (amount) VALUES (2)") return 42 end))
    assert.equal(1, conn:first("SELECT count(*) AS n FROM t").n)
  end)

  it("makes an online backup that opens with the same rows", function()
    for i = 1, 300 do conn:run("INSERT INTO t (amount, note) VALUES (?, ?)", i, string.rep("x", 100)) end
    local pages = assert(conn:backup(dir .. "/backup.db"))
    assert.is_true(pages > 1)
    local copy = assert(db.open(dir .. "/backup.db", { readonly = true }))
    assert.equal(300, copy:first("SELECT count(*) AS n FROM t").n)
    copy:close()
  end)

  it("reports a file it cannot open", function()
    local ok, err = db.open("/nonexistent/dir/x.db")
    assert.is_nil(ok)
    assert.matches("unable to open", err)
  end)
  it("backs up in steps a consistent snapshot while another connection writes (WAL, a read transaction held)", function()
    for i = 1, 2000 do conn:run("INSERT INTO t (amount, note) VALUES (?, ?)", i, string.rep("x", 200)) end
    local src = assert(db.open(dir .. "/t.db"))
    assert(src:exec("BEGIN"))
    local before = src:first("SELECT count(*) AS n, sum(amount) AS s FROM t")
    local backup = assert(src.handle:backup_start(dir .. "/copy.db"))
    local steps, state, remaining, pages = 0, nil, nil, nil -- luacheck: ignore 311
    repeat
      state, remaining, pages = backup:step(16)
      steps = steps + 1
      conn:run("INSERT INTO t (amount) VALUES (?)", 1) -- the node writes meanwhile
    until state == "done"
    assert(backup:finish())
    assert(src:exec("COMMIT"))
    src:close()
    assert.is_true(steps > 5)
    assert.equal(0, remaining)
    assert.is_true(pages > 16)
    local copy = assert(db.open(dir .. "/copy.db", { readonly = true }))
    assert.same(before, copy:first("SELECT count(*) AS n, sum(amount) AS s FROM t"))
    assert.equal("ok", copy:first("PRAGMA integrity_check").integrity_check)
    assert.equal(conn:first("PRAGMA page_size").page_size, copy:first("PRAGMA page_size").page_size)
    copy:close()
  end)

  it("says a stepped backup that did not finish is not complete", function()
    for i = 1, 500 do conn:run("INSERT INTO t (amount, note) VALUES (?, ?)", i, string.rep("y", 500)) end
    local backup = assert(conn.handle:backup_start(dir .. "/partial.db"))
    assert.equal("more", (backup:step(2)))
    local ok, err = backup:finish()
    assert.is_nil(ok)
    assert.matches("not complete", err)
    local bad, berr = conn.handle:backup_start(dir .. "/no/such/dir/x.db")
    assert.is_nil(bad)
    assert.is_string(berr)
  end)
end)
