/*
 * watchframe.c
 *		Splitting a watch stream's buffer into events.
 *
 * The API server sends one JSON object per line; libcurl hands over
 * whatever bytes arrived, so a line may come in pieces and a piece may
 * hold many lines.  hapg_watch_drain() passes every complete non-empty line
 * on and keeps the incomplete tail for the next call.
 */
#include "watchframe.h"

#include <string.h>

/*
 * Call fn for each complete line in data[0..*len), then move the
 * unfinished rest to the front and NUL-terminate it (in bounds: the rest
 * got shorter by at least the newline).  Returns the lines passed on.
 */
int
hapg_watch_drain(char *data, size_t *len, HapgLineFn fn, void *arg)
{
	size_t		start = 0;
	int			lines = 0;

	if (data == NULL)
		return 0;
	while (start < *len)
	{
		char	   *nl = memchr(data + start, '\n', *len - start);
		size_t		linelen;

		if (nl == NULL)
			break;
		linelen = (size_t) (nl - (data + start));
		if (linelen > 0)
		{
			fn(arg, data + start, linelen);
			lines++;
		}
		start += linelen + 1;
	}
	if (start > 0)
	{
		memmove(data, data + start, *len - start);
		*len -= start;
		data[*len] = '\0';
	}
	return lines;
}
