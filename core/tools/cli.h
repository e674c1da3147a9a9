/* cli.h - the option parser every recd command uses: getopt_long that
 * never reorders argv, with one wording for every command's errors.
 *
 *   rec_cli c;
 *   rec_cli_init(&c, "recd eval", argc, argv, "hk:", longopts);
 *   for (int ch; (ch = rec_cli_next(&c)) != REC_CLI_DONE;)
 *       switch (ch) {
 *       case 'k': ... c.arg ...; break;
 *       case REC_CLI_OPERAND: ... c.arg ..., or stop: argv + c.ind ...
 *       case REC_CLI_ERROR: return 2;   (the message is printed)
 *       }
 *
 * Options and operands may come in any order ("LOG --json" and
 * "--json LOG"); operands are handed over where they stand, so a command
 * that passes everything after its first operand on (`recd lua FILE
 * ARGS...`) stops there and finds ARGS untouched. After "--" every
 * argument is an operand. "--name=value" works for options with a value.
 */
#ifndef REC_CLI_H
#define REC_CLI_H

#include <getopt.h>

#define REC_CLI_DONE (-1)    /* no argument left */
#define REC_CLI_ERROR (-2)   /* a missing value or unknown option: said on stderr */
#define REC_CLI_OPERAND (-3) /* c->arg is an operand, argv[c->ind] */

typedef struct rec_cli {
    const char *prog;               /* "recd serve": starts every message */
    int argc;
    char **argv;                    /* borrowed; argv[0] is the command's name */
    const struct option *longopts;  /* borrowed; val: what rec_cli_next returns */
    char shortopts[64];             /* "+:" and the caller's getopt letters */
    int dashdash;                   /* "--" was passed: the rest are operands */
    const char *arg;                /* the option's value or the operand */
    int ind;                        /* argv index of the operand returned */
} rec_cli;

/* shortopts: getopt's letters ("hk:"), longopts: getopt_long's table
 * (flag NULL), both borrowed for the parse. Parses from argv[1]. Only one
 * parse runs at a time (getopt's state is global). */
void rec_cli_init(rec_cli *c, const char *prog, int argc, char **argv, const char *shortopts,
                  const struct option *longopts);

/* The next option's val (c->arg its value, NULL for none), REC_CLI_OPERAND,
 * REC_CLI_DONE, or REC_CLI_ERROR after printing "PROG: --x needs a value",
 * "PROG: unknown option '--x'" or "PROG: --x takes no value", and where
 * the help is, to stderr. A final "-h" that wants a value (recd bench's
 * -h HOST) comes back as 'h' with c->arg NULL: the help. */
int rec_cli_next(rec_cli *c);

#endif
