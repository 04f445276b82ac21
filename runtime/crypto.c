/* aitbc.native.crypto: libsodium for Lua.
 * Key material can live in a `secret` userdata whose bytes are wiped on
 * :wipe(), on scope exit (`<close>`) and at collection; every function that
 * takes a key accepts a secret or a string. */
#include <sodium.h>
#include <string.h>

#include "aitbc.h"

#define SECRET_MT "aitbc.secret"

typedef struct {
  size_t len;
  unsigned char data[1];
} secret_t;

static secret_t *secret_new(lua_State *L, size_t len) {
  secret_t *s = lua_newuserdatauv(L, offsetof(secret_t, data) + (len ? len : 1), 0);
  s->len = len;
  luaL_setmetatable(L, SECRET_MT);
  return s;
}

/* A string argument or a secret's bytes. */
static const unsigned char *check_bytes(lua_State *L, int idx, size_t *len) {
  secret_t *s = luaL_testudata(L, idx, SECRET_MT);
  if (s) {
    *len = s->len;
    return s->data;
  }
  if (lua_type(L, idx) != LUA_TSTRING) luaL_typeerror(L, idx, "string or secret");
  return (const unsigned char *)lua_tolstring(L, idx, len);
}

static const unsigned char *check_sized(lua_State *L, int idx, size_t want, const char *what) {
  size_t len;
  const unsigned char *p = check_bytes(L, idx, &len);
  if (len != want) luaL_argerror(L, idx, lua_pushfstring(L, "%s must be %d bytes", what, (int)want));
  return p;
}

/* ---- secret ---- */

static int l_secret(lua_State *L) {
  if (lua_type(L, 1) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= 1 << 20, 1, "size must be 1..1048576");
    secret_t *s = secret_new(L, (size_t)n);
    randombytes_buf(s->data, s->len);
    return 1;
  }
  size_t len;
  const unsigned char *p = check_bytes(L, 1, &len);
  secret_t *s = secret_new(L, len);
  memcpy(s->data, p, len);
  return 1;
}

static int secret_wipe(lua_State *L) {
  secret_t *s = luaL_checkudata(L, 1, SECRET_MT);
  sodium_memzero(s->data, s->len);
  s->len = 0;
  return 0;
}

static int secret_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)((secret_t *)luaL_checkudata(L, 1, SECRET_MT))->len);
  return 1;
}

/* Copies the bytes out as a string: only for handing to code that needs one. */
static int secret_reveal(lua_State *L) {
  secret_t *s = luaL_checkudata(L, 1, SECRET_MT);
  lua_pushlstring(L, (const char *)s->data, s->len);
  return 1;
}

static int secret_tostring(lua_State *L) {
  secret_t *s = luaL_checkudata(L, 1, SECRET_MT);
  lua_pushfstring(L, "secret(%d bytes)", (int)s->len);
  return 1;
}

/* ---- hashing ---- */

static int l_sha256(lua_State *L) {
  size_t len;
  const unsigned char *m = check_bytes(L, 1, &len);
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(out, m, len);
  lua_pushlstring(L, (const char *)out, sizeof out);
  return 1;
}

/* ---- SHA-256 over a stream (backups of large files) ----
 * sha256_stream() -> hasher; hasher:update(data) -> hasher; hasher:final()
 * -> digest.  Where the CPU has the SHA extensions (most x86-64 since
 * 2017-2019) blocks go through them, about 5x libsodium's portable code:
 * a 1 GB backup is hashed on both ends.  The result is the same either way
 * (tests compare both with crypto_hash_sha256). */
#define SHA256_MT "aitbc.crypto.sha256"

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

typedef struct {
  uint32_t h[8];
  uint64_t bytes;
  unsigned char buf[64];
  size_t buffered;
  int accelerated;
} sha256_t;

#define ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_blocks_portable(uint32_t h[8], const unsigned char *p, size_t blocks) {
  for (; blocks--; p += 64) {
    uint32_t w[64], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 16; i++)
      w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
      uint32_t s0 = ROR32(w[i - 15], 7) ^ ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = ROR32(w[i - 2], 17) ^ ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    for (int i = 0; i < 64; i++) {
      uint32_t t1 = k + (ROR32(e, 6) ^ ROR32(e, 11) ^ ROR32(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
      uint32_t t2 = (ROR32(a, 2) ^ ROR32(a, 13) ^ ROR32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
  }
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

static int cpu_has_sha(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3)) return 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return (b & (1u << 29)) != 0; /* SHA */
}

/* Intel's SHA-NI sequence: four rounds per step; msg1/msg2 extend the
 * message schedule for the steps ahead. */
__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_blocks_shani(uint32_t h[8], const unsigned char *p,
                                                                            size_t blocks) {
  const __m128i mask = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);
  __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B);
  __m128i s0 = _mm_alignr_epi8(t, s1, 8);
  s1 = _mm_blend_epi16(s1, t, 0xF0);
  for (; blocks--; p += 64) {
    __m128i abef = s0, cdgh = s1, m[4];
    for (int i = 0; i < 16; i++) {
      if (i < 4) m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), mask);
      __m128i cur = m[i & 3];
      __m128i msg = _mm_add_epi32(cur, _mm_loadu_si128((const __m128i *)&K256[4 * i]));
      s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
      if (i >= 3 && i <= 14) {
        __m128i prev = _mm_alignr_epi8(cur, m[(i - 1) & 3], 4);
        m[(i + 1) & 3] = _mm_sha256msg2_epu32(_mm_add_epi32(m[(i + 1) & 3], prev), cur);
      }
      s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(msg, 0x0E));
      if (i >= 1 && i <= 12) m[(i - 1) & 3] = _mm_sha256msg1_epu32(m[(i - 1) & 3], cur);
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
  }
  t = _mm_shuffle_epi32(s0, 0x1B);
  s1 = _mm_shuffle_epi32(s1, 0xB1);
  _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, s1, 0xF0));
  _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, t, 8));
}
#else
static int cpu_has_sha(void) { return 0; }
static void sha256_blocks_shani(uint32_t h[8], const unsigned char *p, size_t blocks) {
  sha256_blocks_portable(h, p, blocks);
}
#endif

static void sha256_blocks(sha256_t *s, const unsigned char *p, size_t blocks) {
  if (s->accelerated)
    sha256_blocks_shani(s->h, p, blocks);
  else
    sha256_blocks_portable(s->h, p, blocks);
}

static void sha256_update(sha256_t *s, const unsigned char *p, size_t len) {
  s->bytes += len;
  if (s->buffered) {
    size_t take = 64 - s->buffered < len ? 64 - s->buffered : len;
    memcpy(s->buf + s->buffered, p, take);
    s->buffered += take, p += take, len -= take;
    if (s->buffered < 64) return;
    sha256_blocks(s, s->buf, 1);
    s->buffered = 0;
  }
  sha256_blocks(s, p, len / 64);
  memcpy(s->buf, p + (len & ~(size_t)63), len & 63);
  s->buffered = len & 63;
}

static int l_sha256_stream(lua_State *L) {
  static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  int portable = lua_isstring(L, 1) && strcmp(lua_tostring(L, 1), "portable") == 0; /* for the tests */
  sha256_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  memcpy(s->h, init, sizeof init);
  s->accelerated = !portable && cpu_has_sha();
  luaL_setmetatable(L, SHA256_MT);
  return 1;
}

static int l_sha256_update(lua_State *L) {
  sha256_t *s = luaL_checkudata(L, 1, SHA256_MT);
  size_t len;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 2, &len);
  sha256_update(s, p, len);
  lua_settop(L, 1);
  return 1;
}

/* final() -> the 32-byte digest; the hasher starts over afterwards. */
static int l_sha256_final(lua_State *L) {
  sha256_t *s = luaL_checkudata(L, 1, SHA256_MT);
  uint64_t bits = s->bytes * 8;
  unsigned char pad[72] = {0x80}, out[32];
  size_t n = (s->buffered < 56 ? 56 : 120) - s->buffered;
  for (int i = 0; i < 8; i++) pad[n + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
  sha256_update(s, pad, n + 8);
  for (int i = 0; i < 32; i++) out[i] = (unsigned char)(s->h[i / 4] >> (24 - 8 * (i % 4)));
  int accelerated = s->accelerated;
  lua_settop(L, 0);
  lua_pushlstring(L, (const char *)out, sizeof out);
  l_sha256_stream(L); /* a fresh state, copied over the used one */
  memcpy(s, lua_touserdata(L, -1), sizeof *s);
  s->accelerated = accelerated;
  lua_pop(L, 1);
  return 1;
}

static int l_sha512(lua_State *L) {
  size_t len;
  const unsigned char *m = check_bytes(L, 1, &len);
  unsigned char out[crypto_hash_sha512_BYTES];
  crypto_hash_sha512(out, m, len);
  lua_pushlstring(L, (const char *)out, sizeof out);
  return 1;
}

static int l_blake2b(lua_State *L) {
  size_t len, keylen = 0;
  const unsigned char *m = check_bytes(L, 1, &len);
  lua_Integer outlen = luaL_optinteger(L, 2, crypto_generichash_BYTES);
  const unsigned char *key = lua_isnoneornil(L, 3) ? NULL : check_bytes(L, 3, &keylen);
  luaL_argcheck(L, outlen >= crypto_generichash_BYTES_MIN && outlen <= crypto_generichash_BYTES_MAX, 2,
                "length must be 16..64");
  luaL_argcheck(L, keylen <= crypto_generichash_KEYBYTES_MAX, 3, "key longer than 64 bytes");
  unsigned char out[crypto_generichash_BYTES_MAX];
  crypto_generichash(out, (size_t)outlen, m, len, key, keylen);
  lua_pushlstring(L, (const char *)out, (size_t)outlen);
  return 1;
}

static int l_hmac_sha256(lua_State *L) {
  size_t klen, mlen;
  const unsigned char *k = check_bytes(L, 1, &klen);
  const unsigned char *m = check_bytes(L, 2, &mlen);
  crypto_auth_hmacsha256_state st;
  unsigned char out[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_init(&st, k, klen);
  crypto_auth_hmacsha256_update(&st, m, mlen);
  crypto_auth_hmacsha256_final(&st, out);
  sodium_memzero(&st, sizeof st);
  lua_pushlstring(L, (const char *)out, sizeof out);
  return 1;
}

static int l_hmac_sha512(lua_State *L) {
  size_t klen, mlen;
  const unsigned char *k = check_bytes(L, 1, &klen);
  const unsigned char *m = check_bytes(L, 2, &mlen);
  crypto_auth_hmacsha512_state st;
  unsigned char out[crypto_auth_hmacsha512_BYTES];
  crypto_auth_hmacsha512_init(&st, k, klen);
  crypto_auth_hmacsha512_update(&st, m, mlen);
  crypto_auth_hmacsha512_final(&st, out);
  sodium_memzero(&st, sizeof st);
  lua_pushlstring(L, (const char *)out, sizeof out);
  return 1;
}

/* ---- Ed25519 ---- */

static int push_keypair(lua_State *L, const unsigned char *seed) {
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  secret_t *sk = secret_new(L, crypto_sign_SECRETKEYBYTES);
  if (seed)
    crypto_sign_seed_keypair(pk, sk->data, seed);
  else
    crypto_sign_keypair(pk, sk->data);
  lua_pushlstring(L, (const char *)pk, sizeof pk);
  lua_insert(L, -2);
  return 2; /* public key (string), secret key (secret) */
}

static int l_sign_keypair(lua_State *L) {
  if (lua_isnoneornil(L, 1)) return push_keypair(L, NULL);
  return push_keypair(L, check_sized(L, 1, crypto_sign_SEEDBYTES, "seed"));
}

static int l_sign(lua_State *L) {
  size_t mlen;
  const unsigned char *m = check_bytes(L, 1, &mlen);
  const unsigned char *sk = check_sized(L, 2, crypto_sign_SECRETKEYBYTES, "secret key");
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, NULL, m, mlen, sk);
  lua_pushlstring(L, (const char *)sig, sizeof sig);
  return 1;
}

/* A wrong signature is an expected failure: nil plus the reason. */
static int l_verify(lua_State *L) {
  size_t siglen, mlen, pklen;
  const unsigned char *sig = check_bytes(L, 1, &siglen);
  const unsigned char *m = check_bytes(L, 2, &mlen);
  const unsigned char *pk = check_bytes(L, 3, &pklen);
  const char *why = NULL;
  if (siglen != crypto_sign_BYTES)
    why = "signature must be 64 bytes";
  else if (pklen != crypto_sign_PUBLICKEYBYTES)
    why = "public key must be 32 bytes";
  else if (crypto_sign_verify_detached(sig, m, mlen, pk) != 0)
    why = "signature does not verify";
  if (why) {
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_sign_public_key(lua_State *L) {
  const unsigned char *sk = check_sized(L, 1, crypto_sign_SECRETKEYBYTES, "secret key");
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_ed25519_sk_to_pk(pk, sk);
  lua_pushlstring(L, (const char *)pk, sizeof pk);
  return 1;
}

/* ---- password hashing and authenticated encryption ---- */

/* argon2id(password, salt16 [, {ops=, mem=, len=}]) -> secret */
static int l_argon2id(lua_State *L) {
  size_t pwlen;
  const unsigned char *pw = check_bytes(L, 1, &pwlen);
  const unsigned char *salt = check_sized(L, 2, crypto_pwhash_SALTBYTES, "salt");
  lua_Integer ops = crypto_pwhash_OPSLIMIT_INTERACTIVE, len = 32;
  lua_Integer mem = (lua_Integer)crypto_pwhash_MEMLIMIT_INTERACTIVE;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "ops");
    ops = luaL_optinteger(L, -1, ops);
    lua_getfield(L, 3, "mem");
    mem = luaL_optinteger(L, -1, mem);
    lua_getfield(L, 3, "len");
    len = luaL_optinteger(L, -1, len);
    lua_pop(L, 3);
  }
  luaL_argcheck(L, ops >= crypto_pwhash_OPSLIMIT_MIN && ops <= 64, 3, "ops out of range");
  luaL_argcheck(L, mem >= (lua_Integer)crypto_pwhash_MEMLIMIT_MIN && mem <= ((lua_Integer)1 << 32), 3,
                "mem out of range");
  luaL_argcheck(L, len >= 16 && len <= 1024, 3, "len must be 16..1024");
  secret_t *out = secret_new(L, (size_t)len);
  if (crypto_pwhash(out->data, out->len, (const char *)pw, pwlen, salt, (unsigned long long)ops, (size_t)mem,
                    crypto_pwhash_ALG_ARGON2ID13) != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "argon2id: out of memory");
    return 2;
  }
  return 1;
}

/* aead_encrypt(plaintext, key32, nonce24 [, ad]) -> ciphertext..tag */
static int l_aead_encrypt(lua_State *L) {
  size_t mlen, adlen = 0;
  const unsigned char *m = check_bytes(L, 1, &mlen);
  const unsigned char *k = check_sized(L, 2, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key");
  const unsigned char *n = check_sized(L, 3, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce");
  const unsigned char *ad = lua_isnoneornil(L, 4) ? NULL : check_bytes(L, 4, &adlen);
  luaL_Buffer b;
  unsigned char *c = (unsigned char *)luaL_buffinitsize(L, &b, mlen + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long clen;
  crypto_aead_xchacha20poly1305_ietf_encrypt(c, &clen, m, mlen, ad, adlen, NULL, n, k);
  luaL_pushresultsize(&b, (size_t)clen);
  return 1;
}

/* aead_decrypt(ciphertext, key32, nonce24 [, ad [, as_secret]]) -> plaintext | nil, err */
static int l_aead_decrypt(lua_State *L) {
  size_t clen, adlen = 0;
  const unsigned char *c = check_bytes(L, 1, &clen);
  const unsigned char *k = check_sized(L, 2, crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key");
  const unsigned char *n = check_sized(L, 3, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce");
  const unsigned char *ad = lua_isnoneornil(L, 4) ? NULL : check_bytes(L, 4, &adlen);
  int as_secret = lua_toboolean(L, 5);
  if (clen < crypto_aead_xchacha20poly1305_ietf_ABYTES) {
    lua_pushnil(L);
    lua_pushliteral(L, "ciphertext too short");
    return 2;
  }
  secret_t *out = secret_new(L, clen - crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long mlen;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(out->data, &mlen, NULL, c, clen, ad, adlen, n, k) != 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "authentication failed: wrong key or tampered data");
    return 2;
  }
  if (!as_secret) {
    lua_pushlstring(L, (const char *)out->data, (size_t)mlen);
    sodium_memzero(out->data, out->len);
  }
  return 1;
}

/* ---- helpers ---- */

static int l_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 1 << 20, 1, "size must be 0..1048576");
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  randombytes_buf(p, (size_t)n);
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

static int l_equal(lua_State *L) {
  size_t alen, blen;
  const unsigned char *a = check_bytes(L, 1, &alen);
  const unsigned char *b = check_bytes(L, 2, &blen);
  lua_pushboolean(L, alen == blen && sodium_memcmp(a, b, alen) == 0);
  return 1;
}

static int l_hex(lua_State *L) {
  size_t len;
  const unsigned char *p = check_bytes(L, 1, &len);
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, len * 2 + 1);
  sodium_bin2hex(out, len * 2 + 1, p, len);
  luaL_pushresultsize(&b, len * 2);
  return 1;
}

static int l_unhex(lua_State *L) {
  size_t len, outlen;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, len / 2 + 1);
  const char *end;
  if (len % 2 != 0 || sodium_hex2bin(out, len / 2 + 1, s, len, NULL, &outlen, &end) != 0 || end != s + len) {
    lua_pushnil(L);
    lua_pushliteral(L, "invalid hex string");
    return 2;
  }
  luaL_pushresultsize(&b, outlen);
  return 1;
}

static int b64_variant(lua_State *L, int idx) {
  static const char *const names[] = {"standard", "urlsafe", NULL};
  static const int variants[] = {sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
  return variants[luaL_checkoption(L, idx, "standard", names)];
}

static int l_base64(lua_State *L) {
  size_t len;
  const unsigned char *p = check_bytes(L, 1, &len);
  int variant = b64_variant(L, 2);
  size_t cap = sodium_base64_encoded_len(len, variant);
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, cap);
  sodium_bin2base64(out, cap, p, len, variant);
  luaL_pushresultsize(&b, strlen(out));
  return 1;
}

static int l_unbase64(lua_State *L) {
  size_t len, outlen;
  const char *s = luaL_checklstring(L, 1, &len);
  int variant = b64_variant(L, 2);
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, len);
  const char *end;
  if (sodium_base642bin(out, len, s, len, NULL, &outlen, &end, variant) != 0 || end != s + len) {
    lua_pushnil(L);
    lua_pushliteral(L, "invalid base64 string");
    return 2;
  }
  luaL_pushresultsize(&b, outlen);
  return 1;
}

int luaopen_aitbc_native_crypto(lua_State *L) {
  static const luaL_Reg secret_methods[] = {
      {"wipe", secret_wipe}, {"len", secret_len}, {"reveal", secret_reveal}, {NULL, NULL}};
  static const luaL_Reg secret_meta[] = {{"__gc", secret_wipe},
                                         {"__close", secret_wipe},
                                         {"__len", secret_len},
                                         {"__tostring", secret_tostring},
                                         {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"secret", l_secret},
                                   {"random", l_random},
                                   {"sha256", l_sha256},
                                   {"sha256_stream", l_sha256_stream},
                                   {"sha512", l_sha512},
                                   {"blake2b", l_blake2b},
                                   {"hmac_sha256", l_hmac_sha256},
                                   {"hmac_sha512", l_hmac_sha512},
                                   {"sign_keypair", l_sign_keypair},
                                   {"sign", l_sign},
                                   {"verify", l_verify},
                                   {"sign_public_key", l_sign_public_key},
                                   {"argon2id", l_argon2id},
                                   {"aead_encrypt", l_aead_encrypt},
                                   {"aead_decrypt", l_aead_decrypt},
                                   {"equal", l_equal},
                                   {"hex", l_hex},
                                   {"unhex", l_unhex},
                                   {"base64", l_base64},
                                   {"unbase64", l_unbase64},
                                   {NULL, NULL}};
  if (sodium_init() < 0) return luaL_error(L, "libsodium failed to initialise");
  luaL_newmetatable(L, SECRET_MT);
  luaL_setfuncs(L, secret_meta, 0);
  luaL_newlib(L, secret_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, SHA256_MT);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, l_sha256_update);
  lua_setfield(L, -2, "update");
  lua_pushcfunction(L, l_sha256_final);
  lua_setfield(L, -2, "final");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushinteger(L, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
  lua_setfield(L, -2, "AEAD_NONCE_BYTES");
  lua_pushinteger(L, crypto_pwhash_SALTBYTES);
  lua_setfield(L, -2, "SALT_BYTES");
  return 1;
}
