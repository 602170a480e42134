/*
 * fuzz_watch.c
 *		A watch stream arriving in arbitrary pieces: the framing
 *		(src/watchframe.c) must hand over exactly the lines a one-shot split
 *		finds, whatever the piece sizes, and each line then goes through the
 *		watch-event parser and the Lease or Pod parser, as in kube.c and the
 *		worker's event callbacks.
 */
#include "fuzz.h"
#include "watchframe.h"

#define CAP 65536

typedef struct Seen
{
	const uint8_t *stream;		/* the whole input after the piece sizes */
	size_t		size;
	size_t		pos;			/* where the next expected line starts */
	int			lines;
} Seen;

/* The next non-empty line a one-shot split of the stream finds. */
static int
next_expected(Seen *s, size_t *off, size_t *len)
{
	while (s->pos < s->size)
	{
		const uint8_t *nl = memchr(s->stream + s->pos, '\n', s->size - s->pos);
		size_t		l;

		if (nl == NULL)
			return 0;
		l = (size_t) (nl - (s->stream + s->pos));
		*off = s->pos;
		s->pos += l + 1;
		if (l > 0)
		{
			*len = l;
			return 1;
		}
	}
	return 0;
}

/* One line from the framing: compare, then parse it as the watch does. */
static void
on_line(void *arg, const char *line, size_t len)
{
	Seen	   *s = arg;
	size_t		off = 0,
				elen = 0;
	char		type[32];
	char		err[HAPG_MSG_LEN];
	json_object *obj;

	FUZZ_ASSERT(next_expected(s, &off, &elen));
	FUZZ_ASSERT(elen == len && memcmp(s->stream + off, line, len) == 0);
	s->lines++;
	if (!hapg_parse_watch_event(line, len, type, sizeof(type), &obj, err, sizeof(err)))
	{
		FUZZ_TERMINATED(err);
		return;
	}
	FUZZ_TERMINATED(type);
	{
		const char *kind = hapg_object_kind(obj);

		(void) hapg_object_rv(obj);
		(void) hapg_object_name(obj);
		if (kind && strcmp(kind, "Lease") == 0)
		{
			HapgLeaseInfo li;

			(void) hapg_parse_lease(obj, &li, err, sizeof(err));
		}
		else
		{
			HapgPodInfo p;

			(void) hapg_parse_pod(obj, "role", &p, err, sizeof(err));
		}
	}
	json_object_put(obj);
}

/* One input: 4 bytes of piece-size seeds, then the stream. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[CAP + 1];
	size_t		len = 0;
	size_t		fed = 0;
	Seen		s;
	uint32_t	seed = 0;
	int			k = 0;

	if (size < 4)
		return 0;
	memcpy(&seed, data, 4);
	memset(&s, 0, sizeof(s));
	s.stream = data + 4;
	s.size = size - 4;
	if (s.size > CAP)
		return 0;
	while (fed < s.size)
	{
		/* piece sizes from the seed: 1 byte up to a few kB */
		size_t		piece = 1 + ((seed >> (k % 24)) & 0xfff) % 4096;

		k += 5;
		if (piece > s.size - fed)
			piece = s.size - fed;
		memcpy(buf + len, s.stream + fed, piece);
		len += piece;
		buf[len] = '\0';
		fed += piece;
		(void) hapg_watch_drain(buf, &len, on_line, &s);
		FUZZ_ASSERT(len <= fed);
		FUZZ_ASSERT(memchr(buf, '\n', len) == NULL);
		FUZZ_ASSERT(buf[len] == '\0');
	}
	/* every complete line came out, in order; the tail stays */
	{
		size_t		off,
					elen;

		FUZZ_ASSERT(!next_expected(&s, &off, &elen));
	}
	return 0;
}
