# hapg: high-availability PostgreSQL on Kubernetes, inside Postgres.
EXTENSION = hapg
EXTVERSION = 1.0

MODULE_big = hapg
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
DATA = sql/$(EXTENSION)--$(EXTVERSION).sql
PGFILEDESC = "hapg - high availability for PostgreSQL on Kubernetes"

# pg_regress tests, tests/regress/sql/*.sql against tests/regress/expected/
# (run in name order: install.sql creates the extension first).  They need
# shared_preload_libraries, so they run on a temporary instance configured by
# tests/regress/regress.conf (see "make regress-temp").
REGRESS_TESTS = $(wildcard tests/regress/sql/*.sql)
REGRESS = $(patsubst tests/regress/sql/%.sql,%,$(REGRESS_TESTS))
REGRESS_OPTS = --inputdir=$(srcdir)/tests/regress --temp-config=$(srcdir)/tests/regress/regress.conf

PG_CONFIG ?= pg_config
PKG_CONFIG ?= pkg-config

PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -DHAPG_VERSION=\"$(EXTVERSION)\" $(shell $(PKG_CONFIG) --cflags libcurl json-c)
PG_CFLAGS = -Wall -Wextra
SHLIB_LINK = $(shell $(PKG_CONFIG) --libs libcurl json-c)

EXTRA_CLEAN = tests/unit/test_unit tests/unit/*.o tests/regress/results tests/regress/regression.diffs tests/regress/regression.out

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: a changed struct must rebuild every
# object that embeds it.
$(OBJS): $(wildcard src/*.h)

# pg_regress against a throw-away instance that preloads hapg (needs a
# non-root user: run as postgres).
regress-temp:
	$(pgxsdir)/src/test/regress/pg_regress --temp-instance=./tmp_check \
	  --bindir=$(bindir) $(REGRESS_OPTS) $(REGRESS)

unit:
	$(MAKE) -C tests/unit check PG_CONFIG=$(PG_CONFIG)

.PHONY: regress-temp unit
