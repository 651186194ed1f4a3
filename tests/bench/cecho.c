/* cecho: the reference C echo responder of `make bench`.
 *
 * A plain recvfrom/sendto loop: bound to the wildcard address of the group's family (IPv4
 * or IPv6, from GROUP) on PORT with SO_REUSEADDR, joined to the group on one interface
 * (IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP by interface index), every datagram sent back to its
 * sender. With --reply group the echo goes to the group on the sender's source port instead
 * (as the daemon's `reply: group` does), with --reply both to the sender and then to the
 * group: two sendto calls. With --sink it only reads: the one-way ceiling of the load
 * generator is measured against it. Prints "ready" on stderr once joined; on SIGTERM or
 * SIGINT it prints one JSON line of counts on stdout and exits 0.
 *
 *   cecho GROUP PORT IFNAME [--sink | --reply unicast|group|both]
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

enum { TO_SENDER = 1, TO_GROUP = 2 };

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

static int usage(void)
{
	fprintf(stderr, "usage: cecho GROUP PORT IFNAME [--sink | --reply unicast|group|both]\n");
	return 2;
}

/* Where the echoes go (TO_SENDER | TO_GROUP), 0 for a sink, -1 for bad arguments. */
static int parse_mode(int argc, char **argv)
{
	if (argc == 4)
		return TO_SENDER;
	if (argc == 5 && strcmp(argv[4], "--sink") == 0)
		return 0;
	if (argc == 6 && strcmp(argv[4], "--reply") == 0) {
		if (strcmp(argv[5], "unicast") == 0)
			return TO_SENDER;
		if (strcmp(argv[5], "group") == 0)
			return TO_GROUP;
		if (strcmp(argv[5], "both") == 0)
			return TO_SENDER | TO_GROUP;
	}
	return -1;
}

int main(int argc, char **argv)
{
	int mode = parse_mode(argc, argv);
	if (mode < 0)
		return usage();
	unsigned ifindex = if_nametoindex(argv[3]);
	if (ifindex == 0)
		return fail(argv[3]);
	unsigned short port = (unsigned short)atoi(argv[2]);

	/* The group, as a destination (its port is set per echo) and as a membership. */
	struct sockaddr_storage group;
	socklen_t group_len;
	memset(&group, 0, sizeof group);
	struct sockaddr_in *group4 = (struct sockaddr_in *)&group;
	struct sockaddr_in6 *group6 = (struct sockaddr_in6 *)&group;
	if (inet_pton(AF_INET, argv[1], &group4->sin_addr) == 1) {
		group4->sin_family = AF_INET;
		group_len = sizeof *group4;
	} else if (inet_pton(AF_INET6, argv[1], &group6->sin6_addr) == 1) {
		group6->sin6_family = AF_INET6;
		group6->sin6_scope_id = ifindex;
		group_len = sizeof *group6;
	} else {
		fprintf(stderr, "cecho: %s: not an IPv4 or IPv6 group\n", argv[1]);
		return 2;
	}
	int family = group.ss_family;

	/* No SA_RESTART: a signal interrupts recvfrom, and the loop sees `stopping`. */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int fd = socket(family, SOCK_DGRAM, 0);
	if (fd < 0)
		return fail("socket");
	int on = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0)
		return fail("SO_REUSEADDR");
	if (family == AF_INET) {
		struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(port)};
		local.sin_addr.s_addr = htonl(INADDR_ANY);
		if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
			return fail("bind");
		struct ip_mreqn mreq = {.imr_multiaddr = group4->sin_addr,
					.imr_ifindex = (int)ifindex};
		if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0)
			return fail("IP_ADD_MEMBERSHIP");
		/* the group echoes leave by the interface joined on (as the daemon's do) */
		if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mreq, sizeof mreq) < 0)
			return fail("IP_MULTICAST_IF");
	} else {
		int only = 1;
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only);
		struct sockaddr_in6 local = {.sin6_family = AF_INET6, .sin6_port = htons(port),
					     .sin6_addr = IN6ADDR_ANY_INIT};
		if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
			return fail("bind");
		struct ipv6_mreq mreq = {.ipv6mr_multiaddr = group6->sin6_addr,
					 .ipv6mr_interface = ifindex};
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mreq, sizeof mreq) < 0)
			return fail("IPV6_JOIN_GROUP");
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex) < 0)
			return fail("IPV6_MULTICAST_IF");
	}
	static const char *const names[] = {"sink: no echoes", "to the sender", "to the group",
					    "to the sender and the group"};
	fprintf(stderr, "cecho: ready: %s port %s on %s (%s)\n", argv[1], argv[2], argv[3],
		names[mode]);

	static char buf[65536];
	unsigned long long received = 0, echoed = 0, send_errors = 0;
	while (!stopping) {
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof peer;
		ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &peer_len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail("recvfrom");
		}
		received++;
		if (mode & TO_SENDER) {
			if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&peer, peer_len) < 0)
				send_errors++;
			else
				echoed++;
		}
		if (mode & TO_GROUP) {
			/* the group, on the port the request came from */
			if (family == AF_INET)
				group4->sin_port = ((struct sockaddr_in *)&peer)->sin_port;
			else
				group6->sin6_port = ((struct sockaddr_in6 *)&peer)->sin6_port;
			if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&group, group_len) < 0)
				send_errors++;
			else
				echoed++;
		}
	}
	printf("{\"received\": %llu, \"echoed\": %llu, \"send_errors\": %llu}\n",
	       received, echoed, send_errors);
	close(fd);
	return 0;
}
