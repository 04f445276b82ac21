/* Shared declarations of the aitbc C host. */
#ifndef AITBC_H
#define AITBC_H

#include <lua.h>
#include <lauxlib.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* AITBC_VERSION: make writes it to $(BUILD)/version.h (make VERSION=...). */
#include "version.h"

/* host.c: everything a fresh Lua state needs (standard libraries, native
 * modules, the embedded Lua tree).  Used for the main state and for every
 * server worker state. */
void aitbc_host_init(lua_State *L);

/* interrupt.c: SIGINT/SIGTERM become a flag, and in the main state a Lua
 * error at the next instruction, so `<close>` and pcall cleanup still run. */
extern volatile sig_atomic_t aitbc_signal_received;
void aitbc_interrupt_install(lua_State *L);
int aitbc_interrupted(void);
/* 0: signals only set the flag (a server that shuts down by itself). */
void aitbc_interrupt_set_raise(int raise_error);

/* shared.c: what threads share, registered into aitbc.native.sys. */
extern const luaL_Reg aitbc_shared_funcs[];
void aitbc_shared_metatables(lua_State *L);
/* Queues of strings: push returns the item's sequence number (0: full);
 * committed is the highest sequence a consumer declared durable. */
uint64_t aitbc_queue_push(const char *name, const char *data, size_t len);
uint64_t aitbc_queue_committed(const char *name);
/* Process-wide counters (sys.counters): add n, or set the value (a gauge). */
void aitbc_counter_update(const char *key, double n, int set);
/* Listeners hear notifications (sys.notify: key NULL for all waiters, one:
 * wake a single waiter on key) and queue commits (key: the queue).  They
 * must only record the event and wake their own thread. */
enum { AITBC_EVENT_NOTIFY, AITBC_EVENT_COMMIT };
typedef void (*aitbc_listener_fn)(void *arg, int kind, const char *key, int one);
int aitbc_listen(aitbc_listener_fn fn, void *arg);
void aitbc_unlisten(aitbc_listener_fn fn, void *arg);

/* Native modules (one file each). */
int luaopen_aitbc_native_crypto(lua_State *L);
int luaopen_aitbc_native_http(lua_State *L);
int luaopen_aitbc_native_server(lua_State *L);
int luaopen_aitbc_native_db(lua_State *L);
int luaopen_aitbc_native_sys(lua_State *L);
int luaopen_aitbc_native_json(lua_State *L);
int luaopen_aitbc_native_jq(lua_State *L);
int luaopen_aitbc_native_gpu(lua_State *L);
int luaopen_aitbc_native_net(lua_State *L);
int luaopen_aitbc_native_sandbox(lua_State *L);

/* Embedded Lua sources, generated at build time by embed.c. */
struct aitbc_embedded_file {
  const char *module; /* "aitbc.cli" */
  const char *chunk;  /* "@lua/aitbc/cli.lua" */
  const unsigned char *data;
  size_t size;
};
extern const struct aitbc_embedded_file aitbc_embedded_files[];
extern const size_t aitbc_embedded_count;

#endif
