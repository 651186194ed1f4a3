/* cload: the load generator of `make bench`. Prints one JSON line on stdout.
 *
 *   cload --mode closed|rtt|oneway|probe [--group G[,G...]] [--port P] [--source ADDR]
 *         [--interface IFNAME] [--expect unicast|group|both] [--size BYTES] [--window N]
 *         [--seconds S] [--warmup S] [--count N] [--timeout-ms MS] [--pid PID] [--rate PPS]
 *         [--no-gso]
 *
 * The family (IPv4 or IPv6) is the group's. --source is the address the generator binds
 * to and sends from (127.0.0.1, or ::1 for IPv6); --interface the one multicast leaves by
 * and is joined on (lo). With several groups (a comma list, one family) the datagrams go
 * round-robin over them, one group after the other, with sendmmsg (GSO needs one
 * destination per batch).
 *
 * closed  keep --window datagrams in flight: every echo sends the next one, a datagram not
 *         back within --timeout-ms is counted lost and sent again. Reports echoes/s and loss
 *         over --seconds after --warmup. Batched (recvmmsg/sendmmsg), so that it costs less
 *         per echo than a responder that answers one datagram at a time.
 *         --expect group: the generator joins the group(s) (bound to the wildcard address,
 *         so that datagrams to the group reach it) and takes a request as answered by one
 *         echo to the group (IP_PKTINFO / IPV6_PKTINFO tell the destination); --expect both:
 *         by two, one to the sender and one to the group; "echoes" counts every copy,
 *         "answered" the requests. An echo that came the way not expected counts in
 *         "unexpected", a second copy the same way in "duplicate".
 * rtt     one datagram in flight; round trips from CLOCK_MONOTONIC, p50/p90/p99/max (µs).
 * probe   one datagram to every group every 20 ms until each has answered (unicast), at
 *         most --seconds: "all_ms" is the time until the last one did (-1: not all).
 * oneway  send as fast as it can in batches, to a sink that only reads: the ceiling of this
 *         generator, to show it is not what limits the closed loop. With --rate, PPS datagrams
 *         a second instead, sent every ~50 µs as they fall due: a steady load on a responder
 *         (its echoes are never read) while something else measures it.
 *
 * With --pid, the utime+stime of that process (from /proc/PID/stat) over the measured
 * window is reported too, as "responder_cpu_s". Every loop is bounded by --seconds and
 * --count. Datagrams go to the group from --source (IP_MULTICAST_IF), echoes come back to
 * the port it is bound to. Each datagram carries a slot and a generation number in its first
 * 8 bytes, so a late echo of a datagram already counted lost is not counted twice, and a
 * pattern after them: an echo is counted only if it is the request byte for byte
 * ("mismatched" counts those that are not; "bad" those of the wrong length).
 *
 * Built by tests/bench/run.py with the system compiler (cc -O2) into build/bench/.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WINDOW 1024
#define MAX_GROUPS 1024
#define BATCH 64
#define MAX_SIZE 65507
#define HEADER 8
#define CONTROL 64 /* room for one IP_PKTINFO or IPV6_PKTINFO */

enum { TO_SENDER = 1, TO_GROUP = 2 }; /* --expect: which copies answer a request */

struct options {
	const char *mode, *groups, *source, *interface;
	int port, size, window, timeout_ms, pid, gso, expect;
	double seconds, warmup, rate;
	long count;
};

/* The generator's socket and where it sends: the groups, round-robin. */
struct target {
	int fd, family;
	struct sockaddr_storage group[MAX_GROUPS];
	socklen_t group_len;
	unsigned ngroups, next;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double self_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime+stime of process *pid* in seconds (all its threads), or -1. */
static double process_cpu_s(int pid)
{
	if (pid <= 0)
		return -1;
	char path[64], text[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	char *p = strrchr(text, ')'); /* the command name may hold spaces and parentheses */
	if (!p)
		return -1;
	unsigned long long utime = 0, stime = 0;
	/* after ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
	 * utime stime (fields 3..15 of proc(5)) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
		   &utime, &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Busy CPU time of the whole machine in seconds (every CPU, /proc/stat), or -1: what
 * other processes took shows as this minus the generator's and the responder's. */
static double machine_busy_s(void)
{
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return -1;
	unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
	int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system,
		       &idle, &iowait, &irq, &softirq, &steal);
	fclose(f);
	if (n != 8)
		return -1;
	return (double)(user + nice + system + irq + softirq + steal) /
	       (double)sysconf(_SC_CLK_TCK);
}

static void die(const char *what)
{
	fprintf(stderr, "cload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void bad_argument(const char *what, const char *value)
{
	fprintf(stderr, "cload: %s: %s\n", value, what);
	exit(2);
}

/* --group: one address or a comma list of them, all of one family, into t->group. */
static void parse_groups(const struct options *o, struct target *t, unsigned ifindex)
{
	char list[65536];
	if (strlen(o->groups) >= sizeof list)
		bad_argument("--group list too long", "");
	strcpy(list, o->groups);
	t->ngroups = 0;
	for (char *save = NULL, *item = strtok_r(list, ",", &save); item;
	     item = strtok_r(NULL, ",", &save)) {
		if (t->ngroups == MAX_GROUPS)
			bad_argument("more than 1024 groups", o->groups);
		struct sockaddr_storage *g = &t->group[t->ngroups++];
		memset(g, 0, sizeof *g);
		struct sockaddr_in *g4 = (struct sockaddr_in *)g;
		struct sockaddr_in6 *g6 = (struct sockaddr_in6 *)g;
		if (inet_pton(AF_INET, item, &g4->sin_addr) == 1) {
			g4->sin_family = AF_INET;
			g4->sin_port = htons((unsigned short)o->port);
		} else if (inet_pton(AF_INET6, item, &g6->sin6_addr) == 1) {
			g6->sin6_family = AF_INET6;
			g6->sin6_port = htons((unsigned short)o->port);
			g6->sin6_scope_id = ifindex;
		} else {
			bad_argument("not an IPv4 or IPv6 group", item);
		}
		if (g->ss_family != t->group[0].ss_family)
			bad_argument("groups of two families", o->groups);
	}
	if (t->ngroups == 0)
		bad_argument("no group", o->groups);
	t->family = t->group[0].ss_family;
	t->group_len = t->family == AF_INET ? sizeof(struct sockaddr_in)
					    : sizeof(struct sockaddr_in6);
}

static void join(const struct target *t, unsigned ifindex)
{
	for (unsigned k = 0; k < t->ngroups; k++) {
		if (t->family == AF_INET) {
			struct ip_mreqn mreq = {
				.imr_multiaddr = ((struct sockaddr_in *)&t->group[k])->sin_addr,
				.imr_ifindex = (int)ifindex};
			if (setsockopt(t->fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0)
				die("IP_ADD_MEMBERSHIP");
		} else {
			struct ipv6_mreq mreq = {
				.ipv6mr_multiaddr = ((struct sockaddr_in6 *)&t->group[k])->sin6_addr,
				.ipv6mr_interface = ifindex};
			if (setsockopt(t->fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mreq, sizeof mreq) < 0)
				die("IPV6_JOIN_GROUP");
		}
	}
	int on = 1;
	if (t->family == AF_INET)
		setsockopt(t->fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
	else
		setsockopt(t->fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
}

static void open_target(const struct options *o, struct target *t)
{
	unsigned ifindex = if_nametoindex(o->interface);
	if (ifindex == 0)
		die(o->interface);
	parse_groups(o, t, ifindex);
	int fd = socket(t->family, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket");
	t->fd = fd;
	/* Big buffers (FORCE: as root, past rmem_max), so the generator's own socket never
	 * drops an echo the responder sent. */
	int buffer = 8 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer, sizeof buffer) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
	/* Joined, it binds to the wildcard address: a socket bound to 127.0.0.1 or ::1 does
	 * not receive datagrams sent to a group. */
	int joined = o->expect != TO_SENDER;
	const char *source = o->source ? o->source : t->family == AF_INET ? "127.0.0.1" : "::1";
	if (t->family == AF_INET) {
		struct sockaddr_in local = {.sin_family = AF_INET};
		if (inet_pton(AF_INET, source, &local.sin_addr) != 1)
			bad_argument("not an IPv4 address", source);
		if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &local.sin_addr,
			       sizeof local.sin_addr) < 0)
			die("IP_MULTICAST_IF");
		unsigned char ttl = 1, loop = 1;
		setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
		setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
		if (joined)
			local.sin_addr.s_addr = htonl(INADDR_ANY);
		if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
			die("bind");
	} else {
		struct sockaddr_in6 local = {.sin6_family = AF_INET6};
		if (inet_pton(AF_INET6, source, &local.sin6_addr) != 1)
			bad_argument("not an IPv6 address", source);
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex) < 0)
			die("IPV6_MULTICAST_IF");
		int hops = 1, loop = 1;
		setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops);
		setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &loop, sizeof loop);
		if (joined)
			local.sin6_addr = in6addr_any;
		if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
			die("bind");
	}
	if (joined)
		join(t, ifindex);
}

/* Whether a received datagram was sent to a group (1), to this host (0), or unknown (-1):
 * from the IP_PKTINFO / IPV6_PKTINFO that joined sockets ask for. */
static int sent_to_group(struct msghdr *msg)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
		if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo info;
			memcpy(&info, CMSG_DATA(cm), sizeof info);
			return IN_MULTICAST(ntohl(info.ipi_addr.s_addr));
		}
		if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo info;
			memcpy(&info, CMSG_DATA(cm), sizeof info);
			return IN6_IS_ADDR_MULTICAST(&info.ipi6_addr);
		}
	}
	return -1;
}

static void put_header(unsigned char *buf, uint32_t slot, uint32_t generation)
{
	memcpy(buf, &slot, 4);
	memcpy(buf + 4, &generation, 4);
}

static void get_header(const unsigned char *buf, uint32_t *slot, uint32_t *generation)
{
	memcpy(slot, buf, 4);
	memcpy(generation, buf + 4, 4);
}

/* The bytes after the header: a pattern that differs from slot to slot, so an echo that
 * is not the request byte for byte is seen. */
static void fill_pattern(unsigned char *buf, int size, uint32_t slot)
{
	for (int i = HEADER; i < size; i++)
		buf[i] = (unsigned char)(i * 131u + slot * 7u + 1u);
}

/* The generator's sends. With UDP GSO (UDP_SEGMENT), one sendmsg carries a batch of
 * equal-sized datagrams as one buffer: one route lookup and one trip through the loopback
 * for the batch; the kernel splits it into ordinary datagrams before any socket sees them,
 * so the responder reads exactly what separate sends would give it. That is what lets the
 * generator outpace a responder that pays for every datagram. Without GSO (--no-gso, a
 * kernel that refuses it, or more than one group), sendmmsg. */
struct sender {
	struct target *target;
	int size, gso;
	unsigned long long errors;
};

static unsigned gso_segments(int size)
{
	unsigned most = 65000u / (unsigned)size; /* the whole batch is one IP packet */
	return most > 64 ? 64 : most;
}

static unsigned send_gso(struct sender *s, struct iovec *iov, unsigned n)
{
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} control;
	struct msghdr msg;
	memset(&msg, 0, sizeof msg);
	msg.msg_name = &s->target->group[0];
	msg.msg_namelen = s->target->group_len;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof control.buf;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
	uint16_t segment = (uint16_t)s->size;
	memcpy(CMSG_DATA(cm), &segment, sizeof segment);
	unsigned done = 0, per_call = gso_segments(s->size);
	while (done < n) {
		unsigned k = n - done < per_call ? n - done : per_call;
		msg.msg_iov = iov + done;
		msg.msg_iovlen = k;
		if (sendmsg(s->target->fd, &msg, 0) < 0) {
			if (errno == EINTR)
				continue;
			if (done == 0 && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT ||
					  errno == EOPNOTSUPP)) {
				s->gso = 0; /* not on this kernel or route: sendmmsg from now on */
				return 0;
			}
			s->errors++; /* the closed loop counts these datagrams lost later */
		}
		done += k;
	}
	return done;
}

/* Send the n datagrams of *iov* to the group(s), round-robin; the count sent. */
static unsigned send_batch(struct sender *s, struct iovec *iov, unsigned n)
{
	struct target *t = s->target;
	if (s->gso && n > 1 && t->ngroups == 1) {
		unsigned sent = send_gso(s, iov, n);
		if (s->gso)
			return sent;
	}
	static struct mmsghdr msgs[MAX_WINDOW];
	unsigned done = 0;
	while (done < n) {
		unsigned k = n - done < MAX_WINDOW ? n - done : MAX_WINDOW;
		memset(msgs, 0, k * sizeof *msgs);
		for (unsigned i = 0; i < k; i++) {
			msgs[i].msg_hdr.msg_name = &t->group[(t->next + i) % t->ngroups];
			msgs[i].msg_hdr.msg_namelen = t->group_len;
			msgs[i].msg_hdr.msg_iov = &iov[done + i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		int sent = sendmmsg(t->fd, msgs, k, 0);
		if (sent < 0) {
			if (errno == EINTR)
				continue;
			s->errors++;
			sent = 1; /* skip the datagram that failed */
		}
		done += (unsigned)sent;
		t->next = (t->next + (unsigned)sent) % t->ngroups;
	}
	return done;
}

static int closed_loop(const struct options *o)
{
	static struct target target;
	open_target(o, &target);
	int fd = target.fd;
	int window = o->window;
	static unsigned char slot_buf[MAX_WINDOW][MAX_SIZE];
	static uint32_t generation[MAX_WINDOW];
	static uint64_t sent_at[MAX_WINDOW];
	static unsigned char copies[MAX_WINDOW]; /* TO_SENDER | TO_GROUP seen this generation */
	static unsigned char recv_buf[BATCH][MAX_SIZE + 1];
	static char control[BATCH][CONTROL];
	struct mmsghdr in[BATCH];
	struct iovec out_iov[MAX_WINDOW], in_iov[BATCH];
	struct sender sender = {.target = &target, .size = o->size, .gso = o->gso};
	unsigned pending[MAX_WINDOW];
	int joined = o->expect != TO_SENDER;

	memset(in, 0, sizeof in);
	for (int i = 0; i < BATCH; i++) {
		in_iov[i].iov_base = recv_buf[i];
		in_iov[i].iov_len = sizeof recv_buf[i];
		in[i].msg_hdr.msg_iov = &in_iov[i];
		in[i].msg_hdr.msg_iovlen = 1;
	}
	for (int i = 0; i < window; i++) {
		out_iov[i].iov_len = (size_t)o->size;
		fill_pattern(slot_buf[i], o->size, (uint32_t)i);
	}

	unsigned long long sent = 0, echoes = 0, answered = 0, lost = 0, late = 0, bad = 0;
	unsigned long long mismatched = 0, unexpected = 0, duplicate = 0, to_group = 0, to_host = 0;
	unsigned long long w_sent = 0, w_echoes = 0, w_answered = 0, w_lost = 0;
	uint64_t timeout_ns = (uint64_t)o->timeout_ms * 1000000ull;
	uint64_t start = now_ns();
	uint64_t window_start = start + (uint64_t)(o->warmup * 1e9);
	uint64_t deadline = window_start + (uint64_t)(o->seconds * 1e9);
	uint64_t last_scan = start;
	int measuring = 0;
	double cpu0 = 0, self0 = 0, busy0 = 0;
	unsigned npending = 0;

	for (int i = 0; i < window; i++)
		pending[npending++] = (unsigned)i;
	for (;;) {
		uint64_t now = now_ns();
		if (npending) {
			for (unsigned k = 0; k < npending; k++) {
				unsigned s = pending[k];
				put_header(slot_buf[s], s, generation[s]);
				copies[s] = 0;
				out_iov[k].iov_base = slot_buf[s];
				sent_at[s] = now;
			}
			sent += send_batch(&sender, out_iov, npending);
			npending = 0;
		}
		if (!measuring && now >= window_start) {
			measuring = 1;
			w_sent = sent, w_echoes = echoes, w_answered = answered, w_lost = lost;
			cpu0 = process_cpu_s(o->pid);
			self0 = self_cpu_s();
			busy0 = machine_busy_s();
			window_start = now;
		}
		if (now >= deadline ||
		    (o->count > 0 && (long)(answered - w_answered) >= o->count && measuring))
			break;
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int ready = poll(&pfd, 1, o->timeout_ms / 4 + 1);
		if (ready > 0) {
			if (joined)
				for (int i = 0; i < BATCH; i++) {
					in[i].msg_hdr.msg_control = control[i];
					in[i].msg_hdr.msg_controllen = sizeof control[i];
				}
			int n = recvmmsg(fd, in, BATCH, MSG_DONTWAIT, NULL);
			for (int i = 0; i < n; i++) {
				uint32_t s, g;
				if (in[i].msg_len != (unsigned)o->size) {
					bad++;
					continue;
				}
				get_header(recv_buf[i], &s, &g);
				if (s >= (uint32_t)window || g != generation[s]) {
					late++;
					continue;
				}
				if (memcmp(recv_buf[i], slot_buf[s], (size_t)o->size) != 0) {
					mismatched++;
					continue;
				}
				int copy = TO_SENDER;
				if (joined) {
					int to = sent_to_group(&in[i].msg_hdr);
					copy = to == 1 ? TO_GROUP : TO_SENDER;
					to_group += to == 1;
					to_host += to == 0;
				}
				if (!(copy & o->expect)) {
					unexpected++;
					continue;
				}
				if (copies[s] & copy) {
					duplicate++;
					continue;
				}
				copies[s] |= (unsigned char)copy;
				echoes++;
				if (copies[s] == o->expect) {
					answered++;
					generation[s]++;
					pending[npending++] = s;
				}
			}
		}
		now = now_ns();
		if (now - last_scan >= timeout_ns / 4) {
			last_scan = now;
			for (int s = 0; s < window; s++) {
				int queued = 0;
				for (unsigned k = 0; k < npending; k++)
					queued |= pending[k] == (unsigned)s;
				if (!queued && now - sent_at[s] > timeout_ns) {
					lost++;
					generation[s]++;
					pending[npending++] = (unsigned)s;
				}
			}
		}
	}
	uint64_t end = now_ns();
	double cpu1 = process_cpu_s(o->pid), self1 = self_cpu_s(), busy1 = machine_busy_s();
	double elapsed = (double)(end - window_start) / 1e9;
	unsigned long long n_echoes = echoes - w_echoes, n_sent = sent - w_sent;
	unsigned long long n_answered = answered - w_answered;
	printf("{\"mode\": \"closed\", \"family\": %d, \"groups\": %u, \"expect\": %d, "
	       "\"size\": %d, \"window\": %d, \"seconds\": %.4f, "
	       "\"sent\": %llu, \"echoes\": %llu, \"echoes_per_s\": %.1f, \"answered\": %llu, "
	       "\"answered_per_s\": %.1f, \"lost\": %llu, \"late\": %llu, \"bad\": %llu, "
	       "\"mismatched\": %llu, \"unexpected\": %llu, \"duplicate\": %llu, "
	       "\"to_group\": %llu, \"to_host\": %llu, \"send_errors\": %llu, \"gso\": %d, "
	       "\"responder_cpu_s\": %.3f, \"self_cpu_s\": %.3f, \"machine_busy_s\": %.3f}\n",
	       target.family == AF_INET ? 4 : 6, target.ngroups, o->expect, o->size, window,
	       elapsed, n_sent, n_echoes, (double)n_echoes / elapsed, n_answered,
	       (double)n_answered / elapsed, lost - w_lost, late, bad, mismatched, unexpected,
	       duplicate, to_group, to_host, sender.errors, sender.gso && target.ngroups == 1,
	       cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1.0, self1 - self0,
	       busy0 >= 0 && busy1 >= 0 ? busy1 - busy0 : -1.0);
	close(fd);
	return 0;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static double percentile_us(const uint64_t *sorted, long n, double p)
{
	if (n == 0)
		return -1;
	long index = (long)(p / 100.0 * (double)(n - 1) + 0.5);
	return (double)sorted[index] / 1000.0;
}

static int round_trips(const struct options *o)
{
	static struct target target;
	open_target(o, &target);
	int fd = target.fd;
	static unsigned char out_buf[MAX_SIZE], in_buf[MAX_SIZE + 1];
	fill_pattern(out_buf, o->size, 0);
	long cap = o->count > 0 ? o->count : 1000000;
	uint64_t *samples = calloc((size_t)cap, sizeof *samples);
	if (!samples)
		die("calloc");
	long n = 0;
	unsigned long long sent = 0, lost = 0, late = 0, bad = 0, mismatched = 0;
	uint32_t generation = 0;
	uint64_t start = now_ns();
	uint64_t window_start = start + (uint64_t)(o->warmup * 1e9);
	uint64_t deadline = window_start + (uint64_t)(o->seconds * 1e9);
	int measuring = 0;
	double cpu0 = 0, self0 = 0, busy0 = 0;

	while (n < cap) {
		uint64_t now = now_ns();
		if (now >= deadline)
			break;
		if (!measuring && now >= window_start) {
			measuring = 1;
			n = 0, sent = 0, lost = 0;
			cpu0 = process_cpu_s(o->pid);
			self0 = self_cpu_s();
			busy0 = machine_busy_s();
		}
		generation++;
		put_header(out_buf, 0, generation);
		uint64_t t0 = now_ns();
		if (sendto(fd, out_buf, (size_t)o->size, 0, (struct sockaddr *)&target.group[0],
			   target.group_len) < 0)
			die("sendto");
		sent++;
		for (;;) {
			uint64_t waited_ms = (now_ns() - t0) / 1000000ull;
			if (waited_ms >= (uint64_t)o->timeout_ms) {
				lost++;
				break;
			}
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			if (poll(&pfd, 1, o->timeout_ms - (int)waited_ms) <= 0)
				continue;
			ssize_t got = recv(fd, in_buf, sizeof in_buf, MSG_DONTWAIT);
			uint64_t t1 = now_ns();
			if (got < 0)
				continue;
			uint32_t s, g;
			if (got != o->size) {
				bad++;
				continue;
			}
			get_header(in_buf, &s, &g);
			if (g != generation) {
				late++;
				continue;
			}
			if (memcmp(in_buf, out_buf, (size_t)o->size) != 0) {
				mismatched++;
				continue;
			}
			samples[n++] = t1 - t0;
			break;
		}
	}
	double cpu1 = process_cpu_s(o->pid), self1 = self_cpu_s(), busy1 = machine_busy_s();
	double elapsed = (double)(now_ns() - start) / 1e9 - (measuring ? o->warmup : 0);
	qsort(samples, (size_t)n, sizeof *samples, compare_u64);
	double sum = 0;
	for (long i = 0; i < n; i++)
		sum += (double)samples[i];
	printf("{\"mode\": \"rtt\", \"family\": %d, \"size\": %d, \"seconds\": %.4f, "
	       "\"sent\": %llu, \"echoes\": %ld, \"lost\": %llu, \"late\": %llu, \"bad\": %llu, "
	       "\"mismatched\": %llu, "
	       "\"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, "
	       "\"mean_us\": %.2f, \"responder_cpu_s\": %.3f, \"self_cpu_s\": %.3f, "
	       "\"machine_busy_s\": %.3f}\n",
	       target.family == AF_INET ? 4 : 6, o->size, elapsed, sent, n, lost, late, bad,
	       mismatched, percentile_us(samples, n, 50),
	       percentile_us(samples, n, 90), percentile_us(samples, n, 99),
	       n ? (double)samples[n - 1] / 1000.0 : -1.0, n ? sum / (double)n / 1000.0 : -1.0,
	       cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1.0, self1 - self0,
	       busy0 >= 0 && busy1 >= 0 ? busy1 - busy0 : -1.0);
	free(samples);
	close(fd);
	return 0;
}

/* Every group answers: one datagram to each group not yet answered every 20 ms, until all
 * have or --seconds is up. The slot field carries the group's index. */
static int probe_all(const struct options *o)
{
	static struct target target;
	open_target(o, &target);
	int fd = target.fd;
	static unsigned char out_buf[MAX_SIZE], in_buf[MAX_SIZE + 1];
	static unsigned char answered[MAX_GROUPS];
	uint32_t run = (uint32_t)getpid();
	unsigned done = 0;
	unsigned long long sent = 0, other = 0;
	uint64_t start = now_ns(), deadline = start + (uint64_t)(o->seconds * 1e9);
	uint64_t first = 0, last = 0;
	while (done < target.ngroups && now_ns() < deadline) {
		for (unsigned k = 0; k < target.ngroups; k++) {
			if (answered[k])
				continue;
			fill_pattern(out_buf, o->size, k);
			put_header(out_buf, k, run);
			if (sendto(fd, out_buf, (size_t)o->size, 0, (struct sockaddr *)&target.group[k],
				   target.group_len) >= 0)
				sent++;
		}
		uint64_t round_end = now_ns() + 20000000ull;
		for (uint64_t now = now_ns(); now < round_end && done < target.ngroups;
		     now = now_ns()) {
			struct pollfd pfd = {.fd = fd, .events = POLLIN};
			if (poll(&pfd, 1, (int)((round_end - now) / 1000000ull) + 1) <= 0)
				continue;
			ssize_t got;
			while ((got = recv(fd, in_buf, sizeof in_buf, MSG_DONTWAIT)) >= 0) {
				uint32_t k, g;
				get_header(in_buf, &k, &g);
				if (got != o->size || g != run || k >= target.ngroups || answered[k]) {
					other++;
					continue;
				}
				fill_pattern(out_buf, o->size, k);
				put_header(out_buf, k, run);
				if (memcmp(in_buf, out_buf, (size_t)o->size) != 0) {
					other++;
					continue;
				}
				answered[k] = 1;
				done++;
				last = now_ns() - start;
				if (done == 1)
					first = last;
			}
		}
	}
	printf("{\"mode\": \"probe\", \"groups\": %u, \"answered\": %u, \"sent\": %llu, "
	       "\"other\": %llu, \"first_ms\": %.1f, \"all_ms\": %.1f}\n",
	       target.ngroups, done, sent, other, done ? (double)first / 1e6 : -1.0,
	       done == target.ngroups ? (double)last / 1e6 : -1.0);
	close(fd);
	return done == target.ngroups ? 0 : 1;
}

static int one_way(const struct options *o)
{
	static struct target target;
	open_target(o, &target);
	static unsigned char buf[MAX_SIZE];
	struct iovec iov[BATCH];
	for (int i = 0; i < BATCH; i++)
		iov[i] = (struct iovec){.iov_base = buf, .iov_len = (size_t)o->size};
	struct sender sender = {.target = &target, .size = o->size, .gso = o->gso};
	unsigned long long sent = 0;
	uint64_t start = now_ns();
	uint64_t window_start = start + (uint64_t)(o->warmup * 1e9);
	uint64_t deadline = window_start + (uint64_t)(o->seconds * 1e9);
	int measuring = 0;
	double self0 = 0;
	unsigned long long paced = 0; /* --rate: datagrams sent since start */
	if (o->rate > 0)
		prctl(PR_SET_TIMERSLACK, 1000UL); /* wake within ~1 µs of the 50 µs asked */
	for (;;) {
		uint64_t now = now_ns();
		if (now >= deadline || (o->count > 0 && (long)sent >= o->count))
			break;
		if (!measuring && now >= window_start) {
			measuring = 1;
			sent = 0;
			self0 = self_cpu_s();
			window_start = now;
		}
		int n = BATCH;
		if (o->rate > 0) {
			unsigned long long due = (unsigned long long)((double)(now - start) / 1e9 * o->rate);
			if (due <= paced) {
				struct timespec pause = {.tv_sec = 0, .tv_nsec = 50000};
				nanosleep(&pause, NULL);
				continue;
			}
			n = due - paced < BATCH ? (int)(due - paced) : BATCH;
		}
		int done = send_batch(&sender, iov, n);
		sent += done;
		paced += n; /* what failed to send is not sent again: the rate stays the rate */
	}
	double elapsed = (double)(now_ns() - window_start) / 1e9;
	printf("{\"mode\": \"oneway\", \"family\": %d, \"size\": %d, \"seconds\": %.4f, "
	       "\"sent\": %llu, \"sent_per_s\": %.1f, \"send_errors\": %llu, \"gso\": %d, "
	       "\"self_cpu_s\": %.3f, \"rate\": %.0f}\n",
	       target.family == AF_INET ? 4 : 6, o->size, elapsed, sent, (double)sent / elapsed,
	       sender.errors, sender.gso && target.ngroups == 1, self_cpu_s() - self0, o->rate);
	close(target.fd);
	return 0;
}

static int parse_expect(const char *text)
{
	if (strcmp(text, "unicast") == 0)
		return TO_SENDER;
	if (strcmp(text, "group") == 0)
		return TO_GROUP;
	if (strcmp(text, "both") == 0)
		return TO_SENDER | TO_GROUP;
	bad_argument("--expect unicast, group or both", text);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = {.mode = "closed", .groups = "224.3.29.71", .source = NULL,
			    .interface = "lo", .port = 9999, .size = 64, .window = 64,
			    .timeout_ms = 50, .seconds = 3, .warmup = 0.3, .count = 0, .pid = 0,
			    .gso = 1, .expect = TO_SENDER};
	static const struct option longopts[] = {
		{"mode", required_argument, 0, 'm'},	{"group", required_argument, 0, 'g'},
		{"port", required_argument, 0, 'p'},	{"source", required_argument, 0, 's'},
		{"size", required_argument, 0, 'z'},	{"window", required_argument, 0, 'w'},
		{"seconds", required_argument, 0, 't'}, {"warmup", required_argument, 0, 'u'},
		{"count", required_argument, 0, 'n'},	{"timeout-ms", required_argument, 0, 'o'},
		{"pid", required_argument, 0, 'P'},	{"no-gso", no_argument, 0, 'G'},
		{"rate", required_argument, 0, 'r'},	{"interface", required_argument, 0, 'i'},
		{"expect", required_argument, 0, 'e'},	{0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': o.mode = optarg; break;
		case 'g': o.groups = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 's': o.source = optarg; break;
		case 'z': o.size = atoi(optarg); break;
		case 'w': o.window = atoi(optarg); break;
		case 't': o.seconds = atof(optarg); break;
		case 'u': o.warmup = atof(optarg); break;
		case 'n': o.count = atol(optarg); break;
		case 'o': o.timeout_ms = atoi(optarg); break;
		case 'P': o.pid = atoi(optarg); break;
		case 'G': o.gso = 0; break;
		case 'r': o.rate = atof(optarg); break;
		case 'i': o.interface = optarg; break;
		case 'e': o.expect = parse_expect(optarg); break;
		default: return 2;
		}
	}
	if (o.size < HEADER || o.size > MAX_SIZE || o.window < 1 || o.window > MAX_WINDOW ||
	    o.seconds <= 0 || o.seconds > 600 || o.warmup < 0 || o.timeout_ms < 1 ||
	    o.rate < 0 || o.rate > 1e8) {
		fprintf(stderr, "cload: size %d..%d, window 1..%d, 0 < seconds <= 600, "
			"timeout-ms >= 1, 0 <= rate <= 1e8\n", HEADER, MAX_SIZE, MAX_WINDOW);
		return 2;
	}
	if (o.expect != TO_SENDER && strcmp(o.mode, "closed") != 0) {
		fprintf(stderr, "cload: --expect group or both is for --mode closed\n");
		return 2;
	}
	if (strcmp(o.mode, "closed") == 0)
		return closed_loop(&o);
	if (strcmp(o.mode, "rtt") == 0)
		return round_trips(&o);
	if (strcmp(o.mode, "oneway") == 0)
		return one_way(&o);
	if (strcmp(o.mode, "probe") == 0)
		return probe_all(&o);
	fprintf(stderr, "cload: --mode closed, rtt, oneway or probe\n");
	return 2;
}
