/* aitbc.native.json: a JSON encoder with sorted keys, so the compact form is
 * canonical (what the node signs and hashes) and output is deterministic.
 *   encode(value [, pretty]) -> text | raises on values JSON cannot hold
 *   MAX_DEPTH: the nesting limit, shared with the decoder (aitbc.json)
 * Arrays: tables with the metatable `array_mt` (also empty ones), or proper
 * sequences.  null: the light userdata NULL (cjson.null).  NaN and infinities
 * raise (JSON has no such numbers).  Output is always valid UTF-8: a byte
 * that does not start a valid sequence becomes U+FFFD, so a strict reader
 * never chokes on what the node wrote.
 *   mark_empty_arrays(text) -> text' | nil: lua-cjson 2.1 decodes `[]` and `{}`
 *   alike (an empty table), so aitbc.json rewrites each empty array outside
 *   strings as `["<EMPTY_ARRAY>"]` first and turns that back into a marked
 *   empty array; nil when the text holds no empty array.  EMPTY_ARRAY is
 *   random per process, so no input can forge it. */
#include <math.h>
#include <pthread.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aitbc.h"

#define ARRAY_MT "aitbc.json.array"
#define MAX_DEPTH 64

/* Output buffer owned by a userdata (freed by __gc even if encoding raises). */
typedef struct {
  char *data;
  size_t len, cap;
  lua_State *L;
} out_t;

static void out_reserve(out_t *o, size_t n) {
  if (o->len + n <= o->cap) return;
  size_t cap = o->cap ? o->cap : 256;
  while (cap < o->len + n) cap *= 2;
  char *d = realloc(o->data, cap);
  if (!d) luaL_error(o->L, "out of memory encoding JSON");
  o->data = d;
  o->cap = cap;
}

static void out_add(out_t *o, const char *s, size_t n) {
  out_reserve(o, n);
  memcpy(o->data + o->len, s, n);
  o->len += n;
}

static void out_char(out_t *o, char c) {
  out_reserve(o, 1);
  o->data[o->len++] = c;
}

static void out_str(out_t *o, const char *s) { out_add(o, s, strlen(s)); }

static int out_gc(lua_State *L) {
  out_t *o = lua_touserdata(L, 1);
  free(o->data);
  o->data = NULL;
  return 0;
}

typedef struct {
  const char *s;
  size_t len;
  int is_num; /* the key was a number; look it up as one */
  lua_Number n;
} json_key_t;

static void encode_value(lua_State *L, out_t *b, int idx, int depth, int pretty);

/* Length of the valid UTF-8 sequence at s[0..left), or 0: strict as Lua's
 * utf8.len (no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_sequence(const unsigned char *s, size_t left) {
  static const unsigned long smallest[] = {0, 0, 0x80, 0x800, 0x10000}; /* shorter is overlong */
  unsigned char c = s[0];
  size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  if (n <= 1) return n;
  if (left < n) return 0;
  unsigned long cp = c & (0x7f >> n);
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < smallest[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

static void add_string(out_t *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  out_char(b, '"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x80) {
      size_t n = utf8_sequence((const unsigned char *)s + i, len - i);
      if (n) {
        out_add(b, s + i, n);
        i += n - 1;
      } else {
        out_str(b, "\\ufffd");
      }
      continue;
    }
    switch (c) {
      case '"': out_str(b, "\\\""); break;
      case '\\': out_str(b, "\\\\"); break;
      case '\b': out_str(b, "\\b"); break;
      case '\f': out_str(b, "\\f"); break;
      case '\n': out_str(b, "\\n"); break;
      case '\r': out_str(b, "\\r"); break;
      case '\t': out_str(b, "\\t"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
          out_str(b, esc);
        } else {
          out_char(b, (char)c);
        }
    }
  }
  out_char(b, '"');
}

static void add_number(lua_State *L, out_t *b, int idx) {
  char tmp[64];
  if (lua_isinteger(L, idx)) {
    snprintf(tmp, sizeof tmp, LUA_INTEGER_FMT, lua_tointeger(L, idx));
  } else {
    double d = lua_tonumber(L, idx);
    if (isnan(d) || isinf(d))
      luaL_error(L, "cannot encode %s as JSON", isnan(d) ? "NaN" : "an infinite number");
    else if (d == floor(d) && fabs(d) < 9007199254740992.0)
      snprintf(tmp, sizeof tmp, "%.0f", d);
    else if (snprintf(tmp, sizeof tmp, "%.15g", d), strtod(tmp, NULL) != d)
      snprintf(tmp, sizeof tmp, "%.17g", d); /* shortest of the two that reads back exactly */
  }
  out_str(b, tmp);
}

static void newline(out_t *b, int pretty, int depth) {
  if (!pretty) return;
  out_char(b, '\n');
  for (int i = 0; i < depth; i++) out_str(b, "  ");
}

/* Is the table at idx an array: marked, or a proper non-empty sequence? */
static int is_array(lua_State *L, int idx, lua_Integer *n) {
  *n = (lua_Integer)lua_rawlen(L, idx);
  if (lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, ARRAY_MT);
    int marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (marked) return 1;
  }
  if (*n == 0) return 0;
  lua_Integer count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
  }
  return count == *n;
}

static int compare_keys(const void *a, const void *b) {
  const json_key_t *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

static void encode_object(lua_State *L, out_t *b, int idx, int depth, int pretty) {
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    count++;
  }
  if (count == 0) {
    out_str(b, "{}");
    return;
  }
  /* keys (and integer keys turned to strings) stay alive in this table */
  lua_createtable(L, (int)count, 0);
  int holder = lua_gettop(L);
  json_key_t *keys = lua_newuserdatauv(L, sizeof(json_key_t) * count, 0);
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    json_key_t *key = &keys[k];
    key->is_num = 0;
    if (lua_type(L, -1) == LUA_TSTRING) {
      lua_pushvalue(L, -1);
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
      key->is_num = 1;
      key->n = lua_tonumber(L, -1);
      lua_pushvalue(L, -1);
      lua_tostring(L, -1); /* converts the copy in place */
    } else {
      luaL_error(L, "cannot encode a table key of type %s", luaL_typename(L, -1));
    }
    key->s = lua_tolstring(L, -1, &key->len);
    lua_rawseti(L, holder, (lua_Integer)++k);
  }
  qsort(keys, count, sizeof(json_key_t), compare_keys);
  out_char(b, '{');
  for (size_t i = 0; i < count; i++) {
    if (i) out_char(b, ',');
    newline(b, pretty, depth + 1);
    add_string(b, keys[i].s, keys[i].len);
    out_str(b, pretty ? ": " : ":");
    if (keys[i].is_num) {
      lua_Integer as_int;
      if (lua_numbertointeger(keys[i].n, &as_int) && (lua_Number)as_int == keys[i].n)
        lua_pushinteger(L, as_int);
      else
        lua_pushnumber(L, keys[i].n);
      lua_rawget(L, idx);
    } else {
      lua_pushlstring(L, keys[i].s, keys[i].len);
      lua_rawget(L, idx);
    }
    encode_value(L, b, lua_gettop(L), depth + 1, pretty);
    lua_pop(L, 1);
  }
  newline(b, pretty, depth);
  out_char(b, '}');
  lua_pop(L, 2);
}

static void encode_value(lua_State *L, out_t *b, int idx, int depth, int pretty) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: out_str(b, "null"); break;
    case LUA_TBOOLEAN: out_str(b, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER: add_number(L, b, idx); break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      add_string(b, s, len);
      break;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) {
        out_str(b, "null");
        break;
      }
      /* fallthrough */
    default: luaL_error(L, "cannot encode a %s as JSON", luaL_typename(L, idx)); break;
    case LUA_TTABLE: {
      if (depth >= MAX_DEPTH) luaL_error(L, "cannot encode: nesting deeper than %d (a cycle?)", MAX_DEPTH);
      luaL_checkstack(L, 8, "JSON nesting");
      lua_Integer n;
      if (!is_array(L, idx, &n)) {
        encode_object(L, b, idx, depth, pretty);
        break;
      }
      if (n == 0) {
        out_str(b, "[]");
        break;
      }
      out_char(b, '[');
      for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) out_char(b, ',');
        newline(b, pretty, depth + 1);
        lua_rawgeti(L, idx, i);
        encode_value(L, b, lua_gettop(L), depth + 1, pretty);
        lua_pop(L, 1);
      }
      newline(b, pretty, depth);
      out_char(b, ']');
    }
  }
}

static int l_encode(lua_State *L) {
  int pretty = lua_toboolean(L, 2);
  lua_settop(L, 1);
  out_t *o = lua_newuserdatauv(L, sizeof *o, 0);
  memset(o, 0, sizeof *o);
  o->L = L;
  lua_newtable(L);
  lua_pushcfunction(L, out_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  encode_value(L, o, 1, 0, pretty);
  lua_pushlstring(L, o->data ? o->data : "", o->len);
  free(o->data);
  o->data = NULL;
  return 1;
}

static char empty_array[48]; /* "aitbc-empty-array-" and 24 hex digits */
static pthread_once_t empty_array_once = PTHREAD_ONCE_INIT;

static void empty_array_init(void) {
  static const char hex[] = "0123456789abcdef";
  unsigned char r[12] = {0};
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) { /* no entropy: the address and time still vary */
    uintptr_t a = (uintptr_t)&r ^ (uintptr_t)time(NULL);
    memcpy(r, &a, sizeof a < sizeof r ? sizeof a : sizeof r);
  }
  char *p = empty_array + sprintf(empty_array, "aitbc-empty-array-");
  for (size_t i = 0; i < sizeof r; i++) {
    *p++ = hex[r[i] >> 4];
    *p++ = hex[r[i] & 15];
  }
  *p = 0;
}

static int is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int l_mark_empty_arrays(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (!memchr(s, '[', len)) return 0;
  luaL_Buffer b;
  int found = 0, in_string = 0;
  size_t copied = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = 0;
      continue;
    }
    if (c == '"') {
      in_string = 1;
      continue;
    }
    if (c != '[') continue;
    size_t j = i + 1;
    while (j < len && is_json_space(s[j])) j++;
    if (j >= len || s[j] != ']') continue;
    if (!found) luaL_buffinit(L, &b);
    found = 1;
    luaL_addlstring(&b, s + copied, i - copied);
    luaL_addstring(&b, "[\"");
    luaL_addstring(&b, empty_array);
    luaL_addstring(&b, "\"]");
    copied = j + 1;
    i = j;
  }
  if (!found) return 0;
  luaL_addlstring(&b, s + copied, len - copied);
  luaL_pushresult(&b);
  return 1;
}

int luaopen_aitbc_native_json(lua_State *L) {
  pthread_once(&empty_array_once, empty_array_init);
  lua_newtable(L);
  lua_pushcfunction(L, l_mark_empty_arrays);
  lua_setfield(L, -2, "mark_empty_arrays");
  lua_pushstring(L, empty_array);
  lua_setfield(L, -2, "EMPTY_ARRAY");
  lua_pushcfunction(L, l_encode);
  lua_setfield(L, -2, "encode");
  luaL_newmetatable(L, ARRAY_MT);
  lua_pushliteral(L, "json.array");
  lua_setfield(L, -2, "__name");
  lua_setfield(L, -2, "array_mt");
  lua_pushinteger(L, MAX_DEPTH);
  lua_setfield(L, -2, "MAX_DEPTH");
  return 1;
}
