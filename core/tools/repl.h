/* repl.h - `recd repl`: a Lua 5.4 REPL with the engine open as `db`.
 *
 * Also the line input and the value printer that `recd console`
 * (console.h) shares: readline with history, completion and Ctrl-C
 * cancelling the line being typed when stdin is a terminal; plain lines
 * without prompts otherwise, so pipes and tests see one result a line.
 */
#ifndef REC_REPL_H
#define REC_REPL_H

#include <lua.h>
#include <stddef.h>

/* `recd repl [--scripts DIR] [--policies DIR] [DATA]`; argv[0] is the
 * command's name ("repl"), the options follow. Returns the process exit
 * code (0 at EOF or \quit, 1 when DATA cannot be opened, 2 for bad
 * arguments). */
int rec_repl_main(int argc, char **argv);

/* ---- line input (one per process) ---------------------------------------- */

/* Candidates for the word being completed, given the whole line so far
 * (line[0..end) is what precedes the cursor) and the word's prefix. Return
 * a malloc'ed, NULL-terminated list of malloc'ed strings (readline frees
 * them), or NULL for none. */
typedef char **(*rec_repl_input_complete_fn)(const char *line, const char *word);

enum {
    REC_INPUT_LINE = 1,   /* *line holds a line (malloc'ed; free it) */
    REC_INPUT_EOF = 0,    /* end of input */
    REC_INPUT_CANCEL = 2, /* Ctrl-C: discard what was typed */
    REC_INPUT_PARTIAL = 3, /* end of input inside a chunk: *chunk holds it */
    REC_INPUT_NOMEM = -1, /* out of memory: what was read is dropped */
};

/* Start reading stdin. history: a file to load and save (NULL: none);
 * complete: the completion callback (NULL: none). Installs a SIGINT
 * handler. Returns 1 when stdin is a terminal (prompts shown), else 0. */
int rec_repl_input_open(const char *history, rec_repl_input_complete_fn complete);

/* Read one line; the prompt is shown only on a terminal. */
int rec_repl_input_read(const char *prompt, char **line);

/* Whether text[0..len) (a chunk read so far, lines joined by '\n') needs
 * another line: 1 for more, 0 when it is complete (or wrong: let the
 * caller say why). */
typedef int (*rec_repl_input_more_fn)(void *ctx, const char *text, size_t len);

/* Read one chunk: a line, then more lines (more_prompt) while more says
 * so. A Ctrl-C drops the whole chunk (REC_INPUT_CANCEL). A chunk typed on
 * a terminal enters the history as one entry, its lines joined by '\n'.
 * REC_INPUT_LINE or REC_INPUT_PARTIAL: *chunk is malloc'ed (free it). */
int rec_repl_input_read_chunk(const char *prompt, const char *more_prompt, rec_repl_input_more_fn more,
                         void *ctx, char **chunk);

/* 1 when text is Lua left open, which more lines may finish: it does not
 * compile, neither as written nor as "return <text>", and an error is at
 * "<eof>" ("function f()", "t = {a = 1,"). 0 when it compiles, or is wrong
 * whatever follows. Compiles only. [-0, +0, m] */
int rec_repl_incomplete(lua_State *L, const char *text, size_t len);

/* While L runs, a Ctrl-C raises "interrupted!" inside it (NULL: nothing
 * runs); so does one pressed since the last line was read, before L was
 * set (while the line compiled or its file loaded). */
void rec_repl_input_set_running(lua_State *L);

/* Save the history and restore the terminal. */
void rec_repl_input_close(void);

/* ---- value printing ------------------------------------------------------ */

/* Push the printer: a Lua function (v, multiline [, limits]) returning v
 * as text, and true when it left something out; tables are nested with
 * indentation when multiline and they do not fit one line, strings inside
 * tables are quoted. limits = {items =, keys =, str =} (each optional):
 * arrays show `items` elements (8) then "... (N more)", tables `keys`
 * other keys (64), strings inside tables `str` bytes (200). [-0, +1, e] */
void rec_repl_push_printer(lua_State *L);

#endif
