/* Entry point: one Lua state, everything else in lua/aitbc/main.lua.
 * Start-up runs protected; the Lua side returns the process exit code. */
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "aitbc.h"

#ifdef __SANITIZE_ADDRESS__
#include <dlfcn.h>
#include <string.h>
/* `make asan` gives every process a sanitizer log_path, so that a report
 * from a node or a daemon (whose stderr is a pipe nobody reads) is seen.
 * GCC links ASan and UBSan as two runtimes, and UBSan applies its
 * log_path through ASan's interposed __sanitizer_set_report_path: its own
 * reports would stay on stderr.  Give it the path itself. */
static void ubsan_log_path(void) {
  const char *opts = getenv("UBSAN_OPTIONS");
  const char *at = opts ? strstr(opts, "log_path=") : NULL;
  void *ubsan = at ? dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD) : NULL;
  if (!ubsan) return; /* no log_path, or one runtime for both (clang) */
  void (*set_path)(const char *) = (void (*)(const char *))dlsym(ubsan, "__sanitizer_set_report_path");
  char path[4096];
  at += strlen("log_path=");
  snprintf(path, sizeof path, "%.*s", (int)strcspn(at, ":"), at);
  if (set_path) set_path(path);
}
#endif

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL && !lua_isnoneornil(L, 1)) {
    /* non-string error object: keep it, main.lua already formats its own */
    return 1;
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int run_main(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  aitbc_host_init(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aitbc.main");
  lua_call(L, 1, 1);
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
#ifdef __SANITIZE_ADDRESS__
  ubsan_log_path();
#endif
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fputs("aitbc: cannot create Lua state (out of memory)\n", stderr);
    return 1;
  }
  aitbc_interrupt_install(L);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, run_main);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "aitbc: internal error: %s\n", msg ? msg : "(error object is not a string)");
    code = aitbc_interrupted() ? 130 : 1;
  } else {
    code = (int)luaL_optinteger(L, -1, 0);
  }
  fflush(stdout);
  lua_close(L);
  return code;
}
