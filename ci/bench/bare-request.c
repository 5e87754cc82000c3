/* bare-request PORT COUNT REQUEST-FILE [WATCHED-FILE]
 *
 * The least any upload client must do per request, for ci/bench/run's floor:
 * COUNT times, connect to 127.0.0.1:PORT, write the HTTP request held in
 * REQUEST-FILE, read the answer to EOF (Cobbler closes every connection),
 * close, and check that the answer is XML-RPC true. Nothing else: no file
 * reads, no encoding, no allocation, no threads. Written in C so that its
 * user time is next to nothing and its whole CPU time (user + system, which
 * the kernel accounts exactly in total) is the kernel's cost of a request.
 * Exits 1 with a one-line message if any request fails.
 *
 * With WATCHED-FILE, the least an event-driven client must do: before each
 * request it sleeps until inotify reports a write to that file, and reads
 * the new bytes with pread, as a log shipper must; the request itself stays
 * the same small one. (The driver writes a line at a time.)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char request[1 << 16];
static char answer[1 << 16];
static char events[1 << 12];
static char bytes[1 << 16];

int main(int argc, char **argv)
{
	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: bare-request PORT COUNT REQUEST-FILE [WATCHED-FILE]\n");
		return 2;
	}
	int watch = -1, log = -1;
	off_t shipped = 0;
	if (argc == 5) {
		watch = inotify_init();
		log = open(argv[4], O_RDONLY);
		if (watch < 0 || log < 0 || inotify_add_watch(watch, argv[4], IN_MODIFY) < 0) {
			fprintf(stderr, "bare-request: cannot watch %s: %s\n", argv[4], strerror(errno));
			return 1;
		}
	}
	int port = atoi(argv[1]);
	long count = atol(argv[2]);
	int fd = open(argv[3], O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "bare-request: %s: %s\n", argv[3], strerror(errno));
		return 1;
	}
	ssize_t len = read(fd, request, sizeof request);
	close(fd);
	if (len <= 0) {
		fprintf(stderr, "bare-request: %s: empty or unreadable\n", argv[3]);
		return 1;
	}
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	for (long i = 0; i < count; i++) {
		if (watch >= 0) {
			struct stat st;
			if (read(watch, events, sizeof events) <= 0 || fstat(log, &st) < 0) {
				fprintf(stderr, "bare-request: waiting for a write: %s\n", strerror(errno));
				return 1;
			}
			while (shipped < st.st_size) {
				ssize_t n = pread(log, bytes, sizeof bytes, shipped);
				if (n <= 0)
					break;
				shipped += n;
			}
		}
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
			fprintf(stderr, "bare-request: connect to port %d: %s\n", port, strerror(errno));
			return 1;
		}
		for (ssize_t off = 0; off < len;) {
			ssize_t n = write(s, request + off, len - off);
			if (n <= 0) {
				fprintf(stderr, "bare-request: write: %s\n", strerror(errno));
				return 1;
			}
			off += n;
		}
		size_t got = 0;
		ssize_t n;
		while (got < sizeof answer - 1 && (n = read(s, answer + got, sizeof answer - 1 - got)) > 0)
			got += n;
		close(s);
		answer[got] = 0;
		if (!strstr(answer, "<boolean>1</boolean>")) {
			fprintf(stderr, "bare-request: request %ld was not accepted: %.200s\n", i, answer);
			return 1;
		}
	}
	return 0;
}
