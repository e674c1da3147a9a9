/* cli.c - getopt_long in REQUIRE_ORDER mode ("+"), resumed after each
 * operand, so argv is never permuted. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

void rec_cli_init(rec_cli *c, const char *prog, int argc, char **argv, const char *shortopts,
                  const struct option *longopts) {
    memset(c, 0, sizeof *c);
    c->prog = prog;
    c->argc = argc;
    c->argv = argv;
    c->longopts = longopts;
    snprintf(c->shortopts, sizeof c->shortopts, "+:%s", shortopts);
    optind = 0; /* glibc: start afresh (its state is global) */
    opterr = 0; /* the messages are ours */
}

enum { MISSING, UNKNOWN, NO_VALUE };

/* Say what is wrong with the option that starts at argv[at], named as
 * typed: "--name" (without "=value"), or "-x" for a letter. */
static void say(const rec_cli *c, int at, int what) {
    const char *a = at < c->argc ? c->argv[at] : "";
    char name[128];
    if (!strncmp(a, "--", 2))
        snprintf(name, sizeof name, "%.*s", (int)strcspn(a, "="), a);
    else
        snprintf(name, sizeof name, "-%c", optopt);
    if (what == MISSING)
        fprintf(stderr, "%s: %s needs a value\n", c->prog, name);
    else if (what == NO_VALUE)
        fprintf(stderr, "%s: %s takes no value\n", c->prog, name);
    else
        fprintf(stderr, "%s: unknown option '%s'\n", c->prog, name);
    fprintf(stderr, "(%s --help lists the options)\n", c->prog);
}

int rec_cli_next(rec_cli *c) {
    c->arg = NULL;
    if (c->dashdash) {
        if (optind >= c->argc)
            return REC_CLI_DONE;
        c->ind = optind++;
        c->arg = c->argv[c->ind];
        return REC_CLI_OPERAND;
    }
    /* The argument getopt looks at (for letters, their bundle); optind 0
     * before the first call, which makes glibc set up afresh. */
    int at = optind ? optind : 1;
    int ch = getopt_long(c->argc, c->argv, c->shortopts, c->longopts, NULL);
    if (ch == -1) {
        if (optind > at && !strcmp(c->argv[optind - 1], "--")) {
            c->dashdash = 1;
            return rec_cli_next(c);
        }
        if (optind >= c->argc)
            return REC_CLI_DONE;
        c->ind = optind++; /* getopt stopped at an operand: step over it */
        c->arg = c->argv[c->ind];
        return REC_CLI_OPERAND;
    }
    if (ch == ':' && optopt == 'h') /* "-h" with no HOST after it: help */
        return 'h';
    if (ch == ':') {
        say(c, at, MISSING);
        return REC_CLI_ERROR;
    }
    if (ch == '?') { /* a long option named exactly but given "=value" keeps optopt */
        const char *a = at < c->argc ? c->argv[at] : "";
        say(c, at, !strncmp(a, "--", 2) && optopt ? NO_VALUE : UNKNOWN);
        return REC_CLI_ERROR;
    }
    c->arg = optarg;
    return ch;
}
