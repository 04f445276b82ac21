/* Ctrl-C and SIGTERM: the first one sets a flag that blocking natives poll
 * (curl progress, sleep, server wait) and, in the main state, raises a Lua
 * error at the next instruction, as lua.c does.  A second one kills at once. */
#include <string.h>

#include "aitbc.h"

volatile sig_atomic_t aitbc_signal_received;
static lua_State *main_state;
static volatile sig_atomic_t raise_error = 1;

static void raise_interrupt(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted");
}

static void on_signal(int sig) {
  if (aitbc_signal_received) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  aitbc_signal_received = sig;
  if (main_state && raise_error)
    lua_sethook(main_state, raise_interrupt, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void aitbc_interrupt_install(lua_State *L) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
  main_state = L;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

int aitbc_interrupted(void) { return aitbc_signal_received != 0; }

void aitbc_interrupt_set_raise(int on) { raise_error = on; }
