-- Wallet keys: BIP-173, BIP-39 and SLIP-0010 known answers, then the
-- wallet commands with real keystores.
local bech32 = require "aitbc.protocol.bech32"
local bip39 = require "aitbc.wallet.bip39"
local slip10 = require "aitbc.wallet.slip10"
local crypto = require "aitbc.crypto"
local json = require "aitbc.json"
local sys = require "aitbc.sys"
local cli = require "support.cli"

local hex, unhex = crypto.hex, function(s) return assert(crypto.unhex(s)) end

describe("bech32 (BIP-173 test vectors)", function()
  it("accepts the valid strings and re-encodes them", function()
    for _, s in ipairs {
      "A12UEL5L", "a12uel5l",
      "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
      "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
      "11qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqc8247j",
      "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w", "?1ezyfcl",
    } do
      local hrp, data = bech32.decode(s)
      assert.is_string(hrp, s)
      assert.equal(s:lower(), bech32.encode(hrp, data))
    end
  end)

  it("refuses the invalid ones", function()
    for _, s in ipairs { " 1nwldj5", "\127" .. "1axkwrx",
      "an84characterslonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1569pvx",
      "pzry9x0s0muk", "1pzry9x0s0muk", "x1b4n0q5v", "li1dgmt3", "de1lg7wt\255", "A1G7SGD8" } do
      assert.is_nil((bech32.decode(s)), s)
    end
  end)
end)

describe("AITBC addresses", function()
  it("have one spelling: upper case is the same address, mixed case and other prefixes are refused", function()
    local wallet = require "aitbc.wallet"
    local address = wallet.address(crypto.sign_keypair())
    assert.equal(address, wallet.normalize_address(address))
    assert.equal(address, wallet.normalize_address(address:upper()))
    local none, why = wallet.normalize_address("AIT1" .. address:sub(5))
    assert.is_nil(none)
    assert.matches("mixes upper and lower case", why)
    assert.is_nil((wallet.normalize_address("a12uel5l")))
    assert.is_nil((wallet.normalize_address(address:sub(1, -2) .. (address:sub(-1) == "q" and "p" or "q"))))
    assert.is_nil((wallet.normalize_address(42)))
  end)
end)

describe("BIP-39 (Trezor test vectors, passphrase TREZOR)", function()
  it("turns entropy into the phrase and the phrase into the seed", function()
    local cases = {
      { "00000000000000000000000000000000",
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04" },
      { "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
        "legal winner thank year wave sausage worth useful legal winner thank yellow" },
      { string.rep("00", 32),
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art",
        "bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097170af7a4d73245cafa9c3cca8d561a7c3de6f5d4a10be8ed2a5e608d68f92fcc8" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], bip39.from_entropy(unhex(c[1])))
      assert.equal(c[1], hex(assert(bip39.to_entropy(c[2]))))
      if c[3] then assert.equal(c[3], hex(bip39.to_seed(c[2], "TREZOR"))) end
    end
  end)

  it("refuses unknown words, wrong counts and bad checksums, saying which", function()
    local _, why = bip39.to_entropy("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon")
    assert.matches("checksum", why)
    _, why = bip39.to_entropy("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandonn")
    assert.matches("word 12 %('abandonn'%)", why)
    _, why = bip39.to_entropy("abandon about")
    assert.matches("has 2%)", why)
    assert.equal(24, select(2, bip39.generate(24):gsub("%S+", "")))
  end)
end)

describe("SLIP-0010 Ed25519 (test vector 1)", function()
  it("derives the master key and m/0'", function()
    local seed = unhex("000102030405060708090a0b0c0d0e0f")
    local key, chain = slip10.master(seed)
    assert.equal("2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7", hex(key))
    assert.equal("90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb", hex(chain))
    assert.equal("a4b2856bfec510abab89753fac1ac0e1112364e7d250545963f135f2a33188ed", hex((crypto.sign_keypair(key))))
    key, chain = slip10.derive(seed, "m/0'")
    assert.equal("68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3", hex(key))
    assert.equal("8b59aa11380b624e81507a27fedda59fea6d0b779a778918a2fd3590e16e9c69", hex(chain))
  end)
end)

describe("aitbc wallet", function()
  after_each(cli.cleanup)
  local env = { AITBC_WALLET_PASSWORD = "correct horse battery" }

  it("creates a wallet whose phrase restores the same address; keystores are 0600", function()
    local home = cli.tempdir()
    local r = cli.run({ "-o", "json", "wallet", "create", "--name", "test_wallet" }, { home = home, env = env })
    assert.equal(0, r.code, r.err)
    local w = r.json()
    assert.matches("^ait1[%l%d]+$", w.address)
    assert.is_true(w.active)
    assert.equal(24, select(2, w.mnemonic:gsub("%S+", "")))
    assert.equal(tonumber("600", 8), sys.stat(home .. "/wallets/test_wallet.json").mode)
    assert.not_matches(w.mnemonic, sys.read_file(home .. "/wallets/test_wallet.json"), 1, true)
    local hash = assert(require("aitbc.wallet").parse_address(w.address))
    assert.equal(20, #hash)
    local other = cli.tempdir()
    local restored = cli.run({ "-o", "json", "wallet", "restore", "--name", "again" }, { home = other,
      env = { AITBC_WALLET_PASSWORD = "another password", AITBC_WALLET_MNEMONIC = "  " .. w.mnemonic:upper() .. "\n" } })
    assert.equal(0, restored.code, restored.err)
    assert.equal(w.address, restored.json().address)
    assert.equal(w.address .. "\n", cli.run({ "wallet", "address" }, { home = home }).out)
  end)

  it("takes the password from --password-file before AITBC_WALLET_PASSWORD", function()
    local home = cli.tempdir()
    local file = home .. "/pw.txt"
    assert(sys.write_file(file, "password from the file\n")) -- one trailing newline is not part of it
    local both = { AITBC_WALLET_PASSWORD = "password from the environment" }
    local r = cli.run({ "wallet", "create", "--name", "w", "--password-file", file }, { home = home, env = both })
    assert.equal(0, r.code, r.err)
    assert.equal(0, cli.run({ "wallet", "export", "--output", home .. "/w.keystore" }, { home = home }).code)
    -- sealed with the file's password: the environment's does not open it, the file's (flag or variable) does
    local function import(name, args, with)
      local full = { "wallet", "import", home .. "/w.keystore", "--name", name }
      for _, a in ipairs(args) do full[#full + 1] = a end
      return cli.run(full, { home = home, env = with }).code
    end
    assert.equal(4, import("a", {}, both))
    assert.equal(0, import("b", { "--password-file", file }, both))
    assert.equal(0, import("c", {}, { AITBC_WALLET_PASSWORD = "password from the file" }))
    assert.equal(3, import("d", { "--password-file", home .. "/missing" }, both))
  end)

  it("auth backup/recover take the password from --password-file before AITBC_BACKUP_PASSWORD, as wallets do",
    function()
      local home = cli.tempdir()
      local file = home .. "/pw.txt"
      assert(sys.write_file(file, "password from the file\n"))
      assert.equal(0, cli.run({ "auth", "import-env" }, { home = home, env = { AITBC_URL = "http://127.0.0.1:" .. cli.closed_port(),
        AITBC_CLIENT_KEY = "aitbc_client_0123456789abcdef01" } }).code)
      local r = cli.run({ "auth", "backup", "--output", home .. "/b.enc", "--password-file", file },
        { home = home, env = { AITBC_BACKUP_PASSWORD = "password from the environment" } })
      assert.equal(0, r.code, r.err)
      assert(os.remove(home .. "/config.json"))
      r = cli.run({ "auth", "recover", "--backup-file", home .. "/b.enc", "--password-file", file }, { home = home })
      assert.equal(0, r.code, r.err)
    end)

  it("refuses a wrong password and a keystore with one byte changed, without a traceback", function()
    local home = cli.tempdir()
    cli.run({ "wallet", "create", "--name", "w1" }, { home = home, env = env })
    assert.equal(0, cli.run({ "wallet", "export", "--output", home .. "/w1.keystore" }, { home = home }).code)
    local wrong = cli.run({ "wallet", "import", home .. "/w1.keystore", "--name", "copy" },
      { home = home, env = { AITBC_WALLET_PASSWORD = "not the password" } })
    assert.equal(4, wrong.code)
    assert.matches("wrong password, or the keystore was altered", wrong.err)
    assert.not_matches("traceback", wrong.err)
    local doc = json.decode(sys.read_file(home .. "/w1.keystore"))
    local ct = crypto.unbase64(doc.ciphertext)
    doc.ciphertext = crypto.base64(ct:sub(1, 5) .. string.char(ct:byte(6) ~ 1) .. ct:sub(7))
    assert(sys.write_file(home .. "/tampered.keystore", json.encode(doc)))
    assert.equal(4, cli.run({ "wallet", "import", home .. "/tampered.keystore", "--name", "t" }, { home = home, env = env }).code)
    doc = json.decode(sys.read_file(home .. "/w1.keystore"))
    doc.address = "ait1" .. doc.address:sub(5):reverse()
    assert(sys.write_file(home .. "/readdressed.keystore", json.encode(doc)))
    assert.equal(4, cli.run({ "wallet", "import", home .. "/readdressed.keystore", "--name", "r" }, { home = home, env = env }).code)
    local ok = cli.run({ "wallet", "import", home .. "/w1.keystore", "--name", "copy" }, { home = home, env = env })
    assert.equal(0, ok.code, ok.err)
    assert.same({ "copy", "w1" }, (function()
      local names = {}
      for _, x in ipairs(cli.run({ "-o", "json", "wallet", "list" }, { home = home }).json().wallets) do names[#names + 1] = x.name end
      return names
    end)())
  end)

  it("refuses a bad phrase, a duplicate name and a short password", function()
    local home = cli.tempdir()
    local r = cli.run({ "wallet", "restore", "--name", "x" }, { home = home,
      env = { AITBC_WALLET_PASSWORD = "long enough pw", AITBC_WALLET_MNEMONIC = "abandon abandon" } })
    assert.equal(2, r.code)
    assert.matches("not a valid recovery phrase", r.err)
    assert.equal(0, cli.run({ "wallet", "create", "--name", "dup" }, { home = home, env = env }).code)
    assert.equal(1, cli.run({ "wallet", "create", "--name", "dup" }, { home = home, env = env }).code)
    assert.equal(2, cli.run({ "wallet", "create", "--name", "s" }, { home = home, env = { AITBC_WALLET_PASSWORD = "short" } }).code)
    assert.equal(2, cli.run({ "wallet", "create", "--name", "../evil" }, { home = home, env = env }).code)
    assert.equal(3, cli.run({ "wallet", "switch", "nope" }, { home = home }).code)
  end)
end)
