# recd - build, test, run, bench.
#
#   make                 library, `recd` binary, Lua module, examples/c (build/rel)
#   make test            every suite under ASan+UBSan (build/san)
#   make test SANITIZE=  the same suites without sanitizers
#   make chaos           kill -9 and failed commits under load (tests/chaos)
#   make test-cluster    a node over a 3-server NATS JetStream cluster
#                        (tests/cluster; docs/cluster.md)
#   make bench           benchmarks on the optimised build, first the default
#                        configuration as `make run` serves it (10-15 min)
#   make bench-default   that one alone (BENCH_ARGS='--quick' or '--only PART')
#   make fuzz            libFuzzer targets, 60 s each (tests/fuzz/run.sh)
#   make run             serve ./data on 127.0.0.1:7700 (demo data loaded on first
#                        run); DATA=DIR and LISTEN=HOST:PORT choose others
#
# Missing Debian packages are installed (as root) or named with the exact
# apt-get line to run: each target asks only for what it uses.

# make, make run, make install: compiler and libraries.
BUILD_PKGS := build-essential pkg-config liblua5.4-dev libuv1-dev \
              libmsgpack-dev liblmdb-dev libedit-dev libnats-dev
# make test: the suites' tools (cmocka, the Lua interpreter, Python with
# msgpack and pytest, valgrind, clang with libFuzzer for the fuzzers, and
# mdb_dump, which reads data folders for the replay and chaos suites).
TEST_PKGS  := libcmocka-dev lua5.4 python3 python3-msgpack python3-pytest \
              valgrind clang libclang-rt-14-dev lmdb-utils
# make bench: Redis for the server comparisons, Python for the default
# configuration's and the pipeline's benches.
BENCH_PKGS := redis-server redis-tools python3 python3-msgpack
# make fuzz
FUZZ_PKGS  := clang libclang-rt-14-dev
# make test-cluster: the NATS server it starts three of, Python and msgpack
# for its clients, mdb_copy for the snapshot checks.
CLUSTER_PKGS := nats-server python3 python3-msgpack lmdb-utils

CC       ?= cc
OPT      ?= -O2
SANITIZE ?=
PKGS     := lua5.4 libuv msgpack lmdb libnats

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wundef -Wwrite-strings \
        -Wmissing-prototypes -Wstrict-prototypes -Wpointer-arith \
        -Wcast-align -Wformat=2 -Wvla -Wnull-dereference -Wdouble-promotion \
        -Wno-unused-parameter

# The sanitised build is the test build: it also compiles in the fault
# injection points (REC_FAULTS, see core/engine/store.h), which the release build
# does not carry.
ifneq ($(SANITIZE),)
BUILD    := build/san
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
OPT      := -O1 -g
TESTDEFS := -DREC_FAULTS
else
BUILD    := build/rel
SANFLAGS :=
TESTDEFS :=
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  += -std=c11 -D_GNU_SOURCE $(TESTDEFS) -g $(OPT) $(WARN) $(SANFLAGS) -fPIC -MMD -MP \
           $(CORE_DIRS:%=-I%) $(PKG_CFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) -ledit -lm -lpthread

# The layers (README.md, Layout): core/engine is the library the Lua module
# is made of; core/service what the server runs over it (pipelines,
# training schedule, event fan-out, attribution and stats, the built-in
# learner and recommender); core/cluster a node over a NATS JetStream
# cluster; core/server the msgpack-RPC server and its method table;
# core/client the C client; core/tools the command-line tools. librecd.a
# holds the first five (what a C program links); the tools
# go into their own archive, linked by the recd binary and the tests of the
# tools.
CORE_DIRS  := core/engine core/service core/cluster core/server core/client core/tools
ENGINE_SRC := $(wildcard core/engine/*.c)
LIB_SRC    := $(ENGINE_SRC) $(wildcard core/service/*.c) $(wildcard core/cluster/*.c) \
              $(wildcard core/server/*.c) $(wildcard core/client/*.c)
TOOLS_SRC  := $(filter-out core/tools/main.c,$(wildcard core/tools/*.c))
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
LIB_OBJ    := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOLS_OBJ  := $(TOOLS_SRC:%.c=$(BUILD)/%.o)
CORE_OBJ   := $(LIB_OBJ) $(TOOLS_OBJ)
LIB      := $(BUILD)/librecd.a
TOOLS_LIB := $(BUILD)/librecd-tools.a
LUAMOD   := $(BUILD)/lua/recd.so
BIN      := $(BUILD)/recd

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

# One stamp per package list: build/.deps-build, -test, -bench, -fuzz.
DEPS_STAMP := build/.deps-build

.PHONY: FORCE all deps test test-unit test-lua bench bench-default fuzz run clean install uninstall \
        examples
.DEFAULT_GOAL := all

all: $(DEPS_STAMP) recd $(LUAMOD) examples

# The top-level ./recd is the optimised binary (or the sanitised one when
# SANITIZE is set for the whole invocation).
recd: $(BIN)
	cp $(BIN) $@

# The other lists wait for the build's, so that two apt-get never run at
# once under make -j.
build/.deps-build: tests/deps.sh Makefile
	@sh tests/deps.sh $(BUILD_PKGS) && mkdir -p build && touch $@
build/.deps-test: tests/deps.sh Makefile | build/.deps-build
	@sh tests/deps.sh $(TEST_PKGS) && touch $@
build/.deps-bench: tests/deps.sh Makefile | build/.deps-build
	@sh tests/deps.sh $(BENCH_PKGS) && touch $@
build/.deps-fuzz: tests/deps.sh Makefile | build/.deps-build
	@sh tests/deps.sh $(FUZZ_PKGS) && touch $@
build/.deps-cluster: tests/deps.sh Makefile | build/.deps-build
	@sh tests/deps.sh $(CLUSTER_PKGS) && touch $@

deps:
	@sh tests/deps.sh $(sort $(BUILD_PKGS) $(TEST_PKGS) $(BENCH_PKGS) $(FUZZ_PKGS) $(CLUSTER_PKGS))

# Objects and programs are rebuilt when the compiler flags change (a build
# folder made before a flag was added would otherwise keep its old objects).
FLAGS_STAMP := $(BUILD)/.cflags
$(FLAGS_STAMP): FORCE
	@mkdir -p $(dir $@)
	@echo '$(CC) $(CFLAGS)' | cmp -s - $@ || echo '$(CC) $(CFLAGS)' > $@
FORCE:

$(BUILD)/core/%.o: core/%.c $(FLAGS_STAMP) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(TOOLS_LIB): $(TOOLS_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/core/tools/main.o $(TOOLS_LIB) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The Lua module is the engine's objects alone (no server, client or
# tools); it takes Lua's symbols from the interpreter that loads it.
$(LUAMOD): $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(shell pkg-config --libs libuv msgpack lmdb) -lm -lpthread

$(BUILD)/tests/%: tests/unit/%.c $(TOOLS_LIB) $(LIB) $(FLAGS_STAMP) | $(DEPS_STAMP) build/.deps-test
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(TOOLS_LIB) $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka

$(BUILD)/bench/%: tests/bench/%.c $(TOOLS_LIB) $(LIB) $(FLAGS_STAMP) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/bench -o $@ $< $(TOOLS_LIB) $(LIB) $(LDFLAGS) $(LDLIBS)

# ---- examples/c: client programs built from the library ------------------
# Each examples/c/NAME.c becomes $(BUILD)/examples/NAME, linked like a user's
# program would be (examples/c/README.md). Built by `all` and, sanitised,
# by `make test`, whose end-to-end suite runs them.
EXAMPLE_SRC := $(wildcard examples/c/*.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/c/%.c=$(BUILD)/examples/%)

$(BUILD)/examples/%: examples/c/%.c $(LIB) $(FLAGS_STAMP) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

examples: $(EXAMPLE_BIN)
# ---- end of examples/c ------------------------------------------------------

# Tests run under ASan+UBSan unless SANITIZE is given (empty: plain build).
TEST_SANITIZE ?= address,undefined
test: $(DEPS_STAMP) build/.deps-test
	@$(MAKE) --no-print-directory SANITIZE=$(TEST_SANITIZE) build-tests
	@$(MAKE) --no-print-directory SANITIZE= $(UNIT_SRC:tests/unit/%.c=build/rel/tests/%) build/rel/recd
	@sh tests/run.sh build/$(if $(TEST_SANITIZE),san,rel) $(TEST_SANITIZE)

build-tests: $(LIB) $(LUAMOD) $(BIN) $(UNIT_BIN) $(EXAMPLE_BIN)

# The first figures are the default configuration's: `recd serve` as `make
# run` starts it (the shipped scripts and policies) on 100k items and 1M
# events, with Redis side by side (tests/bench/default_bench.py). The
# server and pipeline benches after it measure lighter configurations (the
# built-in pipeline; the shipped one on 2,000 users of 10 events).
bench: $(DEPS_STAMP) build/.deps-bench $(BENCH_BIN) $(BIN)
	@echo "== the default configuration (make run) at 100k items / 1M events, against Redis"
	@/usr/bin/python3 tests/bench/default_bench.py $(BIN)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done
	@echo "== server, built-in pipeline (lighter configuration: no scripts or policies), against redis-benchmark"
	@sh tests/bench/server_bench.sh $(BIN)
	@echo "== transport (a message in 1 KiB pieces, deletes under a write stream)"
	@/usr/bin/python3 tests/bench/transport_bench.py $(BIN)
	@echo "== shipped pipeline, lighter configuration: 100k items, 2,000 users of 10 events"
	@/usr/bin/python3 tests/bench/pipeline_bench.py $(BIN)
	@echo "== recd eval on MovieLens (skipped without the data)"
	@sh tests/bench/eval_bench.sh $(BIN)
	@echo "== the server over the protocol against the in-process replay (MovieLens; skipped without it)"
	@sh tests/bench/replay_agreement.sh $(BIN)

# make bench-default [BENCH_ARGS='--quick' | '--only PART,...']: the default
# configuration alone (its parts: tests/bench/default_bench.py --help).
BENCH_ARGS ?=
bench-default: $(DEPS_STAMP) build/.deps-bench $(BIN)
	@/usr/bin/python3 tests/bench/default_bench.py $(BIN) $(BENCH_ARGS)

# clang + libFuzzer builds of the msgpack harnesses, into build/fuzz.
fuzz: $(DEPS_STAMP) build/.deps-fuzz
	@sh tests/fuzz/run.sh 60

# make run [DATA=folder] [LISTEN=host:port]
DATA   ?= ./data
LISTEN ?= 127.0.0.1:7700
run: all
	./recd serve --data $(DATA) --listen $(LISTEN) --init examples/demo_data.lua

# The chaos suite runs the server of the test build, which carries the fault
# injection points (REC_FAULTS); about a minute.
CHAOS_BUILD := build/$(if $(TEST_SANITIZE),san,rel)
.PHONY: chaos test-cluster
chaos: $(DEPS_STAMP) build/.deps-test
	@$(MAKE) --no-print-directory SANITIZE=$(TEST_SANITIZE) $(CHAOS_BUILD)/recd
	@RECD_BIN=$(CHAOS_BUILD)/recd ASAN_OPTIONS=detect_leaks=1 PYTHONDONTWRITEBYTECODE=1 \
	    timeout 900 /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/chaos

# Three nats-servers (JetStream, R3) on loopback and three nodes over
# them (the test build's, as for chaos): events and catalogue writes,
# read-your-writes through any node, kill -9 of a node and of a server,
# bad starts; about two minutes.
test-cluster: $(DEPS_STAMP) build/.deps-cluster
	@$(MAKE) --no-print-directory SANITIZE=$(TEST_SANITIZE) $(CHAOS_BUILD)/recd \
	    $(CHAOS_BUILD)/lua/recd.so
	@RECD_BIN=$(CHAOS_BUILD)/recd ASAN_OPTIONS=detect_leaks=1 PYTHONDONTWRITEBYTECODE=1 \
	    timeout 600 /usr/bin/python3 tests/cluster/run.py

# make install [PREFIX=/usr/local] [DESTDIR=staging root]: the binary, the
# Lua module where lua5.4 looks under PREFIX, the shipped scripts and
# policies in PREFIX/share/recd (where an installed `recd serve` finds
# them), and the man page. `make uninstall` with the same variables takes
# back exactly that.
PREFIX   ?= /usr/local
BINDIR   := $(PREFIX)/bin
LUALIBDIR := $(PREFIX)/lib/lua/5.4
SHAREDIR := $(PREFIX)/share/recd
MAN1DIR  := $(PREFIX)/share/man/man1
SHIPPED  := $(wildcard scripts/*.lua) $(wildcard policies/*.lua)

install: $(BIN) $(LUAMOD)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LUALIBDIR) $(DESTDIR)$(MAN1DIR) \
	    $(DESTDIR)$(SHAREDIR)/scripts $(DESTDIR)$(SHAREDIR)/policies
	install -m 755 $(BIN) $(DESTDIR)$(BINDIR)/recd
	install -m 755 $(LUAMOD) $(DESTDIR)$(LUALIBDIR)/recd.so
	install -m 644 $(wildcard scripts/*.lua) $(DESTDIR)$(SHAREDIR)/scripts/
	install -m 644 $(wildcard policies/*.lua) $(DESTDIR)$(SHAREDIR)/policies/
	install -m 644 docs/recd.1 $(DESTDIR)$(MAN1DIR)/recd.1

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/recd $(DESTDIR)$(LUALIBDIR)/recd.so $(DESTDIR)$(MAN1DIR)/recd.1
	rm -f $(addprefix $(DESTDIR)$(SHAREDIR)/,$(SHIPPED))
	-rmdir $(DESTDIR)$(SHAREDIR)/scripts $(DESTDIR)$(SHAREDIR)/policies $(DESTDIR)$(SHAREDIR) 2>/dev/null

clean:
	rm -rf build recd

-include $(CORE_OBJ:.o=.d) $(BUILD)/core/tools/main.d $(UNIT_BIN:=.d) $(BENCH_BIN:=.d) $(EXAMPLE_BIN:=.d)
