/* sandbox.c - the bounded standard library handed to scripts (sandbox.h).
 *
 * Three kinds of replacement:
 * - written here: the pattern functions (a backtracking matcher over the
 *   pattern text, as Lua's own, that counts a step per pattern item tried,
 *   per subject byte a repetition or %b scans and per 64 bytes a back
 *   reference compares, and charges them every CHARGE_EVERY steps),
 *   string.rep, table.concat, insert, remove, move, sort and the utf8
 *   library;
 * - checked, then the stock C function called in the same frame (so its
 *   argument errors name the same function): string.format;
 * - the stock C function, then charged for what it returned (strings by
 *   their size, other values one step each): string.sub, upper, lower,
 *   reverse, byte, char, pack, unpack, table.unpack.
 *
 * Behaviour, results and error messages are those of Lua 5.4's library
 * (but for table.sort's check of the comparator, and concat's check of the
 * memory its separators need); tests/unit/sandbox_cases.lua compares them
 * with the stock ones on a table of cases and on random patterns.
 */
#include "sandbox.h"

#include <ctype.h>
#include <lauxlib.h>
#include <limits.h>
#include <string.h>

#define MAXCAP 32         /* captures per pattern, as LUA_MAXCAPTURES */
#define MAXDEPTH 200      /* nested matcher calls, as Lua's MAXCCALLS */
#define CAP_OPEN (-1)     /* capture length while it is open */
#define CAP_POS (-2)      /* capture length of a position capture */
#define CHARGE_EVERY 4096 /* steps counted locally between two charges */
#define FREE_BYTES 4096   /* results smaller than this are not charged */
#define FREE_STEPS 256    /* nor calls that took fewer steps than this */
#define MAXSIZE ((size_t)INT_MAX) /* largest string rep builds, as stock */
#define SORT_ON_STACK 200000      /* larger arrays are sorted in place */

static const char budget_key = 'b'; /* its address keys the registry */

/* ---- budget ---------------------------------------------------------------- */

static const rec_sandbox_budget *get_budget(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &budget_key);
    const rec_sandbox_budget *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
}

static int raise_msg(lua_State *L, const char *msg) {
    lua_pushstring(L, msg);
    return lua_error(L);
}

void rec_sandbox_set_budget(lua_State *L, const rec_sandbox_budget *b) {
    if (b)
        lua_pushlightuserdata(L, (void *)b);
    else
        lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &budget_key);
}

void rec_sandbox_charge(lua_State *L, uint64_t steps) {
    if (!steps)
        return;
    const rec_sandbox_budget *b = get_budget(L);
    const char *m = b ? b->charge(b->ud, L, steps, steps) : NULL;
    if (m)
        raise_msg(L, m);
}

void rec_sandbox_reserve(lua_State *L, size_t bytes) {
    const rec_sandbox_budget *b = get_budget(L);
    const char *m = b ? b->reserve(b->ud, L, bytes) : NULL;
    if (m)
        raise_msg(L, m);
}

/* Charge for bytes produced or scanned, when they are many. */
static void charge_bytes(lua_State *L, size_t bytes) {
    if (bytes >= FREE_BYTES)
        rec_sandbox_charge(L, bytes / REC_SANDBOX_BYTES_PER_STEP);
}

/* A running count of steps, charged every CHARGE_EVERY. */
typedef struct meter {
    lua_State *L;
    const rec_sandbox_budget *b;
    uint64_t steps; /* not charged yet */
    uint64_t total; /* charged by this call */
} meter;

static void meter_init(meter *m, lua_State *L) {
    m->L = L;
    m->b = get_budget(L);
    m->steps = m->total = 0;
}

static void meter_flush(meter *m) {
    uint64_t n = m->steps;
    m->steps = 0;
    m->total += n;
    if (m->b && n) {
        const char *msg = m->b->charge(m->b->ud, m->L, n, m->total);
        if (msg)
            raise_msg(m->L, msg);
    }
}

static inline void meter_add(meter *m, uint64_t n) {
    if ((m->steps += n) >= CHARGE_EVERY)
        meter_flush(m);
}

/* At the end of a call: what is left, unless it is little (a loop of
 * cheap calls is paid for by its instructions). */
static inline void meter_end(meter *m) {
    if (m->steps >= FREE_STEPS)
        meter_flush(m);
}

/* ---- the pattern matcher ------------------------------------------------ */

typedef struct mstate {
    meter m;
    const char *s0, *se; /* subject, its end */
    const char *pe;      /* pattern end */
    int depth;           /* nested calls left */
    int level;           /* captures open or closed */
    struct {
        const char *at;
        ptrdiff_t len; /* CAP_OPEN, CAP_POS or a length */
    } cap[MAXCAP];
} mstate;

static inline int uc(char c) { return (unsigned char)c; }

/* Does class letter cl (after '%') take byte c? Any other cl stands for
 * itself. */
static int class_has(int cl, int c) {
    int r;
    switch (tolower(cl)) {
    case 'a': r = isalpha(c); break;
    case 'c': r = iscntrl(c); break;
    case 'd': r = isdigit(c); break;
    case 'g': r = isgraph(c); break;
    case 'l': r = islower(c); break;
    case 'p': r = ispunct(c); break;
    case 's': r = isspace(c); break;
    case 'u': r = isupper(c); break;
    case 'w': r = isalnum(c); break;
    case 'x': r = isxdigit(c); break;
    default: return cl == c;
    }
    r = r != 0;
    return isupper(cl) ? !r : r;
}

/* Does the set [...] from p (at '[') to close (at its ']') take c? */
static int set_has(int c, const char *p, const char *close) {
    int yes = 1;
    if (p[1] == '^') {
        yes = 0;
        p++;
    }
    for (p++; p < close; p++) {
        if (*p == '%') {
            p++;
            if (class_has(uc(*p), c))
                return yes;
        } else if (p[1] == '-' && p + 2 < close) {
            if (uc(p[0]) <= c && c <= uc(p[2]))
                return yes;
            p += 2;
        } else if (uc(*p) == c) {
            return yes;
        }
    }
    return !yes;
}

/* End of the single-byte item at p (a byte, '.', %x or a set). */
static const char *item_end(mstate *ms, const char *p) {
    char c = *p++;
    if (c == '%') {
        if (p >= ms->pe)
            luaL_error(ms->m.L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (p < ms->pe && *p == '^')
            p++;
        do { /* the first byte is taken as it is, even a ']' */
            if (p >= ms->pe)
                luaL_error(ms->m.L, "malformed pattern (missing ']')");
            c = *p++;
            if (c == '%' && p < ms->pe)
                p++;
        } while (p >= ms->pe || *p != ']');
        return p + 1;
    }
    return p;
}

/* Does the item p..ep take the subject byte at s? */
static inline int item_has(const mstate *ms, const char *s, const char *p,
                           const char *ep) {
    if (s >= ms->se)
        return 0;
    int c = uc(*s);
    switch (*p) {
    case '.': return 1;
    case '%': return class_has(uc(p[1]), c);
    case '[': return set_has(c, p, ep - 1);
    default: return uc(*p) == c;
    }
}

static const char *match(mstate *ms, const char *s, const char *p);

/* item* or item+ (s past the first): longest run first, then shorter. */
static const char *greedy(mstate *ms, const char *s, const char *p, const char *ep) {
    ptrdiff_t n = 0;
    while (item_has(ms, s + n, p, ep))
        n++;
    meter_add(&ms->m, (uint64_t)n);
    for (; n >= 0; n--) {
        const char *r = match(ms, s + n, ep + 1);
        if (r)
            return r;
    }
    return NULL;
}

/* item-: shortest run first. */
static const char *lazy(mstate *ms, const char *s, const char *p, const char *ep) {
    for (;;) {
        const char *r = match(ms, s, ep + 1);
        if (r)
            return r;
        if (!item_has(ms, s, p, ep))
            return NULL;
        s++;
    }
}

static const char *open_capture(mstate *ms, const char *s, const char *p,
                                ptrdiff_t what) {
    if (ms->level >= MAXCAP)
        luaL_error(ms->m.L, "too many captures");
    ms->cap[ms->level].at = s;
    ms->cap[ms->level].len = what;
    ms->level++;
    const char *r = match(ms, s, p);
    if (!r)
        ms->level--;
    return r;
}

static const char *close_capture(mstate *ms, const char *s, const char *p) {
    int l = ms->level - 1;
    while (l >= 0 && ms->cap[l].len != CAP_OPEN)
        l--;
    if (l < 0)
        luaL_error(ms->m.L, "invalid pattern capture");
    ms->cap[l].len = s - ms->cap[l].at;
    const char *r = match(ms, s, p);
    if (!r)
        ms->cap[l].len = CAP_OPEN;
    return r;
}

/* %1..%9: the text of a closed capture again (a position capture never
 * matches). */
static const char *back_ref(mstate *ms, const char *s, int digit) {
    int l = digit - '1';
    if (l < 0 || l >= ms->level || ms->cap[l].len == CAP_OPEN)
        luaL_error(ms->m.L, "invalid capture index %%%d", l + 1);
    if (ms->cap[l].len < 0)
        return NULL;
    size_t len = (size_t)ms->cap[l].len;
    meter_add(&ms->m, len / REC_SANDBOX_BYTES_PER_STEP);
    if ((size_t)(ms->se - s) >= len && memcmp(ms->cap[l].at, s, len) == 0)
        return s + len;
    return NULL;
}

/* %bxy at s (p points to x). */
static const char *balance(mstate *ms, const char *s, const char *p) {
    if (p + 1 >= ms->pe)
        luaL_error(ms->m.L, "malformed pattern (missing arguments to '%%b')");
    if (s >= ms->se || *s != p[0])
        return NULL;
    const char *start = s;
    long open = 1;
    while (++s < ms->se) {
        if (*s == p[1]) {
            if (--open == 0) {
                meter_add(&ms->m, (uint64_t)(s - start));
                return s + 1;
            }
        } else if (*s == p[0]) {
            open++;
        }
    }
    meter_add(&ms->m, (uint64_t)(s - start));
    return NULL;
}

/* Match pattern p (to ms->pe) at subject position s: the end of the match
 * or NULL. */
static const char *match(mstate *ms, const char *s, const char *p) {
    if (ms->depth-- == 0)
        luaL_error(ms->m.L, "pattern too complex");
    for (;;) {
        meter_add(&ms->m, 1);
        if (p == ms->pe)
            goto out;
        if (*p == '(') {
            if (p + 1 < ms->pe && p[1] == ')')
                s = open_capture(ms, s, p + 2, CAP_POS);
            else
                s = open_capture(ms, s, p + 1, CAP_OPEN);
            goto out;
        }
        if (*p == ')') {
            s = close_capture(ms, s, p + 1);
            goto out;
        }
        if (*p == '$' && p + 1 == ms->pe) {
            if (s != ms->se)
                s = NULL;
            goto out;
        }
        if (*p == '%' && p + 1 < ms->pe) {
            char k = p[1];
            if (k == 'b') {
                s = balance(ms, s, p + 2);
                if (!s)
                    goto out;
                p += 4;
                continue;
            }
            if (k == 'f') {
                p += 2;
                if (p >= ms->pe || *p != '[')
                    luaL_error(ms->m.L, "missing '[' after '%%f' in pattern");
                const char *ep = item_end(ms, p);
                int before = s == ms->s0 ? 0 : uc(s[-1]);
                int here = s < ms->se ? uc(*s) : 0;
                if (set_has(before, p, ep - 1) || !set_has(here, p, ep - 1)) {
                    s = NULL;
                    goto out;
                }
                p = ep;
                continue;
            }
            if (k >= '0' && k <= '9') {
                s = back_ref(ms, s, uc(k));
                if (!s)
                    goto out;
                p += 2;
                continue;
            }
        }
        const char *ep = item_end(ms, p);
        char q = ep < ms->pe ? *ep : '\0';
        if (!item_has(ms, s, p, ep)) {
            if (q == '*' || q == '?' || q == '-') {
                p = ep + 1; /* zero repetitions */
                continue;
            }
            s = NULL;
            goto out;
        }
        if (q == '?') {
            const char *r = match(ms, s + 1, ep + 1);
            if (r) {
                s = r;
                goto out;
            }
            p = ep + 1;
            continue;
        }
        if (q == '+') {
            s = greedy(ms, s + 1, p, ep);
            goto out;
        }
        if (q == '*') {
            s = greedy(ms, s, p, ep);
            goto out;
        }
        if (q == '-') {
            s = lazy(ms, s, p, ep);
            goto out;
        }
        s++;
        p = ep;
    }
out:
    ms->depth++;
    return s;
}

static void ms_init(mstate *ms, lua_State *L, const char *s, size_t ls,
                    const char *p, size_t lp) {
    ms->m.L = L;
    ms->m.b = NULL;
    ms->m.steps = ms->m.total = 0;
    ms->s0 = s;
    ms->se = s + ls;
    ms->pe = p + lp;
    ms->depth = MAXDEPTH;
    ms->level = 0;
}

static void ms_reset(mstate *ms) {
    ms->level = 0;
    ms->depth = MAXDEPTH;
}

/* Push capture i of the match s..e (the whole match when there are no
 * captures and i is 0). [-0, +1, v] */
static void push_capture(mstate *ms, int i, const char *s, const char *e) {
    lua_State *L = ms->m.L;
    if (i >= ms->level) {
        if (i != 0)
            luaL_error(L, "invalid capture index %%%d", i + 1);
        meter_add(&ms->m, (uint64_t)(e - s) / REC_SANDBOX_BYTES_PER_STEP);
        lua_pushlstring(L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = ms->cap[i].len;
    if (len == CAP_OPEN)
        luaL_error(L, "unfinished capture");
    if (len == CAP_POS) {
        lua_pushinteger(L, (lua_Integer)(ms->cap[i].at - ms->s0) + 1);
        return;
    }
    meter_add(&ms->m, (uint64_t)len / REC_SANDBOX_BYTES_PER_STEP);
    lua_pushlstring(L, ms->cap[i].at, (size_t)len);
}

/* Push every capture (or the whole match s..e when there are none and s
 * is not NULL). [-0, +n, v] */
static int push_captures(mstate *ms, const char *s, const char *e) {
    int n = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->m.L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(ms, i, s, e);
    return n;
}

/* Start position (1-based) of an init argument, as string.find reads it. */
static size_t start_pos(lua_Integer pos, size_t len) {
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

/* First occurrence of p (lp bytes) in s (ls bytes): memchr and memcmp as
 * the stock library (fast on ordinary text) until the comparisons have
 * cost more than the bytes passed, then memmem (linear whatever the two
 * strings). *work gets an upper bound of the bytes looked at. */
static const char *find_plain(const char *s, size_t ls, const char *p, size_t lp,
                              size_t *work) {
    *work = 0;
    if (lp == 0)
        return s;
    if (lp > ls)
        return NULL;
    const char *at = s, *last = s + (ls - lp); /* the last candidate */
    size_t compared = 0;
    while (at <= last) {
        const char *c = memchr(at, p[0], (size_t)(last - at) + 1);
        if (!c)
            break;
        compared += lp;
        if (memcmp(c + 1, p + 1, lp - 1) == 0) {
            *work = (size_t)(c - s) + compared;
            return c;
        }
        at = c + 1;
        if (compared > (size_t)(at - s) + FREE_BYTES) {
            const char *r = memmem(at, (size_t)(s + ls - at), p, lp);
            *work = ls + compared;
            return r;
        }
    }
    *work = ls + compared;
    return NULL;
}

static int no_specials(const char *p, size_t lp) {
    for (size_t i = 0; i < lp; i++)
        if (p[i] && strchr("^$*+?.([%-", p[i]))
            return 0;
    return 1;
}

/* string.find and string.match. [-(2|3|4), +?, v] */
static int find_aux(lua_State *L, int find) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_pos(luaL_optinteger(L, 3, 1), ls);
    if (init > ls + 1) {
        lua_pushnil(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || no_specials(p, lp))) {
        const char *from = s + init - 1;
        size_t work;
        const char *hit = find_plain(from, ls - init + 1, p, lp, &work);
        charge_bytes(L, work);
        if (hit) {
            lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)(hit - s) + (lua_Integer)lp);
            return 2;
        }
    } else {
        mstate ms;
        const char *s1 = s + init - 1;
        int anchor = lp > 0 && *p == '^';
        if (anchor) {
            p++;
            lp--;
        }
        ms_init(&ms, L, s, ls, p, lp);
        ms.m.b = get_budget(L);
        do {
            ms_reset(&ms);
            const char *e = match(&ms, s1, p);
            if (e) {
                int n;
                if (find) {
                    lua_pushinteger(L, (lua_Integer)(s1 - s) + 1);
                    lua_pushinteger(L, (lua_Integer)(e - s));
                    n = push_captures(&ms, NULL, NULL) + 2;
                } else {
                    n = push_captures(&ms, s1, e);
                }
                meter_end(&ms.m);
                return n;
            }
        } while (s1++ < ms.se && !anchor);
        meter_end(&ms.m);
    }
    lua_pushnil(L);
    return 1;
}

/* string.find(s, pattern [, init [, plain]]) [-(2..4), +?, v] */
static int str_find(lua_State *L) { return find_aux(L, 1); }

/* string.match(s, pattern [, init]) [-(2|3), +?, v] */
static int str_match(lua_State *L) { return find_aux(L, 0); }

typedef struct gmatch_state {
    const char *s, *p;   /* held by the iterator's upvalues */
    size_t ls, lp;
    const char *src;     /* where the next search starts */
    const char *last;    /* end of the last match, or NULL */
    const rec_sandbox_budget *b; /* read once, when gmatch was called */
} gmatch_state;

/* The iterator string.gmatch returns. [-0, +?, v] */
static int gmatch_next(lua_State *L) {
    gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    mstate ms;
    ms_init(&ms, L, g->s, g->ls, g->p, g->lp);
    ms.m.b = g->b;
    for (const char *src = g->src; src <= ms.se; src++) {
        ms_reset(&ms);
        const char *e = match(&ms, src, g->p);
        if (e && e != g->last) {
            g->src = g->last = e;
            int n = push_captures(&ms, src, e);
            meter_end(&ms.m);
            return n;
        }
    }
    g->src = ms.se + 1; /* nothing more: later calls return at once */
    meter_end(&ms.m);
    return 0;
}

/* string.gmatch(s, pattern [, init]) [-(2|3), +1, m] */
static int str_gmatch(lua_State *L) {
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
    if (init > ls)
        init = ls + 1; /* past the end: no match */
    lua_settop(L, 2);
    gmatch_state *g = lua_newuserdatauv(L, sizeof *g, 0);
    g->s = s;
    g->p = p;
    g->ls = ls;
    g->lp = lp;
    g->src = s + init;
    g->last = NULL;
    g->b = get_budget(L);
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* Append repl (the string at index 3) with its %0..%9 and %%. */
static void add_repl_string(mstate *ms, luaL_Buffer *b, const char *s, const char *e) {
    lua_State *L = ms->m.L;
    size_t l;
    const char *r = lua_tolstring(L, 3, &l);
    const char *pct;
    while ((pct = memchr(r, '%', l)) != NULL) {
        luaL_addlstring(b, r, (size_t)(pct - r));
        char k = pct + 1 < r + l ? pct[1] : '\0';
        if (k == '%') {
            luaL_addchar(b, '%');
        } else if (k == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit(uc(k))) {
            push_capture(ms, k - '1', s, e);
            luaL_tolstring(L, -1, NULL);
            lua_remove(L, -2);
            luaL_addvalue(b);
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", '%');
        }
        l -= (size_t)(pct + 2 - r);
        r = pct + 2;
    }
    luaL_addlstring(b, r, l);
}

/* Append the replacement of match s..e; 0 when the match is kept as it
 * is (a false or nil replacement value). */
static int add_repl(mstate *ms, luaL_Buffer *b, const char *s, const char *e, int tr) {
    lua_State *L = ms->m.L;
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(ms, s, e);
        lua_call(L, n, 1);
    } else if (tr == LUA_TTABLE) {
        push_capture(ms, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_repl_string(ms, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

/* string.gsub(s, pattern, repl [, n]) [-(3|4), +2, v] */
static int str_gsub(lua_State *L) {
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *last = NULL;
    int tr = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    int anchor = lp > 0 && *p == '^';
    lua_Integer n = 0;
    int changed = 0;
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
                            tr == LUA_TTABLE, 3, "string/function/table");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--;
    }
    mstate ms;
    ms_init(&ms, L, src, ls, p, lp);
    ms.m.b = get_budget(L);
    while (n < max) {
        ms_reset(&ms);
        const char *e = match(&ms, src, p);
        if (e && e != last) {
            size_t before = luaL_bufflen(&b);
            n++;
            changed |= add_repl(&ms, &b, src, e, tr);
            meter_add(&ms.m, (luaL_bufflen(&b) - before) / REC_SANDBOX_BYTES_PER_STEP);
            src = last = e;
        } else if (src < ms.se) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, src, (size_t)(ms.se - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    meter_end(&ms.m);
    return 2;
}

/* ---- other string functions --------------------------------------------- */

/* string.rep(s, n [, sep]): the size is checked against the memory the
 * call has left before anything is allocated. [-(2|3), +1, v] */
static int str_rep(lua_State *L) {
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || (l | lsep) == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > MAXSIZE / (size_t)n)
        return luaL_error(L, "resulting string too large");
    size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
    rec_sandbox_reserve(L, total);
    charge_bytes(L, total);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, total);
    char *q = out;
    memcpy(q, s, l);
    q += l;
    if (n > 1) {
        memcpy(q, sep, lsep);
        q += lsep;
        /* the rest doubles what is written: [s sep]* then the last s */
        size_t unit = l + lsep, done = unit, want = (size_t)(n - 1) * unit;
        while (done < want) {
            size_t c = done < want - done ? done : want - done;
            memcpy(out + done, out, c);
            done += c;
        }
        memcpy(out + want, s, l);
    }
    luaL_pushresultsize(&b, total);
    return 1;
}

/* Is spec (between '%' and the conversion 's') one the stock format takes:
 * '-' flags, at most two width digits, '.' and at most two digits? */
static int plain_s_spec(const char *p, const char *conv) {
    while (p < conv && *p == '-')
        p++;
    for (int i = 0; i < 2 && p < conv && isdigit(uc(*p)); i++)
        p++;
    if (p < conv && *p == '.') {
        p++;
        for (int i = 0; i < 2 && p < conv && isdigit(uc(*p)); i++)
            p++;
    }
    return p == conv;
}

/* string.format(fmt, ...): the result's size is estimated from the
 * format (each conversion but %s and %q makes at most a few hundred
 * bytes: widths and precisions have two digits) and checked against the
 * memory left; %s arguments are converted here, once, so their size is
 * known. Then the stock function formats. [-n, +1, v] */
static int str_format(lua_State *L) {
    lua_CFunction stock = lua_tocfunction(L, lua_upvalueindex(1));
    size_t lf;
    const char *f = luaL_checklstring(L, 1, &lf);
    const char *fe = f + lf;
    int top = lua_gettop(L), arg = 1;
    size_t est = lf;
    for (const char *p = f; p < fe; p++) {
        if (*p != '%')
            continue;
        if (++p >= fe || *p == '%')
            continue;
        const char *c = p;
        while (c < fe && *c && strchr("-+ #0123456789.", *c))
            c++;
        if (c >= fe || c - p > 8 || ++arg > top)
            break; /* the stock function reports it */
        if (*c == 's' && plain_s_spec(p, c)) {
            size_t l;
            if (lua_type(L, arg) == LUA_TSTRING) {
                l = lua_rawlen(L, arg);
            } else {
                luaL_tolstring(L, arg, &l);
                lua_replace(L, arg);
            }
            est += l + 100;
        } else if (*c == 'q' && lua_type(L, arg) == LUA_TSTRING) {
            est += 4 * lua_rawlen(L, arg) + 2;
        } else {
            est += 512;
        }
        p = c;
    }
    if (est >= FREE_BYTES) {
        rec_sandbox_reserve(L, est);
        charge_bytes(L, est);
    }
    return stock(L);
}

/* The stock C function (upvalue 1), then a charge for what it returned:
 * strings by size, other values a step each. [-?, +?, v] */
static int charged(lua_State *L) {
    lua_CFunction stock = lua_tocfunction(L, lua_upvalueindex(1));
    int n = stock(L);
    int top = lua_gettop(L);
    uint64_t bytes = 0;
    for (int i = top - n + 1; i <= top; i++)
        if (lua_type(L, i) == LUA_TSTRING)
            bytes += lua_rawlen(L, i);
    uint64_t steps = (uint64_t)n + bytes / REC_SANDBOX_BYTES_PER_STEP;
    if (steps >= FREE_BYTES / REC_SANDBOX_BYTES_PER_STEP)
        rec_sandbox_charge(L, steps);
    return n;
}

/* ---- table functions --------------------------------------------------- */

#define TAB_R 1 /* read */
#define TAB_W 2 /* write */
#define TAB_L 4 /* length */

static int has_meta(lua_State *L, const char *key, int n) {
    lua_pushstring(L, key);
    return lua_rawget(L, -n) != LUA_TNIL;
}

/* A table, or a value whose metatable has what the access needs. */
static void check_tab(lua_State *L, int arg, int what) {
    if (lua_type(L, arg) == LUA_TTABLE)
        return;
    int n = 1;
    if (lua_getmetatable(L, arg) && (!(what & TAB_R) || has_meta(L, "__index", ++n)) &&
        (!(what & TAB_W) || has_meta(L, "__newindex", ++n)) &&
        (!(what & TAB_L) || has_meta(L, "__len", ++n)))
        lua_pop(L, n);
    else
        luaL_checktype(L, arg, LUA_TTABLE);
}

static lua_Integer tab_len(lua_State *L, int arg, int what) {
    check_tab(L, arg, what | TAB_L);
    return luaL_len(L, arg);
}

/* table.insert(t, [pos,] v): one step per element shifted. [-(2|3), +0, e] */
static int tab_insert(lua_State *L) {
    lua_Integer e = tab_len(L, 1, TAB_R | TAB_W);
    e = (lua_Integer)((lua_Unsigned)e + 1u);
    lua_Integer pos;
    switch (lua_gettop(L)) {
    case 2:
        pos = e;
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2,
                      "position out of bounds");
        rec_sandbox_charge(L, (uint64_t)(e - pos));
        for (lua_Integer i = e; i > pos; i--) {
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
        }
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

/* table.remove(t [, pos]): one step per element shifted. [-(1|2), +1, e] */
static int tab_remove(lua_State *L) {
    lua_Integer size = tab_len(L, 1, TAB_R | TAB_W);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size)
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1,
                      "position out of bounds");
    if (pos < size)
        rec_sandbox_charge(L, (uint64_t)(size - pos));
    lua_geti(L, 1, pos);
    for (; pos < size; pos++) {
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

/* table.move(a1, f, e, t [, a2]): every element is charged before the
 * first moves, so a huge range fails at once. [-(4|5), +1, e] */
static int tab_move(lua_State *L) {
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1;
    check_tab(L, 1, TAB_R);
    check_tab(L, tt, TAB_W);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        rec_sandbox_charge(L, (uint64_t)n);
        if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (lua_Integer i = 0; i < n; i++) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        } else {
            for (lua_Integer i = n - 1; i >= 0; i--) {
                lua_geti(L, 1, f + i);
                lua_seti(L, tt, t + i);
            }
        }
    }
    lua_pushvalue(L, tt);
    return 1;
}

/* table.concat(t [, sep [, i [, j]]]): the separators' share of the size
 * is checked against the memory left first; each element costs a step
 * and its bytes. [-(1..4), +1, e] */
static int tab_concat(lua_State *L) {
    lua_Integer last = tab_len(L, 1, TAB_R);
    size_t lsep;
    const char *sep = luaL_optlstring(L, 2, "", &lsep);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    last = luaL_optinteger(L, 4, last);
    if (i < last) {
        lua_Unsigned gaps = (lua_Unsigned)last - (lua_Unsigned)i;
        if (lsep && gaps > (lua_Unsigned)(SIZE_MAX / lsep))
            return luaL_error(L, "resulting string too large");
        if ((size_t)gaps * lsep >= FREE_BYTES)
            rec_sandbox_reserve(L, (size_t)gaps * lsep);
    }
    meter m;
    meter_init(&m, L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (; i <= last; i++) {
        lua_geti(L, 1, i);
        if (!lua_isstring(L, -1))
            return luaL_error(L, "invalid value (%s) at index %I in table for 'concat'",
                              luaL_typename(L, -1), (LUAI_UACINT)i);
        meter_add(&m, 1 + lua_rawlen(L, -1) / REC_SANDBOX_BYTES_PER_STEP);
        luaL_addvalue(&b);
        if (i == last)
            break; /* i + 1 could overflow */
        luaL_addlstring(&b, sep, lsep);
    }
    luaL_pushresult(&b);
    meter_end(&m);
    return 1;
}

/* table.sort: a merge sort on the stack, or for arrays too large for it a
 * bottom-up heap sort in place (lua_geti and lua_seti: metamethods apply,
 * as in the stock sort): at most about n log2 n + 2n comparisons whatever
 * the input or the comparator, each charged a step (plus its bytes for
 * strings). The table stays a permutation of its elements even when a
 * comparison raises; a final pass checks the order, so a comparator that
 * is not a strict order fails with an error rather than leave the table
 * unsorted. */
typedef struct sorter {
    meter m;
    int cmp;  /* a comparator function is at index 2 */
    int base; /* > 0: t[i] is held at stack index base + i - 1 */
} sorter;

/* Push t[i] / pop the top into t[i]. */
static inline void sort_get(sorter *st, lua_Integer i) {
    if (st->base)
        lua_pushvalue(st->m.L, st->base + (int)i - 1);
    else
        lua_geti(st->m.L, 1, i);
}

static inline void sort_set(sorter *st, lua_Integer i) {
    if (st->base)
        lua_replace(st->m.L, st->base + (int)i - 1);
    else
        lua_seti(st->m.L, 1, i);
}

/* Is the value at index a less than the one at b? [-0, +0, e] */
static int sort_less(sorter *st, int a, int b) {
    lua_State *L = st->m.L;
    if (!st->cmp) {
        uint64_t cost = 1;
        if (lua_type(L, a) == LUA_TSTRING && lua_type(L, b) == LUA_TSTRING) {
            size_t la = lua_rawlen(L, a), lb = lua_rawlen(L, b);
            cost += (la < lb ? la : lb) / REC_SANDBOX_BYTES_PER_STEP;
        }
        meter_add(&st->m, cost);
        return lua_compare(L, a, b, LUA_OPLT);
    }
    meter_add(&st->m, 1);
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, a);
    lua_pushvalue(L, b);
    lua_call(L, 2, 1);
    int r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

/* Is t[i] less than t[j]? */
static int less_at(sorter *st, lua_Integer i, lua_Integer j) {
    if (st->base)
        return sort_less(st, st->base + (int)i - 1, st->base + (int)j - 1);
    sort_get(st, i);
    sort_get(st, j);
    int r = sort_less(st, -2, -1);
    lua_pop(st->m.L, 2);
    return r;
}

/* Sift the element at root down the heap t[root..n]. */
static void sift(sorter *st, lua_Integer root, lua_Integer n) {
    lua_State *L = st->m.L;
    sort_get(st, root); /* x */
    int x = lua_gettop(L);
    lua_Integer j = root;
    while (2 * j < n) { /* two children: follow the larger to a leaf */
        j = less_at(st, 2 * j, 2 * j + 1) ? 2 * j + 1 : 2 * j;
    }
    if (2 * j == n)
        j = n;
    while (j > root) { /* climb back to where x belongs */
        int below;
        if (st->base) {
            below = sort_less(st, st->base + (int)j - 1, x);
        } else {
            sort_get(st, j);
            below = sort_less(st, -1, x);
            lua_pop(L, 1);
        }
        if (!below)
            break;
        j /= 2;
    }
    /* x goes to j; each element on the path from j up to root moves one
     * level up; the old t[root] (x itself) drops out. */
    lua_pushvalue(L, x);
    for (lua_Integer k = j;; k /= 2) {
        sort_get(st, k);
        lua_insert(L, -2);
        sort_set(st, k);
        if (k == root)
            break;
    }
    lua_settop(L, x - 1);
}

/* Merge sort of the n values from stack index a, with n free slots from
 * b: n log2 n comparisons at most, cheap copies. Returns the index where
 * the sorted values are (a or b). */
static int merge_sort(sorter *st, int a, int b, int n) {
    lua_State *L = st->m.L;
    int src = a, dst = b;
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                if (sort_less(st, src + j, src + i))
                    lua_copy(L, src + j++, dst + k++);
                else
                    lua_copy(L, src + i++, dst + k++);
            }
            while (i < mid)
                lua_copy(L, src + i++, dst + k++);
            while (j < hi)
                lua_copy(L, src + j++, dst + k++);
        }
        int t = src;
        src = dst;
        dst = t;
    }
    return src;
}

/* table.sort(t [, comp]) [-(1|2), +0, e]
 * Arrays that fit are sorted on the Lua stack by a merge sort (read once,
 * written back once: a comparator that raises leaves the table as it
 * was); larger ones in place by the heap sort, through lua_geti and
 * lua_seti. */
static int tab_sort(lua_State *L) {
    lua_Integer n = tab_len(L, 1, TAB_R | TAB_W);
    if (n <= 1)
        return 0;
    luaL_argcheck(L, n < INT_MAX, 1, "array too big");
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    sorter st;
    meter_init(&st.m, L);
    st.cmp = !lua_isnil(L, 2);
    st.base = 0;
    if (n <= SORT_ON_STACK && lua_checkstack(L, 2 * (int)n + 8)) {
        meter_add(&st.m, (uint64_t)n);
        for (lua_Integer i = 1; i <= n; i++)
            lua_geti(L, 1, i);
        for (lua_Integer i = 1; i <= n; i++)
            lua_pushnil(L);
        st.base = merge_sort(&st, 3, 3 + (int)n, (int)n);
    } else {
        luaL_checkstack(L, 8, NULL);
        for (lua_Integer i = n / 2; i >= 1; i--)
            sift(&st, i, n);
        for (lua_Integer end = n; end > 1; end--) {
            sort_get(&st, 1);
            sort_get(&st, end);
            sort_set(&st, 1);
            sort_set(&st, end);
            sift(&st, 1, end - 1);
        }
    }
    for (lua_Integer i = 1; i < n; i++) {
        if (less_at(&st, i + 1, i))
            return luaL_error(L, "invalid order function for sorting");
    }
    if (st.base) {
        lua_settop(L, st.base + (int)n - 1);
        for (lua_Integer i = n; i >= 1; i--)
            lua_seti(L, 1, i); /* pops t[i], the top */
    }
    meter_end(&st.m);
    return 0;
}

/* ---- utf8 ------------------------------------------------------------------ */

#define MAXUNICODE 0x10FFFFu
#define MAXUTF 0x7FFFFFFFu
#define MSG_INVALID "invalid UTF-8 code"

static inline int is_cont(const char *s, const char *end) {
    return s < end && (uc(*s) & 0xC0) == 0x80;
}

/* Decode one sequence at s (before end): the byte after it, or NULL when
 * it is not valid (strict: no surrogates, nothing past U+10FFFF). */
static const char *utf8_decode(const char *s, const char *end, uint32_t *val, int strict) {
    unsigned c = (unsigned char)s[0];
    uint32_t res = 0;
    if (c < 0x80) {
        res = c;
    } else {
        static const uint32_t limits[] = {~(uint32_t)0, 0x80, 0x800, 0x10000u,
                                          0x200000u, 0x4000000u};
        int count = 0;
        for (; c & 0x40; c <<= 1) {
            count++;
            if (s + count >= end || (uc(s[count]) & 0xC0) != 0x80)
                return NULL;
            res = (res << 6) | (uc(s[count]) & 0x3F);
        }
        res |= (uint32_t)(c & 0x7F) << (count * 5);
        if (count > 5 || res > MAXUTF || res < limits[count])
            return NULL;
        s += count;
    }
    if (strict && (res > MAXUNICODE || (0xD800u <= res && res <= 0xDFFFu)))
        return NULL;
    if (val)
        *val = res;
    return s + 1;
}

/* A position argument relative to the end when negative. */
static lua_Integer u_pos(lua_Integer pos, size_t len) {
    if (pos >= 0)
        return pos;
    if ((size_t)0 - (size_t)pos > len)
        return 0;
    return (lua_Integer)len + pos + 1;
}

/* utf8.len(s [, i [, j [, lax]]]) [-(1..4), +(1|2), v] */
static int utf8_len(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer posi = u_pos(luaL_optinteger(L, 2, 1), len);
    lua_Integer posj = u_pos(luaL_optinteger(L, 3, -1), len);
    int lax = lua_toboolean(L, 4);
    luaL_argcheck(L, 1 <= posi && --posi <= (lua_Integer)len, 2,
                  "initial position out of bounds");
    luaL_argcheck(L, --posj < (lua_Integer)len, 3, "final position out of bounds");
    lua_Integer n = 0, from = posi;
    while (posi <= posj) {
        const char *next = utf8_decode(s + posi, s + len, NULL, !lax);
        if (!next) {
            charge_bytes(L, (size_t)(posi - from));
            lua_pushnil(L);
            lua_pushinteger(L, posi + 1);
            return 2;
        }
        posi = next - s;
        n++;
    }
    charge_bytes(L, (size_t)(posi - from));
    lua_pushinteger(L, n);
    return 1;
}

/* utf8.codepoint(s [, i [, j [, lax]]]) [-(1..4), +n, v] */
static int utf8_codepoint(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer posi = u_pos(luaL_optinteger(L, 2, 1), len);
    lua_Integer pose = u_pos(luaL_optinteger(L, 3, posi), len);
    int lax = lua_toboolean(L, 4);
    luaL_argcheck(L, posi >= 1, 2, "out of bounds");
    luaL_argcheck(L, pose <= (lua_Integer)len, 3, "out of bounds");
    if (posi > pose)
        return 0;
    if (pose - posi >= INT_MAX)
        return luaL_error(L, "string slice too long");
    int n = (int)(pose - posi) + 1;
    luaL_checkstack(L, n, "string slice too long");
    rec_sandbox_charge(L, (uint64_t)n / 4);
    n = 0;
    const char *end = s + len, *se = s + pose;
    for (s += posi - 1; s < se;) {
        uint32_t code;
        s = utf8_decode(s, end, &code, !lax);
        if (!s)
            return luaL_error(L, MSG_INVALID);
        lua_pushinteger(L, code);
        n++;
    }
    return n;
}

/* utf8.char(...) [-n, +1, v] */
static int utf8_char(lua_State *L) {
    int n = lua_gettop(L);
    rec_sandbox_charge(L, (uint64_t)n / 4);
    luaL_Buffer b;
    for (int i = 1; i <= n; i++) {
        lua_Unsigned code = (lua_Unsigned)luaL_checkinteger(L, i);
        luaL_argcheck(L, code <= MAXUTF, i, "value out of range");
    }
    if (n == 1) {
        lua_pushfstring(L, "%U", (long)luaL_checkinteger(L, 1));
        return 1;
    }
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        lua_pushfstring(L, "%U", (long)lua_tointeger(L, i));
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

/* utf8.offset(s, n [, i]) [-(2|3), +1, v] */
static int utf8_offset(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *end = s + len;
    lua_Integer n = luaL_checkinteger(L, 2);
    lua_Integer posi = u_pos(luaL_optinteger(L, 3, n >= 0 ? 1 : (lua_Integer)len + 1), len);
    luaL_argcheck(L, 1 <= posi && --posi <= (lua_Integer)len, 3, "position out of bounds");
    lua_Integer from = posi;
    if (n == 0) {
        while (posi > 0 && is_cont(s + posi, end))
            posi--;
    } else {
        if (is_cont(s + posi, end))
            return luaL_error(L, "initial position is a continuation byte");
        if (n < 0) {
            while (n < 0 && posi > 0) {
                do
                    posi--;
                while (posi > 0 && is_cont(s + posi, end));
                n++;
            }
        } else {
            n--;
            while (n > 0 && posi < (lua_Integer)len) {
                do
                    posi++;
                while (is_cont(s + posi, end));
                n--;
            }
        }
    }
    charge_bytes(L, (size_t)(posi > from ? posi - from : from - posi));
    if (n == 0)
        lua_pushinteger(L, posi + 1);
    else
        lua_pushnil(L);
    return 1;
}

/* The iterator of utf8.codes; upvalue 1: lax. The control value is the
 * position of the previous character (0 before the first); continuation
 * bytes after it are skipped. [-2, +(0|2), v] */
static int utf8_codes_next(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *end = s + len;
    lua_Unsigned n = (lua_Unsigned)lua_tointeger(L, 2), from = n;
    if (n < len) {
        while (is_cont(s + n, end))
            n++;
        charge_bytes(L, (size_t)(n - from));
    }
    if (n >= len)
        return 0;
    uint32_t code;
    if (!utf8_decode(s + n, end, &code, !lua_toboolean(L, lua_upvalueindex(1))))
        return luaL_error(L, MSG_INVALID);
    lua_pushinteger(L, (lua_Integer)n + 1);
    lua_pushinteger(L, code);
    return 2;
}

/* utf8.codes(s [, lax]) [-(1|2), +3, v] */
static int utf8_codes(lua_State *L) {
    int lax = lua_toboolean(L, 2);
    luaL_checkstring(L, 1);
    lua_pushboolean(L, lax);
    lua_pushcclosure(L, utf8_codes_next, 1);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    return 3;
}

/* ---- installing ------------------------------------------------------------ */

static const luaL_Reg string_own[] = {
    {"find", str_find}, {"match", str_match}, {"gmatch", str_gmatch},
    {"gsub", str_gsub}, {"rep", str_rep},     {NULL, NULL},
};
static const char *const string_charged[] = {"sub",  "upper", "lower",  "reverse",
                                             "byte", "char",  "pack",   "unpack",
                                             NULL};
static const luaL_Reg table_own[] = {
    {"concat", tab_concat}, {"insert", tab_insert}, {"remove", tab_remove},
    {"move", tab_move},     {"sort", tab_sort},     {NULL, NULL},
};
static const char *const table_charged[] = {"unpack", NULL};
static const luaL_Reg utf8_own[] = {
    {"len", utf8_len},       {"codepoint", utf8_codepoint}, {"char", utf8_char},
    {"offset", utf8_offset}, {"codes", utf8_codes},         {NULL, NULL},
};

/* t[name] = f(t[name]) for a C function t[name]: wrap it as a closure. */
static void wrap(lua_State *L, int t, const char *name, lua_CFunction f) {
    if (lua_getfield(L, t, name) == LUA_TFUNCTION && lua_tocfunction(L, -1)) {
        lua_pushcclosure(L, f, 1);
        lua_setfield(L, t, name);
    } else {
        lua_pop(L, 1);
    }
}

void rec_sandbox_patch(lua_State *L, int t, const char *lib) {
    const luaL_Reg *own = NULL;
    const char *const *chg = NULL;
    t = lua_absindex(L, t);
    if (strcmp(lib, "string") == 0) {
        own = string_own;
        chg = string_charged;
        wrap(L, t, "format", str_format);
    } else if (strcmp(lib, "table") == 0) {
        own = table_own;
        chg = table_charged;
    } else if (strcmp(lib, "utf8") == 0) {
        own = utf8_own;
    }
    for (; own && own->name; own++) {
        lua_pushcfunction(L, own->func);
        lua_setfield(L, t, own->name);
    }
    for (; chg && *chg; chg++)
        wrap(L, t, *chg, charged);
}
