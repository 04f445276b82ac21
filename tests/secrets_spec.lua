-- Sealed files and passwords: one format and one precedence for wallet
-- keystores and API key backups (--password-file > environment > prompt).
local cli = require "support.cli"
local json = require "aitbc.json"
local nodes = require "support.node"
local sealed = require "aitbc.secrets.sealed"
local sys = require "aitbc.sys"

describe("sealed files", function()
  local FAST = { ops = 1, mem = 8192 } -- a real Argon2id, at its cheapest

  it("open what seal wrote, only with the same password and associated data", function()
    local doc = sealed.seal({ format = "x" }, "the secret", "a password", "ad-1", FAST)
    assert.equal("x", doc.format)
    assert.equal("argon2id13", doc.kdf.alg)
    assert.equal("xchacha20poly1305-ietf", doc.cipher)
    assert.not_matches("the secret", json.encode(doc), 1, true)
    assert.equal("the secret", sealed.open(doc, "a password", "ad-1"))
    local none, why = sealed.open(doc, "another password", "ad-1")
    assert.is_nil(none)
    assert.equal("refused", why)
    none, why = sealed.open(doc, "a password", "ad-2") -- the file it was bound to
    assert.is_nil(none)
    assert.equal("refused", why)
  end)

  it("says a file is damaged rather than refusing the password", function()
    local doc = sealed.seal({}, "s", "pw", "ad", FAST)
    for field, value in pairs { nonce = "AAAA", ciphertext = "not base64!" } do
      local copy = json.decode(json.encode(doc))
      copy[field] = value
      local none, why, detail = sealed.open(copy, "pw", "ad")
      assert.is_nil(none)
      assert.equal("damaged", why, field)
      assert.matches("salt, nonce or ciphertext", detail)
    end
    local copy = json.decode(json.encode(doc))
    copy.kdf.mem = 1 << 40
    local _, why, detail = sealed.open(copy, "pw", "ad")
    assert.equal("damaged", why)
    assert.matches("key%-derivation parameters", detail)
    assert.equal("damaged", select(2, sealed.open({}, "pw", "ad")))
  end)
end)

describe("passwords", function()
  local node
  setup(function() node = nodes.start { args = { "--log-level", "warn" } } end)
  teardown(function() node:stop() cli.cleanup() end)

  local function run(home, args, env)
    return node:cli(args, { home = home .. "/.aitbc", env = env or {} })
  end

  it("take --password-file over the environment for key backups, as for wallets", function()
    local home = cli.tempdir()
    assert(sys.write_file(home .. "/pw", "the file's password\n"))
    assert.equal(0, run(home, { "auth", "import-env" }, { AITBC_CLIENT_KEY = node:key("client") }).code)
    local both = { AITBC_BACKUP_PASSWORD = "the environment's password" }
    local r = run(home, { "auth", "backup", "--output", home .. "/b.enc", "--password-file", home .. "/pw" }, both)
    assert.equal(0, r.code, r.err)
    -- the file was used: recovering with the file alone works ...
    r = run(home, { "auth", "recover", "--backup-file", home .. "/b.enc", "--password-file", home .. "/pw", "--no-verify" })
    assert.equal(0, r.code, r.err)
    -- ... and with the environment's password it is refused
    r = run(home, { "auth", "recover", "--backup-file", home .. "/b.enc", "--no-verify" }, both)
    assert.equal(4, r.code)
    assert.matches("wrong password", r.err)
  end)

  it("take --password-file over the environment for wallets", function()
    local home = cli.tempdir()
    assert(sys.write_file(home .. "/pw", "the file's password\n"))
    local both = { AITBC_WALLET_PASSWORD = "the environment's password" }
    local r = run(home, { "wallet", "create", "--name", "w", "--password-file", home .. "/pw", "--output", "json" }, both)
    assert.equal(0, r.code, r.err)
    local keystore = json.decode(sys.read_file(home .. "/.aitbc/wallets/w.json"))
    assert.equal("aitbc-keystore", keystore.format)
    assert(sys.write_file(home .. "/w.json", json.encode(keystore)))
    r = run(home, { "wallet", "import", home .. "/w.json", "--name", "again", "--password-file", home .. "/pw" })
    assert.equal(0, r.code, r.err)
    r = run(home, { "wallet", "import", home .. "/w.json", "--name", "third" }, both)
    assert.equal(4, r.code)
  end)

  it("are asked for, not guessed, when neither is given (and a new one must be long enough)", function()
    local home = cli.tempdir()
    assert.equal(0, run(home, { "auth", "import-env" }, { AITBC_CLIENT_KEY = node:key("client") }).code)
    local r = run(home, { "auth", "backup", "--output", home .. "/b.enc" })
    assert.equal(2, r.code)
    assert.matches("backup password is needed", r.err)
    assert.matches("AITBC_BACKUP_PASSWORD or pass %-%-password%-file", r.err)
    assert(sys.write_file(home .. "/short", "short\n"))
    r = run(home, { "auth", "backup", "--output", home .. "/b.enc", "--password-file", home .. "/short" })
    assert.equal(2, r.code)
    assert.matches("at least 8 characters", r.err)
    assert.is_nil(sys.stat(home .. "/b.enc"))
  end)
end)
