/*
 * fuzz.h
 *		Shared bits of the libFuzzer targets: each one feeds outside input
 *		(API answers, watch streams, settings values) to hapg's real parsers
 *		and checks what they promise, under ASan and UBSan.
 */
#ifndef HAPG_FUZZ_H
#define HAPG_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kjson.h"

/* A broken promise is a crash: libFuzzer keeps the input that did it. */
#define FUZZ_ASSERT(cond) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "fuzz: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

/* A string is NUL-terminated within its buffer. */
#define FUZZ_TERMINATED(buf) FUZZ_ASSERT(memchr((buf), '\0', sizeof(buf)) != NULL)

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* True if s has no byte that could end a line or a field in a note. */
static inline int
fuzz_plain(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s < 0x21 || *s == 0x7f || *s == '|')
			return 0;
	return 1;
}

#endif							/* HAPG_FUZZ_H */
