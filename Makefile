# aitbc — build, test, install.  `make help` lists the targets.
PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
CFLAGS  ?= -O2 -g
VERSION ?= 0.1.0
PKGS    := lua5.4 libcurl libsodium sqlite3
# Linked at build time; libcurl is dlopen'ed on first use (its dependency
# tree costs more start-up time than everything else), and so is libjq
# (--jq only; the binary runs without it).
LINK_PKGS := lua5.4 libsodium sqlite3
# Debian packages the build, the tests and the linters need.
DEB_PKGS := build-essential pkg-config ca-certificates liblua5.4-dev lua-cjson-dev \
            libcurl4-openssl-dev libsodium-dev libsqlite3-dev libjq-dev \
            lua5.4 lua-busted lua-check clang-format wrk python3-mnemonic \
            podman runc

# Lazily expanded: pkg-config runs when a recipe needs it, after `deps`.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(LINK_PKGS))
SONAME     = $(shell objdump -p $$($(CC) -print-file-name=$(1)) | awk '/SONAME/ {print $$2}')
CJSON_A    = $(shell $(CC) -print-file-name=liblua5.4-cjson.a)
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE -Iruntime -I$(BUILD) $(PKG_CFLAGS) \
             -DAITBC_CURL_SONAME='"$(call SONAME,libcurl.so)"' -DAITBC_JQ_SONAME='"$(call SONAME,libjq.so)"'

C_MODULES := main host interrupt crypto http http_parse server server_io net db sys shared json jq gpu sandbox lpattern
OBJS      := $(C_MODULES:%=$(BUILD)/%.o) $(BUILD)/embedded.o
LUA_FILES := $(shell find lua -name '*.lua' | LC_ALL=C sort)
# Embedded as bytecode (luac5.4 keeps line information): parsing the CLI's
# modules from source was most of `aitbc --help`'s time.
LUA_BC    := $(LUA_FILES:%=$(BUILD)/%) $(BUILD)/lua/aitbc/wallet/wordlist.lua

.PHONY: all deps test check demo asan lint format install uninstall clean bench reference image help variant FORCE

# alloc_fail.so: fault injection the specs of the native modules load
# (package.loadlib); a test helper, never installed.
all: $(BUILD)/aitbc $(BUILD)/test/alloc_fail.so

$(BUILD)/embed: runtime/embed.c | $(BUILD)
	$(CC) -O1 -o $@ $<

$(BUILD)/lua/%.lua: lua/%.lua
	@mkdir -p $(dir $@)
	luac5.4 -o $@ $<

$(BUILD)/gen/lua/aitbc/wallet/wordlist.lua: runtime/bip39-wordlist.sh
	runtime/bip39-wordlist.sh $@

$(BUILD)/lua/aitbc/wallet/wordlist.lua: $(BUILD)/gen/lua/aitbc/wallet/wordlist.lua
	@mkdir -p $(dir $@)
	luac5.4 -o $@ $<

# The top-level help's index (name, summary, category of each command) is
# printed by a first binary from the declarations themselves and embedded in
# the second: `aitbc --help` then loads no command module (29 of them took
# 3.2 ms of its 5.2).
INDEX_BC := $(BUILD)/lua/aitbc/cli/command_index.lua

$(BUILD)/stage/embedded.c: $(BUILD)/embed $(LUA_BC)
	@mkdir -p $(dir $@)
	$(BUILD)/embed $@ $(LUA_BC)

$(BUILD)/stage/embedded.o: $(BUILD)/stage/embedded.c runtime/aitbc.h $(BUILD)/version.h
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/stage/aitbc: $(filter-out $(BUILD)/embedded.o,$(OBJS)) $(BUILD)/stage/embedded.o
	$(CC) $(CFLAGS) $(LDFLAGS) -Wl,--as-needed -o $@ $^ $(CJSON_A) $(PKG_LIBS) -ldl -lpthread -lm

$(BUILD)/gen/lua/aitbc/cli/command_index.lua: $(BUILD)/stage/aitbc
	@mkdir -p $(dir $@)
	$(BUILD)/stage/aitbc __command-index > $@.new && mv $@.new $@

$(INDEX_BC): $(BUILD)/gen/lua/aitbc/cli/command_index.lua
	@mkdir -p $(dir $@)
	luac5.4 -o $@ $<

$(BUILD)/embedded.c: $(BUILD)/embed $(LUA_BC) $(INDEX_BC)
	$(BUILD)/embed $@ $(LUA_BC) $(INDEX_BC)

$(BUILD)/%.o: runtime/%.c runtime/aitbc.h runtime/server.h runtime/http_parse.h runtime/lpattern.h $(BUILD)/version.h | $(BUILD)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/embedded.o: $(BUILD)/embedded.c runtime/aitbc.h $(BUILD)/version.h
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# The version string (make VERSION=...): rewritten only when it changes.
$(BUILD)/version.h: FORCE | $(BUILD)
	@printf '#ifndef AITBC_VERSION\n#define AITBC_VERSION "%s"\n#endif\n' '$(VERSION)' > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(BUILD)/aitbc: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -Wl,--as-needed -o $@ $(OBJS) $(CJSON_A) $(PKG_LIBS) -ldl -lpthread -lm
	@printf '%s\n%s\n' '$(CFLAGS)' '$(LDFLAGS)' > $(BUILD)/build-flags

# make variant VARIANT_VERSION=V OUT=FILE [HEALTH_FAULT=1]: this build's
# binary with another version string (with HEALTH_FAULT=1, a node whose
# health check fails): the releases the update tests install and roll back
# from.  Only the two objects that hold the version are compiled again, with
# the flags this build was made with; nothing in $(BUILD) changes.
VARIANT_CFLAGS = $(shell sed -n 1p $(BUILD)/build-flags)
variant:
	@test -n "$(OUT)" -a -n "$(VARIANT_VERSION)" -a -f $(BUILD)/build-flags || \
	  { echo "usage: make variant VARIANT_VERSION=V OUT=FILE [HEALTH_FAULT=1], after make" >&2; exit 2; }
	$(CC) -std=gnu11 $(WARN) $(VARIANT_CFLAGS) -D_GNU_SOURCE -Iruntime -I$(BUILD) $(PKG_CFLAGS) \
	  -DAITBC_CURL_SONAME='"$(call SONAME,libcurl.so)"' -DAITBC_JQ_SONAME='"$(call SONAME,libjq.so)"' \
	  -DAITBC_VERSION='"$(VARIANT_VERSION)"' $(if $(HEALTH_FAULT),-DAITBC_HEALTH_FAULT) -c -o $(OUT).sys.o runtime/sys.c
	$(CC) -std=gnu11 $(WARN) $(VARIANT_CFLAGS) -D_GNU_SOURCE -Iruntime -I$(BUILD) $(PKG_CFLAGS) \
	  -DAITBC_CURL_SONAME='"$(call SONAME,libcurl.so)"' -DAITBC_JQ_SONAME='"$(call SONAME,libjq.so)"' \
	  -DAITBC_VERSION='"$(VARIANT_VERSION)"' -c -o $(OUT).http.o runtime/http.c
	$(CC) $(VARIANT_CFLAGS) $(shell sed -n 2p $(BUILD)/build-flags) -Wl,--as-needed -o $(OUT) \
	  $(filter-out $(BUILD)/sys.o $(BUILD)/http.o,$(OBJS)) $(OUT).sys.o $(OUT).http.o $(CJSON_A) $(PKG_LIBS) -ldl -lpthread -lm
	@rm -f $(OUT).sys.o $(OUT).http.o

$(BUILD):
	mkdir -p $@

FORCE:

$(BUILD)/test/alloc_fail.so: tests/support/alloc_fail.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -fPIC -shared -o $@ $<

# Installs whichever of DEB_PKGS are missing (needs root, as on CI).
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The README's test command: dependencies, build, every suite, one closing line.
test: deps
	$(MAKE) all
	tests/run $(BUILD)/aitbc

check: all
	tests/run $(BUILD)/aitbc

# The README's main command: a local devnet, the spec's scenarios against it.
demo: deps
	$(MAKE) all
	scripts/demo.sh $(BUILD)/aitbc

# Every process the suites start (nodes, miners, CLI runs, daemons) writes
# its sanitizer reports to SAN_LOG, whatever became of its stderr; any
# report there is printed and fails the run.
SAN_LOG := $(CURDIR)/build-asan/sanitizer-reports
asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" LDFLAGS="-fsanitize=address,undefined" all
	@rm -rf $(SAN_LOG) && mkdir -p $(SAN_LOG)
	@ASAN_OPTIONS=detect_leaks=1:log_path=$(SAN_LOG)/asan UBSAN_OPTIONS=print_stacktrace=1:log_path=$(SAN_LOG)/ubsan \
	  tests/run build-asan/aitbc; rc=$$?; tests/sanitizer-reports $(SAN_LOG) $(CURDIR)/build-asan/aitbc && exit $$rc

lint:
	luacheck -q lua tests scripts bench $(wildcard scenarios/*.lua)
	clang-format --dry-run --Werror runtime/*.c runtime/*.h

format:
	clang-format -i runtime/*.c runtime/*.h

bench: all
	bench/startup $(BUILD)/aitbc
	bench/node $(BUILD)/aitbc
	$(BUILD)/aitbc run bench/marketplace.lua
	$(BUILD)/aitbc run bench/chain.lua
	$(BUILD)/aitbc run bench/agents.lua
	$(BUILD)/aitbc run bench/optimize.lua
	$(BUILD)/aitbc run bench/swarm.lua
	$(BUILD)/aitbc run bench/deploy.lua

# aitbc-api:latest FROM scratch (the binary, its libraries, CA certificates),
# built by the container engine `aitbc deploy` uses.
image: all
	$(BUILD)/aitbc deploy image

reference: all
	$(BUILD)/aitbc reference > $(BUILD)/REFERENCE.md
	@echo "wrote $(BUILD)/REFERENCE.md"

install: all
	install -D -m 0755 $(BUILD)/aitbc $(DESTDIR)$(PREFIX)/bin/aitbc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/aitbc

clean:
	rm -rf build build-asan

help:
	@echo "make demo       build, start a local devnet, run the spec's scenarios against it, stop it"
	@echo "make            build $(BUILD)/aitbc"
	@echo "make deps       install missing Debian packages"
	@echo "make test       deps + build + all test suites (ends with 'N passed, N failed')"
	@echo "make asan       build with ASan/UBSan and run the tests with it; a report from any process fails it"
	@echo "make lint       luacheck + clang-format check"
	@echo "make bench      start-up and node benchmarks (bench/startup, bench/node)"
	@echo "make image      build the aitbc-api:latest container image (FROM scratch) for 'aitbc deploy'"
	@echo "make install    install to \$$(DESTDIR)\$$(PREFIX)/bin (PREFIX=$(PREFIX))"
