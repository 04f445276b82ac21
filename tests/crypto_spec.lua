-- Known-answer tests for the libsodium binding (RFC 8032, RFC 7693,
-- FIPS 180 "abc", RFC 4231) and round trips with tamper detection.
local crypto = require "aitbc.crypto"

local hex, unhex = crypto.hex, function(s) return assert(crypto.unhex(s)) end

describe("crypto", function()
  describe("Ed25519 (RFC 8032 section 7.1)", function()
    local vectors = {
      { seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        pk = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", msg = "",
        sig = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b" },
      { seed = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        pk = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", msg = "72",
        sig = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00" },
      { seed = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        pk = "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", msg = "af82",
        sig = "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a" },
    }
    for i, v in ipairs(vectors) do
      it("test " .. i .. ": key, signature and verification", function()
        local pk, sk = crypto.sign_keypair(unhex(v.seed))
        assert.equal(v.pk, hex(pk))
        assert.equal(v.pk, hex(crypto.sign_public_key(sk)))
        local sig = crypto.sign(unhex(v.msg), sk)
        assert.equal(v.sig, hex(sig))
        assert.is_true(crypto.verify(sig, unhex(v.msg), pk))
      end)
    end

    it("refuses a signature over another message or from another key", function()
      local pk, sk = crypto.sign_keypair()
      local sig = crypto.sign("pay 10", sk)
      local ok, err = crypto.verify(sig, "pay 11", pk)
      assert.is_nil(ok)
      assert.matches("does not verify", err)
      local other = crypto.sign_keypair()
      assert.is_nil((crypto.verify(sig, "pay 10", other)))
      assert.is_nil((crypto.verify(sig:sub(1, 63), "pay 10", pk)))
    end)

    it("raises on misuse (a seed of the wrong size)", function()
      assert.has_error(function() crypto.sign_keypair("short") end)
    end)
  end)

  describe("hashes", function()
    it("SHA-256 and SHA-512 of 'abc' (FIPS 180-2)", function()
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hex(crypto.sha256("abc")))
      assert.equal("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        hex(crypto.sha512("abc")))
    end)

    it("BLAKE2b-512 of 'abc' (RFC 7693 appendix A) and of '' at 256 bits", function()
      assert.equal("ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
        hex(crypto.blake2b("abc", 64)))
      assert.equal("0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8", hex(crypto.blake2b("")))
      assert.equal(20, #crypto.blake2b("x", 20))
      assert.has_error(function() crypto.blake2b("x", 8) end)
    end)

    it("HMAC-SHA-512 and HMAC-SHA-256 (RFC 4231 cases 1, 2 and 6)", function()
      assert.equal("87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        hex(crypto.hmac_sha512(string.rep("\11", 20), "Hi There")))
      assert.equal("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        hex(crypto.hmac_sha512("Jefe", "what do ya want for nothing?")))
      assert.equal("80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
        hex(crypto.hmac_sha512(string.rep("\170", 131), "Test Using Larger Than Block-Size Key - Hash Key First")))
      assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        hex(crypto.hmac_sha256(string.rep("\11", 20), "Hi There")))
    end)
  end)

  describe("Argon2id + XChaCha20-Poly1305", function()
    local salt = string.rep("s", crypto.SALT_BYTES)
    local cheap = { ops = 1, mem = 8192 * 8 }

    it("derives the same key from the same password and salt, another from another", function()
      local a = crypto.argon2id("correct horse", salt, cheap)
      local b = crypto.argon2id("correct horse", salt, cheap)
      local c = crypto.argon2id("wrong horse", salt, cheap)
      assert.equal(32, #a)
      assert.is_true(crypto.equal(a, b))
      assert.is_false(crypto.equal(a, c))
    end)

    it("round-trips and refuses tampered data, wrong keys and wrong associated data", function()
      local key = crypto.argon2id("pw", salt, cheap)
      local nonce = crypto.random(crypto.AEAD_NONCE_BYTES)
      local ct = crypto.aead_encrypt("seed words here", key, nonce, "wallet-v1")
      assert.equal("seed words here", crypto.aead_decrypt(ct, key, nonce, "wallet-v1"))
      for i = 1, #ct do
        local flipped = ct:sub(1, i - 1) .. string.char(ct:byte(i) ~ 1) .. ct:sub(i + 1)
        local pt, err = crypto.aead_decrypt(flipped, key, nonce, "wallet-v1")
        assert.is_nil(pt)
        assert.matches("authentication failed", err)
      end
      assert.is_nil((crypto.aead_decrypt(ct, crypto.argon2id("other", salt, cheap), nonce, "wallet-v1")))
      assert.is_nil((crypto.aead_decrypt(ct, key, nonce, "wallet-v2")))
      assert.is_nil((crypto.aead_decrypt("short", key, nonce)))
    end)
  end)

  describe("secrets and encodings", function()
    it("wipes a secret and shows only its size", function()
      local s = crypto.secret("hunter2hunter2")
      assert.equal("secret(14 bytes)", tostring(s))
      assert.equal("hunter2hunter2", s:reveal())
      s:wipe()
      assert.equal(0, #s)
      do local scoped <close> = crypto.secret(32) assert.equal(32, #scoped) end
    end)

    it("hex and base64 round-trip and reject bad input", function()
      local bytes = crypto.random(33)
      assert.equal(bytes, crypto.unhex(crypto.hex(bytes)))
      assert.equal(bytes, crypto.unbase64(crypto.base64(bytes)))
      assert.equal(bytes, crypto.unbase64(crypto.base64(bytes, "urlsafe"), "urlsafe"))
      assert.equal("Zm9vYg==", crypto.base64("foob"))
      assert.is_nil((crypto.unhex("abc")))
      assert.is_nil((crypto.unhex("zz")))
      assert.is_nil((crypto.unbase64("!!!")))
    end)

    it("compares in constant time, including different lengths", function()
      assert.is_true(crypto.equal("abc", "abc"))
      assert.is_false(crypto.equal("abc", "abd"))
      assert.is_false(crypto.equal("abc", "abcd"))
    end)
  end)
  it("hashes a stream with SHA-256 as the one-shot does, with and without the CPU's SHA extensions", function()
    for _, mode in ipairs { "fast", "portable" } do
      for _, n in ipairs { 0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 70000 } do
        local data = crypto.random(n)
        local h, i = crypto.sha256_stream(mode), 1
        while i <= n do
          local k = (i * 7919) % 97 + 1
          h:update(data:sub(i, i + k - 1))
          i = i + k
        end
        assert.equal(crypto.hex(crypto.sha256(data)), crypto.hex(h:final()), mode .. " " .. n)
      end
    end
    local h = crypto.sha256_stream()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", crypto.hex(h:update("abc"):final()))
    assert.equal(crypto.hex(crypto.sha256("")), crypto.hex(h:final())) -- starts over after final
  end)
end)
