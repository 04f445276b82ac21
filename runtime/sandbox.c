/* aitbc.native.sandbox: runs untrusted Lua (agent workflows, client code,
 * the evaluator tool) in a fresh state with limits, and hands it only what
 * the host gives it.  DESIGN.md §8; Redis scripting and Nmap NSE are the
 * models.
 *
 *   run{code=, name=, input=, functions={name = fn | {...}}, memory=bytes,
 *       instructions=n, seconds=s}
 *     -> true, result, stats  |  nil, message, kind, stats
 *   kind: "syntax", "error", "memory", "instructions", "time"
 *   stats: {instructions, memory_peak, seconds, output}
 *
 * The state: base (without dofile, loadfile, collectgarbage's controls),
 * string (without dump; find/match/gmatch/gsub metered, lpattern.c), table,
 * math, utf8, coroutine; no io, os, package, debug.  load takes text only,
 * into the sandbox's own globals.  setmetatable refuses __gc and __close,
 * which may run with hooks off; xpcall's handler is skipped once a limit has
 * tripped (Lua runs it with hooks off then).  print collects into
 * stats.output.
 * Limits: memory through the state's own allocator; instructions and wall
 * clock through a count hook, sticky once tripped (a pcall cannot swallow
 * them; coroutines inherit the hook); pattern matching is charged per step.
 * Values cross the boundary JSON-shaped (nil, booleans, numbers, strings,
 * lists and string-keyed tables, at most 32 deep), read with raw access and
 * copied through C so that neither state raises inside the other. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lualib.h>

#include "aitbc.h"
#include "lpattern.h"

#define HOOK_EVERY 1000
#define MAX_DEPTH 32
#define OUTPUT_MAX (64 * 1024)
#define DEFAULT_MEMORY (64 << 20)
#define DEFAULT_INSTRUCTIONS 100000000LL
#define DEFAULT_SECONDS 30.0

enum { TRIP_NONE, TRIP_INSTRUCTIONS, TRIP_TIME };

typedef struct {
  size_t used, limit, peak;
  int tripped;
  long long instructions, max_instructions;
  double started, deadline;
  lua_State *host;
  int host_functions; /* registry reference of the run's functions, by id */
  char output[OUTPUT_MAX];
  size_t output_len;
} box_t;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static box_t *box_of(lua_State *S) {
  void *ud;
  lua_getallocf(S, &ud);
  return ud;
}

/* ---- limits ---- */

static void *box_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  box_t *b = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    b->used -= old;
    return NULL;
  }
  if (nsize > old && b->used - old + nsize > b->limit) return NULL; /* Lua raises "not enough memory" */
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  b->used = b->used - old + nsize;
  if (b->used > b->peak) b->peak = b->used;
  return p;
}

static const char *trip_message(int tripped) {
  return tripped == TRIP_TIME ? "sandbox: time limit exceeded" : "sandbox: instruction limit exceeded";
}

static void check_limits(lua_State *S, box_t *b) {
  if (!b->tripped) {
    if (b->instructions > b->max_instructions)
      b->tripped = TRIP_INSTRUCTIONS;
    else if (now() > b->deadline)
      b->tripped = TRIP_TIME;
  }
  if (b->tripped) {
    /* every instruction from now on raises again: a pcall cannot swallow it */
    lua_sethook(S, lua_gethook(S), LUA_MASKCOUNT, 1);
    luaL_error(S, "%s", trip_message(b->tripped));
  }
}

static void box_hook(lua_State *S, lua_Debug *ar) {
  (void)ar;
  box_t *b = box_of(S);
  b->instructions += HOOK_EVERY;
  check_limits(S, b);
}

static void box_meter(lua_State *S, void *arg, long steps) {
  box_t *b = arg;
  b->instructions += steps;
  check_limits(S, b);
}

/* ---- JSON-shaped values, copied through C ---- */

enum { JV_NIL, JV_FALSE, JV_TRUE, JV_INT, JV_NUM, JV_STR, JV_LIST, JV_MAP, JV_HOSTFN };

typedef struct jv {
  int type;
  size_t n;      /* string length, or number of items */
  char *s;       /* string bytes (JV_STR) */
  char **keys;   /* JV_MAP */
  size_t *klens; /* JV_MAP */
  struct jv *kids;
  lua_Integer i;
  lua_Number d;
} jv_t;

static void jv_free(jv_t *v) {
  if (!v) return;
  free(v->s);
  for (size_t k = 0; v->kids && k < v->n; k++) jv_free(&v->kids[k]);
  for (size_t k = 0; v->keys && k < v->n; k++) free(v->keys[k]);
  free(v->kids), free(v->keys), free(v->klens);
  memset(v, 0, sizeof *v);
}

/* A copy, NUL-terminated (map keys are used as C strings too). */
static int copy_bytes(char **dst, const char *src, size_t len) {
  if (!(*dst = malloc(len + 1))) return -1;
  memcpy(*dst, src, len);
  (*dst)[len] = 0;
  return 0;
}

static const char *jv_read(lua_State *X, int idx, jv_t *v, int depth);
static int sb_call_host(lua_State *S);

/* Reads the table at idx: a list (keys 1..n) or a map with string keys.
 * Raw access only (no metamethods fire), and nothing that can raise. */
static const char *jv_read_table(lua_State *X, int idx, jv_t *v, int depth) {
  if (depth >= MAX_DEPTH) return "nested more than 32 deep";
  if (!lua_checkstack(X, 4)) return "out of stack";
  size_t count = 0, len = (size_t)lua_rawlen(X, idx);
  int keys_are_strings = 1;
  lua_pushnil(X);
  while (lua_next(X, idx)) {
    count++;
    if (lua_type(X, -2) != LUA_TSTRING) keys_are_strings = 0;
    lua_pop(X, 1);
  }
  int list = count > 0 && count == len;
  if (!list && !keys_are_strings) return "a table must be a list (keys 1..n) or have string keys";
  v->type = list ? JV_LIST : JV_MAP;
  if (count == 0) return NULL;
  if (!(v->kids = calloc(count, sizeof *v->kids))) return "out of memory";
  if (list) {
    for (size_t k = 0; k < count; k++) {
      lua_rawgeti(X, idx, (lua_Integer)k + 1);
      const char *err = jv_read(X, lua_gettop(X), &v->kids[k], depth + 1);
      lua_pop(X, 1);
      v->n = k + 1;
      if (err) return err;
    }
    return NULL;
  }
  if (!(v->keys = calloc(count, sizeof *v->keys)) || !(v->klens = calloc(count, sizeof *v->klens)))
    return "out of memory";
  size_t k = 0;
  lua_pushnil(X);
  while (lua_next(X, idx)) { /* to the end, so that no key is left on the stack */
    if (k == count) {
      lua_pop(X, 2);
      break;
    }
    size_t kl;
    const char *key = lua_tolstring(X, -2, &kl); /* a string: no conversion */
    v->n = k + 1;
    const char *err = copy_bytes(&v->keys[k], key, kl) ? "out of memory" : NULL;
    v->klens[k] = kl;
    if (!err) err = jv_read(X, lua_gettop(X), &v->kids[k], depth + 1);
    lua_pop(X, 1);
    if (err) {
      lua_pop(X, 1);
      return err;
    }
    k++;
  }
  return NULL;
}

static const char *jv_read(lua_State *X, int idx, jv_t *v, int depth) {
  memset(v, 0, sizeof *v);
  idx = lua_absindex(X, idx);
  switch (lua_type(X, idx)) {
    case LUA_TNIL: v->type = JV_NIL; return NULL;
    case LUA_TBOOLEAN: v->type = lua_toboolean(X, idx) ? JV_TRUE : JV_FALSE; return NULL;
    case LUA_TNUMBER:
      if (lua_isinteger(X, idx)) {
        v->type = JV_INT;
        v->i = lua_tointeger(X, idx);
        return NULL;
      }
      v->type = JV_NUM;
      v->d = lua_tonumber(X, idx);
      return isfinite(v->d) ? NULL : "numbers must be finite";
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(X, idx, &len);
      v->type = JV_STR;
      v->n = len;
      return copy_bytes(&v->s, s, len) ? "out of memory" : NULL;
    }
    case LUA_TTABLE: return jv_read_table(X, idx, v, depth);
    case LUA_TLIGHTUSERDATA: /* JSON null */ v->type = JV_NIL; return NULL;
    default:
      return lua_type(X, idx) == LUA_TFUNCTION ? "functions cannot cross the sandbox"
                                               : "only JSON-shaped values cross the sandbox";
  }
}

/* Pushes v onto X (may raise in X: call where that is safe). */
static void jv_push(lua_State *X, const jv_t *v) {
  luaL_checkstack(X, 3, "sandbox value");
  switch (v->type) {
    case JV_NIL: lua_pushnil(X); break;
    case JV_FALSE: lua_pushboolean(X, 0); break;
    case JV_TRUE: lua_pushboolean(X, 1); break;
    case JV_INT: lua_pushinteger(X, v->i); break;
    case JV_NUM: lua_pushnumber(X, v->d); break;
    case JV_STR: lua_pushlstring(X, v->s, v->n); break;
    case JV_HOSTFN: /* the sandbox's face of a host function */
      lua_pushinteger(X, v->i);
      lua_pushcclosure(X, sb_call_host, 1);
      break;
    case JV_LIST:
      lua_createtable(X, (int)v->n, 0);
      for (size_t k = 0; k < v->n; k++) {
        jv_push(X, &v->kids[k]);
        lua_rawseti(X, -2, (lua_Integer)k + 1);
      }
      break;
    default:
      lua_createtable(X, 0, (int)v->n);
      for (size_t k = 0; k < v->n; k++) {
        lua_pushlstring(X, v->keys[k], v->klens[k]);
        jv_push(X, &v->kids[k]);
        lua_rawset(X, -3);
      }
  }
}

/* A value owned by a userdata in X, so that it is freed even if pushing it
 * raises; push_owned pushes it and frees it. */
static int owned_gc(lua_State *X) {
  jv_free(lua_touserdata(X, 1));
  return 0;
}

static jv_t *new_owned(lua_State *X) {
  jv_t *v = lua_newuserdatauv(X, sizeof *v, 0);
  memset(v, 0, sizeof *v);
  lua_createtable(X, 0, 1);
  lua_pushcfunction(X, owned_gc);
  lua_setfield(X, -2, "__gc");
  lua_setmetatable(X, -2);
  return v;
}

/* ---- the sandbox's library ---- */

static int sb_print(lua_State *S) {
  box_t *b = box_of(S);
  int n = lua_gettop(S);
  for (int i = 1; i <= n; i++) {
    size_t len;
    const char *s = luaL_tolstring(S, i, &len);
    if (i > 1 && b->output_len < OUTPUT_MAX) b->output[b->output_len++] = '\t';
    size_t room = OUTPUT_MAX - b->output_len;
    memcpy(b->output + b->output_len, s, len < room ? len : room);
    b->output_len += len < room ? len : room;
    lua_pop(S, 1);
  }
  if (b->output_len < OUTPUT_MAX) b->output[b->output_len++] = '\n';
  return 0;
}

/* load(text [, name [, mode [, env]]]): text only, into the sandbox. */
static int sb_load(lua_State *S) {
  size_t len;
  const char *text = lua_tolstring(S, 1, &len);
  if (!text) {
    luaL_pushfail(S);
    lua_pushliteral(S, "load in the sandbox takes a string");
    return 2;
  }
  const char *name = luaL_optstring(S, 2, "=(load)");
  int env = !lua_isnone(S, 4);
  if (luaL_loadbufferx(S, text, len, name, "t") != LUA_OK) {
    luaL_pushfail(S);
    lua_insert(S, -2);
    return 2;
  }
  if (env) { /* the given environment as the chunk's _ENV */
    lua_pushvalue(S, 4);
    if (!lua_setupvalue(S, -2, 1)) lua_pop(S, 1);
  }
  return 1;
}

/* __gc and __close methods may run with hooks off (finalisers; closing a
 * coroutine that a tripped limit ended), out of the limits' reach. */
static int sb_setmetatable(lua_State *S) {
  luaL_checktype(S, 1, LUA_TTABLE);
  if (lua_istable(S, 2)) {
    for (const char *const *m = (const char *const[]){"__gc", "__close", NULL}; *m; m++) {
      lua_pushstring(S, *m);
      if (lua_rawget(S, 2) != LUA_TNIL) return luaL_error(S, "%s metamethods are not allowed in the sandbox", *m);
      lua_pop(S, 1);
    }
  }
  lua_settop(S, 2);
  lua_pushvalue(S, lua_upvalueindex(1));
  lua_insert(S, 1);
  lua_call(S, 2, 1);
  return 1;
}

/* xpcall's message handler runs with hooks off when the error was raised
 * by the count hook: once a limit has tripped the handler is skipped and
 * the limit's message goes on. */
static int sb_message_handler(lua_State *S) {
  if (box_of(S)->tripped) return 1;
  lua_pushvalue(S, lua_upvalueindex(1));
  lua_insert(S, 1);
  lua_call(S, lua_gettop(S) - 1, 1);
  return 1;
}

static int finish_xpcall(lua_State *S, int status, lua_KContext base) {
  if (status != LUA_OK && status != LUA_YIELD) {
    lua_pushboolean(S, 0);
    lua_pushvalue(S, -2);
    return 2;
  }
  return lua_gettop(S) - (int)base;
}

static int sb_xpcall(lua_State *S) {
  int n = lua_gettop(S);
  luaL_checktype(S, 2, LUA_TFUNCTION);
  lua_pushvalue(S, 2);
  lua_pushcclosure(S, sb_message_handler, 1);
  lua_replace(S, 2);
  lua_pushboolean(S, 1); /* the first result, when it succeeds */
  lua_pushvalue(S, 1);   /* the function, then its arguments above it */
  lua_rotate(S, 3, 2);
  return finish_xpcall(S, lua_pcallk(S, n - 2, LUA_MULTRET, 2, 2, finish_xpcall), 2);
}

/* collectgarbage("count") only: the sandbox's memory in KiB. */
static int sb_collectgarbage(lua_State *S) {
  const char *opt = luaL_optstring(S, 1, "collect");
  box_t *b = box_of(S);
  if (strcmp(opt, "count") == 0) {
    lua_pushnumber(S, (lua_Number)b->used / 1024.0);
    return 1;
  }
  lua_pushinteger(S, 0);
  return 1;
}

static void open_library(lua_State *S) {
  static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                  {LUA_STRLIBNAME, luaopen_string},
                                  {LUA_TABLIBNAME, luaopen_table},
                                  {LUA_MATHLIBNAME, luaopen_math},
                                  {LUA_UTF8LIBNAME, luaopen_utf8},
                                  {LUA_COLIBNAME, luaopen_coroutine},
                                  {NULL, NULL}};
  for (const luaL_Reg *l = libs; l->name; l++) {
    luaL_requiref(S, l->name, l->func, 1);
    lua_pop(S, 1);
  }
  lua_pushglobaltable(S);
  for (const char *const *name = (const char *const[]){"dofile", "loadfile", "require", NULL}; *name; name++) {
    lua_pushnil(S);
    lua_setfield(S, -2, *name);
  }
  lua_pushcfunction(S, sb_print);
  lua_setfield(S, -2, "print");
  lua_pushcfunction(S, sb_load);
  lua_setfield(S, -2, "load");
  lua_pushcfunction(S, sb_collectgarbage);
  lua_setfield(S, -2, "collectgarbage");
  lua_pushcfunction(S, sb_xpcall);
  lua_setfield(S, -2, "xpcall");
  lua_getfield(S, -1, "setmetatable");
  lua_pushcclosure(S, sb_setmetatable, 1);
  lua_setfield(S, -2, "setmetatable");
  lua_getfield(S, -1, "string");
  lua_pushnil(S);
  lua_setfield(S, -2, "dump");
  lpattern_install(S, box_meter, box_of(S));
  lua_pop(S, 2);
  lua_pushliteral(S, ""); /* strings' metatable: hidden (getmetatable("") gives "string") */
  lua_getmetatable(S, -1);
  lua_pushliteral(S, "string");
  lua_setfield(S, -2, "__metatable");
  lua_pop(S, 2);
}

/* ---- host functions ---- */

/* Runs in the host, protected: the function with id, on the arguments. */
static int host_invoke(lua_State *H) {
  const jv_t *args = lua_touserdata(H, 1);
  lua_rawgeti(H, LUA_REGISTRYINDEX, lua_tointeger(H, 3));
  lua_rawgeti(H, -1, lua_tointeger(H, 2));
  lua_remove(H, -2);
  for (size_t i = 0; i < args->n; i++) jv_push(H, &args->kids[i]);
  lua_call(H, (int)args->n, 1);
  return 1;
}

/* A host function called from the sandbox: its arguments are copied to
 * the host, it runs there protected, its result comes back.  Nothing here
 * raises in the host (the sandbox's frames are on the C stack); a host
 * error becomes an ordinary error in the sandbox (a workflow may catch it). */
static int sb_call_host(lua_State *S) {
  box_t *b = box_of(S);
  lua_State *H = b->host;
  int nargs = lua_gettop(S);
  jv_t *args = new_owned(S); /* freed with the userdata, whatever happens */
  args->type = JV_LIST;
  if (nargs > 0 && !(args->kids = calloc((size_t)nargs, sizeof *args->kids))) return luaL_error(S, "out of memory");
  for (int i = 1; i <= nargs; i++) {
    const char *err = jv_read(S, i, &args->kids[i - 1], 0);
    args->n = (size_t)i;
    if (err) return luaL_error(S, "argument %d to a host function: %s", i, err);
  }
  jv_t *result = new_owned(S);
  char message[512] = "";
  if (!lua_checkstack(H, 8)) return luaL_error(S, "the host is out of stack");
  int top = lua_gettop(H);
  lua_pushcfunction(H, host_invoke);
  lua_pushlightuserdata(H, args);
  lua_pushinteger(H, lua_tointeger(S, lua_upvalueindex(1)));
  lua_pushinteger(H, b->host_functions);
  if (lua_pcall(H, 3, 1, 0) != LUA_OK) {
    snprintf(message, sizeof message, "%s",
             lua_type(H, -1) == LUA_TSTRING ? lua_tostring(H, -1) : "the host function failed");
  } else {
    const char *err = jv_read(H, lua_gettop(H), result, 0);
    if (err) snprintf(message, sizeof message, "a host function returned what the sandbox cannot take: %s", err);
  }
  lua_settop(H, top);
  check_limits(S, b); /* the host call counts against the clock */
  if (message[0]) return luaL_error(S, "%s", message);
  jv_push(S, result);
  return 1;
}

/* Reads the host's functions table (at fidx) into a tree whose leaves are
 * ids into the table at registry.  Runs in the host, before the sandbox
 * exists, so raising is safe. */
static void read_functions(lua_State *H, int fidx, int registry, jv_t *v, int depth) {
  if (depth > 4) luaL_error(H, "sandbox functions are nested too deep");
  v->type = JV_MAP;
  size_t count = 0;
  lua_pushnil(H);
  while (lua_next(H, fidx)) {
    count++;
    lua_pop(H, 1);
  }
  if (!count) return;
  if (!(v->kids = calloc(count, sizeof *v->kids)) || !(v->keys = calloc(count, sizeof *v->keys)) ||
      !(v->klens = calloc(count, sizeof *v->klens)))
    luaL_error(H, "out of memory");
  lua_pushnil(H);
  while (lua_next(H, fidx)) {
    if (v->n == count) {
      lua_pop(H, 2);
      break;
    }
    size_t len;
    if (lua_type(H, -2) != LUA_TSTRING) luaL_error(H, "sandbox functions must have string names");
    const char *name = lua_tolstring(H, -2, &len);
    jv_t *kid = &v->kids[v->n];
    if (copy_bytes(&v->keys[v->n], name, len)) luaL_error(H, "out of memory");
    v->klens[v->n++] = len;
    if (lua_isfunction(H, -1)) {
      kid->type = JV_HOSTFN;
      kid->i = (lua_Integer)lua_rawlen(H, registry) + 1;
      lua_pushvalue(H, -1);
      lua_rawseti(H, registry, kid->i);
    } else if (lua_istable(H, -1)) {
      read_functions(H, lua_gettop(H), registry, kid, depth + 1);
    } else {
      luaL_error(H, "sandbox function %s is a %s, not a function", name, luaL_typename(H, -1));
    }
    lua_pop(H, 1);
  }
}

/* ---- a run ---- */

typedef struct {
  const char *code, *name;
  size_t code_len;
  jv_t *input, *functions;
} run_t;

/* Runs in the sandbox, protected: globals from the host's functions, the
 * chunk compiled (text only), run with the input; a returned function is
 * called with the input too.  Leaves the result. */
static int sb_main(lua_State *S) {
  run_t *r = lua_touserdata(S, 1);
  open_library(S);
  lua_pushglobaltable(S);
  for (size_t i = 0; i < r->functions->n; i++) { /* the host's functions, as globals */
    jv_push(S, &r->functions->kids[i]);
    lua_setfield(S, -2, r->functions->keys[i]);
  }
  lua_pop(S, 1);
  if (luaL_loadbufferx(S, r->code, r->code_len, r->name, "t") != LUA_OK) {
    lua_pushliteral(S, "syntax");
    return 2;
  }
  lua_sethook(S, box_hook, LUA_MASKCOUNT, HOOK_EVERY);
  jv_push(S, r->input);
  lua_call(S, 1, 1);
  if (lua_isfunction(S, -1)) {
    jv_push(S, r->input);
    lua_call(S, 1, 1);
  }
  return 1;
}

static void push_stats(lua_State *L, box_t *b) {
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, b->instructions);
  lua_setfield(L, -2, "instructions");
  lua_pushinteger(L, (lua_Integer)b->peak);
  lua_setfield(L, -2, "memory_peak");
  lua_pushnumber(L, now() - b->started);
  lua_setfield(L, -2, "seconds");
  lua_pushlstring(L, b->output, b->output_len);
  lua_setfield(L, -2, "output");
}

static void read_limits(lua_State *L, box_t *b) {
  lua_getfield(L, 1, "memory");
  lua_Integer memory = luaL_optinteger(L, -1, DEFAULT_MEMORY);
  lua_getfield(L, 1, "instructions");
  lua_Integer instructions = (lua_Integer)luaL_optnumber(L, -1, (lua_Number)DEFAULT_INSTRUCTIONS);
  lua_getfield(L, 1, "seconds");
  double seconds = luaL_optnumber(L, -1, DEFAULT_SECONDS);
  lua_pop(L, 3);
  luaL_argcheck(L, memory >= 256 * 1024 && memory <= (lua_Integer)1 << 32, 1, "memory must be 256 KiB..4 GiB");
  luaL_argcheck(L, instructions >= 1000, 1, "instructions must be at least 1000");
  luaL_argcheck(L, seconds > 0 && seconds <= 86400, 1, "seconds must be 0..86400");
  b->limit = (size_t)memory;
  b->max_instructions = instructions;
  b->started = now();
  b->deadline = b->started + seconds;
}

static const char *failure_kind(box_t *b, int status, int syntax) {
  if (syntax) return "syntax";
  if (b->tripped == TRIP_TIME) return "time";
  if (b->tripped == TRIP_INSTRUCTIONS) return "instructions";
  if (status == LUA_ERRMEM) return "memory";
  return "error";
}

static int l_run(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  run_t r = {0};
  lua_getfield(L, 1, "code");
  r.code = luaL_checklstring(L, -1, &r.code_len); /* stays on the stack */
  lua_getfield(L, 1, "name");
  lua_pushfstring(L, "=%s", luaL_optstring(L, -1, "sandbox"));
  r.name = lua_tostring(L, -1);
  box_t *b = lua_newuserdatauv(L, sizeof *b, 0); /* the allocator's state outlives the sandbox */
  memset(b, 0, sizeof *b);
  read_limits(L, b);
  b->host = L;
  lua_newtable(L); /* the host functions, by id */
  int registry = lua_gettop(L);
  r.functions = new_owned(L);
  lua_getfield(L, 1, "functions");
  if (lua_istable(L, -1))
    read_functions(L, lua_gettop(L), registry, r.functions, 0);
  else
    r.functions->type = JV_MAP;
  lua_pop(L, 1);
  jv_t *input = new_owned(L);
  lua_getfield(L, 1, "input");
  const char *err = jv_read(L, lua_gettop(L), input, 0);
  lua_pop(L, 1);
  if (err) return luaL_argerror(L, 1, lua_pushfstring(L, "input: %s", err));
  r.input = input;

  lua_pushvalue(L, registry);
  b->host_functions = luaL_ref(L, LUA_REGISTRYINDEX); /* released below: nothing raises until then */
  lua_State *S = lua_newstate(box_alloc, b);
  if (!S) {
    luaL_unref(L, LUA_REGISTRYINDEX, b->host_functions);
    return luaL_error(L, "cannot create a sandbox (out of memory)");
  }
  lua_pushcfunction(S, sb_main);
  lua_pushlightuserdata(S, &r);
  int status = lua_pcall(S, 1, 2, 0);
  if (status == LUA_OK && b->tripped) { /* a limit tripped; a tail call ended the chunk before it could raise */
    lua_pushstring(S, trip_message(b->tripped));
    status = LUA_ERRRUN;
  }
  int syntax = status == LUA_OK && lua_isstring(S, -1) && strcmp(lua_tostring(S, -1), "syntax") == 0 &&
               lua_type(S, -2) == LUA_TSTRING;
  jv_t *result = new_owned(L);
  char message[1024] = "";
  if (status == LUA_OK && !syntax) {
    const char *rerr = jv_read(S, -2, result, 0);
    if (rerr) {
      status = LUA_ERRRUN;
      snprintf(message, sizeof message, "the result cannot leave the sandbox: %s", rerr);
    }
  } else {
    snprintf(message, sizeof message, "%s",
             lua_tostring(S, syntax ? -2 : -1) ? lua_tostring(S, syntax ? -2 : -1) : "error");
  }
  lua_close(S);
  luaL_unref(L, LUA_REGISTRYINDEX, b->host_functions);
  if (status == LUA_OK && !syntax) {
    lua_pushboolean(L, 1);
    jv_push(L, result);
    push_stats(L, b);
    return 3;
  }
  lua_pushnil(L);
  lua_pushstring(L, message);
  lua_pushstring(L, failure_kind(b, status, syntax));
  push_stats(L, b);
  return 4;
}

int luaopen_aitbc_native_sandbox(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_run);
  lua_setfield(L, -2, "run");
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, DEFAULT_MEMORY);
  lua_setfield(L, -2, "memory");
  lua_pushinteger(L, DEFAULT_INSTRUCTIONS);
  lua_setfield(L, -2, "instructions");
  lua_pushnumber(L, DEFAULT_SECONDS);
  lua_setfield(L, -2, "seconds");
  lua_setfield(L, -2, "defaults");
  return 1;
}
