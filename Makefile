# apimon: the nginx module, the billing agent, their tests and benchmarks.

NGX_SRC    ?= /usr/share/nginx/src
NGX_MODDIR ?= /usr/lib/nginx/modules
BUILD      := $(CURDIR)/build

# make install [DESTDIR=...] [PREFIX=...]: the agent, its man page and its
# systemd units under PREFIX; nginx's module and load file where Debian's
# nginx looks for them; the cron.d file and the defaults under SYSCONFDIR
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
NGX_CONFDIR ?= /usr/share/nginx/modules-available
MODULE     := $(BUILD)/ngx_http_apimon_module.so
AGENT      := $(BUILD)/billing-agent
SCRIPTS_H  := $(BUILD)/gen/ngx_http_apimon_scripts.h

# CPPFLAGS, CFLAGS and LDFLAGS are the builder's (make CFLAGS=-O0, or
# dpkg-buildflags'): they only add to our own flags, which stay apart
CC      ?= cc
CFLAGS  ?= -O2 -g
APIMON_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -I$(BUILD)/gen -Ibilling-agent \
                 -Ingx_http_apimon_module
LDLIBS_AGENT := -lhiredis -lcurl -lcjson -lcrypto -lz

NGX_CC_OPT := -g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2
NGX_LD_OPT := -Wl,-z,relro -Wl,-z,now -fPIC

# the one version of the tree (the module's, the agent's, the packages')
VERSION := $(shell sed -n 's/^\#define APIMON_VERSION *"\(.*\)"/\1/p' \
                  ngx_http_apimon_module/ngx_http_apimon_version.h)

# a change of the builder's flags rebuilds what they went into
FLAGS_NOW := $(CC) | $(CPPFLAGS) | $(CFLAGS) | $(LDFLAGS)
FLAGS     := $(BUILD)/flags

LUA        := $(wildcard schema/lua/*.lua)
MOD_SRC    := $(wildcard ngx_http_apimon_module/*.[ch])
AGENT_SRC  := $(wildcard billing-agent/*.c)
AGENT_OBJ  := $(patsubst billing-agent/%.c,$(BUILD)/agent/%.o,$(AGENT_SRC))
UNIT_SRC   := $(wildcard t/unit/*.c)
UNIT_BIN   := $(patsubst t/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))

.PHONY: all module agent unit test test-unit test-nginx test-valgrind bench demo \
        install install-module install-agent deb clean FORCE

all: module agent

module: $(MODULE)
agent: $(AGENT)
unit: $(UNIT_BIN)

# Debian's nginx-dev tree has no top-level Makefile: configure it out of tree
# with the installed binary's own flags, then run the generated Makefile.
$(FLAGS): FORCE
	@mkdir -p $(BUILD)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@

$(BUILD)/nginx/Makefile: config schema/embed.sh $(LUA) $(FLAGS)
	@mkdir -p $(BUILD)/nginx
	cd $(NGX_SRC) && bash -c '. ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(NGX_CC_OPT) $(CPPFLAGS) $(CFLAGS)" \
	    --with-ld-opt="$(NGX_LD_OPT) $(LDFLAGS)" \
	    --add-dynamic-module=$(CURDIR) --builddir=$(BUILD)/nginx' \
	    > $(BUILD)/configure.log 2>&1 || { tail -30 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(BUILD)/nginx/Makefile $(MOD_SRC)
	$(MAKE) -s -f $(BUILD)/nginx/Makefile -C $(NGX_SRC) modules
	cp $(BUILD)/nginx/ngx_http_apimon_module.so $@

$(SCRIPTS_H): schema/embed.sh $(LUA)
	@mkdir -p $(dir $@)
	sh schema/embed.sh schema/lua $@

$(BUILD)/agent/%.o: billing-agent/%.c $(wildcard billing-agent/*.h) $(SCRIPTS_H) \
                   ngx_http_apimon_module/ngx_http_apimon_version.h $(FLAGS)
	@mkdir -p $(dir $@)
	$(CC) $(APIMON_CFLAGS) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(AGENT): $(AGENT_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(AGENT_OBJ) $(LDLIBS_AGENT)

# C unit tests are TAP programs; each links the agent's objects except main.
$(BUILD)/unit/%: t/unit/%.c $(filter-out $(BUILD)/agent/main.o,$(AGENT_OBJ)) $(wildcard billing-agent/*.h t/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(APIMON_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< \
	    $(filter-out $(BUILD)/agent/main.o,$(AGENT_OBJ)) $(LDLIBS_AGENT)

test: test-unit test-nginx

test-unit: unit
	@if [ -n "$(UNIT_BIN)" ]; then prove --exec '' $(UNIT_BIN); fi

test-nginx: all
	APIMON_BUILD=$(BUILD) prove -r t/

test-valgrind: all
	APIMON_BUILD=$(BUILD) APIMON_VALGRIND=1 prove -r t/

# make bench [SUBS=n] [ROUNDS=n]: the module's distinct subscriptions (1000)
# and interleaved rounds (3); the agent's bench keeps its own 100,000
bench: all
	APIMON_BUILD=$(BUILD) BENCH_SUBS=$(or $(SUBS),1000) BENCH_ROUNDS=$(or $(ROUNDS),3) perl bench/module.pl
	APIMON_BUILD=$(BUILD) perl bench/forged-keys.pl
	@if [ -f bench/agent.sh ]; then APIMON_BUILD=$(BUILD) env -u SUBS bash bench/agent.sh; fi

demo: all
	bash docs/demo.sh

install: install-module install-agent

# the load file is what Debian's libnginx-mod-* packages ship; enabling it
# (a link in /etc/nginx/modules-enabled) is left to the administrator
install-module: module
	install -D -m 0644 $(MODULE) $(DESTDIR)$(NGX_MODDIR)/ngx_http_apimon_module.so
	install -d $(DESTDIR)$(NGX_CONFDIR)
	echo 'load_module modules/ngx_http_apimon_module.so;' \
	    > $(DESTDIR)$(NGX_CONFDIR)/mod-http-apimon.conf

# $(call subst_paths,source,installed path): a text file with the paths and
# the version of this installation in place of @BINDIR@, @SYSCONFDIR@, @VERSION@
subst_paths = sed 's|@BINDIR@|$(BINDIR)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g; s|@VERSION@|$(VERSION)|g' \
    $(1) > $(DESTDIR)$(2) && chmod 0644 $(DESTDIR)$(2)

# the timer, the service and the cron.d line are installed, none enabled
install-agent: agent
	install -D -m 0755 $(AGENT) $(DESTDIR)$(BINDIR)/billing-agent
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/cron.d $(DESTDIR)$(SYSCONFDIR)/default
	$(call subst_paths,billing-agent/billing-agent.1,$(MANDIR)/man1/billing-agent.1)
	$(call subst_paths,billing-agent/dist/apimon-billing-agent.service,$(UNITDIR)/apimon-billing-agent.service)
	$(call subst_paths,billing-agent/dist/apimon-billing-agent.timer,$(UNITDIR)/apimon-billing-agent.timer)
	$(call subst_paths,billing-agent/dist/apimon-billing-agent.cron,$(SYSCONFDIR)/cron.d/apimon-billing-agent)
	$(call subst_paths,billing-agent/dist/apimon-billing-agent.default,$(SYSCONFDIR)/default/apimon-billing-agent)

# make deb: both Debian packages into build/deb/ (dpkg-buildpackage on a copy
# of the tree, so the tree itself stays clean); debian/changelog must carry
# the tree's version
DEB_DIR := $(BUILD)/deb
deb:
	@v=$$(sed -n '1s/^apimon (\([^)]*\)).*/\1/p' debian/changelog); \
	test "$${v%%-*}" = "$(VERSION)" || { \
	    echo "debian/changelog is at $$v, the tree at $(VERSION)" >&2; exit 1; }
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/apimon-$(VERSION)
	tar -C $(CURDIR) --exclude=./build --exclude=./.git --exclude=./t/tmp -cf - . \
	    | tar -C $(DEB_DIR)/apimon-$(VERSION) -xf -
	cd $(DEB_DIR)/apimon-$(VERSION) && dpkg-buildpackage -b -us -uc \
	    > $(DEB_DIR)/build.log 2>&1 || { tail -40 $(DEB_DIR)/build.log; exit 1; }
	rm -rf $(DEB_DIR)/apimon-$(VERSION)
	@ls $(DEB_DIR)/*.deb

clean:
	rm -rf $(BUILD)
