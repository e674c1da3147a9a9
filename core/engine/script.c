/* script.c - the Lua runtime of strategies and policies.
 *
 * One lua_State per runtime. The standard libraries are opened once into
 * the real globals, which no script ever sees: each script gets a fresh
 * environment table built from an allow list, with its own shallow copies
 * of string, table, math, utf8 and coroutine, and an os holding only
 * time, clock and date. The shared string metatable is the one object all
 * scripts reach (through ("").method); its __index is a private copy of
 * string without dump, and its __metatable field hides it from
 * getmetatable.
 *
 * Budgets. Every entry into script code (the chunk, on_load,
 * rec_script_call) runs through run_budgeted: a count hook every
 * HOOK_EVERY instructions adds up instructions and checks a monotonic
 * deadline. Once over budget the runtime is "killed": the hook re-arms
 * itself to fire on every instruction and raises each time, so no Lua code
 * (a pcall, an xpcall handler, a coroutine) can make progress until the
 * call is back in C. The allocator counts bytes and refuses growth beyond
 * max_memory, and during a call beyond max_call_memory above the usage at
 * the call's start; a refusal that survives Lua's emergency collection
 * kills the call the same way.
 *
 * Out of memory. A refusal raised where no protected call catches it
 * would reach Lua's panic and abort the process, so the allocator refuses
 * only inside our protected calls (pcall_guarded, load_guarded: `guard`).
 * Elsewhere (a registry ref, a function name) it lets the VM pass its cap.
 * The one value lua_pcall makes after leaving its protection, the string
 * "error in error handling", is kept alive from the start so that making
 * it allocates nothing. rec_script_pcall gives C code the same protection
 * for the Lua values it builds on the request path.
 *
 * Coroutines are allowed: lua_newthread copies the creating thread's hook
 * and count, so every coroutine created by a script (whose code only runs
 * inside a budgeted call) is hooked too, and the hook re-arms per thread.
 * Finalizers could run script code outside any call (at a collection or
 * at lua_close), so setmetatable refuses metatables that carry __gc.
 *
 * A single C library call cannot be interrupted by the hook: the library
 * functions whose cost in one call can grow past linear or past the
 * memory cap are replaced in every environment (and in the string
 * metatable) by sandbox.c's, which charge their work to the instruction
 * budget through sb_charge (the deadline is checked there too) and their
 * large results to the memory caps through sb_reserve; a charge over
 * budget kills the call as the hook does. Allocations of BIG_ALLOC bytes
 * or more (a `..` of long strings) are charged by the allocator.
 *
 * Removal: a file that disappeared is unloaded and forgotten (its entry
 * leaves rec_script_count), whether or not it had loaded.
 */
#include "script.h"

#include "click.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine.h"
#include "err.h"
#include "hash.h"
#include "log.h"
#include "sandbox.h"

#define HOOK_EVERY 10000           /* instructions between two hook calls */
#define BIG_ALLOC (64u << 10)      /* larger allocations charge the budgets */
#define MAX_FILE (16u << 20)       /* larger script files are refused */
#define MAX_NAME 128               /* bytes of a script name */
#define MSG_MAX 512                /* bytes of a recorded error */
#define PIPELINES "pipelines"      /* scripts/pipelines.lua: not a strategy */

static const char *const kind_name[3] = {"strategy", "policy", "config"};
static const char *const kind_dir[3] = {"scripts", "policies", "scripts"};

typedef struct script {
    char *name;
    rec_script_kind kind;
    int ref;            /* module table in the registry; LUA_NOREF: none runs */
    char *error;        /* last load error, or NULL */
    double loaded_at;   /* wall clock of the running version */
    uint64_t version, calls, errors;
    int have_id;        /* the file identity below is known */
    int64_t mtime_ns;   /* identity of the file at the last attempt */
    int64_t size;
    uint64_t ino;
    uint64_t hash;      /* rec_hash_stable of the content last attempted */
    int seen;           /* mark of the running rescan */
} script;

/* Handles of a watch. Heap-allocated apart from the runtime: the close
 * callbacks free it, so the runtime may be freed before the loop ran them. */
typedef struct watch {
    rec_script_rt *rt;  /* NULL once detached by unwatch */
    uv_fs_event_t ev[2];
    int ev_on[2];       /* ev[k] initialised */
    uv_timer_t timer;
    int open;           /* handles not yet closed */
} watch;

struct rec_script_rt {
    lua_State *L;
    rec_script_opts o;      /* dirs point to the strdup'ed copies below */
    char *dirs[2];          /* by kind; NULL: none */
    rec_script_env_fn env_fn;
    void *env_ud;

    size_t used;            /* bytes the VM holds */
    size_t call_base;       /* used when the outermost call began */
    int mem_refused;        /* a refusal not yet followed by a success */
    uint64_t generation;    /* loads and removals so far (rec_script_generation) */
    int guard;              /* protected calls running: refusals allowed */
    long fail_after;        /* test hook: refusable allocations left; < 0 off */

    int depth;              /* nested budgeted calls running */
    int killed;             /* over a budget: every hook call raises */
    uint64_t instr;         /* instructions of the running call */
    uint64_t deadline;      /* CLOCK_MONOTONIC ns */
    const script *cur;      /* innermost script running */
    char kill_msg[256];     /* why and where the call was killed */
    rec_sandbox_budget sb;  /* the budgets, as the bounded library sees them */

    int reloading;          /* guards against reentrant reloads */
    rec_script_config config; /* reader of scripts/pipelines.lua */
    int have_config;
    script *s;              /* sorted by kind, then name */
    size_t n, cap;
    watch *w;
};

/* ---- time ------------------------------------------------------------------ */

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_err(char *err, size_t errlen, const char *msg) {
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* ---- memory ------------------------------------------------------------------ */

/* Record a refused allocation of the running call. */
static void mem_refuse(rec_script_rt *rt, int whole_vm) {
    if (!rt->killed) {
        const script *s = rt->cur;
        snprintf(rt->kill_msg, sizeof rt->kill_msg,
                 "%s/%s.lua: memory budget exceeded (%zu MiB %s)",
                 s ? kind_dir[s->kind] : "?", s ? s->name : "?",
                 (whole_vm ? rt->o.max_memory : rt->o.max_call_memory) >> 20,
                 whole_vm ? "for all scripts" : "per call");
    }
    if (rt->mem_refused)
        rt->killed = 1;
    rt->mem_refused = 1;
}

static void hook(lua_State *L, lua_Debug *ar);

/* Large allocations are work of C code the hook cannot see (a `..` of
 * long strings, a stock library call in a loop): they count toward the
 * instruction budget (a step per REC_SANDBOX_BYTES_PER_STEP bytes) and
 * check the deadline. The allocation that goes over kills the call (the
 * main thread's hook re-arms to raise at the next instruction; lua_sethook
 * is safe anywhere) and succeeds; the large ones after it are refused
 * (returns 0: a memory error where they were asked for, in a coroutine
 * whose hook has not fired yet) until the call ends. */
static int charge_alloc(rec_script_rt *rt, size_t grow) {
    if (rt->killed)
        return 0;
    rt->instr += grow / REC_SANDBOX_BYTES_PER_STEP;
    char what[64];
    if (rt->instr > rt->o.max_instructions)
        snprintf(what, sizeof what, "instruction budget exceeded (%" PRIu64 ")",
                 rt->o.max_instructions);
    else if (mono_ns() > rt->deadline)
        snprintf(what, sizeof what, "time budget exceeded (%g s)", rt->o.max_seconds);
    else
        return 1;
    rt->killed = 1;
    snprintf(rt->kill_msg, sizeof rt->kill_msg, "%s/%s.lua: %s",
             rt->cur ? kind_dir[rt->cur->kind] : "?", rt->cur ? rt->cur->name : "?", what);
    lua_sethook(rt->L, hook, LUA_MASKCOUNT, 1);
    return 1;
}

/* The allocator: when ptr is NULL, osize is a type tag, not a size.
 * Lua retries a refused allocation after an emergency collection: a
 * refusal kills the running call unless the next allocation succeeds (a
 * second refusal in a row kills at once; otherwise the hook or the end
 * of the call sees the pending refusal).
 *
 * Growth is refused only inside a protected call of ours (guard): a
 * refusal anywhere else would reach Lua's panic and abort the process. */
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    rec_script_rt *rt = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        rt->used -= old;
        return NULL;
    }
    if (nsize > old && rt->guard > 0) {
        size_t grow = nsize - old;
        if (rt->fail_after == 0) {
            if (rt->depth > 0)
                mem_refuse(rt, 1);
            return NULL;
        }
        if (rt->fail_after > 0)
            rt->fail_after--;
        int over_vm = rt->used + grow > rt->o.max_memory;
        int over_call = rt->depth > 0 &&
                        rt->used + grow > rt->call_base + rt->o.max_call_memory;
        if (over_vm || over_call) {
            if (rt->depth > 0)
                mem_refuse(rt, !over_call); /* name the tighter cap */
            return NULL;
        }
        if (grow >= BIG_ALLOC && rt->depth > 0 && !charge_alloc(rt, grow))
            return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p) {
        if (rt->depth > 0 && rt->guard > 0)
            mem_refuse(rt, 1);
        return NULL;
    }
    rt->used = rt->used - old + nsize;
    if (nsize > old)
        rt->mem_refused = 0;
    return p;
}

static int on_panic(lua_State *L) {
    const char *m = lua_tostring(L, -1);
    REC_ERROR("lua panic: %s", m ? m : "(no message)");
    return 0; /* Lua aborts */
}

/* ---- budgets -------------------------------------------------------------- */

static rec_script_rt *rt_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

static void hook(lua_State *L, lua_Debug *ar) {
    rec_script_rt *rt = rt_of(L);
    int count = lua_gethookcount(L);
    if (rt->depth == 0)
        return;
    if (!rt->killed && rt->mem_refused)
        rt->killed = 1; /* refused, and no allocation succeeded since */
    if (!rt->killed) {
        rt->instr += (uint64_t)count;
        const char *why = NULL;
        char what[64];
        if (rt->instr > rt->o.max_instructions) {
            snprintf(what, sizeof what, "instruction budget exceeded (%" PRIu64 ")",
                     rt->o.max_instructions);
            why = what;
        } else if (mono_ns() > rt->deadline) {
            snprintf(what, sizeof what, "time budget exceeded (%g s)",
                     rt->o.max_seconds);
            why = what;
        }
        if (!why) {
            if (count != HOOK_EVERY) /* a thread left armed by a killed call */
                lua_sethook(L, hook, LUA_MASKCOUNT, HOOK_EVERY);
            return;
        }
        rt->killed = 1;
        if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
            snprintf(rt->kill_msg, sizeof rt->kill_msg, "%s:%d: %s",
                     ar->short_src, ar->currentline, why);
        else
            snprintf(rt->kill_msg, sizeof rt->kill_msg, "%s/%s.lua: %s",
                     rt->cur ? kind_dir[rt->cur->kind] : "?",
                     rt->cur ? rt->cur->name : "?", why);
    }
    if (count != 1)
        lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    lua_pushstring(L, rt->kill_msg); /* may itself fail: an error all the same */
    lua_error(L);
}

/* Kill the running call from inside a library function: the message names
 * the innermost Lua line, and the hook of L re-arms to raise at the next
 * instruction. */
static const char *kill_from_c(rec_script_rt *rt, lua_State *L, const char *why) {
    lua_Debug ar;
    int lvl = 0;
    while (lua_getstack(L, lvl, &ar) && !(lua_getinfo(L, "Sl", &ar) && ar.currentline > 0))
        lvl++;
    if (lua_getstack(L, lvl, &ar) && ar.currentline > 0)
        snprintf(rt->kill_msg, sizeof rt->kill_msg, "%s:%d: %s", ar.short_src,
                 ar.currentline, why);
    else
        snprintf(rt->kill_msg, sizeof rt->kill_msg, "%s/%s.lua: %s",
                 rt->cur ? kind_dir[rt->cur->kind] : "?", rt->cur ? rt->cur->name : "?",
                 why);
    if (rt->depth > 0) {
        rt->killed = 1;
        lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    }
    return rt->kill_msg;
}

/* The bounded library's steps count as instructions of the running call
 * (with no call running, one library call may take max_instructions). */
static const char *sb_charge(void *ud, lua_State *L, uint64_t steps, uint64_t call_steps) {
    rec_script_rt *rt = ud;
    char what[64];
    if (rt->killed)
        return rt->kill_msg;
    if (rt->depth > 0)
        rt->instr += steps;
    if ((rt->depth > 0 ? rt->instr : call_steps) > rt->o.max_instructions) {
        snprintf(what, sizeof what, "instruction budget exceeded (%" PRIu64 ")",
                 rt->o.max_instructions);
        return kill_from_c(rt, L, what);
    }
    if (rt->depth > 0 && mono_ns() > rt->deadline) {
        snprintf(what, sizeof what, "time budget exceeded (%g s)", rt->o.max_seconds);
        return kill_from_c(rt, L, what);
    }
    return NULL;
}

/* May the running call allocate bytes more under both memory caps? */
static const char *sb_reserve(void *ud, lua_State *L, size_t bytes) {
    rec_script_rt *rt = ud;
    if (rt->killed)
        return rt->kill_msg;
    size_t room = rt->used < rt->o.max_memory ? rt->o.max_memory - rt->used : 0;
    int whole_vm = 1;
    if (rt->depth > 0) {
        size_t cap = rt->call_base + rt->o.max_call_memory;
        size_t call_room = rt->used < cap ? cap - rt->used : 0;
        if (call_room < room) {
            room = call_room;
            whole_vm = 0;
        }
    }
    if (bytes <= room)
        return NULL;
    char what[96];
    snprintf(what, sizeof what, "memory budget exceeded (%zu MiB %s)",
             (whole_vm ? rt->o.max_memory : rt->o.max_call_memory) >> 20,
             whole_vm ? "for all scripts" : "per call");
    return kill_from_c(rt, L, what);
}

static void budget_begin(rec_script_rt *rt, const script *s, const script **prev) {
    *prev = rt->cur;
    rt->cur = s;
    if (rt->depth++ > 0)
        return; /* a nested call shares the outer call's budgets */
    rt->killed = 0;
    rt->mem_refused = 0;
    rt->instr = 0;
    double secs = rt->o.max_seconds < 1e9 ? rt->o.max_seconds : 1e9;
    rt->deadline = mono_ns() + (uint64_t)(secs * 1e9);
    rt->call_base = rt->used;
    lua_sethook(rt->L, hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* Returns whether the call was killed (or failed on a refused allocation). */
static int budget_end(rec_script_rt *rt, const script *prev, int failed) {
    int killed = rt->killed || (failed && rt->mem_refused);
    rt->cur = prev;
    if (--rt->depth > 0)
        return killed;
    lua_sethook(rt->L, NULL, 0, 0);
    rt->mem_refused = 0;
    if (killed) {
        rt->killed = 0;
        rt->mem_refused = 0;
        lua_gc(rt->L, LUA_GCCOLLECT); /* what the killed call left behind */
    }
    return killed;
}

/* Message handler: keep "file:line: msg"; give other error objects a
 * string and the position of the innermost Lua function. [-0, +1, m] */
static int msgh(lua_State *L) {
    if (lua_type(L, 1) == LUA_TSTRING)
        return 1;
    /* A script's __tostring runs protected: its failure (a kill, memory)
     * is no error in the handler. Still inside the call's guard. */
    int named = 0;
    if (luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
        lua_pushvalue(L, 1);
        named = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING;
        if (!named)
            lua_pop(L, 1);
    }
    if (!named)
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_Debug ar;
    for (int lvl = 1; lua_getstack(L, lvl, &ar); lvl++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            lua_insert(L, -2);
            lua_concat(L, 2);
            break;
        }
    }
    return 1;
}

/* lua_pcall inside which the allocator may refuse: a refusal is an error
 * of this call. Every protected call of the runtime goes through here. */
static int pcall_guarded(rec_script_rt *rt, int nargs, int nres, int msgh_idx) {
    rt->guard++;
    int st = lua_pcall(rt->L, nargs, nres, msgh_idx);
    rt->guard--;
    return st;
}

/* luaL_loadbufferx, protected inside: the memory caps apply to compiling. */
static int load_guarded(rec_script_rt *rt, const char *buf, size_t len,
                        const char *chunk) {
    rt->guard++;
    int st = luaL_loadbufferx(rt->L, buf, len, chunk, "t");
    rt->guard--;
    return st;
}

/* The console session (rec_script_eval, budgeted rec_script_pcall). */
static script console_session = {.name = (char *)"console", .kind = REC_SCRIPT_STRATEGY,
                                 .ref = LUA_NOREF};

/* Call the function below nargs arguments on top of the stack, as script
 * s, under the budgets. Returns 0 leaving nres results, or REC_ESCRIPT
 * with "<kind> '<name>': <file>:<line>: msg" in err, the function and
 * arguments popped. The caller ensured 2 free slots. */
static int run_budgeted(rec_script_rt *rt, const script *s, int nargs, int nres,
                        char *err, size_t errlen) {
    lua_State *L = rt->L;
    int fidx = lua_gettop(L) - nargs;
    lua_pushcfunction(L, msgh);
    lua_insert(L, fidx);
    const script *prev;
    budget_begin(rt, s, &prev);
    int st = pcall_guarded(rt, nargs, nres, fidx);
    int killed = budget_end(rt, prev, st != LUA_OK);
    lua_remove(L, fidx);
    if (st == LUA_OK)
        return 0;
    const char *m = killed ? rt->kill_msg : lua_tostring(L, -1);
    if (err && errlen)
        snprintf(err, errlen, "%s '%s': %s", kind_name[s->kind], s->name,
                 m ? m : "error");
    lua_pop(L, 1);
    return REC_ESCRIPT;
}

/* ---- sandbox ------------------------------------------------------------ */

/* print(...): one info line prefixed with the script. [-n, +0, m] */
static int l_print(lua_State *L) {
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    REC_INFO("%s: %s", lua_tostring(L, lua_upvalueindex(1)), lua_tostring(L, -1));
    return 0;
}

/* setmetatable(t, mt) as in the base library, refusing __gc: a finalizer
 * would run script code outside any budgeted call. [-2, +1, e] */
static int l_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return luaL_error(L, "__gc metamethods are not allowed in scripts");
        lua_pop(L, 1);
    }
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* A hook that raises runs Lua's error path inside the hook, where hooks
 * are off for that thread: a message handler called from there, and the
 * __close handlers of a coroutine that died there, would run unhooked.
 * So once a call is killed, the sandbox's xpcall skips the script's
 * handler, its coroutine.wrap does not close a failed coroutine, and its
 * coroutine.close leaves a coroutine that died of an error as it is. */

static int xpcall_handler(lua_State *L) {
    if (rt_of(L)->killed)
        return 1; /* keep the kill's message; no Lua code may run now */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int finish_pcall(lua_State *L, int status, lua_KContext extra) {
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

/* xpcall(f, msgh, ...) as in the base library, msgh guarded. [-n, +r, -] */
static int l_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, xpcall_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
    return finish_pcall(L, status, 2);
}

/* The function coroutine.wrap returns, as lcorolib's auxwrap. [-n, +r, e] */
static int co_wrapped(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int narg = lua_gettop(L), nres;
    int st = lua_status(co);
    lua_Debug ar;
    if (co == L || (st == LUA_OK && lua_getstack(co, 0, &ar)))
        return luaL_error(L, "cannot resume non-suspended coroutine");
    if ((st == LUA_OK && lua_gettop(co) == 0) || (st != LUA_OK && st != LUA_YIELD))
        return luaL_error(L, "cannot resume dead coroutine");
    if (!lua_checkstack(co, narg))
        return luaL_error(L, "too many arguments to resume");
    lua_xmove(L, co, narg);
    st = lua_resume(co, L, narg, &nres);
    if (st == LUA_OK || st == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            return luaL_error(L, "too many results to resume");
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    if (!rt_of(L)->killed) {
        st = lua_resetthread(co); /* close its to-be-closed variables */
        lua_xmove(co, L, 1);
        if (st != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_insert(L, -2);
            lua_concat(L, 2);
        }
    }
    return lua_error(L);
}

/* coroutine.wrap(f) [-1, +1, m] */
/* os.time(): the engine's clock (rec_now), which a replay sets to the
 * log's time; with a date table, the standard os.time of that date. */
static int l_os_time(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, lua_gettop(L) - 1, 1);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)floor(rec_now()));
    return 1;
}

static int l_co_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L); /* inherits this thread's hook */
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, co_wrapped, 1);
    return 1;
}

/* coroutine.close(co); the library's close is upvalue 1. [-1, +(1|2), e] */
static int l_co_close(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co != NULL, 1, "coroutine");
    int st = lua_status(co);
    if (st != LUA_OK && st != LUA_YIELD) {
        lua_pushboolean(L, 0);
        if (lua_gettop(co) > 0 && lua_checkstack(co, 1)) {
            lua_pushvalue(co, -1);
            lua_xmove(co, L, 1);
        } else {
            lua_pushnil(L);
        }
        return 2;
    }
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Push a shallow copy of the table at idx without the key skip. [-0, +1, m] */
static void copy_table(lua_State *L, int idx, const char *skip) {
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (skip && lua_type(L, -2) == LUA_TSTRING &&
            strcmp(lua_tostring(L, -2), skip) == 0) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

/* Protected: open the libraries and guard the string metatable. */
static int init_state(lua_State *L) {
    luaL_openlibs(L);
    /* lua_pcall makes this string outside its protection (LUA_ERRERR):
     * alive, it is found, not allocated. */
    lua_pushliteral(L, "error in error handling");
    lua_setfield(L, LUA_REGISTRYINDEX, "recd.errerr");
    rec_sandbox_set_budget(L, &rt_of(L)->sb);
    /* Requests leave short-lived tables: generational collection frees
     * them young, with shorter pauses than the incremental default. */
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_pushliteral(L, "");
    if (!lua_getmetatable(L, -1))
        return luaL_error(L, "strings have no metatable");
    lua_getglobal(L, "string");
    copy_table(L, -1, "dump");
    rec_sandbox_patch(L, -1, "string");
    lua_setfield(L, -3, "__index");
    lua_pop(L, 1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    return 0;
}

static const char *const base_allow[] = {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "select",
    "tonumber", "tostring", "type", "rawequal", "rawget", "rawlen", "rawset",
    "getmetatable", "_VERSION", NULL};

/* Protected: build the environment of script (name, kind) and leave it on
 * the stack. Args: name, kind. [-2, +1, m] */
static int build_env(lua_State *L) {
    rec_script_rt *rt = rt_of(L);
    int kind = (int)lua_tointeger(L, 2);
    lua_settop(L, 2);                      /* 1: name, 2: kind */
    lua_createtable(L, 0, 32);             /* 3: env */
    lua_pushglobaltable(L);                /* 4: real globals */
    for (int i = 0; base_allow[i]; i++) {
        lua_getfield(L, 4, base_allow[i]);
        lua_setfield(L, 3, base_allow[i]);
    }
    lua_pushcfunction(L, l_setmetatable);
    lua_setfield(L, 3, "setmetatable");
    lua_pushcfunction(L, l_xpcall);
    lua_setfield(L, 3, "xpcall");
    static const char *const libs[] = {"string", "table", "math", "utf8",
                                       "coroutine", NULL};
    for (int i = 0; libs[i]; i++) {
        lua_getfield(L, 4, libs[i]);
        copy_table(L, -1, i == 0 ? "dump" : NULL);
        rec_sandbox_patch(L, -1, libs[i]); /* the bounded library */
        lua_setfield(L, 3, libs[i]);
        lua_pop(L, 1);
    }
    lua_getfield(L, 3, "coroutine");       /* 5: the copy */
    lua_pushcfunction(L, l_co_wrap);
    lua_setfield(L, 5, "wrap");
    lua_getfield(L, 5, "close");
    lua_pushcclosure(L, l_co_close, 1);
    lua_setfield(L, 5, "close");
    lua_pop(L, 1);
    lua_getfield(L, 4, "os");              /* 5 */
    lua_createtable(L, 0, 3);              /* 6 */
    static const char *const os_allow[] = {"time", "clock", "date", NULL};
    for (int i = 0; os_allow[i]; i++) {
        lua_getfield(L, 5, os_allow[i]);
        lua_setfield(L, 6, os_allow[i]);
    }
    lua_getfield(L, 5, "time");
    lua_pushcclosure(L, l_os_time, 1);
    lua_setfield(L, 6, "time");
    lua_setfield(L, 3, "os");
    lua_settop(L, 3);
    lua_pushfstring(L, "%s '%s'", kind_name[kind], lua_tostring(L, 1));
    lua_pushcclosure(L, l_print, 1);
    lua_setfield(L, 3, "print");
    lua_pushvalue(L, 3);
    lua_setfield(L, 3, "_G");
    if (rt->env_fn && kind != REC_SCRIPT_CONFIG) { /* the config is data: no engine */
        rt->env_fn(L, rt->env_ud);
        lua_settop(L, 3);
    }
    return 1;
}

/* ---- the script table ------------------------------------------------------ */

static int cmp_key(rec_script_kind ka, const char *na, const script *b) {
    if (ka != b->kind)
        return ka < b->kind ? -1 : 1;
    return strcmp(na, b->name);
}

/* Index of (kind, name), or where it would go with *found = 0. */
static size_t find_pos(const rec_script_rt *rt, rec_script_kind kind,
                       const char *name, int *found) {
    size_t lo = 0, hi = rt->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_key(kind, name, &rt->s[mid]);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    *found = 0;
    return lo;
}

static script *find(const rec_script_rt *rt, rec_script_kind kind, const char *name) {
    int found;
    size_t i = find_pos(rt, kind, name, &found);
    return found ? &rt->s[i] : NULL;
}

/* The entry of (kind, name), created unloaded when missing; NULL: no memory.
 * Pointers to entries are valid until the next insert or remove. */
static script *get_or_add(rec_script_rt *rt, rec_script_kind kind, const char *name) {
    int found;
    size_t i = find_pos(rt, kind, name, &found);
    if (found)
        return &rt->s[i];
    if (rt->n == rt->cap) {
        size_t cap = rt->cap ? rt->cap * 2 : 16;
        script *s = realloc(rt->s, cap * sizeof *s);
        if (!s)
            return NULL;
        rt->s = s;
        rt->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return NULL;
    memmove(&rt->s[i + 1], &rt->s[i], (rt->n - i) * sizeof *rt->s);
    rt->n++;
    script *s = &rt->s[i];
    memset(s, 0, sizeof *s);
    s->name = copy;
    s->kind = kind;
    s->ref = LUA_NOREF;
    return s;
}

static void remove_at(rec_script_rt *rt, size_t i) {
    script *s = &rt->s[i];
    if (s->ref != LUA_NOREF) {
        luaL_unref(rt->L, LUA_REGISTRYINDEX, s->ref);
        REC_INFO("unloaded %s '%s' (file removed)", kind_name[s->kind], s->name);
        if (s->kind == REC_SCRIPT_CONFIG)
            rt->config.apply(rt->config.ud, 0);
    }
    free(s->name);
    free(s->error);
    memmove(&rt->s[i], &rt->s[i + 1], (rt->n - i - 1) * sizeof *rt->s);
    rt->n--;
    rt->generation++;
}

/* Names: [A-Za-z0-9_-]+ followed by ".lua". Copies the name without the
 * extension into name (MAX_NAME bytes). */
static int script_name(const char *fname, char *name) {
    size_t n = strlen(fname);
    if (n <= 4 || n - 4 >= MAX_NAME || strcmp(fname + n - 4, ".lua") != 0)
        return 0;
    for (size_t i = 0; i < n - 4; i++) {
        char c = fname[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    memcpy(name, fname, n - 4);
    name[n - 4] = '\0';
    return 1;
}

static int valid_name(const char *name) {
    char file[MAX_NAME + 8], copy[MAX_NAME];
    if (strlen(name) >= MAX_NAME)
        return 0;
    snprintf(file, sizeof file, "%s.lua", name);
    return script_name(file, copy);
}

/* ---- loading ------------------------------------------------------------- */

/* Read a whole file (at most MAX_FILE bytes). Returns 0 or -errno. */
static int read_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_FILE) {
                free(buf);
                fclose(f);
                return -EFBIG;
            }
            cap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return -ENOMEM;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            int bad = ferror(f);
            fclose(f);
            if (bad) {
                free(buf);
                return -EIO;
            }
            break;
        }
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Compile and run source as script s off to the side, check the contract,
 * run on_load; only then swap it in. Returns 0 or REC_ESCRIPT with the
 * message in msg. */
static int load_source(rec_script_rt *rt, script *s, const char *buf, size_t len,
                       char *msg, size_t msglen) {
    lua_State *L = rt->L;
    int top = lua_gettop(L);
    char chunk[MAX_NAME + 32];
    snprintf(chunk, sizeof chunk, "=%s/%s.lua", kind_dir[s->kind], s->name);
    const char *file = chunk + 1;
    int rc = REC_ESCRIPT;
    if (!lua_checkstack(L, 8)) {
        snprintf(msg, msglen, "%s '%s': %s: Lua stack exhausted", kind_name[s->kind],
                 s->name, file);
        return REC_ESCRIPT;
    }
    lua_pushcfunction(L, build_env);
    lua_pushstring(L, s->name);
    lua_pushinteger(L, s->kind);
    if (pcall_guarded(rt, 2, 1, 0) != LUA_OK) {
        snprintf(msg, msglen, "%s '%s': %s: cannot build the environment: %s",
                 kind_name[s->kind], s->name, file, lua_tostring(L, -1));
        goto out;
    }
    if (load_guarded(rt, buf, len, chunk) != LUA_OK) {
        const char *m = lua_tostring(L, -1);
        m = m ? m : "cannot load";
        int located = strncmp(m, file, strlen(file)) == 0; /* syntax errors are */
        snprintf(msg, msglen, "%s '%s': %s%s%s", kind_name[s->kind], s->name,
                 located ? "" : file, located ? "" : ": ", m);
        goto out;
    }
    lua_insert(L, -2);
    if (!lua_setupvalue(L, -2, 1)) /* the env becomes the chunk's _ENV */
        lua_pop(L, 1);
    if (run_budgeted(rt, s, 0, 1, msg, msglen))
        goto out;
    if (!lua_istable(L, -1)) {
        snprintf(msg, msglen, "%s '%s': %s: must return a table (got %s)",
                 kind_name[s->kind], s->name, file, luaL_typename(L, -1));
        goto out;
    }
    int mod = lua_gettop(L);
    if (s->kind == REC_SCRIPT_CONFIG) {
        /* The reader takes it in, or refuses it: nothing applies before. */
        lua_pushcfunction(L, rt->config.read);
        lua_pushlightuserdata(L, rt->config.ud);
        lua_pushvalue(L, mod);
        if (run_budgeted(rt, s, 2, 0, msg, msglen)) {
            /* its messages name the file, like every load error */
            char pre[MAX_NAME + 32], tmp[MSG_MAX];
            int pl = snprintf(pre, sizeof pre, "%s '%s': ", kind_name[s->kind], s->name);
            if (pl > 0 && (size_t)pl < msglen && strncmp(msg, pre, (size_t)pl) == 0 &&
                strncmp(msg + pl, file, strlen(file)) != 0) {
                snprintf(tmp, sizeof tmp, "%s", msg + pl);
                if (snprintf(msg, msglen, "%s%s: %s", pre, file, tmp) >= (int)msglen)
                    msg[msglen - 1] = '\0'; /* truncated */
            }
            goto out;
        }
        goto keep;
    }
    static const char *const fns[2][5] = {
        {"recommend", NULL, NULL, NULL, NULL},
        {"on_event", "on_events", "rerank", "on_load", NULL},
    };
    int any = 0;
    for (int i = 0; fns[s->kind][i]; i++) {
        lua_pushstring(L, fns[s->kind][i]);
        int t = lua_rawget(L, mod);
        lua_pop(L, 1);
        if (t == LUA_TFUNCTION)
            any = 1;
        else if (t != LUA_TNIL) {
            snprintf(msg, msglen, "%s '%s': %s: '%s' must be a function (got %s)",
                     kind_name[s->kind], s->name, file, fns[s->kind][i],
                     lua_typename(L, t));
            goto out;
        }
    }
    if (!any) {
        snprintf(msg, msglen, "%s '%s': %s: %s", kind_name[s->kind], s->name, file,
                 s->kind == REC_SCRIPT_STRATEGY
                     ? "a strategy must define recommend(req)"
                     : "a policy must define on_event, on_events, rerank or on_load");
        goto out;
    }
    if (s->kind == REC_SCRIPT_POLICY) { /* a click model's declaration */
        lua_pushliteral(L, "model");
        int t = lua_rawget(L, mod);
        rec_click_spec spec;
        char why[256];
        if (t != LUA_TNIL && rec_click_spec_read(L, -1, &spec, why, sizeof why)) {
            snprintf(msg, msglen, "%s '%s': %s: %s", kind_name[s->kind], s->name, file, why);
            goto out;
        }
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "on_load");
    if (lua_rawget(L, mod) == LUA_TFUNCTION) {
        if (run_budgeted(rt, s, 0, 0, msg, msglen))
            goto out;
    } else {
        lua_pop(L, 1);
    }
keep:
    lua_settop(L, mod);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (ref == LUA_REFNIL || ref == LUA_NOREF) {
        snprintf(msg, msglen, "%s '%s': %s: cannot keep the module",
                 kind_name[s->kind], s->name, file);
        goto out;
    }
    if (s->ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    s->ref = ref;
    if (s->kind == REC_SCRIPT_CONFIG)
        rt->config.apply(rt->config.ud, 1);
    rc = 0;
out:
    lua_settop(L, top);
    return rc;
}

/* Load the file at path as script s unless it is unchanged (force: load
 * anyway). Returns 0 or REC_ESCRIPT with the message in msg (also
 * recorded in s->error and logged). */
static int load_file(rec_script_rt *rt, script *s, const char *path,
                     const struct stat *st, int force, char *msg, size_t msglen) {
    int64_t mtime = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    if (!force && s->have_id && s->mtime_ns == mtime && s->size == (int64_t)st->st_size &&
        s->ino == (uint64_t)st->st_ino)
        return 0;
    s->have_id = 1;
    s->mtime_ns = mtime;
    s->size = (int64_t)st->st_size;
    s->ino = (uint64_t)st->st_ino;
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len);
    if (rc) {
        snprintf(msg, msglen, "%s '%s': %s/%s.lua: cannot read: %s", kind_name[s->kind],
                 s->name, kind_dir[s->kind], s->name,
                 rc == -EFBIG ? "file too large" : strerror(-rc));
        rc = REC_ESCRIPT;
    } else {
        uint64_t h = rec_hash_stable(buf, len);
        if (!force && s->hash == h && (s->ref != LUA_NOREF || s->error)) {
            free(buf);
            return 0; /* touched, not changed */
        }
        s->hash = h;
        rc = load_source(rt, s, buf, len, msg, msglen);
        free(buf);
    }
    if (rc) {
        free(s->error);
        s->error = strdup(msg);
        REC_WARN("%s%s", msg, s->ref != LUA_NOREF ? " (previous version kept)" : "");
        return REC_ESCRIPT;
    }
    free(s->error);
    s->error = NULL;
    s->version++;
    rt->generation++;
    s->loaded_at = wall_now();
    REC_INFO("loaded %s '%s' (version %" PRIu64 ")", kind_name[s->kind], s->name,
             s->version);
    return 0;
}

/* Rescan the folder of kind: load new and changed files, unload the
 * scripts whose file is gone. Returns 0 or REC_ESCRIPT with the first
 * error in err. */
static int scan_kind(rec_script_rt *rt, rec_script_kind kind, int force, char *err,
                     size_t errlen) {
    const char *dir = rt->dirs[kind];
    int rc = 0;
    char msg[MSG_MAX];
    /* The folder of strategies also holds the config file. */
#define IN_SCAN(k) ((k) == kind || (kind == REC_SCRIPT_STRATEGY && (k) == REC_SCRIPT_CONFIG))
    for (size_t i = 0; i < rt->n; i++)
        if (IN_SCAN(rt->s[i].kind))
            rt->s[i].seen = 0;
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d && dir && errno != ENOENT && errno != ENOTDIR) {
        snprintf(msg, sizeof msg, "%s: cannot open the folder: %s", dir, strerror(errno));
        REC_WARN("%s", msg);
        set_err(err, errlen, msg);
        return REC_ESCRIPT; /* keep what runs */
    }
    for (struct dirent *e; d && (e = readdir(d));) {
        char name[MAX_NAME];
        if (!script_name(e->d_name, name))
            continue;
        rec_script_kind k = kind;
        if (kind == REC_SCRIPT_STRATEGY && strcmp(name, PIPELINES) == 0) {
            if (!rt->have_config)
                continue;
            k = REC_SCRIPT_CONFIG;
        }
        char path[4096];
        struct stat st;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path ||
            stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        script *s = get_or_add(rt, k, name);
        if (!s) {
            if (!rc)
                set_err(err, errlen, "out of memory");
            rc = REC_ESCRIPT;
            continue;
        }
        s->seen = 1;
        if (load_file(rt, s, path, &st, force, msg, sizeof msg) && !rc) {
            set_err(err, errlen, msg);
            rc = REC_ESCRIPT;
        }
    }
    if (d)
        closedir(d);
    for (size_t i = rt->n; i-- > 0;)
        if (IN_SCAN(rt->s[i].kind) && !rt->s[i].seen)
            remove_at(rt, i);
#undef IN_SCAN
    return rc;
}

static int rescan(rec_script_rt *rt, int force, char *err, size_t errlen) {
    int a = scan_kind(rt, REC_SCRIPT_STRATEGY, force, err, errlen);
    int b = scan_kind(rt, REC_SCRIPT_POLICY, force, a ? NULL : err, a ? 0 : errlen);
    return a ? a : b;
}

/* ---- public ------------------------------------------------------------- */

void rec_script_opts_default(rec_script_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_instructions = 50000000;
    o->max_seconds = 0.5;
    o->max_memory = (size_t)512 << 20;
    o->max_call_memory = (size_t)64 << 20;
    o->debounce = 0.05;
}

int rec_script_new(rec_script_rt **out, const rec_script_opts *o,
                   rec_script_env_fn env_fn, void *env_ud, char *err, size_t errlen) {
    *out = NULL;
    set_err(err, errlen, "");
    rec_script_opts def;
    rec_script_opts_default(&def);
    rec_script_rt *rt = calloc(1, sizeof *rt);
    if (!rt) {
        set_err(err, errlen, "out of memory");
        return REC_ENOMEM;
    }
    rt->o = def;
    if (o) {
        rt->o = *o;
        if (!rt->o.max_instructions)
            rt->o.max_instructions = def.max_instructions;
        if (!(rt->o.max_seconds > 0))
            rt->o.max_seconds = def.max_seconds;
        if (!rt->o.max_memory)
            rt->o.max_memory = def.max_memory;
        if (!rt->o.max_call_memory)
            rt->o.max_call_memory = def.max_call_memory;
        if (!(rt->o.debounce >= 0))
            rt->o.debounce = def.debounce;
    }
    rt->env_fn = env_fn;
    rt->env_ud = env_ud;
    rt->sb = (rec_sandbox_budget){.charge = sb_charge, .reserve = sb_reserve, .ud = rt};
    const char *dirs[2] = {rt->o.scripts_dir, rt->o.policies_dir};
    for (int k = 0; k < 2; k++) {
        if (dirs[k] && !(rt->dirs[k] = strdup(dirs[k]))) {
            rec_script_free(rt);
            set_err(err, errlen, "out of memory");
            return REC_ENOMEM;
        }
    }
    rt->o.scripts_dir = rt->dirs[0];
    rt->o.policies_dir = rt->dirs[1];
    rt->fail_after = -1;
    rt->L = lua_newstate(l_alloc, rt);
    if (!rt->L) {
        rec_script_free(rt);
        set_err(err, errlen, "cannot create the Lua state: out of memory");
        return REC_ENOMEM;
    }
    lua_atpanic(rt->L, on_panic);
    lua_pushcfunction(rt->L, init_state);
    if (pcall_guarded(rt, 0, 0, 0) != LUA_OK) {
        if (err && errlen)
            snprintf(err, errlen, "cannot open the Lua libraries: %s",
                     lua_tostring(rt->L, -1));
        rec_script_free(rt);
        return REC_ENOMEM;
    }
    rt->reloading = 1;
    rescan(rt, 1, NULL, 0); /* errors are recorded per file */
    rt->reloading = 0;
    *out = rt;
    return 0;
}

void rec_script_free(rec_script_rt *rt) {
    if (!rt)
        return;
    rec_script_unwatch(rt);
    if (rt->L)
        lua_close(rt->L);
    for (size_t i = 0; i < rt->n; i++) {
        free(rt->s[i].name);
        free(rt->s[i].error);
    }
    free(rt->s);
    free(rt->dirs[0]);
    free(rt->dirs[1]);
    free(rt);
}

lua_State *rec_script_lua(rec_script_rt *rt) { return rt->L; }

const char *rec_script_kind_name(rec_script_kind kind) {
    return (unsigned)kind < 3 ? kind_name[kind] : "?";
}

int rec_script_set_config(rec_script_rt *rt, const rec_script_config *c, char *err,
                          size_t errlen) {
    set_err(err, errlen, "");
    if (rt->reloading || rt->depth > 0) {
        set_err(err, errlen, "cannot set the config reader from inside a script call");
        return REC_EBUSY;
    }
    rt->config = *c;
    rt->have_config = 1;
    char path[4096];
    struct stat st;
    if (!rt->dirs[REC_SCRIPT_STRATEGY] ||
        (size_t)snprintf(path, sizeof path, "%s/%s.lua", rt->dirs[REC_SCRIPT_STRATEGY],
                         PIPELINES) >= sizeof path ||
        stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    script *s = get_or_add(rt, REC_SCRIPT_CONFIG, PIPELINES);
    if (!s) {
        set_err(err, errlen, "out of memory");
        return REC_ENOMEM;
    }
    char msg[MSG_MAX];
    rt->reloading = 1;
    int rc = load_file(rt, s, path, &st, 1, msg, sizeof msg);
    rt->reloading = 0;
    if (rc)
        set_err(err, errlen, msg);
    return rc;
}

int rec_script_reload(rec_script_rt *rt, const char *name, char *err, size_t errlen) {
    set_err(err, errlen, "");
    if (rt->reloading || rt->depth > 0) {
        set_err(err, errlen, "cannot reload scripts from inside a script call");
        return REC_EBUSY;
    }
    if (name && !valid_name(name)) {
        if (err && errlen)
            snprintf(err, errlen, "invalid script name '%.64s'", name);
        return REC_EINVAL;
    }
    rt->reloading = 1;
    int rc = 0, known = 0;
    if (!name) {
        rc = rescan(rt, 1, err, errlen);
        known = 1;
    }
    for (int dk = 0; name && dk < 2; dk++) {
        int found;
        rec_script_kind k = (rec_script_kind)dk;
        int is_config = dk == REC_SCRIPT_STRATEGY && strcmp(name, PIPELINES) == 0;
        if (is_config && !rt->have_config)
            continue;
        if (is_config)
            k = REC_SCRIPT_CONFIG;
        size_t i = find_pos(rt, k, name, &found);
        char path[4096];
        struct stat st;
        int have = rt->dirs[dk] &&
                   (size_t)snprintf(path, sizeof path, "%s/%s.lua", rt->dirs[dk], name) <
                       sizeof path &&
                   stat(path, &st) == 0 && S_ISREG(st.st_mode);
        if (!have) {
            if (found) {
                remove_at(rt, i);
                known = 1;
            }
            continue;
        }
        known = 1;
        script *s = get_or_add(rt, k, name);
        char msg[MSG_MAX];
        if (!s) {
            if (!rc)
                set_err(err, errlen, "out of memory");
            rc = REC_ENOMEM;
        } else if (load_file(rt, s, path, &st, 1, msg, sizeof msg) && !rc) {
            set_err(err, errlen, msg);
            rc = REC_ESCRIPT;
        }
    }
    rt->reloading = 0;
    if (!known) {
        if (err && errlen)
            snprintf(err, errlen, "no script named '%s'", name);
        return REC_ENOTFOUND;
    }
    return rc;
}

int rec_script_push(rec_script_rt *rt, rec_script_kind kind, const char *name) {
    const script *s = find(rt, kind, name);
    if (!s || s->ref == LUA_NOREF || !lua_checkstack(rt->L, 1))
        return 0;
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, s->ref);
    return 1;
}

int rec_script_call(rec_script_rt *rt, rec_script_kind kind, const char *name,
                    const char *fn, int nargs, int nres, char *err, size_t errlen) {
    lua_State *L = rt->L;
    set_err(err, errlen, "");
    script *s = find(rt, kind, name);
    if (!s || s->ref == LUA_NOREF) {
        lua_pop(L, nargs);
        if (err && errlen)
            snprintf(err, errlen, "%s '%s' is not loaded", kind_name[kind], name);
        return REC_ENOTFOUND;
    }
    if (!lua_checkstack(L, 3 + (nres > 0 ? nres : 0))) {
        lua_pop(L, nargs);
        if (err && errlen)
            snprintf(err, errlen, "%s '%s': Lua stack exhausted", kind_name[kind], name);
        return REC_ENOMEM;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    lua_pushstring(L, fn);
    if (lua_rawget(L, -2) != LUA_TFUNCTION) {
        lua_pop(L, 2 + nargs);
        if (err && errlen)
            snprintf(err, errlen, "%s '%s' has no function '%s'", kind_name[kind], name, fn);
        return REC_ENOTFOUND;
    }
    lua_remove(L, -2);
    lua_insert(L, -(nargs + 1));
    s->calls++;
    int rc = run_budgeted(rt, s, nargs, nres, err, errlen);
    if (rc)
        s->errors++;
    return rc;
}

int rec_script_has(rec_script_rt *rt, rec_script_kind kind, const char *name,
                   const char *fn) {
    if (!rec_script_push(rt, kind, name))
        return 0;
    if (!lua_checkstack(rt->L, 1)) {
        lua_pop(rt->L, 1);
        return 0;
    }
    lua_pushstring(rt->L, fn);
    int t = lua_rawget(rt->L, -2);
    lua_pop(rt->L, 2);
    return t == LUA_TFUNCTION;
}

size_t rec_script_count(const rec_script_rt *rt) { return rt->n; }

uint64_t rec_script_generation(const rec_script_rt *rt) { return rt->generation; }

int rec_script_info_at(const rec_script_rt *rt, size_t i, rec_script_info *out) {
    if (i >= rt->n)
        return REC_ENOTFOUND;
    const script *s = &rt->s[i];
    out->name = s->name;
    out->kind = s->kind;
    out->loaded = s->ref != LUA_NOREF;
    out->error = s->error;
    out->loaded_at = s->loaded_at;
    out->version = s->version;
    out->calls = s->calls;
    out->errors = s->errors;
    return 0;
}

size_t rec_script_memory(const rec_script_rt *rt) { return rt->used; }

/* ---- watching ------------------------------------------------------------- */

static void on_close(uv_handle_t *h) {
    watch *w = h->data;
    if (--w->open == 0)
        free(w);
}

static void on_timer(uv_timer_t *t) {
    watch *w = t->data;
    if (!w->rt || w->rt->reloading || w->rt->depth > 0)
        return;
    w->rt->reloading = 1;
    rescan(w->rt, 0, NULL, 0); /* errors are recorded and logged per file */
    w->rt->reloading = 0;
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
    watch *w = h->data;
    char name[MAX_NAME];
    if (!w->rt)
        return;
    if (status < 0) {
        REC_WARN("watching scripts: %s", uv_strerror(status));
        return;
    }
    if (filename && !script_name(filename, name))
        return; /* temporary files, swap files, dotfiles */
    uint64_t ms = (uint64_t)(w->rt->o.debounce * 1000.0 + 0.5);
    uv_timer_start(&w->timer, on_timer, ms, 0); /* restarts a pending one */
}

static void close_watch(watch *w) {
    w->rt = NULL;
    for (int k = 0; k < 2; k++)
        if (w->ev_on[k])
            uv_close((uv_handle_t *)&w->ev[k], on_close);
    uv_close((uv_handle_t *)&w->timer, on_close);
}

int rec_script_watch(rec_script_rt *rt, uv_loop_t *loop) {
    if (rt->w)
        return REC_EEXISTS;
    watch *w = calloc(1, sizeof *w);
    if (!w)
        return REC_ENOMEM;
    w->rt = rt;
    int r = uv_timer_init(loop, &w->timer);
    if (r < 0) {
        free(w);
        return REC_EIO;
    }
    w->timer.data = w;
    w->open = 1;
    for (int k = 0; k < 2; k++) {
        struct stat st;
        if (!rt->dirs[k] || stat(rt->dirs[k], &st) != 0 || !S_ISDIR(st.st_mode))
            continue; /* nothing to watch */
        if ((r = uv_fs_event_init(loop, &w->ev[k])) < 0)
            break;
        w->ev[k].data = w;
        w->ev_on[k] = 1;
        w->open++;
        if ((r = uv_fs_event_start(&w->ev[k], on_fs_event, rt->dirs[k], 0)) < 0)
            break;
        r = 0;
    }
    if (r < 0) {
        REC_WARN("cannot watch script folders: %s", uv_strerror(r));
        close_watch(w);
        return REC_EIO;
    }
    rt->w = w;
    return 0;
}

void rec_script_unwatch(rec_script_rt *rt) {
    if (!rt || !rt->w)
        return;
    close_watch(rt->w);
    rt->w = NULL;
}

/* ---- protected calls of C code ---------------------------------------------- */

int rec_script_pcall(rec_script_rt *rt, lua_CFunction fn, void *ud, int nargs,
                     int nres, int budgeted, char *err, size_t errlen) {
    lua_State *L = rt->L;
    if (err && errlen)
        err[0] = '\0';
    if (budgeted && rt->depth > 0) {
        lua_pop(L, nargs);
        set_err(err, errlen, "cannot evaluate from inside a script");
        return REC_EBUSY;
    }
    /* Pushing a light C function or userdata allocates nothing. */
    if (!lua_checkstack(L, 4 + (nres > 0 ? nres : 0))) {
        lua_pop(L, nargs);
        set_err(err, errlen, "Lua stack exhausted");
        return REC_ENOMEM;
    }
    lua_pushcfunction(L, fn);
    lua_insert(L, -(nargs + 1));
    lua_pushlightuserdata(L, ud);
    lua_insert(L, -(nargs + 1));
    if (budgeted) {
        char msg[512];
        int rc = run_budgeted(rt, &console_session, nargs + 1, nres, msg, sizeof msg);
        if (rc) {
            const char *m = strstr(msg, "': ");
            set_err(err, errlen, m ? m + 3 : msg);
        }
        return rc;
    }
    int fidx = lua_gettop(L) - nargs - 1;
    lua_pushcfunction(L, msgh);
    lua_insert(L, fidx);
    int st = pcall_guarded(rt, nargs + 1, nres, fidx);
    lua_remove(L, fidx);
    if (st == LUA_OK)
        return 0;
    if (st == LUA_ERRMEM)
        set_err(err, errlen, "out of memory (Lua)");
    else
        set_err(err, errlen, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
    lua_pop(L, 1);
    return st == LUA_ERRMEM ? REC_ENOMEM : REC_ESCRIPT;
}

long rec_script_fail_alloc_after(rec_script_rt *rt, long n) {
    long left = rt->fail_after;
    rt->fail_after = n < 0 ? -1 : n;
    return left;
}

/* ---- console sessions ------------------------------------------------------ */

int rec_script_eval(rec_script_rt *rt, int *env_ref, const char *code,
                    size_t len, int *nres, char *err, size_t errlen) {
    lua_State *L = rt->L;
    *nres = 0;
    if (rt->depth > 0) {
        set_err(err, errlen, "cannot evaluate from inside a script");
        return REC_EBUSY;
    }
    if (!lua_checkstack(L, 8)) {
        set_err(err, errlen, "Lua stack exhausted");
        return REC_ENOMEM;
    }
    int top = lua_gettop(L);
    if (*env_ref == LUA_NOREF || *env_ref == 0) {
        lua_pushcfunction(L, build_env);
        lua_pushliteral(L, "console");
        lua_pushinteger(L, REC_SCRIPT_STRATEGY);
        if (pcall_guarded(rt, 2, 1, 0) != LUA_OK) {
            set_err(err, errlen, "cannot build the session environment");
            lua_settop(L, top);
            return REC_ENOMEM;
        }
        /* print in a session goes to the log like a script's */
        *env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    /* An expression first ("return <code>"), a chunk of statements else. */
    char *expr = malloc(len + 8);
    if (!expr)
        return REC_ENOMEM;
    memcpy(expr, "return ", 7);
    memcpy(expr + 7, code, len);
    int st = load_guarded(rt, expr, len + 7, "=console");
    free(expr);
    if (st != LUA_OK) {
        lua_pop(L, 1);
        st = load_guarded(rt, code, len, "=console");
    }
    if (st != LUA_OK) {
        set_err(err, errlen, lua_tostring(L, -1));
        lua_settop(L, top);
        return REC_ESCRIPT;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, *env_ref);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    char msg[512];
    int rc = run_budgeted(rt, &console_session, 0, LUA_MULTRET, msg, sizeof msg);
    if (rc) {
        /* "strategy 'console': console:1: ..." reads better without the kind */
        const char *m = strstr(msg, "': ");
        set_err(err, errlen, m ? m + 3 : msg);
        lua_settop(L, top);
        return rc;
    }
    *nres = lua_gettop(L) - top;
    return 0;
}

void rec_script_eval_end(rec_script_rt *rt, int env_ref) {
    if (env_ref != LUA_NOREF && env_ref != 0)
        luaL_unref(rt->L, LUA_REGISTRYINDEX, env_ref);
}
