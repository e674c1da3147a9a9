/* console.c - `recd console`: call a running server's methods by hand.
 *
 * A line is `method expr, expr, ...`: the params are Lua expressions,
 * compiled as "return <exprs>" in a small local state (base, string,
 * table, math, utf8: no engine, no io), packed with rec_value_pack_lua into
 * one array and sent with client.h. An expression left open ("{user =")
 * continues on the next line. Any other line is Lua for admin.eval,
 * continued the same way (repl.h's rec_repl_input_read_chunk and
 * rec_repl_incomplete), and sent only where the server allows it (the Unix
 * socket, or a token); elsewhere it is an error naming the nearest method.
 * Answers print indented on a terminal (repl.h's printer, admin.eval's
 * results each by itself) and as one JSON line each otherwise, so scripts
 * can pipe a session in and read one answer a line.
 */
#include "console.h"

#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "dispatch.h"
#include "err.h"
#include "lua_api.h"
#include "repl.h"

#define DEFAULT_ADDR "127.0.0.1:7700"
#define CALL_TIMEOUT_MS 60000

typedef struct console {
    rec_client *c;           /* NULL until connected, again after a failure */
    const char *addr;        /* borrowed from argv or static */
    char token[1024];        /* "" for none */
    int tty;                 /* pretty output, else JSON lines */
    lua_State *L;            /* evaluates params; owned */
    int printer;             /* stack index of the printer function */
    rec_client_reply reply;  /* reused for every call */
    int lua_ok;              /* admin.eval allowed: Unix socket or a token */
    int failed;              /* a line failed (the exit code when piped) */
    char **methods;          /* sys.methods' names, NULL-terminated; owned */
    size_t nmethods;
    lua_Integer items;       /* array elements shown (\set items); 0: 8 */
    rec_buf last;            /* the last answer's msgpack, for \more */
    int last_eval;           /* it holds admin.eval's results */
    int hinted;              /* the \more hint was shown */
} console;

/* What a server without sys.methods offers, for completion. */
static const char *const known_methods[] = {
    "sys.ping", "sys.hello", "sys.auth", "sys.info", "sys.methods", "item.put",
    "item.get", "item.delete", "user.put", "user.get", "user.delete", "item.list",
    "user.list", "user.history", "event.add", "rec.recommend", "rec.similar",
    "script.list", "script.status", "script.reload", "stats.get", "model.train",
    "admin.eval", NULL,
};

static const char *const commands[] = {
    "\\reload", "\\scripts", "\\stats", "\\info", "\\more", "\\set", "\\help", "\\quit", NULL,
};

/* ---- JSON ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    size_t len;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Append s[0..n) as a JSON string; bytes that are not UTF-8 become
 * \u00XX (read as Latin-1). */
static void json_str(rec_buf *o, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    rec_buf_append(o, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        char esc[8];
        const char *e = NULL;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default: break;
        }
        if (e) {
            rec_buf_append(o, e, strlen(e));
            i++;
            continue;
        }
        size_t len = c < 0x20 || c == 0x7f ? 0 : utf8_len(p + i, n - i);
        if (len == 0) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)c);
            rec_buf_append(o, esc, 6);
            i++;
        } else {
            rec_buf_append(o, p + i, len);
            i += len;
        }
    }
    rec_buf_append(o, "\"", 1);
}

static void json_base64(rec_buf *o, const unsigned char *p, size_t n) {
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    rec_buf_append(o, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63],
                     i + 1 < n ? tab[(v >> 6) & 63] : '=', i + 2 < n ? tab[v & 63] : '='};
        rec_buf_append(o, q, 4);
    }
    rec_buf_append(o, "\"", 1);
}

/* The shortest text that reads back as the same float (or double). */
static void json_float(rec_buf *o, double d, int single) {
    char s[40];
    if (!isfinite(d)) {
        rec_buf_append(o, "null", 4);
        return;
    }
    for (int prec = single ? 6 : 15; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, d);
        double back = strtod(s, NULL);
        if (single ? (float)back == (float)d : back == d)
            break;
    }
    rec_buf_append(o, s, strlen(s));
}

static void json_value(rec_buf *o, const msgpack_object *v) {
    char s[32];
    switch (v->type) {
    case MSGPACK_OBJECT_NIL:
        rec_buf_append(o, "null", 4);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        rec_buf_append(o, v->via.boolean ? "true" : "false", v->via.boolean ? 4 : 5);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(s, sizeof s, "%llu", (unsigned long long)v->via.u64);
        rec_buf_append(o, s, strlen(s));
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(s, sizeof s, "%lld", (long long)v->via.i64);
        rec_buf_append(o, s, strlen(s));
        break;
    case MSGPACK_OBJECT_FLOAT32:
        json_float(o, v->via.f64, 1);
        break;
    case MSGPACK_OBJECT_FLOAT64:
        json_float(o, v->via.f64, 0);
        break;
    case MSGPACK_OBJECT_STR:
        json_str(o, v->via.str.ptr, v->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN:
        json_base64(o, (const unsigned char *)v->via.bin.ptr, v->via.bin.size);
        break;
    case MSGPACK_OBJECT_EXT:
        json_base64(o, (const unsigned char *)v->via.ext.ptr, v->via.ext.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        rec_buf_append(o, "[", 1);
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            if (i)
                rec_buf_append(o, ",", 1);
            json_value(o, &v->via.array.ptr[i]);
        }
        rec_buf_append(o, "]", 1);
        break;
    case MSGPACK_OBJECT_MAP:
        rec_buf_append(o, "{", 1);
        for (uint32_t i = 0; i < v->via.map.size; i++) {
            const msgpack_object *k = &v->via.map.ptr[i].key;
            if (i)
                rec_buf_append(o, ",", 1);
            if (k->type == MSGPACK_OBJECT_STR) {
                json_str(o, k->via.str.ptr, k->via.str.size);
            } else { /* JSON keys are strings: quote the key's JSON text */
                rec_buf kb = REC_BUF_INIT;
                json_value(&kb, k);
                json_str(o, kb.data ? kb.data : "", kb.len);
                rec_buf_free(&kb);
            }
            rec_buf_append(o, ":", 1);
            json_value(o, &v->via.map.ptr[i].val);
        }
        rec_buf_append(o, "}", 1);
        break;
    default:
        rec_buf_append(o, "null", 4);
        break;
    }
}

/* ---- output -------------------------------------------------------------- */

static void print_error(console *k, const char *name, const char *message) {
    k->failed = 1;
    if (k->tty) {
        printf("error: %s: %s\n", name, message);
    } else {
        rec_buf o = REC_BUF_INIT;
        rec_buf_append(&o, "{\"error\":{\"name\":", 17);
        json_str(&o, name, strlen(name));
        rec_buf_append(&o, ",\"message\":", 11);
        json_str(&o, message, strlen(message));
        rec_buf_append(&o, "}}\n", 3);
        fwrite(o.data, 1, o.len, stdout);
        rec_buf_free(&o);
    }
    fflush(stdout);
}

/* Print the value on top of the stack with the printer and pop it; 1
 * when something was left out. */
static int print_value(console *k, int all) {
    lua_State *L = k->L;
    lua_pushvalue(L, k->printer);
    lua_insert(L, -2);
    lua_pushboolean(L, 1);
    lua_createtable(L, 0, 3);
    lua_Integer items = all ? LUA_MAXINTEGER : k->items;
    if (items) {
        lua_pushinteger(L, items);
        lua_setfield(L, -2, "items");
    }
    if (all) {
        lua_pushinteger(L, LUA_MAXINTEGER);
        lua_setfield(L, -2, "keys");
        lua_pushinteger(L, LUA_MAXINTEGER);
        lua_setfield(L, -2, "str");
    }
    if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
        lua_pop(L, 1);
        return -1;
    }
    puts(lua_tostring(L, -2));
    int cut = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return cut;
}

/* The answer in body[0..len) as values printed one a line: admin.eval's
 * results (an array) each by itself, none printed. */
static int print_pretty(console *k, const char *body, size_t len, int eval, int all) {
    lua_State *L = k->L;
    size_t used;
    if (rec_value_push_lua(L, body, len, &used) != 0)
        return -1;
    int cut = 0;
    if (eval && lua_istable(L, -1)) {
        /* the array's own count: a nil result leaves a hole in the table */
        const unsigned char *b = (const unsigned char *)body;
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        if (len >= 1 && b[0] >= 0x90 && b[0] <= 0x9f)
            n = b[0] & 0x0f;
        else if (len >= 3 && b[0] == 0xdc)
            n = (lua_Integer)b[1] << 8 | b[2];
        else if (len >= 5 && b[0] == 0xdd)
            n = (lua_Integer)rec_get_be32(b + 1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            cut |= print_value(k, all) == 1;
        }
        lua_pop(L, 1);
    } else {
        cut = print_value(k, all) == 1;
    }
    if (cut && !k->hinted) {
        puts("(\\more shows all of it; \\set items N changes the cut)");
        k->hinted = 1;
    }
    return 0;
}

static void print_json(const msgpack_object *ans, int eval);

static void print_result(console *k, int eval) {
    rec_buf_set(&k->last, k->reply.msg.body, k->reply.msg.body_len);
    k->last_eval = eval;
    if (k->tty && print_pretty(k, k->reply.msg.body, k->reply.msg.body_len, eval, 0) == 0) {
        fflush(stdout);
        return;
    }
    msgpack_object obj;
    if (rec_client_reply_unpack(&k->reply, &obj) != 0) {
        print_error(k, "protocol_error", "the answer cannot be decoded");
        return;
    }
    print_json(&obj, eval);
}

/* One JSON line: admin.eval's results (eval) as null, the one, or all. */
static void print_json(const msgpack_object *ans, int eval) {
    const msgpack_object obj = *ans;
    rec_buf o = REC_BUF_INIT;
    if (eval && obj.type == MSGPACK_OBJECT_ARRAY && obj.via.array.size < 2) {
        /* admin.eval's results: none is null, one is itself */
        if (obj.via.array.size == 0)
            rec_buf_append(&o, "null", 4);
        else
            json_value(&o, &obj.via.array.ptr[0]);
    } else {
        json_value(&o, &obj);
    }
    rec_buf_append(&o, "\n", 1);
    fwrite(o.data, 1, o.len, stdout);
    rec_buf_free(&o);
    fflush(stdout);
}

/* ---- calls --------------------------------------------------------------- */

static int connect_server(console *k, int quiet) {
    char err[256];
    int rc = rec_client_connect(&k->c, k->addr, err, sizeof err);
    if (rc) {
        k->c = NULL;
        if (!quiet)
            print_error(k, rec_err_name(rc), err);
        return rc;
    }
    rec_client_set_timeout(k->c, CALL_TIMEOUT_MS);
    if (k->token[0]) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_str_with_body(&pk, k->token, strlen(k->token));
        rc = rec_client_call(k->c, "sys.auth", sb.data, sb.size, &k->reply);
        msgpack_sbuffer_destroy(&sb);
        if (rc) {
            print_error(k, k->reply.msg.type ? k->reply.err_name : rec_err_name(rc),
                        k->reply.msg.type ? k->reply.err_message : rec_client_errmsg(k->c));
            rec_client_free(k->c);
            k->c = NULL;
            return rc;
        }
    }
    return 0;
}

/* The method names from sys.methods, once (kept when the server has no
 * sys.methods or refuses it). */
static void fetch_methods(console *k) {
    if (k->methods || !k->c || rec_client_call(k->c, "sys.methods", "\x90", 1, &k->reply))
        return;
    msgpack_object obj;
    if (rec_client_reply_unpack(&k->reply, &obj) || obj.type != MSGPACK_OBJECT_ARRAY)
        return;
    char **v = calloc(obj.via.array.size + 1, sizeof *v);
    if (!v)
        return;
    size_t n = 0;
    for (uint32_t i = 0; i < obj.via.array.size; i++) {
        const msgpack_object *m = &obj.via.array.ptr[i];
        for (uint32_t j = 0; m->type == MSGPACK_OBJECT_MAP && j < m->via.map.size; j++) {
            const msgpack_object *key = &m->via.map.ptr[j].key, *val = &m->via.map.ptr[j].val;
            if (key->type == MSGPACK_OBJECT_STR && key->via.str.size == 4 &&
                !memcmp(key->via.str.ptr, "name", 4) && val->type == MSGPACK_OBJECT_STR &&
                (v[n] = strndup(val->via.str.ptr, val->via.str.size)))
                n++;
        }
    }
    k->methods = v;
    k->nmethods = n;
}

/* Send method with params (msgpack array bytes) and print the answer;
 * lua: it is a Lua line's admin.eval, whose results print by themselves
 * (an `admin.eval` typed as a method prints the array it answers). */
static void call(console *k, const char *method, const void *params, size_t len, int lua) {
    if (!k->c && connect_server(k, 0))
        return;
    int rc = rec_client_call(k->c, method, params, len, &k->reply);
    if (rc == 0) {
        print_result(k, lua);
    } else if (k->reply.msg.type != 0) {
        print_error(k, k->reply.err_name[0] ? k->reply.err_name : rec_err_name(rc),
                    k->reply.err_message);
    } else {
        /* The connection is unusable: say why, reconnect on the next call. */
        print_error(k, rec_err_name(rc), rec_client_errmsg(k->c));
        rec_client_free(k->c);
        k->c = NULL;
    }
}

static void call_simple(console *k, const char *method, const char *arg) {
    unsigned char p[300];
    size_t len = 1, n = arg ? strlen(arg) : 0;
    if (n > 255) {
        print_error(k, "invalid_params", "name too long");
        return;
    }
    p[0] = n ? 0x91 : 0x90;
    if (n) {
        p[1] = 0xd9;
        p[2] = (unsigned char)n;
        memcpy(p + 3, arg, n);
        len = 3 + n;
    }
    call(k, method, p, len, 0);
}

static void pack_header(rec_buf *b, int n) {
    unsigned char h[5];
    if (n < 16) {
        h[0] = (unsigned char)(0x90 | n);
        rec_buf_append(b, h, 1);
    } else if (n < 65536) {
        h[0] = 0xdc;
        h[1] = (unsigned char)(n >> 8);
        h[2] = (unsigned char)n;
        rec_buf_append(b, h, 3);
    } else {
        h[0] = 0xdd;
        rec_be32(h + 1, (uint32_t)n);
        rec_buf_append(b, h, 5);
    }
}

/* Is text a method call: `ns.verb` (lower case, one dot) then params? */
static int looks_like_method(const char *m, size_t *mlen) {
    size_t a = strspn(m, "abcdefghijklmnopqrstuvwxyz_");
    if (a == 0 || m[a] != '.')
        return 0;
    size_t b = strspn(m + a + 1, "abcdefghijklmnopqrstuvwxyz_");
    const char *rest = m + a + 1 + b;
    if (b == 0 || (*rest && !strchr(" \t\n{(\"'[", *rest)))
        return 0;
    *mlen = a + 1 + b;
    return 1;
}

/* A line that is no method call where Lua cannot run: say so, with the
 * method nearest its first word when one is near ("ping", "recomend"). */
static void not_a_method(console *k, const char *m) {
    size_t n = strspn(m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.");
    const char *const *names = k->methods ? (const char *const *)k->methods : known_methods;
    size_t count = k->methods ? k->nmethods : sizeof known_methods / sizeof *known_methods - 1;
    const char *near = n ? rec_dispatch_nearest(names, count, m, n) : NULL;
    if (!near && n && n < 64 && !memchr(m, '.', n)) { /* a bare verb: "ping" */
        char dotted[66];
        snprintf(dotted, sizeof dotted, ".%.*s", (int)n, m);
        near = rec_dispatch_nearest(names, count, dotted, n + 1);
    }
    char msg[512];
    if (near) {
        snprintf(msg, sizeof msg, "unknown method '%.*s'; did you mean '%s'? (Lua needs the "
                 "Unix socket or a token)", (int)n, m, near);
        print_error(k, "unknown_method", msg);
    } else {
        print_error(k, "invalid_input", "not a method call (`ns.verb params`; sys.methods "
                    "lists the methods), and Lua needs the Unix socket or a token (--token)");
    }
}

/* One `method exprs` chunk, or Lua for the server (admin.eval). */
static void method_line(console *k, const char *text) {
    lua_State *L = k->L;
    const char *m = text + strspn(text, " \t\n");
    size_t mlen = 0;
    if (!looks_like_method(m, &mlen)) {
        if (!k->lua_ok) {
            not_a_method(k, m);
            return;
        }
        /* Anything else is Lua evaluated in this connection's session. */
        rec_buf p = REC_BUF_INIT;
        size_t n = strlen(m);
        while (n && strchr(" \t\n", m[n - 1]))
            n--;
        lua_pushlstring(L, m, n);
        pack_header(&p, 1);
        char err[64];
        if (rec_value_pack_lua(L, -1, &p, err, sizeof err) == 0)
            call(k, "admin.eval", p.data, p.len, 1);
        lua_pop(L, 1);
        rec_buf_free(&p);
        return;
    }
    const char *rest = m + mlen;
    char method[256];
    memcpy(method, m, mlen);
    method[mlen] = 0;
    int base = lua_gettop(L);
    int nargs = 0;
    if (rest[strspn(rest, " \t\n")]) {
        lua_pushfstring(L, "return %s\n", rest);
        int rc = luaL_loadbufferx(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=params", "t");
        lua_remove(L, -2);
        if (rc == LUA_OK)
            rc = lua_pcall(L, 0, LUA_MULTRET, 0);
        if (rc != LUA_OK) {
            print_error(k, "invalid_input", lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
            lua_settop(L, base);
            return;
        }
        nargs = lua_gettop(L) - base;
    }
    rec_buf p = REC_BUF_INIT;
    pack_header(&p, nargs);
    for (int i = 1; i <= nargs; i++) {
        char err[256];
        if (rec_value_pack_lua(L, base + i, &p, err, sizeof err)) {
            char msg[300];
            snprintf(msg, sizeof msg, "param %d: %s", i, err);
            print_error(k, "invalid_input", msg);
            rec_buf_free(&p);
            lua_settop(L, base);
            return;
        }
    }
    lua_settop(L, base);
    call(k, method, p.data, p.len, 0);
    rec_buf_free(&p);
}

/* More lines for a chunk: the params of a method left open, or Lua left
 * open where Lua can run (the rule of `recd repl`). */
static int console_more(void *ctx, const char *text, size_t len) {
    console *k = ctx;
    const char *m = text + strspn(text, " \t\n");
    size_t mlen = 0;
    if (*m == 0 || *m == '#' || *m == '\\')
        return 0;
    if (!looks_like_method(m, &mlen))
        return k->lua_ok && rec_repl_incomplete(k->L, text, len);
    const char *rest = m + mlen;
    if (!rest[strspn(rest, " \t\n")])
        return 0;
    lua_pushfstring(k->L, "return %s\n", rest);
    int more = rec_repl_incomplete(k->L, lua_tostring(k->L, -1), lua_rawlen(k->L, -1));
    lua_pop(k->L, 1);
    return more;
}

static void print_help(void) {
    puts("Each line is a method of docs/protocol.md and its params as Lua expressions:\n"
         "  sys.ping\n"
         "  item.put {id = \"m1\", props = {title = \"Heat\"}}, {id = \"m2\"}\n"
         "  rec.recommend {user = \"u1\", n = 5, explain = true}\n"
         "  event.add {user = \"u1\", item = \"m1\", type = \"click\"}\n"
         "commands:\n"
         "  \\reload [name]   script.reload (every script, or one)\n"
         "  \\scripts         script.list\n"
         "  \\stats           stats.get\n"
         "  \\info            sys.info\n"
         "  \\more            the last answer again, nothing cut\n"
         "  \\set items N     show N elements of each list (8; `all` for every one)\n"
         "  \\help            this text\n"
         "  \\quit            leave (also Ctrl-D); Ctrl-C cancels the line being typed\n"
         "Any other line is Lua run on the server (admin.eval) in this connection's\n"
         "session, with `rec` the engine; globals persist until you leave, and a\n"
         "chunk left open (`function f(x)`) continues on the next line:\n"
         "  rec:similar(\"m1\", 3)\n"
         "  top = rec:counter_top(\"popularity\", 5)\n"
         "It needs the Unix socket, or --token on a server started with --auth-token;\n"
         "elsewhere such a line is an error, not sent.");
}

/* \more: the last answer again, nothing cut. */
static void more(console *k) {
    if (!k->last.len) {
        print_error(k, "invalid_input", "no answer yet");
    } else if (!k->tty) {
        /* JSON lines are never cut: the same line again */
        msgpack_object obj;
        msgpack_zone z;
        msgpack_zone_init(&z, 2048);
        size_t off = 0;
        if (msgpack_unpack(k->last.data, k->last.len, &off, &z, &obj) == MSGPACK_UNPACK_SUCCESS)
            print_json(&obj, k->last_eval);
        msgpack_zone_destroy(&z);
    } else {
        print_pretty(k, k->last.data, k->last.len, k->last_eval, 1);
    }
}

/* \set items N|all, or \set alone to show the settings. */
static void set(console *k, const char *arg) {
    char *end;
    const char *v = arg + strcspn(arg, " \t");
    v += strspn(v, " \t");
    if (!*arg) {
        char n[32] = "\"all\"";
        if (k->items != LUA_MAXINTEGER)
            snprintf(n, sizeof n, "%lld", k->items ? (long long)k->items : 8LL);
        if (k->tty)
            printf("items %s\n", n[0] == '"' ? "all" : n);
        else /* a JSON line like every answer */
            printf("{\"items\":%s}\n", n);
        return;
    }
    if (strncmp(arg, "items", 5) || !strchr(" \t", arg[5]) || !*v) {
        print_error(k, "invalid_input", "usage: \\set items N|all");
        return;
    }
    long long n = strtoll(v, &end, 10);
    if (!strcmp(v, "all"))
        k->items = LUA_MAXINTEGER;
    else if (end != v && !*end && n > 0)
        k->items = n;
    else
        print_error(k, "invalid_input", "usage: \\set items N|all (N > 0)");
}

/* A backslash command; returns 1 to quit. */
static int command(console *k, const char *line) {
    const char *arg = line + strcspn(line, " \t");
    size_t n = (size_t)(arg - line);
    arg += strspn(arg, " \t");
#define IS(name) (n == strlen(name) && !strncmp(line, name, n))
    if (IS("\\quit") || IS("\\q"))
        return 1;
    if (IS("\\help") || IS("\\h"))
        print_help();
    else if (IS("\\reload"))
        call_simple(k, "script.reload", *arg ? arg : NULL);
    else if (IS("\\scripts"))
        call_simple(k, "script.list", NULL);
    else if (IS("\\stats"))
        call_simple(k, "stats.get", NULL);
    else if (IS("\\info"))
        call_simple(k, "sys.info", NULL);
    else if (IS("\\more"))
        more(k);
    else if (IS("\\set"))
        set(k, arg);
    else {
        char msg[128];
        snprintf(msg, sizeof msg, "unknown command %.*s (try \\help)", (int)n, line);
        print_error(k, "invalid_input", msg);
    }
#undef IS
    fflush(stdout);
    return 0;
}

static console *complete_k; /* the console, for completion */

static void add_cand(char **v, size_t *n, const char *head, size_t hlen, const char *name,
                     const char *prefix) {
    size_t nl = strlen(name);
    if (strncmp(name, prefix, strlen(prefix)) || !(v[*n] = malloc(hlen + nl + 1)))
        return;
    memcpy(v[*n], head, hlen);
    memcpy(v[*n] + hlen, name, nl + 1);
    (*n)++;
}

/* The first word: a method (sys.methods) or a command; `rec:` (any
 * `name:`) anywhere: a method of the Lua API's db handle. */
static char **console_complete(const char *line, const char *word) {
    console *k = complete_k;
    const char *colon = strrchr(word, ':');
    size_t n = 0, cap = 64 + k->nmethods + sizeof commands / sizeof *commands;
    while (rec_lua_db_method(n))
        n++;
    cap += n;
    n = 0;
    char **v = calloc(cap, sizeof *v);
    if (!v)
        return NULL;
    if (colon) {
        for (size_t i = 0; rec_lua_db_method(i); i++)
            add_cand(v, &n, word, (size_t)(colon + 1 - word), rec_lua_db_method(i), colon + 1);
    } else if (line[strspn(line, " \t")] == 0) {
        const char *const *names = k->methods ? (const char *const *)k->methods : known_methods;
        for (size_t i = 0; names[i]; i++)
            add_cand(v, &n, "", 0, names[i], word);
        for (size_t i = 0; commands[i]; i++)
            add_cand(v, &n, "", 0, commands[i], word);
    }
    if (n == 0) {
        free(v);
        return NULL;
    }
    return v;
}

static void loop(console *k) {
    char prompt[300];
    snprintf(prompt, sizeof prompt, "%.280s> ", k->addr);
    for (;;) {
        char *chunk;
        int r = rec_repl_input_read_chunk(prompt, "  ...> ", console_more, k, &chunk);
        if (r == REC_INPUT_EOF)
            break;
        if (r == REC_INPUT_NOMEM)
            print_error(k, "no_memory", "out of memory");
        if (r != REC_INPUT_LINE && r != REC_INPUT_PARTIAL)
            continue;
        const char *t = chunk + strspn(chunk, " \t");
        int quit = 0;
        if (*t == '\\')
            quit = command(k, t);
        else if (*t && *t != '#')
            method_line(k, chunk); /* a PARTIAL one reports what is missing */
        free(chunk);
        if (quit || r == REC_INPUT_PARTIAL)
            break;
    }
}

static int read_token_file(console *k, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "recd console: cannot read --token %s\n", path);
        return -1;
    }
    size_t n = fread(k->token, 1, sizeof k->token - 1, f);
    fclose(f);
    k->token[n] = 0;
    while (n > 0 && strchr(" \t\r\n", k->token[n - 1]))
        k->token[--n] = 0;
    return 0;
}

/* Open the params state: no engine, no io/os/package/debug. [-0, +1, e] */
static int open_state(lua_State *L) {
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},        {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table},  {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8},  {NULL, NULL},
    };
    for (const luaL_Reg *l = libs; l->func; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    static const char *const drop[] = {"dofile", "loadfile", "load", "require", NULL};
    for (int i = 0; drop[i]; i++) {
        lua_pushnil(L);
        lua_setglobal(L, drop[i]);
    }
    rec_repl_push_printer(L);
    return 1;
}

int rec_console_main(int argc, char **argv) {
    static console k;
    memset(&k, 0, sizeof k);
    k.addr = DEFAULT_ADDR;
    int have_addr = 0;
    const char *env = getenv("RECD_TOKEN");
    if (env)
        snprintf(k.token, sizeof k.token, "%s", env);
    static const struct option opts[] = {
        {"token", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    rec_cli cli;
    rec_cli_init(&cli, "recd console", argc, argv, "h", opts);
    for (int ch; (ch = rec_cli_next(&cli)) != REC_CLI_DONE;) {
        if (ch == 'h') {
            puts("usage: recd console [--token FILE] [ADDR]   (default " DEFAULT_ADDR
                 "; unix:PATH or a path with '/')\n"
                 "  the token may also come from the RECD_TOKEN environment variable");
            return 0;
        } else if (ch == 't') {
            if (read_token_file(&k, cli.arg))
                return 2;
        } else if (ch == REC_CLI_OPERAND && !have_addr) {
            k.addr = cli.arg;
            have_addr = 1;
        } else {
            if (ch == REC_CLI_OPERAND)
                fprintf(stderr, "recd console: unexpected argument '%s'\n", cli.arg);
            fputs("usage: recd console [--token FILE] [ADDR]\n", stderr);
            return 2;
        }
    }
    rec_client_addr parsed;
    if (rec_client_parse_addr(k.addr, &parsed)) {
        fprintf(stderr, "recd console: bad address '%s'\n", k.addr);
        return 2;
    }
    k.L = luaL_newstate();
    if (!k.L) {
        fprintf(stderr, "recd console: out of memory\n");
        return 1;
    }
    lua_pushcfunction(k.L, open_state);
    if (lua_pcall(k.L, 0, 1, 0) != LUA_OK) {
        fprintf(stderr, "recd console: %s\n", lua_tostring(k.L, -1));
        lua_close(k.L);
        return 1;
    }
    k.printer = lua_gettop(k.L);
    rec_client_reply_init(&k.reply);
    char history[1024] = "";
    const char *home = getenv("HOME");
    if (home && *home)
        snprintf(history, sizeof history, "%s/.recd_console_history", home);
    /* The server's rule: admin methods need the Unix socket or sys.auth. */
    k.lua_ok = parsed.kind == REC_ADDR_UNIX || k.token[0];
    complete_k = &k;
    k.tty = rec_repl_input_open(history[0] ? history : NULL, console_complete);
    int rc = 0;
    if (connect_server(&k, 0)) {
        rc = 1;
    } else {
        fetch_methods(&k);
        if (k.tty)
            printf("connected to %s; \\help for help\n", k.addr);
        loop(&k);
        /* Piped, a line that failed fails the run. */
        if (!k.tty && k.failed)
            rc = 1;
    }
    rec_repl_input_close();
    complete_k = NULL;
    for (size_t i = 0; i < k.nmethods; i++)
        free(k.methods[i]);
    free(k.methods);
    rec_buf_free(&k.last);
    rec_client_free(k.c);
    rec_client_reply_close(&k.reply);
    lua_close(k.L);
    memset(k.token, 0, sizeof k.token);
    return rc;
}
