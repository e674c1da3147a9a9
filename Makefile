# recd - build, test, run, bench.
#
#   make                 library, `recd` binary, Lua module, examples/c (build/rel)
#   make test            every suite under ASan+UBSan (build/san)
#   make test SANITIZE=  the same suites without sanitizers
#   make bench           benchmarks on the optimised build
#   make fuzz            libFuzzer targets, 60 s each (tests/fuzz/run.sh)
#   make run             serve ./data (demo data loaded on first run)
#
# Missing Debian packages are installed (as root) or named with the exact
# apt-get line to run.

DEB_PKGS := build-essential pkg-config liblua5.4-dev lua5.4 libuv1-dev \
            libmsgpack-dev liblmdb-dev lmdb-utils libcmocka-dev \
            python3 python3-msgpack python3-pytest redis-server redis-tools \
            libreadline-dev valgrind clang libclang-rt-14-dev

CC       ?= cc
OPT      ?= -O2
SANITIZE ?=
PKGS     := lua5.4 libuv msgpack lmdb

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wundef -Wwrite-strings \
        -Wmissing-prototypes -Wstrict-prototypes -Wpointer-arith \
        -Wcast-align -Wformat=2 -Wvla -Wnull-dereference -Wdouble-promotion \
        -Wno-unused-parameter

ifneq ($(SANITIZE),)
BUILD    := build/san
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
OPT      := -O1 -g
else
BUILD    := build/rel
SANFLAGS :=
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  += -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) $(SANFLAGS) -fPIC -MMD -MP \
           -Icore $(PKG_CFLAGS)
LDFLAGS += $(SANFLAGS)
LDLIBS  += $(PKG_LIBS) -lreadline -lm -lpthread

CORE_SRC := $(filter-out core/main.c,$(wildcard core/*.c))
CORE_OBJ := $(CORE_SRC:core/%.c=$(BUILD)/core/%.o)
LIB      := $(BUILD)/librecd.a
LUAMOD   := $(BUILD)/lua/recd.so
BIN      := $(BUILD)/recd

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BIN  := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

DEPS_STAMP := build/.deps-ok

.PHONY: all deps test test-unit test-lua bench fuzz run clean install examples
.DEFAULT_GOAL := all

all: $(DEPS_STAMP) recd $(LUAMOD) examples

# The top-level ./recd is the optimised binary (or the sanitised one when
# SANITIZE is set for the whole invocation).
recd: $(BIN)
	cp $(BIN) $@

$(DEPS_STAMP): tests/deps.sh
	@sh tests/deps.sh $(DEB_PKGS)
	@mkdir -p build && touch $@

deps:
	@sh tests/deps.sh $(DEB_PKGS)

$(BUILD)/core/%.o: core/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/core/main.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The Lua module takes Lua's symbols from the interpreter that loads it.
# The Lua module takes the engine, not the terminal tools (no readline).
LUAMOD_OBJ := $(filter-out $(BUILD)/core/repl.o $(BUILD)/core/console.o,$(CORE_OBJ))
$(LUAMOD): $(LUAMOD_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(shell pkg-config --libs libuv msgpack lmdb) -lm -lpthread

$(BUILD)/tests/%: tests/unit/%.c $(LIB) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka

$(BUILD)/bench/%: tests/bench/%.c $(LIB) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/bench -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

# ---- examples/c: client programs built from the library ------------------
# Each examples/c/NAME.c becomes $(BUILD)/examples/NAME, linked like a user's
# program would be (examples/c/README.md). Built by `all` and, sanitised,
# by `make test`, whose end-to-end suite runs them.
EXAMPLE_SRC := $(wildcard examples/c/*.c)
EXAMPLE_BIN := $(EXAMPLE_SRC:examples/c/%.c=$(BUILD)/examples/%)

$(BUILD)/examples/%: examples/c/%.c $(LIB) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

examples: $(EXAMPLE_BIN)
# ---- end of examples/c ------------------------------------------------------

# Tests run under ASan+UBSan unless SANITIZE is given (empty: plain build).
TEST_SANITIZE ?= address,undefined
test: $(DEPS_STAMP)
	@$(MAKE) --no-print-directory SANITIZE=$(TEST_SANITIZE) build-tests
	@$(MAKE) --no-print-directory SANITIZE= $(UNIT_SRC:tests/unit/%.c=build/rel/tests/%) build/rel/recd
	@sh tests/run.sh build/$(if $(TEST_SANITIZE),san,rel) $(TEST_SANITIZE)

build-tests: $(LIB) $(LUAMOD) $(BIN) $(UNIT_BIN) $(EXAMPLE_BIN)

bench: $(DEPS_STAMP) $(BENCH_BIN) $(BIN)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done
	@echo "== server (recd bench against redis-benchmark)"
	@sh tests/bench/server_bench.sh $(BIN)
	@echo "== transport (a message in 1 KiB pieces, deletes under a write stream)"
	@/usr/bin/python3 tests/bench/transport_bench.py $(BIN)
	@echo "== default pipeline at 100k items"
	@/usr/bin/python3 tests/bench/pipeline_bench.py $(BIN)
	@echo "== recd eval on MovieLens (skipped without the data)"
	@sh tests/bench/eval_bench.sh $(BIN)

# clang + libFuzzer builds of the msgpack harnesses, into build/fuzz.
fuzz: $(DEPS_STAMP)
	@sh tests/fuzz/run.sh 60

run: all
	./recd serve --data ./data --init examples/demo_data.lua

install: all
	install -d $(DESTDIR)/usr/local/bin $(DESTDIR)/usr/local/lib/lua/5.4
	install -m 755 recd $(DESTDIR)/usr/local/bin/recd
	install -m 755 $(LUAMOD) $(DESTDIR)/usr/local/lib/lua/5.4/recd.so

clean:
	rm -rf build recd

-include $(CORE_OBJ:.o=.d) $(BUILD)/core/main.d $(UNIT_BIN:=.d) $(BENCH_BIN:=.d) $(EXAMPLE_BIN:=.d)
