/* main.c - the recd command line: the table of commands, serve, lua, version. */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"
#include "console.h"
#include "eval.h"
#include "log.h"
#include "lua_api.h"
#include "movielens.h"
#include "repl.h"
#include "server.h"
#include "sim.h"
#include "vec.h"
#include "version.h"

#define SERVE_USAGE                                                                 \
    "  recd serve [--data DIR] [--listen HOST:PORT] [--unix PATH]\n"                 \
    "             [--config FILE] [--auth-token FILE] [--insecure] [--strict]\n"      \
    "             [--max-message BYTES] [--max-connections N]\n"                      \
    "             [--max-objects N] [--max-input-memory BYTES]\n"                     \
    "             [--preauth-max-message BYTES] [--max-unix-connections N]\n"         \
    "             [--max-per-address N] [--handshake-timeout SECONDS]\n"              \
    "             [--idle-timeout SECONDS]\n"                                         \
    "             [--map-max BYTES] [--write-timeout SECONDS]\n"                      \
    "             [--checkpoint-interval SECONDS]   (learned state; 10)\n"            \
    "             [--retrain-share SHARE] [--retrain-quiet SECONDS]\n"             \
    "             [--retrain-every SECONDS]   (batch models retrain when the\n"     \
    "             events grow by SHARE, 0.1; once more when they stop for\n"       \
    "             SECONDS, 2; on the timer, 300; 0 for never)\n"                   \
    "             [--train-cpu SHARE]   (of one core an ials training may\n"      \
    "             take, 0.01..1; 0.25)\n"                                          \
    "             [--log-level debug|info|warn|error]\n"                              \
    "             [--scripts DIR] [--policies DIR]   (\"\" for none)\n"               \
    "             [--init FILE]   (a Lua file run with the engine as `db`)\n"         \
    "             [--movielens DIR]   (load a MovieLens folder, into an empty\n"      \
    "             data folder; docs/movielens.md)\n"                                  \
    "             [--movielens-types graded|click]   (its ratings as events)\n"       \
    "             [--cluster nats://HOST:PORT[,...]] [--node NAME]\n"               \
    "             [--partitions P] [--retain SECONDS]   (events go through a\n"    \
    "             NATS JetStream cluster, whose stream keeps them SECONDS, 0\n"   \
    "             for ever; docs/cluster.md)\n"                                    \
    "      run the server (defaults: ./data, 127.0.0.1:7700, DIR/recd.sock)\n"
#define LUA_USAGE                                                                   \
    "  recd lua FILE [ARGS...]\n"                                                    \
    "      run a Lua script with the recd module preloaded; ARGS, untouched,\n"      \
    "      are arg[1], arg[2], ... (options stop at FILE)\n"
#define VERSION_USAGE                                                               \
    "  recd version, recd --version\n"                                               \
    "      print the version and the SIMD kernels in use\n"

static void usage(FILE *f) {
    fprintf(f,
            "usage: recd <command> [options]   (recd <command> --help for one)\n"
            "\n" SERVE_USAGE
            "  recd bench [-h HOST] [-p PORT] [-s SOCKET] [-c N] [-n N] [-P N] [-t TESTS]\n"
            "      load a running server like redis-benchmark\n" LUA_USAGE
            "  recd repl [--scripts DIR] [--policies DIR] [DATA]\n"
            "      a Lua REPL with the engine open on DATA (default ./data) as `db`\n"
            "  recd console [--token FILE] [ADDR]\n"
            "      call a running server's methods (default 127.0.0.1:7700)\n"
            "  recd eval [--protocol prequential|holdout|both] [--pipelines LIST]\n"
            "            [--json] [--svg FILE] ... LOG   (recd eval --help)\n"
            "      replay an interaction log and measure each pipeline\n"
            "  recd sim [--pipelines LIST] [--connect ADDR] [--json] [--svg FILE] ...\n"
            "      simulate people against each pipeline in a closed loop (recd sim --help)\n"
            VERSION_USAGE
            "  recd help, recd --help, recd -h\n"
            "      this text\n");
}

/* --help and -h, for the commands whose only option is the help. */
static const struct option help_only[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Run a Lua file with `recd` preloaded and `arg` set like lua5.4 does. */
static int cmd_lua(int argc, char **argv) {
    rec_cli cli;
    rec_cli_init(&cli, "recd lua", argc, argv, "h", help_only);
    int ch = rec_cli_next(&cli);
    if (ch == 'h') {
        fputs("usage:\n" LUA_USAGE, stdout);
        return 0;
    }
    if (ch == REC_CLI_ERROR)
        return 2;
    if (ch == REC_CLI_DONE) {
        fputs("recd lua: which FILE?\nusage:\n" LUA_USAGE, stderr);
        return 2;
    }
    /* The first operand is FILE: it and all after it go to the script as
     * they are, options or not. */
    argc -= cli.ind;
    argv += cli.ind;
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "recd: out of memory\n");
        return 1;
    }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_recd);
    lua_setfield(L, -2, "recd");
    lua_pop(L, 1);
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");
    int rc = luaL_dofile(L, argv[0]);
    if (rc != LUA_OK) {
        const char *msg = luaL_tolstring(L, -1, NULL);
        fprintf(stderr, "recd: %s\n", msg);
    }
    lua_close(L);
    return rc == LUA_OK ? 0 : 1;
}

/* Storage for option strings that outlive the config's Lua state. */
typedef struct serve_cfg {
    rec_server_opts o;
    char data[1024], listen[256], unix_path[1024], token_file[1024], init[1024];
    char movielens[1024];
    rec_movielens_types movielens_types;
    char scripts[1024], policies[1024];
    int scripts_given, policies_given; /* "" given: none */
    int listen_given, unix_given;      /* "" given: no such listener */
    char token[1024];
    int log_level;
    char cluster[1024], node[64]; /* --cluster, --node */
    rec_cluster_opts cluster_opts;
} serve_cfg;

static int parse_size(const char *s, size_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -1;
    if (*end == 'K' || *end == 'k')
        v *= 1024, end++;
    else if (*end == 'M' || *end == 'm')
        v *= 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        v *= 1024.0 * 1024 * 1024, end++;
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    if (*end || v > 1e15)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* Apply one option (from argv or the config file). 0, or -1 with a message. */
static int set_opt(serve_cfg *c, const char *name, const char *val) {
    size_t n;
    if (!strcmp(name, "data")) {
        snprintf(c->data, sizeof c->data, "%s", val);
    } else if (!strcmp(name, "listen")) {
        snprintf(c->listen, sizeof c->listen, "%s", val);
        c->listen_given = 1;
    } else if (!strcmp(name, "unix")) {
        snprintf(c->unix_path, sizeof c->unix_path, "%s", val);
        c->unix_given = 1;
    } else if (!strcmp(name, "scripts")) {
        snprintf(c->scripts, sizeof c->scripts, "%s", val);
        c->scripts_given = 1;
    } else if (!strcmp(name, "policies")) {
        snprintf(c->policies, sizeof c->policies, "%s", val);
        c->policies_given = 1;
    } else if (!strcmp(name, "init")) {
        snprintf(c->init, sizeof c->init, "%s", val);
    } else if (!strcmp(name, "movielens")) {
        snprintf(c->movielens, sizeof c->movielens, "%s", val);
    } else if (!strcmp(name, "movielens-types") || !strcmp(name, "movielens_types")) {
        int t = rec_movielens_types_parse(val);
        if (t < 0) {
            fprintf(stderr, "recd: --movielens-types is graded or click, not '%s'\n", val);
            return -1;
        }
        c->movielens_types = (rec_movielens_types)t;
    } else if (!strcmp(name, "auth-token") || !strcmp(name, "auth_token")) {
        snprintf(c->token_file, sizeof c->token_file, "%s", val);
    } else if (!strcmp(name, "max-message") || !strcmp(name, "max_message")) {
        if (parse_size(val, &n) || n < 1024 || n > (1u << 30)) {
            fprintf(stderr, "recd: --max-message must be 1K..1G\n");
            return -1;
        }
        c->o.max_message = n;
    } else if (!strcmp(name, "max-connections") || !strcmp(name, "max_connections")) {
        if (parse_size(val, &n) || n < 1 || n > 100000) {
            fprintf(stderr, "recd: --max-connections must be 1..100000\n");
            return -1;
        }
        c->o.max_connections = (uint32_t)n;
    } else if (!strcmp(name, "max-objects") || !strcmp(name, "max_objects")) {
        if (parse_size(val, &n) || n < 1024 || n > (1u << 28)) {
            fprintf(stderr, "recd: --max-objects must be 1K..256M\n");
            return -1;
        }
        c->o.max_objects = (uint32_t)n;
    } else if (!strcmp(name, "max-input-memory") || !strcmp(name, "max_input_memory")) {
        if (parse_size(val, &n) || n < (1u << 20) || n > ((size_t)1 << 40)) {
            fprintf(stderr, "recd: --max-input-memory must be at least 1M\n");
            return -1;
        }
        c->o.input_memory = n;
    } else if (!strcmp(name, "preauth-max-message") || !strcmp(name, "preauth_max_message")) {
        if (parse_size(val, &n) || n < 1024 || n > (1u << 30)) {
            fprintf(stderr, "recd: --preauth-max-message must be 1K..1G\n");
            return -1;
        }
        c->o.preauth_max_message = n;
    } else if (!strcmp(name, "max-unix-connections") ||
               !strcmp(name, "max_unix_connections")) {
        if (parse_size(val, &n) || n < 1 || n > 100000) {
            fprintf(stderr, "recd: --max-unix-connections must be 1..100000\n");
            return -1;
        }
        c->o.max_unix_connections = (uint32_t)n;
    } else if (!strcmp(name, "max-per-address") || !strcmp(name, "max_per_address")) {
        if (parse_size(val, &n) || n > 100000) {
            fprintf(stderr, "recd: --max-per-address must be 0..100000 (0: no limit)\n");
            return -1;
        }
        c->o.max_per_address = (uint32_t)n;
    } else if (!strcmp(name, "handshake-timeout") || !strcmp(name, "handshake_timeout") ||
               !strcmp(name, "idle-timeout") || !strcmp(name, "idle_timeout")) {
        char *end;
        double t = strtod(val, &end);
        int hs = name[0] == 'h';
        if (*end || end == val || !(t == 0 || (t >= 1 && t <= 1e6))) {
            fprintf(stderr, "recd: --%s must be 1..1000000 seconds, or 0 for none\n",
                    hs ? "handshake-timeout" : "idle-timeout");
            return -1;
        }
        if (hs)
            c->o.handshake_timeout = t;
        else
            c->o.idle_timeout = t;
    } else if (!strcmp(name, "map-max") || !strcmp(name, "map_max")) {
        if (parse_size(val, &n) || n < (1u << 20)) {
            fprintf(stderr, "recd: --map-max must be at least 1M\n");
            return -1;
        }
        c->o.engine.store.map_max = n;
        if (c->o.engine.store.map_size > n)
            c->o.engine.store.map_size = n;
    } else if (!strcmp(name, "write-timeout") || !strcmp(name, "write_timeout")) {
        char *end;
        double t = strtod(val, &end);
        if (*end || !(t >= 0.1 && t <= 86400)) {
            fprintf(stderr, "recd: --write-timeout must be 0.1..86400 seconds\n");
            return -1;
        }
        c->o.write_timeout = t;
    } else if (!strcmp(name, "checkpoint-interval") || !strcmp(name, "checkpoint_interval")) {
        char *end;
        double t = strtod(val, &end);
        if (*end || !(t >= 0.01 && t <= 86400)) {
            fprintf(stderr, "recd: --checkpoint-interval must be 0.01..86400 seconds\n");
            return -1;
        }
        c->o.engine.checkpoint_interval = t;
    } else if (!strcmp(name, "retrain-share") || !strcmp(name, "retrain_share")) {
        char *end;
        double x = strtod(val, &end);
        if (*end || end == val || !(x >= 0 && x <= 100)) {
            fprintf(stderr, "recd: --retrain-share must be 0..100 (0: never)\n");
            return -1;
        }
        c->o.train_share = x;
    } else if (!strcmp(name, "retrain-quiet") || !strcmp(name, "retrain_quiet") ||
               !strcmp(name, "retrain-every") || !strcmp(name, "retrain_every")) {
        char *end;
        double t = strtod(val, &end);
        int quiet = name[8] == 'q';
        if (*end || end == val || !(t >= 0 && t <= 1e6)) {
            fprintf(stderr, "recd: --%s must be 0..1000000 seconds (0: never)\n",
                    quiet ? "retrain-quiet" : "retrain-every");
            return -1;
        }
        if (quiet)
            c->o.train_quiet = t;
        else
            c->o.train_every = t;
    } else if (!strcmp(name, "train-cpu") || !strcmp(name, "train_cpu")) {
        char *end;
        double x = strtod(val, &end);
        if (*end || end == val || !(x >= 0.01 && x <= 1)) {
            fprintf(stderr, "recd: --train-cpu must be 0.01..1 (the share of one core)\n");
            return -1;
        }
        c->o.train_cpu = x;
    } else if (!strcmp(name, "log-level") || !strcmp(name, "log_level")) {
        int l = rec_log_parse(val);
        if (l < 0) {
            fprintf(stderr, "recd: --log-level must be debug, info, warn or error\n");
            return -1;
        }
        c->log_level = l;
    } else if (!strcmp(name, "cluster")) {
        snprintf(c->cluster, sizeof c->cluster, "%s", val);
    } else if (!strcmp(name, "node")) {
        if (strlen(val) >= sizeof c->node) {
            fprintf(stderr, "recd: --node must be shorter than %zu characters\n", sizeof c->node);
            return -1;
        }
        snprintf(c->node, sizeof c->node, "%s", val);
    } else if (!strcmp(name, "partitions")) {
        char *end;
        unsigned long p = strtoul(val, &end, 10);
        if (*end || end == val || val[0] == '-' || p < 1 || p > REC_CLUSTER_MAX_PARTITIONS) {
            fprintf(stderr, "recd: --partitions must be 1..%d\n", REC_CLUSTER_MAX_PARTITIONS);
            return -1;
        }
        c->cluster_opts.partitions = (uint32_t)p;
    } else if (!strcmp(name, "retain")) {
        char *end;
        double t = strtod(val, &end);
        if (*end || end == val || !(t >= 0 && t <= 3.15e9)) {
            fprintf(stderr, "recd: --retain must be 0..3150000000 seconds (0: every event)\n");
            return -1;
        }
        if (t > 0 && t < 60) {
            fprintf(stderr, "recd: --retain must be 0 or at least 60 seconds (a publish is "
                            "retried for 30 s, and its copies are recognised only while the "
                            "stream keeps the first)\n");
            return -1;
        }
        c->cluster_opts.retain = t;
        c->cluster_opts.retain_given = 1;
    } else if (!strcmp(name, "insecure")) {
        c->o.insecure = !strcmp(val, "true") || !strcmp(val, "1");
    } else if (!strcmp(name, "strict")) {
        c->o.strict = !strcmp(val, "true") || !strcmp(val, "1");
    } else {
        fprintf(stderr, "recd: unknown option '%s'\n", name);
        return -1;
    }
    return 0;
}

/* A config file is Lua returning a table of the same options as the
 * flags, e.g. return {listen = "127.0.0.1:7800", log_level = "debug"}. */
static int load_config(serve_cfg *c, const char *path) {
    lua_State *L = luaL_newstate();
    if (!L)
        return -1;
    int rc = luaL_loadfilex(L, path, "t");
    if (rc == LUA_OK)
        rc = lua_pcall(L, 0, 1, 0);
    if (rc != LUA_OK) {
        fprintf(stderr, "recd: config %s: %s\n", path, lua_tostring(L, -1));
        lua_close(L);
        return -1;
    }
    if (!lua_istable(L, -1)) {
        fprintf(stderr, "recd: config %s must return a table\n", path);
        lua_close(L);
        return -1;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            fprintf(stderr, "recd: config %s: keys must be option names\n", path);
            lua_close(L);
            return -1;
        }
        const char *val = lua_isboolean(L, -1) ? (lua_toboolean(L, -1) ? "true" : "false")
                                               : lua_tostring(L, -1);
        if (!val || set_opt(c, lua_tostring(L, -2), val)) {
            if (!val)
                fprintf(stderr, "recd: config %s: option %s needs a string or number\n",
                        path, lua_tostring(L, -2));
            lua_close(L);
            return -1;
        }
        lua_pop(L, 1);
    }
    lua_close(L);
    return 0;
}

static int read_token(serve_cfg *c) {
    FILE *f = fopen(c->token_file, "r");
    if (!f) {
        fprintf(stderr, "recd: cannot read --auth-token %s: %s\n", c->token_file,
                strerror(errno));
        return -1;
    }
    size_t n = fread(c->token, 1, sizeof c->token - 1, f);
    fclose(f);
    c->token[n] = 0;
    while (n > 0 && (c->token[n - 1] == '\n' || c->token[n - 1] == '\r' ||
                     c->token[n - 1] == ' ' || c->token[n - 1] == '\t'))
        c->token[--n] = 0;
    if (n < 8) {
        fprintf(stderr, "recd: the token in %s is shorter than 8 characters\n",
                c->token_file);
        return -1;
    }
    return 0;
}

/* --init FILE: run a Lua file with the open engine as global `db`. */
static int run_init(rec_engine *e, void *ud) {
    const char *path = ud;
    lua_State *L = luaL_newstate();
    if (!L)
        return -1;
    luaL_openlibs(L);
    luaL_requiref(L, "recd", luaopen_recd, 0);
    lua_pop(L, 1);
    rec_lua_push_engine(L, e, 1);
    lua_setglobal(L, "db");
    int rc = luaL_loadfilex(L, path, "t");
    if (rc == LUA_OK)
        rc = lua_pcall(L, 0, 0, 0);
    if (rc != LUA_OK)
        REC_ERROR("--init %s: %s", path, luaL_tolstring(L, -1, NULL));
    lua_close(L);
    /* A checkpoint: what the file learned is not replayed again. */
    if (rc == LUA_OK && rec_engine_checkpoint(e)) {
        REC_ERROR("--init %s: commit failed: %s", path, rec_engine_errmsg(e));
        return -1;
    }
    return rc == LUA_OK ? 0 : -1;
}

/* --movielens DIR: into an empty data folder, a MovieLens folder as
 * docs/movielens.md describes (rec_movielens_load). No checkpoint is
 * written, so the server's start-up replay runs the policies' on_event over
 * the ratings, exactly as if they had arrived over the socket. */
static int load_movielens(rec_engine *e, const char *dir, rec_movielens_types types) {
    if (rec_engine_count(e, REC_KIND_ITEM) > 0) {
        REC_INFO("--movielens: the data folder holds items already; nothing loaded");
        return 0;
    }
    char err[1024] = "";
    rec_movielens_stats st;
    if (rec_movielens_load(e, dir, types, &st, err, sizeof err)) {
        REC_ERROR("--movielens: %s", err);
        return -1;
    }
    REC_INFO("--movielens: %zu movies (%zu with a content vector, %zu tags), %zu ratings "
             "(%zu clicks, %zu views, %zu dislikes) loaded from %s",
             st.movies, st.with_vector, st.tags, st.ratings, st.by_type[0], st.by_type[1],
             st.by_type[2], dir);
    return 0;
}

/* What runs once the engine is open: --movielens, then --init. */
static int on_open(rec_engine *e, void *ud) {
    serve_cfg *c = ud;
    if (c->movielens[0] && load_movielens(e, c->movielens, c->movielens_types))
        return -1;
    return c->init[0] ? run_init(e, c->init) : 0;
}

/* The shipped folder `name` (scripts or policies): <dir of the
 * executable>/<name> in a source tree, else <dir>/../share/recd/<name>
 * where `make install` puts them; "" when neither exists. */
static void beside_exe(char *out, size_t cap, const char *name) {
    char exe[512];
    out[0] = 0;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash)
        return;
    *slash = 0;
    static const char *const where[] = {"", "/../share/recd"};
    struct stat st;
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        snprintf(out, cap, "%s%s/%s", exe, where[i], name);
        if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
            char *real = realpath(out, NULL);
            if (real) {
                snprintf(out, cap, "%s", real);
                free(real);
            }
            return;
        }
    }
    out[0] = 0;
}

/* The flags of recd serve that take a value, named as set_opt names them;
 * each is accepted with '_' for '-' too, as in a config file. */
static const char *const serve_flags[] = {
    "data", "listen", "unix", "scripts", "policies", "init", "movielens", "movielens-types",
    "auth-token",
    "max-message", "max-connections", "max-objects", "max-input-memory",
    "preauth-max-message", "max-unix-connections", "max-per-address", "handshake-timeout",
    "idle-timeout", "map-max", "write-timeout", "checkpoint-interval", "log-level",
    "retrain-share", "retrain-quiet", "retrain-every", "train-cpu", "cluster", "node", "partitions",
    "retain",
};
#define NFLAGS (sizeof serve_flags / sizeof serve_flags[0])
enum { OPT_CONFIG = 'C', OPT_INSECURE = 'I', OPT_STRICT = 'S', OPT_FLAG = 256 /* + index in serve_flags */ };

static void serve_usage(FILE *f) { fputs("usage:\n" SERVE_USAGE, f); }

static int cmd_serve(int argc, char **argv) {
    static serve_cfg c;
    static char underscored[NFLAGS][32];
    static struct option opts[2 * NFLAGS + 5];
    size_t n = 0;
    for (size_t i = 0; i < NFLAGS; i++) {
        opts[n++] = (struct option){serve_flags[i], required_argument, NULL, OPT_FLAG + (int)i};
        if (!strchr(serve_flags[i], '-'))
            continue;
        snprintf(underscored[i], sizeof underscored[i], "%s", serve_flags[i]);
        for (char *p = underscored[i]; *p; p++)
            if (*p == '-')
                *p = '_';
        opts[n++] = (struct option){underscored[i], required_argument, NULL, OPT_FLAG + (int)i};
    }
    opts[n++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    opts[n++] = (struct option){"insecure", no_argument, NULL, OPT_INSECURE};
    opts[n++] = (struct option){"strict", no_argument, NULL, OPT_STRICT};
    opts[n++] = (struct option){"help", no_argument, NULL, 'h'};
    opts[n] = (struct option){NULL, 0, NULL, 0};

    rec_server_opts_default(&c.o);
    c.log_level = REC_LOG_INFO;
    /* Two passes: the config files first, so that flags override them. */
    rec_cli cli;
    rec_cli_init(&cli, "recd serve", argc, argv, "h", opts);
    for (int ch; (ch = rec_cli_next(&cli)) != REC_CLI_DONE;) {
        if (ch == REC_CLI_ERROR)
            return 2;
        if (ch == 'h') {
            serve_usage(stdout);
            return 0;
        }
        if (ch == REC_CLI_OPERAND) {
            fprintf(stderr, "recd serve: unexpected argument '%s'\n", cli.arg);
            serve_usage(stderr);
            return 2;
        }
        if (ch == OPT_CONFIG && load_config(&c, cli.arg))
            return 2;
    }
    rec_cli_init(&cli, "recd serve", argc, argv, "h", opts);
    for (int ch; (ch = rec_cli_next(&cli)) != REC_CLI_DONE;) {
        if (ch == OPT_INSECURE)
            c.o.insecure = 1;
        else if (ch == OPT_STRICT)
            c.o.strict = 1;
        else if (ch >= OPT_FLAG && set_opt(&c, serve_flags[ch - OPT_FLAG], cli.arg))
            return 2;
    }
    rec_log_set_level((rec_log_level)c.log_level);
    c.o.data_dir = c.data[0] ? c.data : "./data";
    c.o.listen = c.listen_given ? c.listen : NULL;   /* "": no TCP */
    if (c.unix_given)
        c.o.unix_path = c.unix_path;                 /* "": no Unix socket */
    if (c.token_file[0]) {
        if (read_token(&c))
            return 2;
        c.o.auth_token = c.token;
    }
    /* Default script folders: the project's, beside the binary. */
    if (!c.scripts_given)
        beside_exe(c.scripts, sizeof c.scripts, "scripts");
    if (!c.policies_given)
        beside_exe(c.policies, sizeof c.policies, "policies");
    c.o.scripts_dir = c.scripts[0] ? c.scripts : NULL;
    c.o.policies_dir = c.policies[0] ? c.policies : NULL;
    if (!c.scripts_given && !c.scripts[0])
        REC_WARN("no scripts folder beside the binary or in its share/recd: serving "
                 "the built-in pipeline (--scripts DIR to name one)");
    if (c.init[0] || c.movielens[0]) {
        c.o.on_open = on_open;
        c.o.on_open_ud = &c;
    }
    if ((c.node[0] || c.cluster_opts.partitions || c.cluster_opts.retain_given) &&
        !c.cluster[0]) {
        fprintf(stderr, "recd serve: --node, --partitions and --retain need --cluster\n");
        return 2;
    }
    if (c.cluster[0]) {
        c.cluster_opts.servers = c.cluster;
        c.cluster_opts.node = c.node;
        c.o.cluster = &c.cluster_opts;
    }
    int rc = rec_server_run(&c.o, REC_VERSION);
    memset(c.token, 0, sizeof c.token);
    return rc;
}

static int cmd_version(int argc, char **argv) {
    rec_cli cli;
    rec_cli_init(&cli, "recd version", argc, argv, "h", help_only);
    for (int ch; (ch = rec_cli_next(&cli)) != REC_CLI_DONE;) {
        if (ch == 'h') {
            fputs("usage:\n" VERSION_USAGE, stdout);
            return 0;
        }
        if (ch == REC_CLI_OPERAND)
            fprintf(stderr, "recd version: unexpected argument '%s'\n", cli.arg);
        return 2;
    }
    printf("recd %s (%s kernels)\n", REC_VERSION, rec_vec_isa_name());
    return 0;
}

static int cmd_eval(int argc, char **argv) {
    char scripts[1024], policies[1024];
    beside_exe(scripts, sizeof scripts, "scripts");
    beside_exe(policies, sizeof policies, "policies");
    return rec_eval_main(argc, argv, scripts[0] ? scripts : NULL, policies[0] ? policies : NULL);
}

static int cmd_sim(int argc, char **argv) {
    char scripts[1024], policies[1024];
    beside_exe(scripts, sizeof scripts, "scripts");
    beside_exe(policies, sizeof policies, "policies");
    return rec_sim_main(argc, argv, scripts[0] ? scripts : NULL, policies[0] ? policies : NULL);
}

static int cmd_help(int argc, char **argv) {
    (void)argc;
    (void)argv;
    usage(stdout);
    return 0;
}

/* Each command gets argv from its own name on: argv[0] is "serve". */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"serve", cmd_serve},        {"bench", rec_bench_main}, {"lua", cmd_lua},
    {"eval", cmd_eval},          {"repl", rec_repl_main},   {"console", rec_console_main},
    {"sim", cmd_sim},            {"version", cmd_version},  {"help", cmd_help},
};

int main(int argc, char **argv) {
    /* The engine logs nowhere until told: the tools log to stderr. */
    rec_log_set_handler(rec_log_stderr, NULL);
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    rec_cli cli;
    rec_cli_init(&cli, "recd", argc, argv, "h", opts);
    int ch = rec_cli_next(&cli);
    if (ch == 'h')
        return cmd_help(0, NULL);
    if (ch == 'V') {
        static char name[] = "version";
        char *args[] = {name, NULL};
        return cmd_version(1, args);
    }
    if (ch == REC_CLI_ERROR)
        return 2;
    if (ch == REC_CLI_DONE) {
        usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cli.arg, commands[i].name))
            return commands[i].run(argc - cli.ind, argv + cli.ind);
    fprintf(stderr, "recd: unknown command '%s'\n", cli.arg);
    usage(stderr);
    return 2;
}
