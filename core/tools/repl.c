/* repl.c - `recd repl`: a Lua 5.4 REPL with the engine open as `db`.
 *
 * Three parts: the line input shared with console.c (libedit's readline-compatible
 * callback interface driven by pselect(), so a Ctrl-C can cancel the line being
 * typed without leaving; plain getline when stdin is not a terminal), the
 * value printer (Lua source below), and the REPL itself: a chunk is first
 * compiled as "return <chunk>;" so expressions print their values, then as
 * a statement; a syntax error at "<eof>" asks for another line, as stock
 * lua.c does.
 *
 * The helpers show/run/pipeline/feed are Lua too (helper_src): they load
 * strategies and policies from the project folders into fresh
 * environments whose `rec` is the REPL's `db`, mirroring what the server
 * does (docs/scripting.md) without its sandbox or budgets.
 */
#include "repl.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <editline/readline.h>

#include "buf.h"
#include "cli.h"
#include "lua_api.h"

/* ---- line input ---------------------------------------------------------- */

#define HISTORY_MAX 1000

static struct {
    int tty;                        /* stdin is a terminal: readline */
    int open;                       /* rec_repl_input_open was called */
    char history[1024];             /* history file, "" for none */
    rec_repl_input_complete_fn complete; /* completion callback or NULL */
    char *line;                     /* the line readline handed over */
    int done;                       /* on_line ran for this read */
    char **cands;                   /* candidates being handed to readline */
    size_t cand_next;               /* next candidate gen() returns */
    struct termios orig;            /* the terminal's modes before open */
    int have_orig;                  /* orig holds them */
} in;

static volatile sig_atomic_t editing; /* readline owns the terminal (raw) */

static volatile sig_atomic_t sigint_seen;
static lua_State *volatile running; /* the state a Ctrl-C interrupts */

/* Characters that end a word for completion: '.' and ':' stay inside,
 * so "db:sim" and "string.fo" complete as a whole. */
static char word_breaks[] = " \t\n\"\\'`@$><=;|&{(,)+-*/%^#~[]";

static void stop_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* Async-signal-safe: a flag, and lua_sethook (safe to call from a signal
 * handler, as lua.c does). */
static void on_sigint(int sig) {
    (void)sig;
    sigint_seen = 1;
    /* Outside the line editor the terminal echoes the key, invisibly
     * (rec_repl_input_open turned ECHOCTL off): show it, and end the line so
     * what follows starts a clean one. At the prompt rec_repl_input_read does. */
    if (!editing) {
        ssize_t w = write(STDOUT_FILENO, "^C\n", 3);
        (void)w;
    }
    lua_State *L = running;
    if (L)
        lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_line(char *line) {
    in.line = line;
    in.done = 1;
    /* Removing the handler here keeps readline from showing the prompt
     * again before the caller has printed the result. */
    rl_callback_handler_remove();
}

static char *gen(const char *text, int state) {
    (void)text;
    (void)state;
    if (!in.cands || !in.cands[in.cand_next])
        return NULL;
    return in.cands[in.cand_next++]; /* readline takes ownership */
}

static char **attempt_complete(const char *text, int start, int end) {
    (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    rl_completion_append_character = '\0';
    if (!in.complete)
        return NULL;
    char *before = strndup(rl_line_buffer, (size_t)start);
    if (!before)
        return NULL;
    in.cands = in.complete(before, text);
    free(before);
    if (!in.cands)
        return NULL;
    in.cand_next = 0;
    char **m = rl_completion_matches(text, gen);
    for (size_t i = in.cand_next; in.cands[i]; i++) /* any gen did not hand over */
        free(in.cands[i]);
    free(in.cands);
    in.cands = NULL;
    return m;
}

/* The history file is plain text, one entry a line (libedit's own format
 * encodes spaces and starts with a cookie; this one stays readable and
 * keeps files written before). A multi-line entry (a function typed over
 * several lines) ends each of its lines but the last with "\r\n". */
static void history_load(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return; /* a missing file is fine */
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    rec_buf entry = REC_BUF_INIT;
    while ((n = getline(&buf, &cap, f)) >= 0) {
        int more = n >= 2 && buf[n - 1] == '\n' && buf[n - 2] == '\r';
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            buf[--n] = 0;
        if (rec_buf_append(&entry, buf, (size_t)n) || (more && rec_buf_append(&entry, "\n", 1)))
            break;
        if (!more) {
            if (entry.len > 0 && rec_buf_append(&entry, "", 1) == 0)
                add_history(entry.data);
            rec_buf_clear(&entry);
        }
    }
    rec_buf_free(&entry);
    free(buf);
    fclose(f);
}

static void history_save(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    HIST_ENTRY **h = history_list();
    for (size_t i = 0; h && h[i]; i++) {
        if (!h[i]->line || !h[i]->line[0])
            continue;
        for (const char *p = h[i]->line; *p; p++)
            if (*p == '\n')
                fputs("\r\n", f);
            else
                fputc(*p, f);
        fputc('\n', f);
    }
    fclose(f);
}

int rec_repl_input_open(const char *history, rec_repl_input_complete_fn complete) {
    memset(&in, 0, sizeof in);
    in.open = 1;
    in.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    in.complete = complete;
    if (!in.tty)
        return 0;
    if (history)
        snprintf(in.history, sizeof in.history, "%s", history);
    rl_readline_name = "recd";
    rl_catch_signals = 0; /* our SIGINT handler, not readline's */
    rl_attempted_completion_function = attempt_complete;
    rl_completer_word_break_characters = word_breaks;
    /* Keys the terminal itself echoes while a command runs (Ctrl-C) are
     * echoed raw, i.e. not shown, instead of as "^C" in the middle of the
     * output: on_sigint shows it and ends the line. Restored on close. */
    if (tcgetattr(STDIN_FILENO, &in.orig) == 0) {
        struct termios t = in.orig;
        in.have_orig = 1;
        t.c_lflag &= ~(tcflag_t)ECHOCTL;
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    using_history();
    rl_parse_and_bind("setty -x -echoctl"); /* libedit's mode for commands */
    stifle_history(HISTORY_MAX);
    if (in.history[0])
        history_load(in.history);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint; /* no SA_RESTART: select() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    return 1;
}

static int read_plain(char **line) {
    size_t cap = 0;
    char *buf = NULL;
    ssize_t n = getline(&buf, &cap, stdin);
    if (n < 0) {
        free(buf);
        return REC_INPUT_EOF;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    *line = buf;
    return REC_INPUT_LINE;
}

int rec_repl_input_read(const char *prompt, char **line) {
    *line = NULL;
    if (!in.tty)
        return read_plain(line);
    fflush(stdout);
    in.done = 0;
    in.line = NULL;
    sigint_seen = 0;
    /* SIGINT stays blocked but while pselect waits: a Ctrl-C that comes
     * while a key is handled is delivered at the next wait, which it then
     * ends, instead of setting the flag just after it was checked and
     * leaving select asleep. */
    sigset_t intr, orig;
    sigemptyset(&intr);
    sigaddset(&intr, SIGINT);
    pthread_sigmask(SIG_BLOCK, &intr, &orig);
    editing = 1;
    rl_callback_handler_install(prompt, on_line);
    while (!in.done) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(STDIN_FILENO, &fds);
        int r = pselect(STDIN_FILENO + 1, &fds, NULL, NULL, NULL, &orig);
        if (sigint_seen) {
            sigint_seen = 0;
            rl_replace_line("", 0);
            rl_free_line_state();
            rl_callback_handler_remove();
            editing = 0;
            pthread_sigmask(SIG_SETMASK, &orig, NULL);
            fputs("^C\n", stdout);
            fflush(stdout);
            return REC_INPUT_CANCEL;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            rl_callback_handler_remove();
            editing = 0;
            pthread_sigmask(SIG_SETMASK, &orig, NULL);
            return REC_INPUT_EOF;
        }
        rl_callback_read_char();
    }
    editing = 0;
    pthread_sigmask(SIG_SETMASK, &orig, NULL);
    if (!in.line) { /* Ctrl-D on an empty line */
        fputs("\n", stdout);
        return REC_INPUT_EOF;
    }
    *line = in.line;
    return REC_INPUT_LINE;
}

int rec_repl_input_read_chunk(const char *prompt, const char *more_prompt, rec_repl_input_more_fn more,
                         void *ctx, char **chunk) {
    rec_buf b = REC_BUF_INIT;
    *chunk = NULL;
    for (;;) {
        char *line;
        int r = rec_repl_input_read(b.len ? more_prompt : prompt, &line);
        if (r == REC_INPUT_CANCEL || (r == REC_INPUT_EOF && !b.len)) {
            rec_buf_free(&b);
            return r;
        }
        if (r == REC_INPUT_EOF) { /* input ended inside a chunk */
            *chunk = (char *)b.data;
            return REC_INPUT_PARTIAL;
        }
        int ok = (!b.len || rec_buf_append(&b, "\n", 1) == 0) &&
                 rec_buf_append(&b, line, strlen(line) + 1) == 0;
        free(line);
        if (!ok) {
            rec_buf_free(&b);
            return REC_INPUT_NOMEM;
        }
        b.len--; /* the NUL stays out of the length */
        if (!more || !more(ctx, (const char *)b.data, b.len))
            break;
    }
    if (in.tty && b.data[strspn((const char *)b.data, " \t\n")])
        add_history((const char *)b.data);
    *chunk = (char *)b.data;
    return REC_INPUT_LINE;
}

void rec_repl_input_set_running(lua_State *L) {
    running = L;
    /* A Ctrl-C that came after the line was read, while it was compiled
     * or its file loaded, found no state to stop: stop this one now. */
    if (L && sigint_seen)
        lua_sethook(L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void rec_repl_input_close(void) {
    if (!in.open)
        return;
    if (in.tty && in.history[0])
        history_save(in.history);
    if (in.have_orig)
        tcsetattr(STDIN_FILENO, TCSANOW, &in.orig);
    in.open = 0;
}

/* ---- value printer ------------------------------------------------------- */

/* The printer, in Lua: easier to read and change than the same in C. Each
 * piece stays under the 4,095 characters ISO C promises for a literal. */
static const char *const printer_src[] = {
    "local MAX_ITEMS, MAX_KEYS, MAX_STR, WIDTH = 8, 64, 200, 72\n"
    "local cut = false  -- something was left out\n"
    "local kw = {}\n"
    "for w in ([[and break do else elseif end false for function goto if in\n"
    "  local nil not or repeat return then true until while]]):gmatch('%a+') do\n"
    "  kw[w] = true\n"
    "end\n"
    "local function quote(s)\n"
    "  local more = #s - MAX_STR\n"
    "  if more > 0 then s = s:sub(1, MAX_STR); cut = true end\n"
    "  s = string.format('%q', s):gsub('\\\\\\n', '\\\\n'):gsub('\\r', '\\\\r')\n"
    "  if more > 0 then s = s .. '... (' .. more .. ' more bytes)' end\n"
    "  return s\n"
    "end\n"
    "local function f32(x) return string.unpack('<f', string.pack('<f', x)) end\n"
    "local function scalar(v)\n"
    "  if type(v) == 'string' then return quote(v) end\n"
    "  if math.type(v) ~= 'float' or v ~= v or v == math.huge or v == -math.huge then\n"
    "    return tostring(v)\n"
    "  end\n"
    "  if v == math.floor(v) and v > -1e15 and v < 1e15 then return string.format('%.1f', v) end\n"
    "  if math.abs(v) < 3e38 and f32(v) == v then  -- a float32 (vectors): its shortest form\n"
    "    for p = 6, 9 do\n"
    "      local t = string.format('%.' .. p .. 'g', v)\n"
    "      if f32(tonumber(t)) == v then return t end\n"
    "    end\n"
    "  end\n"
    "  return tostring(v)\n"
    "end\n"
    "local order = {number = 1, string = 2, boolean = 3}\n"
    "local function key_less(a, b)\n"
    "  local ta, tb = order[type(a)] or 4, order[type(b)] or 4\n"
    "  if ta ~= tb then return ta < tb end\n"
    "  if ta < 3 then return a < b end\n"
    "  return tostring(a) < tostring(b)\n"
    "end\n"
    "local function key_text(k)\n"
    "  if type(k) == 'string' and k:match('^[%a_][%w_]*$') and not kw[k] then return k end\n"
    "  return '[' .. scalar(k) .. ']'\n"
    "end\n",

    "local function render(v, depth, seen, multiline)\n"
    "  if type(v) ~= 'table' then return scalar(v) end\n"
    "  local mt = getmetatable(v)\n"
    "  if type(mt) == 'table' and rawget(mt, '__tostring') then return tostring(v) end\n"
    "  if seen[v] then return '<cycle>' end\n"
    "  seen[v] = true\n"
    "  local parts, n, nested = {}, rawlen(v), false\n"
    "  for i = 1, math.min(n, MAX_ITEMS) do\n"
    "    local x = rawget(v, i)\n"
    "    nested = nested or type(x) == 'table'\n"
    "    parts[#parts + 1] = render(x, depth + 1, seen, multiline)\n"
    "  end\n"
    "  if n > MAX_ITEMS then\n"
    "    parts[#parts + 1] = '... (' .. (n - MAX_ITEMS) .. ' more)'\n"
    "    cut = true\n"
    "  end\n"
    "  local keys = {}\n"
    "  for k in next, v do\n"
    "    if not (math.type(k) == 'integer' and k >= 1 and k <= n) then keys[#keys + 1] = k end\n"
    "  end\n"
    "  table.sort(keys, key_less)\n"
    "  for i = 1, math.min(#keys, MAX_KEYS) do\n"
    "    local k = keys[i]\n"
    "    nested = true\n"
    "    parts[#parts + 1] = key_text(k) .. ' = ' .. render(rawget(v, k), depth + 1, seen, multiline)\n"
    "  end\n"
    "  if #keys > MAX_KEYS then\n"
    "    parts[#parts + 1] = '... (' .. (#keys - MAX_KEYS) .. ' more keys)'\n"
    "    cut = true\n"
    "  end\n"
    "  seen[v] = nil\n"
    "  if #parts == 0 then return '{}' end\n"
    "  local flat = '{' .. table.concat(parts, ', ') .. '}'\n"
    "  -- an array of plain values (a vector) stays on one line\n"
    "  if not multiline or not nested or (#flat + 2 * depth <= WIDTH and not flat:find('\\n')) then\n"
    "    return flat\n"
    "  end\n"
    "  local pad = string.rep('  ', depth + 1)\n"
    "  return '{\\n' .. pad .. table.concat(parts, ',\\n' .. pad) .. '\\n' ..\n"
    "         string.rep('  ', depth) .. '}'\n"
    "end\n"
    "return function(v, multiline, limits)\n"
    "  if type(v) == 'string' then return v, false end\n"
    "  limits = limits or {}\n"
    "  MAX_ITEMS, MAX_KEYS, MAX_STR = limits.items or 8, limits.keys or 64, limits.str or 200\n"
    "  cut = false\n"
    "  return render(v, 0, {}, multiline), cut\n"
    "end\n",
    NULL,
};

/* Load the pieces of src as one chunk named name. [-0, +1, e] */
static void load_pieces(lua_State *L, const char *const *src, const char *name) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; src[i]; i++)
        luaL_addstring(&b, src[i]);
    luaL_pushresult(&b);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (luaL_loadbufferx(L, text, len, name, "t") != LUA_OK)
        lua_error(L);
    lua_remove(L, -2);
}

void rec_repl_push_printer(lua_State *L) {
    load_pieces(L, printer_src, "=printer");
    lua_call(L, 0, 1);
}

/* ---- helpers: show, run, pipeline, feed ---------------------------------- */

static const char *const helper_src[] = {
    "local db, scripts_dir, policies_dir, ls, mtime, printer = ...\n"
    "local function load_module(path)\n"
    "  local env = setmetatable({rec = db}, {__index = _G})\n"
    "  local f, err = loadfile(path, 't', env)\n"
    "  if not f then error(err, 0) end\n"
    "  local m = f()\n"
    "  if type(m) ~= 'table' then error(path .. ': must return a table', 0) end\n"
    "  return m\n"
    "end\n"
    "local function strategy(name)\n"
    "  if not scripts_dir then error('no scripts folder (use --scripts DIR)', 0) end\n"
    "  local m = load_module(scripts_dir .. '/' .. name .. '.lua')\n"
    "  if type(m.recommend) ~= 'function' then\n"
    "    error(name .. '.lua: no recommend function', 0)\n"
    "  end\n"
    "  return m\n"
    "end\n"
    "function run(name, user, n)\n"
    "  if type(name) ~= 'string' then error('usage: run(strategy_name, user [, n])', 2) end\n"
    "  return strategy(name).recommend{user = user, n = n or 10, now = os.time(), rec = db}\n"
    "end\n"
    "local cache = {}\n"
    "local function policies()\n"
    "  local out = {}\n"
    "  if not policies_dir then return out end\n"
    "  for _, file in ipairs(ls(policies_dir)) do\n"
    "    local name, path = file:sub(1, -5), policies_dir .. '/' .. file\n"
    "    local t, c = mtime(path), cache[name]\n"
    "    if not c or c.mtime ~= t then\n"
    "      local m = load_module(path)\n"
    "      if type(m.on_load) == 'function' then m.on_load() end\n"
    "      c = {mtime = t, m = m}\n"
    "      cache[name] = c\n"
    "    end\n"
    "    out[#out + 1] = {name = name, m = c.m}\n"
    "  end\n"
    "  return out\n"
    "end\n",

    "function pipeline(user, n, name)\n"
    "  n = math.tointeger(n) or 10\n"
    "  local cfg, path = {}, scripts_dir and scripts_dir .. '/pipelines.lua'\n"
    "  if path and mtime(path) then cfg = load_module(path) end\n"
    "  name = name or cfg.default\n"
    "  local p = cfg.pipelines and name and cfg.pipelines[name]\n"
    "  if cfg.pipelines and name and not p then error('no pipeline ' .. tostring(name), 2) end\n"
    "  p = p or {strategies = {hybrid = 1.0}}\n"
    "  local pool, now = math.max(3 * n, 50), os.time()\n"
    "  local names = {}\n"
    "  for s in pairs(p.strategies or {}) do names[#names + 1] = s end\n"
    "  table.sort(names)\n"
    "  local items = {}\n"
    "  if #names == 1 then\n"
    "    items = strategy(names[1]).recommend{user = user, n = pool, now = now, rec = db} or {}\n"
    "  else\n"
    "    local acc = {}\n"
    "    for _, s in ipairs(names) do\n"
    "      local w = p.strategies[s]\n"
    "      local hits = strategy(s).recommend{user = user, n = pool, now = now, rec = db} or {}\n"
    "      for rank, h in ipairs(hits) do\n"
    "        local c = acc[h.id]\n"
    "        if not c then\n"
    "          c = {id = h.id, score = 0.0, ord = #items + 1}\n"
    "          acc[h.id] = c\n"
    "          items[#items + 1] = c\n"
    "        end\n"
    "        c.score = c.score + w / (10 + rank - 1)\n"
    "      end\n"
    "    end\n"
    "    table.sort(items, function(a, b)\n"
    "      if a.score ~= b.score then return a.score > b.score end\n"
    "      return a.ord < b.ord\n"
    "    end)\n"
    "    for _, c in ipairs(items) do c.ord = nil end\n"
    "  end\n"
    "  local loaded, list = {}, p.policies\n"
    "  for _, e in ipairs(policies()) do loaded[e.name] = e.m end\n"
    "  if not list then\n"
    "    list = {}\n"
    "    for _, e in ipairs(policies()) do\n"
    "      if type(e.m.rerank) == 'function' then list[#list + 1] = e.name end\n"
    "    end\n"
    "  end\n"
    "  local req = {user = user, n = n, now = now, rec = db}\n"
    "  for _, pn in ipairs(list) do\n"
    "    local m = loaded[pn]\n"
    "    if m and type(m.rerank) == 'function' then\n"
    "      items = m.rerank(req, items)\n"
    "      if type(items) ~= 'table' then error('policy ' .. pn .. ': rerank must return the items', 0) end\n"
    "    end\n"
    "  end\n"
    "  for i = #items, n + 1, -1 do items[i] = nil end\n"
    "  return items\n"
    "end\n",

    "function feed(ev)\n"
    "  if type(ev) ~= 'table' then error('usage: feed{user = , item = , type = }', 2) end\n"
    "  local pols = policies()\n"
    "  return db:batch(function()\n"
    "    local seq, w = db:event(ev)\n"
    "    local e = {}\n"
    "    for k, v in pairs(ev) do e[k] = v end\n"
    "    e.seq, e.weight, e.ts = seq, w, ev.ts or os.time()\n"
    "    local b = db:event_batch{e}\n"
    "    for _, p in ipairs(pols) do\n"
    "      if type(p.m.on_events) == 'function' then p.m.on_events(b)\n"
    "      elseif type(p.m.on_event) == 'function' then p.m.on_event(e) end\n"
    "    end\n"
    "    return seq, w\n"
    "  end)\n"
    "end\n"
    "function show(hits, prop)\n"
    "  prop = prop or 'title'\n"
    "  if type(hits) == 'table' and type(hits.items) == 'table' then hits = hits.items end\n"
    "  if type(hits) ~= 'table' then error('usage: show(hits [, property])', 2) end\n"
    "  local rows, wid = {}, 2\n"
    "  for i, h in ipairs(hits) do\n"
    "    local ok, it = pcall(db.item_get, db, h.id)\n"
    "    local v = ok and it and it.props and it.props[prop]\n"
    "    if type(v) == 'table' then v = printer(v) end\n"
    "    local id = tostring(h.id)\n"
    "    local score = type(h.score) == 'number' and string.format('%.4f', h.score) or '-'\n"
    "    rows[i] = {id, score, v == nil and '' or tostring(v)}\n"
    "    if #id > wid then wid = #id end\n"
    "  end\n"
    "  local fmt = '%4s  %-' .. wid .. 's  %8s  %s\\n'\n"
    "  io.write(string.format(fmt, 'rank', 'id', 'score', prop))\n"
    "  for i, r in ipairs(rows) do io.write(string.format(fmt, i, r[1], r[2], r[3])) end\n"
    "end\n",
    NULL,
};

/* ls(dir): the sorted names of the *.lua files in dir ({} when it cannot
 * be read). [-1, +1, m] */
static int l_ls(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    lua_newtable(L);
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0)
        return 1;
    lua_Integer k = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]->d_name);
        if (len > 4 && names[i]->d_name[0] != '.' &&
            !strcmp(names[i]->d_name + len - 4, ".lua")) {
            lua_pushstring(L, names[i]->d_name);
            lua_rawseti(L, -2, ++k);
        }
        free(names[i]);
    }
    free(names);
    return 1;
}

/* mtime(path): the modification time as a string, nil when missing.
 * [-1, +1, m] */
static int l_mtime(lua_State *L) {
    struct stat st;
    if (stat(luaL_checkstring(L, 1), &st) != 0)
        return 0;
    lua_pushfstring(L, "%I.%I", (lua_Integer)st.st_mtim.tv_sec,
                    (lua_Integer)st.st_mtim.tv_nsec);
    return 1;
}

/* ---- the REPL ------------------------------------------------------------ */

typedef struct repl {
    lua_State *L;
    int tty;     /* print tables over several lines */
    int printer; /* stack index of the printer function */
} repl;


static const char *const lua_keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
    "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
    "true", "until", "while", NULL,
};

static const char *const repl_commands[] = {"\\help", "\\load", "\\time", "\\quit", NULL};

static lua_State *complete_L; /* the REPL's state, for completion */

typedef struct cand_list {
    char **v;
    size_t n, cap;
} cand_list;

static void cand_add(cand_list *c, const char *head, size_t hlen, const char *name,
                     const char *prefix) {
    if (strncmp(name, prefix, strlen(prefix)))
        return;
    if (c->n + 2 > c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 32;
        char **v = realloc(c->v, cap * sizeof *v);
        if (!v)
            return;
        c->v = v;
        c->cap = cap;
    }
    size_t nlen = strlen(name);
    char *s = malloc(hlen + nlen + 1);
    if (!s)
        return;
    memcpy(s, head, hlen);
    memcpy(s + hlen, name, nlen + 1);
    c->v[c->n++] = s;
    c->v[c->n] = NULL;
}

/* Add the string keys of the table on top of the stack that start with
 * prefix (raw access: completion never runs metamethods). */
static void cand_add_keys(cand_list *c, lua_State *L, const char *head, size_t hlen,
                          const char *prefix) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING)
            cand_add(c, head, hlen, lua_tostring(L, -1), prefix);
    }
}

static char **repl_complete(const char *line, const char *word) {
    cand_list c = {NULL, 0, 0};
    lua_State *L = complete_L;
    const char *colon = strrchr(word, ':');
    const char *dot = strrchr(word, '.');
    if (line[strspn(line, " \t")] == 0 && word[0] == '\\') {
        for (int i = 0; repl_commands[i]; i++)
            cand_add(&c, "", 0, repl_commands[i], word);
    } else if (colon) {
        for (size_t i = 0; rec_lua_db_method(i); i++)
            cand_add(&c, word, (size_t)(colon + 1 - word), rec_lua_db_method(i), colon + 1);
    } else if (dot) {
        /* walk a.b.c from the globals, tables only */
        int top = lua_gettop(L);
        lua_pushglobaltable(L);
        const char *p = word;
        while (p < dot && lua_istable(L, -1)) {
            const char *e = memchr(p, '.', (size_t)(dot - p) + 1);
            lua_pushlstring(L, p, (size_t)(e - p));
            lua_rawget(L, -2);
            p = e + 1;
        }
        if (lua_istable(L, -1))
            cand_add_keys(&c, L, word, (size_t)(dot + 1 - word), dot + 1);
        lua_settop(L, top);
    } else {
        lua_pushglobaltable(L);
        cand_add_keys(&c, L, "", 0, word);
        lua_pop(L, 1);
        for (int i = 0; lua_keywords[i]; i++)
            cand_add(&c, "", 0, lua_keywords[i], word);
    }
    return c.v;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int tostring_protected(lua_State *L) {
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* Print the error on top of the stack ("error: name: message" for the
 * module's error objects) and pop it. */
static void print_error(lua_State *L) {
    lua_pushcfunction(L, tostring_protected);
    lua_pushvalue(L, -2);
    const char *msg = lua_pcall(L, 1, 1, 0) == LUA_OK ? lua_tostring(L, -1) : NULL;
    printf("error: %s\n", msg ? msg : "(the error object cannot be shown)");
    lua_pop(L, 2);
    fflush(stdout);
}

/* printer(v, multiline) for each value from idx to the top, one a line. */
static int print_values(lua_State *L) {
    int multiline = lua_toboolean(L, lua_upvalueindex(1));
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, lua_upvalueindex(2));
        lua_pushvalue(L, i);
        lua_pushboolean(L, multiline);
        lua_call(L, 2, 1);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        fwrite(s, 1, len, stdout);
        fputc('\n', stdout);
        lua_pop(L, 1);
    }
    return 0;
}

static int is_incomplete(lua_State *L) {
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return msg && len >= 5 && !strcmp(msg + len - 5, "<eof>");
}

/* Compile the chunk: "return <chunk>;" first, then as written. Leaves the
 * function (LUA_OK) or the error message. */
static int compile(lua_State *L, const char *text, size_t len) {
    lua_pushfstring(L, "return %s;", text);
    int rc = luaL_loadbufferx(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin", "t");
    lua_remove(L, -2);
    if (rc == LUA_OK)
        return rc;
    lua_pop(L, 1);
    return luaL_loadbufferx(L, text, len, "=stdin", "t");
}

int rec_repl_incomplete(lua_State *L, const char *text, size_t len) {
    if (compile(L, text, len) == LUA_OK) { /* an expression, or statements */
        lua_pop(L, 1);
        return 0;
    }
    int more = is_incomplete(L); /* open as a statement */
    lua_pop(L, 1);
    if (more)
        return 1;
    /* or as an expression ("{a = 1," is); one that compiles is complete */
    lua_pushfstring(L, "return %s", text);
    int rc = luaL_loadbufferx(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=stdin", "t");
    more = rc == LUA_ERRSYNTAX && is_incomplete(L);
    lua_pop(L, 2);
    return more;
}


/* Run the function on top and print what it returns (and the time taken
 * when timed). */
static void run_and_print(repl *r, int timed) {
    lua_State *L = r->L;
    int base = lua_gettop(L);
    double t0 = now_ms();
    rec_repl_input_set_running(L);
    int rc = lua_pcall(L, 0, LUA_MULTRET, 0);
    rec_repl_input_set_running(NULL);
    lua_sethook(L, NULL, 0, 0);
    double ms = now_ms() - t0;
    if (rc != LUA_OK) {
        print_error(L);
    } else {
        int nres = lua_gettop(L) - base + 1;
        if (nres > 0) {
            lua_pushboolean(L, r->tty);
            lua_pushvalue(L, r->printer);
            lua_pushcclosure(L, print_values, 2);
            lua_insert(L, -nres - 1);
            if (lua_pcall(L, nres, 0, 0) != LUA_OK)
                print_error(L);
        }
    }
    if (timed)
        printf("time: %.3f ms\n", ms);
    lua_settop(L, base - 1);
    fflush(stdout);
}

/* Evaluate a chunk and print its values or its error. */
static void eval(repl *r, const char *text, size_t len, int timed) {
    if (compile(r->L, text, len) != LUA_OK)
        print_error(r->L);
    else
        run_and_print(r, timed);
}

static void print_help(void) {
    puts("Lua 5.4 with the engine open: `db` is the database, `recd` the module.\n"
         "  db:item_get(\"m1\")            any method of docs/lua-api.md (Tab completes)\n"
         "  run(\"hybrid\", \"u1\" [, n])    a strategy from the scripts folder\n"
         "  pipeline(\"u1\" [, n [, name]]) the default (or named) pipeline of pipelines.lua\n"
         "  feed{user=, item=, type=}     store an event and run every policy's on_events/on_event\n"
         "  show(hits [, prop])           hits as a table with each item's title (or prop)\n"
         "commands:\n"
         "  \\load FILE    run a Lua file\n"
         "  \\time EXPR    evaluate and print the elapsed time\n"
         "  \\help         this text\n"
         "  \\quit         leave (also Ctrl-D); Ctrl-C cancels the line being typed");
}

/* A backslash command. Returns 1 to quit. */
static int command(repl *r, const char *line) {
    const char *arg = line + strcspn(line, " \t");
    size_t nlen = (size_t)(arg - line);
    arg += strspn(arg, " \t");
    if ((nlen == 2 && !strncmp(line, "\\q", 2)) || (nlen == 5 && !strncmp(line, "\\quit", 5)))
        return 1;
    if ((nlen == 2 && !strncmp(line, "\\h", 2)) || (nlen == 5 && !strncmp(line, "\\help", 5))) {
        print_help();
    } else if (nlen == 5 && !strncmp(line, "\\load", 5)) {
        if (!*arg) {
            puts("error: usage: \\load FILE");
        } else if (luaL_loadfilex(r->L, arg, "t") != LUA_OK) {
            print_error(r->L);
        } else {
            run_and_print(r, 0);
        }
    } else if (nlen == 5 && !strncmp(line, "\\time", 5)) {
        if (!*arg)
            puts("error: usage: \\time EXPR");
        else
            eval(r, arg, strlen(arg), 1);
    } else {
        printf("error: unknown command %.*s (try \\help)\n", (int)nlen, line);
    }
    fflush(stdout);
    return 0;
}

/* More lines for a chunk: Lua left open (not a command, not blank). */
static int repl_more(void *ctx, const char *text, size_t len) {
    const char *t = text + strspn(text, " \t\n");
    if (*t == '\\' || *t == 0)
        return 0;
    return rec_repl_incomplete(((repl *)ctx)->L, text, len);
}

static void loop(repl *r) {
    for (;;) {
        char *chunk;
        int k = rec_repl_input_read_chunk("recd> ", "  ...> ", repl_more, r, &chunk);
        if (k == REC_INPUT_EOF)
            break;
        if (k == REC_INPUT_PARTIAL) {
            puts("error: incomplete input at the end");
            free(chunk);
            break;
        }
        if (k == REC_INPUT_NOMEM)
            puts("error: out of memory");
        if (k != REC_INPUT_LINE)
            continue;
        const char *t = chunk + strspn(chunk, " \t");
        int quit = 0;
        if (*t == '\\')
            quit = command(r, t);
        else if (*t)
            eval(r, chunk, strlen(chunk), 0);
        free(chunk);
        if (quit)
            break;
    }
}

/* <dir of the executable>/<name>, else ./<name>, when that folder exists;
 * else "". */
static void find_folder(char *out, size_t cap, const char *name) {
    char exe[512];
    struct stat st;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(out, cap, "%s/%s", exe, name);
            if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
                return;
        }
    }
    snprintf(out, cap, "%s", name);
    if (stat(out, &st) != 0 || !S_ISDIR(st.st_mode))
        out[0] = 0;
}

static void usage(FILE *f) {
    fputs("usage: recd repl [--scripts DIR] [--policies DIR] [DATA]   (default ./data)\n", f);
}

/* Open the database, define the globals and helpers. [-0, +1 (printer), e] */
static int setup(lua_State *L) {
    const char *data = lua_tostring(L, 1);
    const char *scripts = lua_tostring(L, 2);
    const char *policies = lua_tostring(L, 3); /* all three stay on the stack */
    luaL_openlibs(L);
    luaL_requiref(L, "recd", luaopen_recd, 1);
    lua_getfield(L, -1, "open");
    lua_pushstring(L, data);
    lua_call(L, 1, 1);
    lua_setglobal(L, "db");
    lua_pop(L, 1);
    rec_repl_push_printer(L); /* 4: the printer */
    load_pieces(L, helper_src, "=helpers");
    lua_getglobal(L, "db");
    if (scripts)
        lua_pushstring(L, scripts);
    else
        lua_pushnil(L);
    if (policies)
        lua_pushstring(L, policies);
    else
        lua_pushnil(L);
    lua_pushcfunction(L, l_ls);
    lua_pushcfunction(L, l_mtime);
    lua_pushvalue(L, 4);
    lua_call(L, 6, 0);
    return 1;
}

int rec_repl_main(int argc, char **argv) {
    char scripts[1024] = "", policies[1024] = "";
    const char *data = "./data";
    int have_data = 0;
    static const struct option opts[] = {
        {"scripts", required_argument, NULL, 's'},
        {"policies", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    rec_cli cli;
    rec_cli_init(&cli, "recd repl", argc, argv, "h", opts);
    for (int ch; (ch = rec_cli_next(&cli)) != REC_CLI_DONE;) {
        if (ch == 'h') {
            usage(stdout);
            return 0;
        } else if (ch == 's' || ch == 'p') {
            snprintf(ch == 's' ? scripts : policies, 1024, "%s", cli.arg);
        } else if (ch == REC_CLI_OPERAND && !have_data) {
            data = cli.arg;
            have_data = 1;
        } else {
            if (ch == REC_CLI_OPERAND)
                fprintf(stderr, "recd repl: unexpected argument '%s'\n", cli.arg);
            usage(stderr);
            return 2;
        }
    }
    if (!scripts[0])
        find_folder(scripts, sizeof scripts, "scripts");
    if (!policies[0])
        find_folder(policies, sizeof policies, "policies");

    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "recd repl: out of memory\n");
        return 1;
    }
    lua_pushcfunction(L, setup);
    lua_pushstring(L, data);
    if (scripts[0])
        lua_pushstring(L, scripts);
    else
        lua_pushnil(L);
    if (policies[0])
        lua_pushstring(L, policies);
    else
        lua_pushnil(L);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        fprintf(stderr, "recd repl: cannot open %s: %s\n", data, luaL_tolstring(L, -1, NULL));
        lua_close(L);
        return 1;
    }
    repl r = {L, 0, lua_gettop(L)};
    char history[1024] = "";
    const char *home = getenv("HOME");
    if (home && *home)
        snprintf(history, sizeof history, "%s/.recd_history", home);
    complete_L = L;
    r.tty = rec_repl_input_open(history[0] ? history : NULL, repl_complete);
    if (r.tty)
        printf("recd repl on %s: `db` is the database; \\help for help\n", data);
    loop(&r);
    rec_repl_input_close();
    complete_L = NULL;
    lua_close(L);
    return 0;
}
