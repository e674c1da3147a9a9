/* lua_api.h - the `recd` Lua module: the one place Lua meets the engine.
 *
 * Loadable by stock lua5.4 (require "recd" finds recd.so through
 * LUA_CPATH) and preloaded by the recd binary. Errors are raised as error
 * objects: tables {code = <negative int>, name = "not_found", message =
 * "..."} whose __tostring gives "name: message", so `pcall` callers can
 * branch on err.name; recd.try(f, ...) returns nil, name, message instead.
 */
#ifndef REC_LUA_API_H
#define REC_LUA_API_H

#include <lua.h>
#include <stddef.h>

#include "engine.h"

/* Open the module table. [-0, +1, m] */
int luaopen_recd(lua_State *L);

/* The name of a db object's i-th method (`db:` in the REPL, `rec:` in
 * scripts), in table order; NULL past the last. Static storage. */
const char *rec_lua_db_method(size_t i);

/* Push a db object wrapping an engine the caller keeps owning (the object
 * never frees it and close() does nothing). With autocommit 0, its writes
 * stay pending for the owner to commit. [-0, +1, m] */
void rec_lua_push_engine(lua_State *L, rec_engine *e, int autocommit);

/* Set field `rec` of the table on top of the stack to one shared handle
 * on e (autocommit 0), created on first use and kept in the registry under
 * *ref (0 before). The env_fn of a script runtime whose scripts use the
 * engine. [-0, +0, m] */
void rec_lua_set_rec(lua_State *L, rec_engine *e, int *ref);

/* Push an encoded id (idmap.h) as a Lua string or integer; nil when the
 * key is NULL or malformed. [-0, +1, m] */
void rec_lua_push_id(lua_State *L, const char *key, size_t klen);

/* Event batches (a policy's on_events): push a batch over the caller's
 * array ev[0..n), which must stay unchanged until rec_lua_events_close(L,
 * idx) ends the batch's validity (any later use from Lua raises).
 * rec_lua_events_get pushes event i (1-based) of the batch at idx as a
 * table, the same table each time; nil out of range. The tables have
 * user, item, type, weight, ts, seq, and value, rec_id, context when the
 * event has them.   [-0, +1, m] */
void rec_lua_push_events(lua_State *L, rec_engine *e, const rec_replay_event *ev, size_t n);
void rec_lua_events_close(lua_State *L, int idx);
void rec_lua_events_get(lua_State *L, int idx, size_t i);

/* Raise an engine error as an error object. Never returns. [-0, +0, v] */
int rec_lua_error(lua_State *L, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The click model's state as a table (db:click_info). */
struct rec_click;
void rec_lua_push_click_info(lua_State *L, const struct rec_click *m);

#endif
