/* script.h - the Lua runtime of strategies and policies: sandboxed
 * environments, budgets, and hot reload of two folders.
 *
 * One lua_State, owned by the loop thread, holds every script. Each script
 * runs in its own environment built from an allow list (copies of the safe
 * parts of the standard library; no io, os beyond time/clock/date,
 * package, require, load, dofile, debug, string.dump, collectgarbage), so
 * scripts share neither globals nor library tables. Scripts are loaded as
 * text only. Every call into a script runs under an instruction budget
 * and a wall-clock deadline enforced by a count hook that keeps raising
 * once tripped (a pcall inside the script cannot swallow it), and under a
 * memory cap enforced by the allocator. A script that fails, fails that
 * call only: REC_ESCRIPT with a message naming the script and line.
 *
 * Folders: strategies in `scripts/<name>.lua` (a table with
 * recommend(req)), policies in `policies/<name>.lua` (a table with any of
 * on_event(ev), on_events(batch), rerank(req, items), on_load()). A file
 * is compiled and run off to the side in a fresh environment, its
 * contract checked and its on_load run; only then does it replace the
 * loaded version. A file that fails keeps the previous version running
 * and records the error.
 *
 * Script files are [A-Za-z0-9_-]+.lua (temporary, swap and dot files are
 * ignored); scripts/pipelines.lua is not a strategy: it is skipped until a
 * config reader is set (rec_script_set_config), then loaded, watched and
 * listed like a script, of kind REC_SCRIPT_CONFIG. A file that disappears
 * is unloaded and forgotten (it leaves the listing). Module fields are read
 * raw (no metamethods run outside the budgets).
 *
 * Memory. The allocator refuses growth past max_memory (and, in a script
 * call, past max_call_memory) only inside a protected call of this
 * runtime (rec_script_call, rec_script_pcall, rec_script_eval, loading):
 * there a refusal is an error of that call. Outside them it never
 * refuses, so the few values C code makes there (registry refs, a
 * function name) cannot reach Lua's panic; C code on a request path
 * builds its Lua values inside rec_script_pcall.
 */
#ifndef REC_SCRIPT_H
#define REC_SCRIPT_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef enum rec_script_kind {
    REC_SCRIPT_STRATEGY = 0,
    REC_SCRIPT_POLICY = 1,
    REC_SCRIPT_CONFIG = 2, /* scripts/pipelines.lua, read by the config reader */
} rec_script_kind;

/* Name of a kind: "strategy", "policy", "config". */
const char *rec_script_kind_name(rec_script_kind kind);

typedef struct rec_script_opts {
    const char *scripts_dir;   /* strategies; NULL: none */
    const char *policies_dir;  /* policies; NULL: none */
    uint64_t max_instructions; /* per call; default 50,000,000 */
    double max_seconds;        /* per call, wall clock; default 0.5 */
    size_t max_memory;         /* whole VM, bytes; default 512 MiB */
    size_t max_call_memory;    /* growth during one call; default 64 MiB */
    double debounce;           /* seconds to wait after a change; 0.05 */
} rec_script_opts;             /* zero fields take the defaults */

void rec_script_opts_default(rec_script_opts *o);

typedef struct rec_script_rt rec_script_rt;

/* Installs globals that every script environment gets, after the allow
 * list (for example `rec`, the engine handle). Called with the new
 * environment table on top of the stack; must leave the stack as it
 * found it. */
typedef void (*rec_script_env_fn)(lua_State *L, void *ud);

/* Create the runtime and load every *.lua of both folders (errors are
 * recorded per file, not fatal). env_fn may be NULL. */
int rec_script_new(rec_script_rt **out, const rec_script_opts *o,
                   rec_script_env_fn env_fn, void *env_ud, char *err,
                   size_t errlen);
/* NULL is a no-op. Unwatches first if needed: the watch handles then
 * close on the loop's next run, which must happen before uv_loop_close
 * (order: rec_script_unwatch, run the loop until closed, free; freeing
 * first is also safe). */
void rec_script_free(rec_script_rt *rt);

/* The VM, for pushing arguments and reading results around rec_script_call.
 * Borrowed for the runtime's lifetime. */
lua_State *rec_script_lua(rec_script_rt *rt);

/* Watch both folders on loop (directory watches: editors save by rename),
 * reloading changed files (size, mtime, inode, then content hash) after
 * the debounce delay. A folder missing now is not watched. Returns 0,
 * REC_EEXISTS (already watching), REC_ENOMEM or REC_EIO. */
int rec_script_watch(rec_script_rt *rt, uv_loop_t *loop);
/* Stop watching and close the handles (before the loop is closed); the
 * close callbacks run on the loop's next iteration. No-op when not
 * watching. */
void rec_script_unwatch(rec_script_rt *rt);

/* Reload one script by name (kind inferred from the folder holding
 * <name>.lua; a file that vanished is unloaded) or, name NULL, rescan
 * both folders (every file is reloaded, changed or not). Returns 0 when
 * every file loaded, else REC_ESCRIPT with the first error in err (the
 * other files still load); also REC_EINVAL (not a valid name),
 * REC_ENOTFOUND (no such file and nothing loaded by that name), REC_EBUSY
 * (called from inside a script call), REC_ENOMEM. */
int rec_script_reload(rec_script_rt *rt, const char *name, char *err,
                      size_t errlen);

/* Push the module table a loaded script returned, or return 0 pushing
 * nothing when no script of that name and kind is loaded. [-0, +(0|1), -] */
int rec_script_push(rec_script_rt *rt, rec_script_kind kind,
                    const char *name);

/* Call the function `fn` of script `name` with nargs arguments already on
 * the stack, under the budgets, leaving nres results. Returns 0, or
 * REC_ENOTFOUND (no such script or function: arguments popped), or
 * REC_ESCRIPT with "<kind> '<name>': <file>:<line>: message" in err
 * (arguments popped, nothing pushed), or REC_ENOMEM (the stack cannot
 * grow). Must be called on the main thread; a call made from inside a
 * script call (through an engine function) shares the outer call's
 * budgets. [-nargs, +(nres|0), -] */
int rec_script_call(rec_script_rt *rt, rec_script_kind kind, const char *name,
                    const char *fn, int nargs, int nres, char *err,
                    size_t errlen);

/* Call the C function fn protected, with ud (a light userdata) as its
 * first argument followed by the nargs values on top of the stack. The
 * memory caps apply: a refused allocation fails this call only. Not
 * budgeted, fn may run no script code (metamethods included: read script
 * values raw) but may call rec_script_call, which budgets itself; with
 * budgeted set, fn runs under the budgets of a script call as the console
 * session (for code that must run script code, e.g. a __tostring).
 * Returns 0 leaving nres results, or REC_ENOMEM (out of memory) or
 * REC_ESCRIPT (fn raised, or a budget ran out) with the message in err,
 * nothing left. [-nargs, +(nres|0), -] */
int rec_script_pcall(rec_script_rt *rt, lua_CFunction fn, void *ud, int nargs,
                     int nres, int budgeted, char *err, size_t errlen);

/* The reader of scripts/pipelines.lua (a config, not a strategy). The
 * file runs like a script (sandboxed environment, without what env_fn
 * adds; budgets; off the request path when watched) and must return a table; then read runs, protected
 * and under the budgets, with ud (light userdata) at index 1 and that
 * table at 2: it reads the table into ud and raises (luaL_error) to refuse
 * the file. Only when read succeeds does apply(ud, 1) run, outside Lua;
 * apply(ud, 0) when the file is removed. A refused file keeps the
 * previous version in force, and its error ("config 'pipelines':
 * scripts/pipelines.lua:<line>: ...") is listed like a script's. */
typedef struct rec_script_config {
    lua_CFunction read;
    void (*apply)(void *ud, int present);
    void *ud;                  /* borrowed for the runtime's lifetime */
} rec_script_config;

/* Set the config reader (copied) and load scripts/pipelines.lua now when
 * it exists. Returns 0, or REC_ESCRIPT with the file's error in err (it is
 * also recorded and the file watched like the others). */
int rec_script_set_config(rec_script_rt *rt, const rec_script_config *c,
                          char *err, size_t errlen);

/* Test hook: after n more allocations that could be refused (growth
 * inside a protected call), refuse every such allocation; n < 0 turns
 * the failures off. Outside protected calls nothing is ever refused.
 * Returns the count left of the previous setting (0: failures were
 * being injected; -1: none was set). */
long rec_script_fail_alloc_after(rec_script_rt *rt, long n);

/* Does script `name` of `kind` define function fn? */
int rec_script_has(rec_script_rt *rt, rec_script_kind kind, const char *name,
                   const char *fn);

/* One loaded or failed script, for listing. */
typedef struct rec_script_info {
    const char *name;      /* borrowed until the next reload */
    rec_script_kind kind;
    int loaded;            /* a version is running */
    const char *error;     /* last load error, or NULL */
    double loaded_at;      /* wall-clock seconds of the running version */
    uint64_t version;      /* increments with each successful load */
    uint64_t calls, errors;
} rec_script_info;

/* Number of scripts known (loaded or failed), and the i-th. */
size_t rec_script_count(const rec_script_rt *rt);
/* Grows with every successful load and every removal: what was read of
 * the loaded scripts still holds while it is unchanged. */
uint64_t rec_script_generation(const rec_script_rt *rt);
int rec_script_info_at(const rec_script_rt *rt, size_t i, rec_script_info *out);

/* Evaluate code in a console session: an environment like a script's
 * (allow list, `rec`), created on the first call into *env_ref (0 or
 * LUA_NOREF: none yet) and kept, so globals persist within the session.
 * The code is tried as an expression ("return " .. code) first, then as a
 * chunk; text only; the same budgets as scripts. Returns 0 leaving *nres
 * results on the stack (the caller pops them), or REC_ESCRIPT / REC_EBUSY
 * with a message (nothing left on the stack). [-0, +nres, -] */
int rec_script_eval(rec_script_rt *rt, int *env_ref, const char *code,
                    size_t len, int *nres, char *err, size_t errlen);
/* Forget a session's environment. */
void rec_script_eval_end(rec_script_rt *rt, int env_ref);

/* Bytes the VM holds now. */
size_t rec_script_memory(const rec_script_rt *rt);

#endif
