/* cecho: the reference C echo responder of `make bench`.
 *
 * A plain recvfrom/sendto loop: bound to INADDR_ANY:port with SO_REUSEADDR, joined to the
 * group on one interface (IP_ADD_MEMBERSHIP by interface index), every datagram sent back to
 * its sender. With --sink it only reads: the one-way ceiling of the load generator is
 * measured against it. Prints "ready" on stderr once joined; on SIGTERM or SIGINT it prints
 * one JSON line of counts on stdout and exits 0.
 *
 *   cecho GROUP PORT IFNAME [--sink]
 *
 * Built by tests/bench/run.py with the system compiler (cc -O2) into build/bench/.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int fail(const char *what)
{
	fprintf(stderr, "cecho: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "--sink") != 0)) {
		fprintf(stderr, "usage: cecho GROUP PORT IFNAME [--sink]\n");
		return 2;
	}
	int sink = argc == 5;
	struct ip_mreqn mreq;
	memset(&mreq, 0, sizeof mreq);
	if (inet_pton(AF_INET, argv[1], &mreq.imr_multiaddr) != 1) {
		fprintf(stderr, "cecho: %s: not an IPv4 group\n", argv[1]);
		return 2;
	}
	mreq.imr_ifindex = (int)if_nametoindex(argv[3]);
	if (mreq.imr_ifindex == 0)
		return fail(argv[3]);

	/* No SA_RESTART: a signal interrupts recvfrom, and the loop sees `stopping`. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return fail("socket");
	int on = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0)
		return fail("SO_REUSEADDR");
	struct sockaddr_in local;
	memset(&local, 0, sizeof local);
	local.sin_family = AF_INET;
	local.sin_addr.s_addr = htonl(INADDR_ANY);
	local.sin_port = htons((unsigned short)atoi(argv[2]));
	if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
		return fail("bind");
	if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0)
		return fail("IP_ADD_MEMBERSHIP");
	fprintf(stderr, "cecho: ready: %s:%s on %s%s\n", argv[1], argv[2], argv[3],
		sink ? " (sink: no echoes)" : "");

	static char buf[65536];
	unsigned long long received = 0, echoed = 0, send_errors = 0;
	while (!stopping) {
		struct sockaddr_in peer;
		socklen_t peer_len = sizeof peer;
		ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &peer_len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail("recvfrom");
		}
		received++;
		if (sink)
			continue;
		if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, peer_len) < 0)
			send_errors++;
		else
			echoed++;
	}
	printf("{\"received\": %llu, \"echoed\": %llu, \"send_errors\": %llu}\n",
	       received, echoed, send_errors);
	close(fd);
	return 0;
}
