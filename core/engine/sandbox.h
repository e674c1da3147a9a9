/* sandbox.h - the bounded standard library handed to scripts.
 *
 * The instruction hook of script.c sees Lua instructions only: one call
 * into C runs until it returns. This module replaces the library
 * functions whose cost in one call is not bounded by the size of what
 * the script already built, or whose result can outgrow the memory cap,
 * with versions that charge their work to the running call's budget and
 * stop with the budget's error when it runs out:
 *
 * - string.find, match, gmatch, gsub: a pattern matcher of this module
 *   (Lua 5.4's pattern language exactly: classes, sets, %b, %f, captures,
 *   position captures, back references, anchors, the same errors) that
 *   counts its steps; plain finds use a linear-time search;
 * - string.rep: the result size is checked against the memory left
 *   before anything is allocated; string.format: the result size is
 *   estimated (widths and precisions are two digits at most, %q at most
 *   four bytes per byte) and checked the same way;
 * - string.sub, upper, lower, reverse, byte, char, pack, unpack,
 *   table.unpack: charged for what they produce;
 * - table.concat, insert, remove, move: charged per element (a move of
 *   2^40 elements fails at once); table.sort: a merge sort (a heap sort
 *   in place for arrays too large for the Lua stack), n log n comparisons
 *   whatever the input, charged per comparison, whose result is checked:
 *   a comparator that is not a strict order fails with "invalid order
 *   function for sorting", one that raises leaves the table a permutation
 *   of what it held;
 * - utf8.*: charged per byte decoded or skipped.
 *
 * Costs are counted in steps, the unit of the instruction budget: one
 * step is about one Lua instruction (a matcher step, one element moved,
 * REC_SANDBOX_BYTES_PER_STEP bytes copied or scanned).
 *
 * The budget itself belongs to whoever runs the scripts (script.c): it is
 * registered in the Lua state with rec_sandbox_set_budget. Without one,
 * the functions behave as the stock ones (nothing is charged).
 */
#ifndef REC_SANDBOX_H
#define REC_SANDBOX_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#define REC_SANDBOX_BYTES_PER_STEP 64 /* bytes copied or scanned per step */

/* The budget of the running call. Each callback returns NULL to let the
 * work go on, or the message of the error that ends the call (borrowed
 * until the call ends); the budget is then spent for the rest of the call. */
typedef struct rec_sandbox_budget {
    /* steps: work done since the last charge; call_steps: the total of
     * the library call charging (a budget with no call running may use it
     * to bound that one call). */
    const char *(*charge)(void *ud, lua_State *L, uint64_t steps,
                          uint64_t call_steps);
    /* May the running call allocate `bytes` more? */
    const char *(*reserve)(void *ud, lua_State *L, size_t bytes);
    void *ud;
} rec_sandbox_budget;

/* Register b as the budget of every function of L (NULL: none). b is
 * borrowed: it must outlive the state or be replaced. [-0, +0, m] */
void rec_sandbox_set_budget(lua_State *L, const rec_sandbox_budget *b);

/* Charge steps to the running call; raises the budget's error when over.
 * For C functions exposed to scripts (the engine's methods). [-0, +0, v] */
void rec_sandbox_charge(lua_State *L, uint64_t steps);

/* Raise the budget's error unless the running call may allocate bytes
 * more. [-0, +0, v] */
void rec_sandbox_reserve(lua_State *L, size_t bytes);

/* Replace, in the table at index t (a copy of the standard library named
 * lib: "string", "table" or "utf8"), the functions this module bounds;
 * other names are left alone. The stock functions are read from t itself,
 * so t must hold the standard ones. [-0, +0, m] */
void rec_sandbox_patch(lua_State *L, int t, const char *lib);

#endif
