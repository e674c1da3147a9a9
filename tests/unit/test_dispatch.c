/* test_dispatch.c - Lua out of memory on the request and event paths fails
 * one call, never the process: a full VM (the cap reached by a script's
 * globals) and an allocator failing on demand (rec_script_fail_alloc_after)
 * swept over rec.recommend, event.add, admin.eval and script.reload. Every
 * outcome is an answer (success or an error), the Lua stack is left as it
 * was, and the next call works. Each test runs on its own mkdtemp folder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <lauxlib.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "dispatch.h"
#include "engine.h"
#include "err.h"
#include "log.h"
#include "lua_api.h"
#include "rpc.h"
#include "script.h"
#include "value.h"

/* ---- fixture: an engine, scripts, a dispatcher ----------------------------- */

typedef struct fx {
    char root[64];
    char path[3][128]; /* data, scripts, policies */
    rec_engine *e;
    rec_script_rt *rt;
    rec_dispatch *d;
    int rec_ref;
    rec_session sess;
    rec_buf out;
    char err[512];
} fx;

static const char *const strategy_src =
    "local M = {}\n"
    "function M.recommend(req)\n"
    "  local out = {}\n"
    "  for i = 1, 5 do out[i] = {id = 'i' .. i, score = 10 - i + #(req.context and req.context.tags or {})} end\n"
    "  return out\n"
    "end\n"
    "keep = {}\n"
    "function M.fill(bytes) keep[#keep + 1] = ('z'):rep(bytes - 16) .. #keep return #keep end\n"
    "function M.drop() keep = {} return 0 end\n"
    "return M\n";

static const char *const policy_src =
    "local n = 0\n"
    "return {\n"
    "  on_event = function(ev) local t = {ev.user, ev.item, ev.context} n = n + 1 end,\n"
    "  rerank = function(req, items) local out = {} for i = #items, 1, -1 do out[#out + 1] = items[i] end return out end,\n"
    "  count = function() return n end,\n"
    "}\n";

static const char *const pipelines_src =
    "return {default = 'main', pipelines = {main = {strategies = {s = 1}, policies = {'p'}}}}\n";

static void put(const char *dir, const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
    assert_int_equal(fclose(fp), 0);
}

static void install_rec(lua_State *L, void *ud) {
    fx *f = ud;
    rec_lua_set_rec(L, f->e, &f->rec_ref);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    return remove(path);
}

static void fx_open(fx *f, size_t max_memory) {
    memset(f, 0, sizeof *f);
    strcpy(f->root, "/tmp/test_dispatch_XXXXXX");
    assert_non_null(mkdtemp(f->root));
    static const char *const sub[3] = {"data", "scripts", "policies"};
    char root[sizeof f->root];
    memcpy(root, f->root, sizeof root);
    for (int i = 0; i < 3; i++) {
        snprintf(f->path[i], sizeof f->path[i], "%s/%s", root, sub[i]);
        assert_int_equal(mkdir(f->path[i], 0700), 0);
    }
    put(f->path[1], "s.lua", strategy_src);
    put(f->path[1], "pipelines.lua", pipelines_src);
    put(f->path[2], "p.lua", policy_src);
    char err[256];
    assert_int_equal(rec_engine_open(&f->e, f->path[0], NULL, err, sizeof err), 0);
    rec_script_opts so;
    rec_script_opts_default(&so);
    so.scripts_dir = f->path[1];
    so.policies_dir = f->path[2];
    if (max_memory)
        so.max_memory = max_memory;
    assert_int_equal(rec_script_new(&f->rt, &so, install_rec, f, err, sizeof err), 0);
    rec_dispatch_opts dopt = {.auth_token = NULL, .version = "test"};
    assert_int_equal(rec_dispatch_new(&f->d, f->e, &dopt), 0);
    char cfg[200];
    snprintf(cfg, sizeof cfg, "%s/pipelines.lua", f->path[1]);
    assert_int_equal(rec_dispatch_set_scripts(f->d, f->rt, cfg, f->rec_ref), 0);
    f->sess.trusted = 1;
}

static void fx_close(fx *f) {
    rec_dispatch_session_end(f->d, &f->sess);
    rec_dispatch_free(f->d);
    rec_script_free(f->rt);
    rec_engine_free(f->e);
    rec_buf_free(&f->out);
    assert_int_equal(nftw(f->root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* ---- calls --------------------------------------------------------------------- */

typedef enum { REQ_RECOMMEND, REQ_EVENT, REQ_EVAL, REQ_RELOAD, REQ_ITEMS } req_kind;

static void pk_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* Params of each request; `ctx` bytes of context (a string) when > 0. */
static void pack_params(msgpack_sbuffer *sb, req_kind k, size_t ctx) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    char *big = NULL;
    if (ctx) {
        big = malloc(ctx);
        assert_non_null(big);
        memset(big, 'c', ctx);
    }
    switch (k) {
    case REQ_ITEMS:
        msgpack_pack_array(&pk, 5);
        for (int i = 1; i <= 5; i++) {
            char id[16];
            snprintf(id, sizeof id, "i%d", i);
            msgpack_pack_map(&pk, 1);
            pk_str(&pk, "id");
            pk_str(&pk, id);
        }
        break;
    case REQ_RECOMMEND:
    case REQ_EVENT:
        msgpack_pack_array(&pk, 1);
        msgpack_pack_map(&pk, k == REQ_EVENT ? 4 : 3);
        pk_str(&pk, "user");
        pk_str(&pk, k == REQ_EVENT ? "u2" : "u1"); /* u1 has seen nothing */
        if (k == REQ_EVENT) {
            pk_str(&pk, "item");
            pk_str(&pk, "i2");
            pk_str(&pk, "type");
            pk_str(&pk, "click");
        } else {
            pk_str(&pk, "n");
            msgpack_pack_int(&pk, 5);
        }
        pk_str(&pk, "context");
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, "tags");
        msgpack_pack_array(&pk, 20);
        for (int i = 0; i < 20; i++)
            pk_str(&pk, i % 2 ? "jazz" : "a longer tag that is not interned");
        pk_str(&pk, "blob");
        msgpack_pack_str(&pk, ctx);
        msgpack_pack_str_body(&pk, big ? big : "", ctx);
        break;
    case REQ_EVAL:
        msgpack_pack_array(&pk, 1);
        pk_str(&pk, "t = {1, 2, {a = 'x', b = {true, 2.5}}} return t, print, "
                    "setmetatable({print}, {__tostring = function() return 'obj' end})");
        break;
    case REQ_RELOAD:
        msgpack_pack_array(&pk, 0);
        break;
    }
    free(big);
}

static const char *const method_of[] = {"rec.recommend", "event.add", "admin.eval",
                                        "script.reload", "item.put"};

/* Run request k; writes are committed as the server's group commit would. */
static int call(fx *f, req_kind k, size_t ctx) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_params(&sb, k, ctx);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    const char *m = method_of[k];
    int method = rec_dispatch_find(f->d, m, strlen(m));
    assert_true(method >= 0);
    f->out.len = 0;
    int rc = rec_dispatch_call(f->d, method, &u.data, &f->sess, &f->out, f->err, sizeof f->err);
    if (rec_dispatch_flags(f->d, method) & REC_M_WRITE)
        assert_int_equal(rec_engine_commit(f->e), 0);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* The ids of rec.recommend's answer, concatenated ("i5i4..."). */
static void answer_ids(fx *f, char *ids, size_t cap) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, f->out.data, f->out.len, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    ids[0] = '\0';
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_object_kv *kv = &u.data.via.map.ptr[i];
        if (kv->key.via.str.size != 5 || memcmp(kv->key.via.str.ptr, "items", 5))
            continue;
        for (uint32_t j = 0; j < kv->val.via.array.size; j++) {
            msgpack_object *h = &kv->val.via.array.ptr[j];
            for (uint32_t q = 0; q < h->via.map.size; q++)
                if (h->via.map.ptr[q].key.via.str.size == 2 &&
                    !memcmp(h->via.map.ptr[q].key.via.str.ptr, "id", 2))
                    strncat(ids, h->via.map.ptr[q].val.via.str.ptr,
                            h->via.map.ptr[q].val.via.str.size);
        }
    }
    (void)cap;
    msgpack_unpacked_destroy(&u);
}

static lua_Integer events_seen(fx *f) {
    lua_State *L = rec_script_lua(f->rt);
    char err[256];
    assert_int_equal(rec_script_call(f->rt, REC_SCRIPT_POLICY, "p", "count", 0, 1, err,
                                     sizeof err), 0);
    lua_Integer n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    return n;
}

/* A call that works, with what it should answer. */
static void call_ok(fx *f, req_kind k) {
    lua_Integer before = k == REQ_EVENT ? events_seen(f) : 0;
    int rc = call(f, k, 0);
    if (rc)
        fail_msg("%s: %s", method_of[k], f->err);
    if (k == REQ_RECOMMEND) {
        char ids[64];
        answer_ids(f, ids, sizeof ids);
        assert_string_equal(ids, "i5i4i3i2i1"); /* the policy reversed them */
    } else if (k == REQ_EVENT) {
        assert_int_equal(events_seen(f), before + 1);
    }
}

/* ---- tests ------------------------------------------------------------------------ */

/* Every allocation from the n-th on fails, for n = 0, 1, ... until the call
 * no longer reaches the failure point. */
static void sweep(fx *f, req_kind k) {
    lua_State *L = rec_script_lua(f->rt);
    int top = lua_gettop(L);
    long n = 0;
    int failures = 0;
    for (;; n++) {
        if (n > 200000)
            fail_msg("%s: no end to the sweep", method_of[k]);
        lua_Integer before = k == REQ_EVENT ? events_seen(f) : 0;
        rec_script_fail_alloc_after(f->rt, n);
        int rc = call(f, k, 0);
        long left = rec_script_fail_alloc_after(f->rt, -1);
        assert_int_equal(lua_gettop(L), top);
        if (rc) {
            failures++;
            if (rc != REC_ESCRIPT && rc != REC_ENOMEM)
                fail_msg("%s, failing after %ld: %s (%s)", method_of[k], n,
                         rec_err_name(rc), f->err);
        }
        if (k == REQ_EVENT) {
            assert_int_equal(rc, 0); /* stored; the policy's failure is logged */
            lua_Integer d = events_seen(f) - before;
            assert_true(d == 0 || d == 1);
        }
        call_ok(f, k); /* the next call works */
        assert_int_equal(lua_gettop(L), top);
        if (left > 0)
            break; /* the call ran to its end without a refusal */
    }
    if (k != REQ_EVENT && k != REQ_RELOAD)
        assert_true(failures > 0);
    print_message("%s: %ld allocation points, %d failed calls\n", method_of[k], n, failures);
}

static void test_alloc_failures_fail_one_call(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0);
    call_ok(&f, REQ_ITEMS);
    call_ok(&f, REQ_RECOMMEND);
    call_ok(&f, REQ_EVENT);
    sweep(&f, REQ_RECOMMEND);
    sweep(&f, REQ_EVENT);
    sweep(&f, REQ_EVAL);
    sweep(&f, REQ_RELOAD);
    call_ok(&f, REQ_RECOMMEND);
    fx_close(&f);
}

/* The VM at its cap (a strategy's globals fill it): building the request
 * and the event for the scripts fails those calls, the process lives, and
 * once the memory is released every call works again. */
static void test_full_vm_fails_calls_not_the_process(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 24u << 20);
    call_ok(&f, REQ_ITEMS);
    call_ok(&f, REQ_RECOMMEND);
    lua_State *L = rec_script_lua(f.rt);
    int top = lua_gettop(L);
    char err[256];
    /* fill to within a few KiB of the cap */
    static const lua_Integer chunks[] = {1 << 20, 64 << 10, 4 << 10, 512};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        for (;;) {
            lua_pushinteger(L, chunks[i]);
            if (rec_script_call(f.rt, REC_SCRIPT_STRATEGY, "s", "fill", 1, 0, err, sizeof err))
                break;
        }
        assert_non_null(strstr(err, "memory budget exceeded"));
    }
    assert_int_equal(lua_gettop(L), top);
    for (int round = 0; round < 3; round++) {
        lua_Integer before = events_seen(&f);
        assert_int_equal(call(&f, REQ_RECOMMEND, 256 << 10), REC_ENOMEM);
        assert_non_null(strstr(f.err, "out of memory"));
        assert_int_equal(call(&f, REQ_EVENT, 256 << 10), 0); /* stored */
        assert_int_equal(events_seen(&f), before);          /* not handed over */
        assert_int_equal(lua_gettop(L), top);
    }
    assert_int_equal(rec_script_call(f.rt, REC_SCRIPT_STRATEGY, "s", "drop", 0, 0, err,
                                     sizeof err), 0);
    lua_gc(L, LUA_GCCOLLECT);
    call_ok(&f, REQ_RECOMMEND);
    call_ok(&f, REQ_EVENT);
    assert_int_equal(call(&f, REQ_RECOMMEND, 256 << 10), 0);
    fx_close(&f);
}

/* What a server that sends events on asks the dispatcher: event.add's
 * checks alone (nothing applied, the same messages), the flag that marks
 * the method, and one more sys.info section. */
static int pack_extra(void *ud, msgpack_packer *pk) {
    pk_str(pk, ud);
    return 0;
}

static void test_check_events_alone(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "user"), pk_str(&pk, "u1"), pk_str(&pk, "item"), pk_str(&pk, "i1");
    pk_str(&pk, "type"), pk_str(&pk, "click");
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "user"), pk_str(&pk, "u1"), pk_str(&pk, "type"), pk_str(&pk, "click");
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    char err[256];
    assert_int_equal(rec_dispatch_check_events(f.d, &u.data, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "params[1].item"));
    u.data.via.array.size = 1; /* the good event alone */
    assert_int_equal(rec_dispatch_check_events(f.d, &u.data, err, sizeof err), 0);
    assert_int_equal(rec_engine_events(f.e), 0); /* checked, not applied */
    /* the bad one alone: checked too (event.add leaves a lone event to
     * its apply, a cluster's check before the stream may not) */
    u.data.via.array.ptr[0] = u.data.via.array.ptr[1];
    assert_int_equal(rec_dispatch_check_events(f.d, &u.data, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "params[0].item"));
    int m = rec_dispatch_find(f.d, "event.add", 9);
    assert_true(rec_dispatch_flags(f.d, m) & REC_M_EVENTS);
    assert_false(rec_dispatch_flags(f.d, rec_dispatch_find(f.d, "item.put", 8)) & REC_M_EVENTS);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    /* sys.info with the section */
    static char here[] = "here";
    rec_dispatch_set_info(f.d, "extra", pack_extra, here);
    msgpack_object none = {.type = MSGPACK_OBJECT_ARRAY};
    f.out.len = 0;
    m = rec_dispatch_find(f.d, "sys.info", 8);
    assert_int_equal(rec_dispatch_call(f.d, m, &none, &f.sess, &f.out, f.err, sizeof f.err), 0);
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, f.out.data, f.out.len, NULL), MSGPACK_UNPACK_SUCCESS);
    int found = 0;
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        const msgpack_object *k = &u.data.via.map.ptr[i].key;
        const msgpack_object *v = &u.data.via.map.ptr[i].val;
        if (k->via.str.size == 5 && !memcmp(k->via.str.ptr, "extra", 5)) {
            found = 1;
            assert_int_equal(v->via.str.size, 4);
            assert_memory_equal(v->via.str.ptr, "here", 4);
        }
    }
    assert_true(found);
    msgpack_unpacked_destroy(&u);
    fx_close(&f);
}

/* The checks of a catalogue write alone (for a cluster, which publishes
 * it rather than apply it): what the method refuses is refused with the
 * same message, nothing is applied; and the method table's flags. */
static int check_write(fx *f, const char *method, msgpack_sbuffer *sb, char *err,
                       size_t errlen) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sb->data, sb->size, NULL), MSGPACK_UNPACK_SUCCESS);
    int m = rec_dispatch_find(f->d, method, strlen(method));
    int rc = rec_dispatch_check_write(f->d, m, &u.data, err, errlen);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_clear(sb);
    return rc;
}

static void test_check_write_alone(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char err[256];
    /* item.put: a good item, then one without id */
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 1), pk_str(&pk, "id"), pk_str(&pk, "i1");
    msgpack_pack_map(&pk, 1), pk_str(&pk, "props"), msgpack_pack_map(&pk, 0);
    assert_int_equal(check_write(&f, "item.put", &sb, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "params[1]"));
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 2), pk_str(&pk, "id"), pk_str(&pk, "i1");
    pk_str(&pk, "props"), msgpack_pack_int(&pk, 5);
    assert_int_equal(check_write(&f, "item.put", &sb, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "props must be a map"));
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1), pk_str(&pk, "id"), pk_str(&pk, "u1");
    assert_int_equal(check_write(&f, "user.put", &sb, err, sizeof err), 0);
    msgpack_pack_array(&pk, 0);
    assert_int_equal(check_write(&f, "user.put", &sb, err, sizeof err), REC_EINVAL);
    /* deletes: ids only */
    msgpack_pack_array(&pk, 2);
    pk_str(&pk, "i1"), msgpack_pack_map(&pk, 0);
    assert_int_equal(check_write(&f, "item.delete", &sb, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "params[1]"));
    msgpack_pack_array(&pk, 1);
    pk_str(&pk, "nobody");
    assert_int_equal(check_write(&f, "user.delete", &sb, err, sizeof err), 0);
    /* not a catalogue write */
    msgpack_pack_array(&pk, 0);
    assert_int_equal(check_write(&f, "sys.ping", &sb, err, sizeof err), REC_EINVAL);
    /* checked, nothing applied */
    assert_int_equal(rec_engine_count(f.e, REC_KIND_ITEM), 0);
    assert_int_equal(rec_engine_count(f.e, REC_KIND_USER), 0);
    static const char *const catalog[] = {"item.put", "item.delete", "user.put", "user.delete"};
    for (size_t i = 0; i < 4; i++) {
        unsigned fl = rec_dispatch_flags(f.d, rec_dispatch_find(f.d, catalog[i], strlen(catalog[i])));
        assert_true((fl & REC_M_CATALOG) && (fl & REC_M_WRITE));
    }
    static const char *const reads[] = {"user.get", "user.history", "rec.recommend",
                                        "item.get", "item.list", "rec.similar"};
    for (size_t i = 0; i < 6; i++) {
        unsigned fl = rec_dispatch_flags(f.d, rec_dispatch_find(f.d, reads[i], strlen(reads[i])));
        assert_true(fl & (REC_M_READ_USER | REC_M_READ_ITEMS));
        assert_false(fl & (REC_M_WRITE | REC_M_CATALOG));
    }
    assert_false(rec_dispatch_flags(f.d, rec_dispatch_find(f.d, "event.add", 9)) & REC_M_CATALOG);
    msgpack_sbuffer_destroy(&sb);
    fx_close(&f);
}

/* A policy with on_events gets the events in batches: those queued since
 * the last hand-over, given before any other call runs, before a commit,
 * and whenever REC_FANOUT_BATCH are queued; each in log order, the same
 * events one by one to a policy with on_event. */
static const char *const batch_policy_src =
    "local sizes, seqs, last = {}, {}, nil\n"
    "return {\n"
    "  on_events = function(b)\n"
    "    last = b\n"
    "    sizes[#sizes + 1] = #b\n"
    "    for i = 1, #b do seqs[#seqs + 1] = b[i].seq end\n"
    "    if b[1].user ~= 'u2' or b[1].item ~= 'i2' or b[1].type ~= 'click' then error('fields') end\n"
    "    if #b:list{types = {'view'}} ~= 0 or #b:list{types = {'click'}} ~= #b then error('list') end\n"
    "  end,\n"
    "  sizes = function() return table.concat(sizes, ',') end,\n"
    "  stale = function() local ok, e = pcall(function() return last[1] end) return tostring(e) end,\n"
    "  ordered = function()\n"
    "    for i = 2, #seqs do if seqs[i] ~= seqs[i - 1] + 1 then return false end end\n"
    "    return #seqs\n"
    "  end,\n"
    "}\n";

static void event_nocommit(fx *f) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_params(&sb, REQ_EVENT, 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, sb.data, sb.size, NULL), MSGPACK_UNPACK_SUCCESS);
    int method = rec_dispatch_find(f->d, "event.add", 9);
    f->out.len = 0;
    assert_int_equal(rec_dispatch_call(f->d, method, &u.data, &f->sess, &f->out, f->err,
                                       sizeof f->err), 0);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

static void batch_sizes(fx *f, const char *want) {
    lua_State *L = rec_script_lua(f->rt);
    char err[256];
    assert_int_equal(rec_script_call(f->rt, REC_SCRIPT_POLICY, "b", "sizes", 0, 1, err,
                                     sizeof err), 0);
    assert_string_equal(lua_tostring(L, -1), want);
    lua_pop(L, 1);
}

static void test_events_reach_policies_in_batches(void **state) {
    (void)state;
    fx f;
    fx_open(&f, 0);
    put(f.path[2], "b.lua", batch_policy_src);
    char err[256];
    assert_int_equal(rec_script_reload(f.rt, NULL, err, sizeof err), 0);
    call_ok(&f, REQ_ITEMS);
    for (int i = 0; i < 10; i++)
        event_nocommit(&f);
    batch_sizes(&f, "");              /* queued */
    assert_int_equal(events_seen(&f), 0);
    call_ok(&f, REQ_RECOMMEND);       /* any other call sees them learned */
    batch_sizes(&f, "10");
    assert_int_equal(events_seen(&f), 10); /* on_event: one call each */
    for (int i = 0; i < 300; i++)
        event_nocommit(&f);
    batch_sizes(&f, "10,256");        /* a full batch goes at once */
    assert_int_equal(rec_engine_commit(f.e), 0); /* and the rest before a commit */
    batch_sizes(&f, "10,256,44");
    assert_int_equal(events_seen(&f), 310);
    lua_State *L = rec_script_lua(f.rt);
    assert_int_equal(rec_script_call(f.rt, REC_SCRIPT_POLICY, "b", "ordered", 0, 1, err,
                                     sizeof err), 0);
    assert_int_equal(lua_tointeger(L, -1), 310); /* every event once, in log order */
    lua_pop(L, 1);
    assert_int_equal(rec_script_call(f.rt, REC_SCRIPT_POLICY, "b", "stale", 0, 1, err,
                                     sizeof err), 0);
    assert_non_null(strstr(lua_tostring(L, -1), "valid only during the on_events call"));
    lua_pop(L, 1);
    event_nocommit(&f);
    fx_close(&f); /* what is queued goes before the dispatcher does */
}


/* ---- lists shown across a cluster's nodes ------------------------------------- */

/* The params handed to the record hook, kept packed. */
static msgpack_sbuffer shared;
static int shared_lists;

static int keep_record(void *ud, const msgpack_object *params) {
    (void)ud;
    msgpack_sbuffer_clear(&shared);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &shared, msgpack_sbuffer_write);
    shared_lists++;
    return msgpack_pack_object(&pk, *params);
}

/* Run method with params given as packed bytes; its result in f->out. */
static int call_packed(fx *f, const char *m, const char *params, size_t len) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, params, len, NULL), MSGPACK_UNPACK_SUCCESS);
    int method = rec_dispatch_find(f->d, m, strlen(m));
    assert_true(method >= 0);
    f->out.len = 0;
    int rc = rec_dispatch_call(f->d, method, &u.data, &f->sess, &f->out, f->err, sizeof f->err);
    if (!rc && (rec_dispatch_flags(f->d, method) & REC_M_WRITE))
        assert_int_equal(rec_engine_commit(f->e), 0);
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* A click of user u1 on item naming rec_id. */
static void click(fx *f, const char *item, const char *rec_id) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "user");
    pk_str(&pk, "u1");
    pk_str(&pk, "item");
    pk_str(&pk, item);
    pk_str(&pk, "type");
    pk_str(&pk, "click");
    pk_str(&pk, "rec_id");
    pk_str(&pk, rec_id);
    assert_int_equal(call_packed(f, "event.add", sb.data, sb.size), 0);
    msgpack_sbuffer_destroy(&sb);
}

/* stats.get's pipeline main: impressions and clicks. */
static void main_totals(fx *f, double *imp, double *clk) {
    static const char none[] = {(char)0x90}; /* [] */
    assert_int_equal(call_packed(f, "stats.get", none, 1), 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, f->out.data, f->out.len, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    *imp = *clk = 0;
    const msgpack_object *pl = rec_value_field(&u.data, "pipelines");
    const msgpack_object *m = pl ? rec_value_field(pl, "main") : NULL;
    const msgpack_object *t = m ? rec_value_field(m, "total") : NULL;
    if (t) {
        *imp = rec_value_field(t, "impressions")->via.f64;
        *clk = rec_value_field(t, "clicks")->via.f64;
    }
    msgpack_unpacked_destroy(&u);
}

/* The rec_id and the first item of the answer in f->out. */
static void answer_list(fx *f, char *rec_id, char *item) {
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, f->out.data, f->out.len, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *r = rec_value_field(&u.data, "rec_id");
    const msgpack_object *items = rec_value_field(&u.data, "items");
    assert_non_null(r);
    assert_non_null(items);
    assert_true(items->via.array.size >= 2);
    snprintf(rec_id, 17, "%.*s", (int)r->via.str.size, r->via.str.ptr);
    for (int k = 0; k < 2; k++) {
        const msgpack_object *id = rec_value_field(&items->via.array.ptr[k], "id");
        snprintf(item + 8 * k, 8, "%.*s", (int)id->via.str.size, id->via.str.ptr);
    }
    msgpack_unpacked_destroy(&u);
}

static void test_records_across_nodes(void **state) {
    (void)state;
    fx a, b;
    fx_open(&a, 0);
    fx_open(&b, 0);
    msgpack_sbuffer_init(&shared);
    shared_lists = 0;
    rec_dispatch_set_records(a.d, 5, keep_record, NULL);
    rec_dispatch_set_records(b.d, 6, keep_record, NULL);
    /* b knows the items by other indexes: the record goes by ids */
    assert_int_equal(call_packed(&b, "item.put", "\x91\x81\xa2id\xa2i9", 8), 0);
    call_ok(&a, REQ_ITEMS);
    call_ok(&b, REQ_ITEMS);
    call_ok(&a, REQ_RECOMMEND);
    assert_int_equal(shared_lists, 1);
    char rid[17], items[16];
    answer_list(&a, rid, items);
    /* a's rec_ids carry its slot */
    assert_int_equal((strtoull(rid, NULL, 16) >> 12) & 1023, 5);
    double imp, clk;
    /* the click comes to b before the list: it waits */
    click(&b, items, rid);
    main_totals(&b, &imp, &clk);
    assert_true(imp == 0 && clk == 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, shared.data, shared.size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    char err[256];
    assert_int_equal(rec_dispatch_apply_record(b.d, &u.data, err, sizeof err), 0);
    msgpack_unpacked_destroy(&u);
    /* the list counted as shown on b, the waiting click credited */
    main_totals(&b, &imp, &clk);
    assert_true(imp == 5 && clk == 1);
    main_totals(&a, &imp, &clk);
    assert_true(imp == 5 && clk == 0);
    /* a click after the list: credited on both */
    click(&a, items + 8, rid);
    click(&b, items + 8, rid);
    main_totals(&a, &imp, &clk);
    assert_true(clk == 1);
    main_totals(&b, &imp, &clk);
    assert_true(clk == 2);
    /* a malformed record is refused with a message */
    msgpack_object bad = {.type = MSGPACK_OBJECT_ARRAY};
    assert_int_equal(rec_dispatch_apply_record(b.d, &bad, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "rec_id"));
    msgpack_object one = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = 7};
    bad.via.array.size = 1;
    bad.via.array.ptr = &one;
    assert_int_equal(rec_dispatch_apply_record(b.d, &bad, err, sizeof err), REC_EINVAL);
    assert_non_null(strstr(err, "list 0 of 1"));
    msgpack_sbuffer_destroy(&shared);
    fx_close(&a);
    fx_close(&b);
}

int main(void) {
    rec_log_set_level(REC_LOG_ERROR); /* the failures are logged as warnings */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_failures_fail_one_call),
        cmocka_unit_test(test_full_vm_fails_calls_not_the_process),
        cmocka_unit_test(test_check_events_alone),
        cmocka_unit_test(test_check_write_alone),
        cmocka_unit_test(test_events_reach_policies_in_batches),
        cmocka_unit_test(test_records_across_nodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
