/* aitbc.native.jq: the jq language, through libjq (Debian's libjq1), for
 * the CLI's --jq.  libjq is loaded with dlopen on first use, as libcurl is,
 * so the binary starts and runs without it; a missing library is an error
 * of --jq alone.
 *   load([soname])          -> true | nil, message   (AITBC_LIBJQ, else the build's soname)
 *   compile(expr)           -> program | nil, message, kind ("unavailable" | "compile")
 *   program:run(json, raw, emit) -> true | nil, message
 * run feeds the JSON text to the program and calls emit(text) for each
 * result: compact JSON, or, with raw, a string result's own text (jq -r).
 * The jq state is owned by the program userdata (__gc), so an error raised
 * by emit leaks nothing; every jv is freed before Lua is called. */
#include <dlfcn.h>
#include <jq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aitbc.h"

#define PROGRAM_MT "aitbc.jq.program"
#define ERROR_MAX 1024

/* clang-format off */
#define JQ_FUNCTIONS(X) \
  X(jq_init) \
  X(jq_set_error_cb) \
  X(jq_compile) \
  X(jq_start) \
  X(jq_next) \
  X(jq_teardown) \
  X(jq_halted) \
  X(jq_get_exit_code) \
  X(jq_get_error_message) \
  X(jv_parse_sized) \
  X(jv_get_kind) \
  X(jv_copy) \
  X(jv_free) \
  X(jv_invalid_has_msg) \
  X(jv_invalid_get_msg) \
  X(jv_string_value) \
  X(jv_string_length_bytes) \
  X(jv_dump_string)
/* clang-format on */

static struct {
#define X(name) __typeof__(&name) name;
  JQ_FUNCTIONS(X)
#undef X
} lib;
static int loaded;
static char load_error[512];

static int jq_load(const char *soname) {
  if (loaded) return 1;
  void *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    snprintf(load_error, sizeof load_error, "cannot load %s: %s", soname, dlerror());
    return 0;
  }
#define X(name)                                                                 \
  if (!(lib.name = (__typeof__(lib.name))dlsym(handle, #name))) {               \
    snprintf(load_error, sizeof load_error, "%s has no symbol " #name, soname); \
    dlclose(handle);                                                            \
    return 0;                                                                   \
  }
  JQ_FUNCTIONS(X)
#undef X
  loaded = 1;
  return 1;
}

static const char *default_soname(void) {
  const char *env = getenv("AITBC_LIBJQ");
  return env && *env ? env : AITBC_JQ_SONAME;
}

typedef struct {
  jq_state *jq;
  char error[ERROR_MAX]; /* what jq reported while compiling */
} program_t;

static int program_gc(lua_State *L) {
  program_t *p = luaL_checkudata(L, 1, PROGRAM_MT);
  if (p->jq) lib.jq_teardown(&p->jq);
  p->jq = NULL;
  return 0;
}

/* Text of a jv message (a string, or anything else dumped), appended to buf. */
static void append_message(char *buf, size_t cap, jv msg) {
  size_t used = strlen(buf);
  if (used && used + 2 < cap) {
    strcat(buf, "; ");
    used += 2;
  }
  if (lib.jv_get_kind(msg) == JV_KIND_STRING) {
    snprintf(buf + used, cap - used, "%s", lib.jv_string_value(msg));
    lib.jv_free(msg);
  } else {
    jv text = lib.jv_dump_string(msg, 0); /* consumes msg */
    snprintf(buf + used, cap - used, "%s", lib.jv_string_value(text));
    lib.jv_free(text);
  }
}

static void on_error(void *data, jv msg) {
  program_t *p = data;
  append_message(p->error, sizeof p->error, msg);
}

static int l_load(lua_State *L) {
  if (jq_load(luaL_optstring(L, 1, default_soname()))) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, load_error);
  return 2;
}

static int l_compile(lua_State *L) {
  const char *expr = luaL_checkstring(L, 1);
  if (!jq_load(default_soname())) {
    lua_pushnil(L);
    lua_pushstring(L, load_error);
    lua_pushliteral(L, "unavailable");
    return 3;
  }
  program_t *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  luaL_setmetatable(L, PROGRAM_MT);
  p->jq = lib.jq_init();
  if (!p->jq) return luaL_error(L, "jq_init failed (out of memory)");
  lib.jq_set_error_cb(p->jq, on_error, p);
  if (!lib.jq_compile(p->jq, expr)) {
    lua_pushnil(L);
    lua_pushstring(L, p->error[0] ? p->error : "jq: the expression does not compile");
    lua_pushliteral(L, "compile");
    return 3;
  }
  return 1;
}

/* A jv owned by a userdata until it is copied into Lua: a memory error
 * raised while copying it still frees it (__gc). */
#define HOLDER_MT "aitbc.jq.value"
typedef struct {
  jv value;
  int live;
} holder_t;

static int holder_gc(lua_State *L) {
  holder_t *h = luaL_checkudata(L, 1, HOLDER_MT);
  if (h->live) lib.jv_free(h->value);
  h->live = 0;
  return 0;
}

static void holder_set(holder_t *h, jv value) {
  if (h->live) lib.jv_free(h->value);
  h->value = value;
  h->live = 1;
}

/* Pushes the held result's text and frees it: a string as it is with raw,
 * anything else as compact JSON. */
static void push_result(lua_State *L, holder_t *h, int raw) {
  if (!raw || lib.jv_get_kind(h->value) != JV_KIND_STRING) holder_set(h, lib.jv_dump_string(lib.jv_copy(h->value), 0));
  size_t n = (size_t)lib.jv_string_length_bytes(lib.jv_copy(h->value));
  lua_pushlstring(L, lib.jv_string_value(h->value), n);
  lib.jv_free(h->value);
  h->live = 0;
}

static int run_error(lua_State *L, const char *prefix, jv msg) {
  char buf[ERROR_MAX] = "";
  append_message(buf, sizeof buf, msg);
  lua_pushnil(L);
  lua_pushfstring(L, "%s%s", prefix, buf);
  return 2;
}

static int l_run(lua_State *L) {
  program_t *p = luaL_checkudata(L, 1, PROGRAM_MT);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  int raw = lua_toboolean(L, 3);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  if (!p->jq) return luaL_error(L, "jq program already freed");
  if (len > 0x7fffffff) return luaL_error(L, "input too large for jq");
  holder_t *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->live = 0;
  luaL_setmetatable(L, HOLDER_MT);
  jv input = lib.jv_parse_sized(text, (int)len);
  if (lib.jv_get_kind(input) == JV_KIND_INVALID)
    return run_error(L, "jq: cannot read the input: ", lib.jv_invalid_get_msg(input));
  lib.jq_start(p->jq, input, 0); /* consumes input */
  for (;;) {
    if (aitbc_interrupted()) return luaL_error(L, "interrupted");
    jv result = lib.jq_next(p->jq);
    if (lib.jv_get_kind(result) == JV_KIND_INVALID) {
      if (lib.jv_invalid_has_msg(lib.jv_copy(result)))
        return run_error(L, "jq: error: ", lib.jv_invalid_get_msg(result));
      lib.jv_free(result);
      if (lib.jq_halted(p->jq)) { /* halt_error: its message; halt: just the end */
        jv message = lib.jq_get_error_message(p->jq);
        jv_kind kind = lib.jv_get_kind(message);
        if (kind != JV_KIND_INVALID && kind != JV_KIND_NULL) return run_error(L, "jq: halted: ", message);
        lib.jv_free(message);
      }
      break;
    }
    holder_set(h, result);
    lua_pushvalue(L, 4);
    push_result(L, h, raw);
    lua_call(L, 1, 0);
  }
  lua_pushboolean(L, 1);
  return 1;
}

int luaopen_aitbc_native_jq(lua_State *L) {
  static const luaL_Reg methods[] = {{"run", l_run}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"load", l_load}, {"compile", l_compile}, {NULL, NULL}};
  luaL_newmetatable(L, HOLDER_MT);
  lua_pushcfunction(L, holder_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, PROGRAM_MT);
  lua_pushcfunction(L, program_gc);
  lua_setfield(L, -2, "__gc");
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushstring(L, AITBC_JQ_SONAME);
  lua_setfield(L, -2, "soname");
  return 1;
}
