/* Lua 5.4 string patterns with a step budget, for the sandbox: the same
 * language and results as string.find/match/gmatch/gsub, but a pattern that
 * backtracks without end (a single C call the count hook cannot see) is
 * charged for every step and stopped when its budget is spent. */
#ifndef AITBC_LPATTERN_H
#define AITBC_LPATTERN_H

#include <lua.h>

/* Charged for matching steps, in batches; raises (a Lua error in L) to stop
 * the match when the budget is spent.  arg is the sandbox's. */
typedef void (*lpattern_meter)(lua_State *L, void *arg, long steps);

/* Replaces find, match, gmatch and gsub in the string table at the top of
 * the stack with metered versions charging meter(L, arg, steps). */
void lpattern_install(lua_State *L, lpattern_meter meter, void *arg);

#endif
