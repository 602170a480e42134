# The pure core: C files that link without a PostgreSQL server (only libc,
# libm and json-c: link with $(HAPG_PURE_LIBS)).  tests/unit links them; a simulation or a fuzzer can too:
#   include $(HAPG_ROOT)/src/pure.mk
#   SRCS += $(addprefix $(HAPG_ROOT)/,$(HAPG_PURE_SRCS))
HAPG_PURE_SRCS = src/common.c src/lease.c src/steer.c src/kjson.c src/members.c src/failsafe.c \
                 src/commitrule.c src/metrics.c src/httprules.c src/watchframe.c src/syncrep.c
HAPG_PURE_HDRS = src/common.h src/lease.h src/steer.h src/kjson.h src/members.h src/failsafe.h \
                 src/commitrule.h src/metrics.h src/httprules.h src/watchframe.h src/syncrep.h
HAPG_PURE_LIBS = -ljson-c -lm
