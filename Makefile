# apimon: the nginx module, the billing agent, their tests and benchmarks.

NGX_SRC    ?= /usr/share/nginx/src
NGX_MODDIR ?= /usr/lib/nginx/modules
BUILD      := $(CURDIR)/build
MODULE     := $(BUILD)/ngx_http_apimon_module.so
AGENT      := $(BUILD)/billing-agent
SCRIPTS_H  := $(BUILD)/gen/ngx_http_apimon_scripts.h

CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -I$(BUILD)/gen -Ibilling-agent
LDLIBS_AGENT := -lhiredis -lcurl -lcjson -lcrypto -lz

NGX_CC_OPT := -g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2
NGX_LD_OPT := -Wl,-z,relro -Wl,-z,now -fPIC

LUA        := $(wildcard schema/lua/*.lua)
MOD_SRC    := $(wildcard ngx_http_apimon_module/*.[ch])
AGENT_SRC  := $(wildcard billing-agent/*.c)
AGENT_OBJ  := $(patsubst billing-agent/%.c,$(BUILD)/agent/%.o,$(AGENT_SRC))
UNIT_SRC   := $(wildcard t/unit/*.c)
UNIT_BIN   := $(patsubst t/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRC))

.PHONY: all module agent unit test test-unit test-nginx test-valgrind bench demo install clean

all: module agent

module: $(MODULE)
agent: $(AGENT)
unit: $(UNIT_BIN)

# Debian's nginx-dev tree has no top-level Makefile: configure it out of tree
# with the installed binary's own flags, then run the generated Makefile.
$(BUILD)/nginx/Makefile: config schema/embed.sh $(LUA)
	@mkdir -p $(BUILD)/nginx
	cd $(NGX_SRC) && bash -c '. ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(NGX_CC_OPT)" --with-ld-opt="$(NGX_LD_OPT)" \
	    --add-dynamic-module=$(CURDIR) --builddir=$(BUILD)/nginx' \
	    > $(BUILD)/configure.log 2>&1 || { tail -30 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(BUILD)/nginx/Makefile $(MOD_SRC)
	$(MAKE) -s -f $(BUILD)/nginx/Makefile -C $(NGX_SRC) modules
	cp $(BUILD)/nginx/ngx_http_apimon_module.so $@

$(SCRIPTS_H): schema/embed.sh $(LUA)
	@mkdir -p $(dir $@)
	sh schema/embed.sh schema/lua $@

$(BUILD)/agent/%.o: billing-agent/%.c $(wildcard billing-agent/*.h) $(SCRIPTS_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(AGENT): $(AGENT_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS_AGENT)

# C unit tests are TAP programs; each links the agent's objects except main.
$(BUILD)/unit/%: t/unit/%.c $(filter-out $(BUILD)/agent/main.o,$(AGENT_OBJ)) $(wildcard billing-agent/*.h t/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(filter-out $(BUILD)/agent/main.o,$(AGENT_OBJ)) $(LDLIBS_AGENT)

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

install: all
	install -D -m 0644 $(MODULE) $(DESTDIR)$(NGX_MODDIR)/ngx_http_apimon_module.so
	install -d $(DESTDIR)/usr/share/nginx/modules-available
	echo 'load_module modules/ngx_http_apimon_module.so;' \
	    > $(DESTDIR)/usr/share/nginx/modules-available/mod-http-apimon.conf
	install -D -m 0755 $(AGENT) $(DESTDIR)/usr/local/bin/billing-agent

clean:
	rm -rf $(BUILD)
