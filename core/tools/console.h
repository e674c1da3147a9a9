/* console.h - `recd console`: call a running server's methods by hand.
 *
 *   recd console [--token FILE] [ADDR]       (default 127.0.0.1:7700)
 *
 * Each line is a method and its params as Lua expressions
 * (`rec.recommend {user = "u1", n = 5}`), evaluated in a small local Lua
 * state without the engine, sent with client.h, and the answer printed:
 * indented on a terminal, one JSON line per answer otherwise. Other lines
 * are Lua for admin.eval (Unix socket or token only; elsewhere an error,
 * not sent). Commands: \reload [name], \scripts, \stats, \info, \more,
 * \set items N, \help, \quit.
 */
#ifndef REC_CONSOLE_H
#define REC_CONSOLE_H

/* argv[0] is the command's name ("console"), the options follow. Returns the exit code: 0 at
 * EOF or \quit, 1 when the server cannot be reached or refuses the token,
 * or (stdin not a terminal) when any line failed, 2 for bad arguments. */
int rec_console_main(int argc, char **argv);

#endif
