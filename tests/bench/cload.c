/* cload: the load generator of `make bench`. Prints one JSON line on stdout.
 *
 *   cload --mode closed|rtt|oneway [--group G] [--port P] [--source ADDR] [--size BYTES]
 *         [--window N] [--seconds S] [--warmup S] [--count N] [--timeout-ms MS] [--pid PID]
 *         [--rate PPS]
 *
 * closed  keep --window datagrams in flight: every echo sends the next one, a datagram not
 *         back within --timeout-ms is counted lost and sent again. Reports echoes/s and loss
 *         over --seconds after --warmup. Batched (recvmmsg/sendmmsg), so that it costs less
 *         per echo than a responder that answers one datagram at a time.
 * rtt     one datagram in flight; round trips from CLOCK_MONOTONIC, p50/p90/p99/max (µs).
 * oneway  send as fast as it can in batches, to a sink that only reads: the ceiling of this
 *         generator, to show it is not what limits the closed loop. With --rate, PPS datagrams
 *         a second instead, sent every ~50 µs as they fall due: a steady load on a responder
 *         (its echoes are never read) while something else measures it.
 *
 * With --pid, the utime+stime of that process (from /proc/PID/stat) over the measured
 * window is reported too, as "responder_cpu_s". Every loop is bounded by --seconds and
 * --count. Datagrams go to the group from --source (IP_MULTICAST_IF), echoes come back to
 * the port it is bound to. Each datagram carries a slot and a generation number in its first
 * 8 bytes, so a late echo of a datagram already counted lost is not counted twice.
 *
 * Built by tests/bench/run.py with the system compiler (cc -O2) into build/bench/.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
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
#define BATCH 64
#define MAX_SIZE 65507
#define HEADER 8

struct options {
	const char *mode, *group, *source;
	int port, size, window, timeout_ms, pid, gso;
	double seconds, warmup, rate;
	long count;
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

static int open_socket(const struct options *o, struct sockaddr_in *group)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket");
	struct in_addr source;
	if (inet_pton(AF_INET, o->source, &source) != 1) {
		fprintf(stderr, "cload: %s: not an IPv4 address\n", o->source);
		exit(2);
	}
	memset(group, 0, sizeof *group);
	group->sin_family = AF_INET;
	group->sin_port = htons((unsigned short)o->port);
	if (inet_pton(AF_INET, o->group, &group->sin_addr) != 1) {
		fprintf(stderr, "cload: %s: not an IPv4 group\n", o->group);
		exit(2);
	}
	/* Big buffers (FORCE: as root, past rmem_max), so the generator's own socket never
	 * drops an echo the responder sent. */
	int buffer = 8 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer, sizeof buffer) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
	if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &source, sizeof source) < 0)
		die("IP_MULTICAST_IF");
	unsigned char ttl = 1, loop = 1;
	setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
	setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
	struct sockaddr_in local;
	memset(&local, 0, sizeof local);
	local.sin_family = AF_INET;
	local.sin_addr = source;
	if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
		die("bind");
	return fd;
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

/* The generator's sends. With UDP GSO (UDP_SEGMENT), one sendmsg carries a batch of
 * equal-sized datagrams as one buffer: one route lookup and one trip through the loopback
 * for the batch; the kernel splits it into ordinary datagrams before any socket sees them,
 * so the responder reads exactly what separate sends would give it. That is what lets the
 * generator outpace a responder that pays for every datagram. Without GSO (--no-gso, or
 * a kernel that refuses it), sendmmsg. */
struct sender {
	int fd, size, gso;
	struct sockaddr_in *group;
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
	msg.msg_name = s->group;
	msg.msg_namelen = sizeof *s->group;
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
		if (sendmsg(s->fd, &msg, 0) < 0) {
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

/* Send the n datagrams of *iov* to the group; the count sent. */
static unsigned send_batch(struct sender *s, struct iovec *iov, unsigned n)
{
	if (s->gso && n > 1) {
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
			msgs[i].msg_hdr.msg_name = s->group;
			msgs[i].msg_hdr.msg_namelen = sizeof *s->group;
			msgs[i].msg_hdr.msg_iov = &iov[done + i];
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		int sent = sendmmsg(s->fd, msgs, k, 0);
		if (sent < 0) {
			if (errno == EINTR)
				continue;
			s->errors++;
			sent = 1; /* skip the datagram that failed */
		}
		done += (unsigned)sent;
	}
	return done;
}

static int closed_loop(const struct options *o)
{
	struct sockaddr_in group;
	int fd = open_socket(o, &group);
	int window = o->window;
	static unsigned char slot_buf[MAX_WINDOW][MAX_SIZE];
	static uint32_t generation[MAX_WINDOW];
	static uint64_t sent_at[MAX_WINDOW];
	static unsigned char recv_buf[BATCH][MAX_SIZE + 1];
	struct mmsghdr in[BATCH];
	struct iovec out_iov[MAX_WINDOW], in_iov[BATCH];
	struct sender sender = {.fd = fd, .size = o->size, .gso = o->gso, .group = &group};
	unsigned pending[MAX_WINDOW];

	memset(in, 0, sizeof in);
	for (int i = 0; i < BATCH; i++) {
		in_iov[i].iov_base = recv_buf[i];
		in_iov[i].iov_len = sizeof recv_buf[i];
		in[i].msg_hdr.msg_iov = &in_iov[i];
		in[i].msg_hdr.msg_iovlen = 1;
	}
	for (int i = 0; i < window; i++)
		out_iov[i].iov_len = (size_t)o->size;

	unsigned long long sent = 0, echoes = 0, lost = 0, late = 0, bad = 0;
	unsigned long long w_sent = 0, w_echoes = 0, w_lost = 0;
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
				out_iov[k].iov_base = slot_buf[s];
				sent_at[s] = now;
			}
			sent += send_batch(&sender, out_iov, npending);
			npending = 0;
		}
		if (!measuring && now >= window_start) {
			measuring = 1;
			w_sent = sent, w_echoes = echoes, w_lost = lost;
			cpu0 = process_cpu_s(o->pid);
			self0 = self_cpu_s();
			busy0 = machine_busy_s();
			window_start = now;
		}
		if (now >= deadline || (o->count > 0 && (long)(echoes - w_echoes) >= o->count && measuring))
			break;
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int ready = poll(&pfd, 1, o->timeout_ms / 4 + 1);
		if (ready > 0) {
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
				echoes++;
				generation[s]++;
				pending[npending++] = s;
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
	printf("{\"mode\": \"closed\", \"size\": %d, \"window\": %d, \"seconds\": %.4f, "
	       "\"sent\": %llu, \"echoes\": %llu, \"echoes_per_s\": %.1f, \"lost\": %llu, "
	       "\"late\": %llu, \"bad\": %llu, \"send_errors\": %llu, \"gso\": %d, "
	       "\"responder_cpu_s\": %.3f, \"self_cpu_s\": %.3f, \"machine_busy_s\": %.3f}\n",
	       o->size, window, elapsed, n_sent, n_echoes, (double)n_echoes / elapsed,
	       lost - w_lost, late, bad, sender.errors, sender.gso,
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
	struct sockaddr_in group;
	int fd = open_socket(o, &group);
	static unsigned char out_buf[MAX_SIZE], in_buf[MAX_SIZE + 1];
	long cap = o->count > 0 ? o->count : 1000000;
	uint64_t *samples = calloc((size_t)cap, sizeof *samples);
	if (!samples)
		die("calloc");
	long n = 0;
	unsigned long long sent = 0, lost = 0, late = 0, bad = 0;
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
		if (sendto(fd, out_buf, (size_t)o->size, 0, (struct sockaddr *)&group,
			   sizeof group) < 0)
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
	printf("{\"mode\": \"rtt\", \"size\": %d, \"seconds\": %.4f, \"sent\": %llu, "
	       "\"echoes\": %ld, \"lost\": %llu, \"late\": %llu, \"bad\": %llu, "
	       "\"p50_us\": %.2f, \"p90_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.2f, "
	       "\"mean_us\": %.2f, \"responder_cpu_s\": %.3f, \"self_cpu_s\": %.3f, "
	       "\"machine_busy_s\": %.3f}\n",
	       o->size, elapsed, sent, n, lost, late, bad, percentile_us(samples, n, 50),
	       percentile_us(samples, n, 90), percentile_us(samples, n, 99),
	       n ? (double)samples[n - 1] / 1000.0 : -1.0, n ? sum / (double)n / 1000.0 : -1.0,
	       cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1.0, self1 - self0,
	       busy0 >= 0 && busy1 >= 0 ? busy1 - busy0 : -1.0);
	free(samples);
	close(fd);
	return 0;
}

static int one_way(const struct options *o)
{
	struct sockaddr_in group;
	int fd = open_socket(o, &group);
	static unsigned char buf[MAX_SIZE];
	struct iovec iov[BATCH];
	for (int i = 0; i < BATCH; i++)
		iov[i] = (struct iovec){.iov_base = buf, .iov_len = (size_t)o->size};
	struct sender sender = {.fd = fd, .size = o->size, .gso = o->gso, .group = &group};
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
	printf("{\"mode\": \"oneway\", \"size\": %d, \"seconds\": %.4f, \"sent\": %llu, "
	       "\"sent_per_s\": %.1f, \"send_errors\": %llu, \"gso\": %d, "
	       "\"self_cpu_s\": %.3f, \"rate\": %.0f}\n",
	       o->size, elapsed, sent, (double)sent / elapsed, sender.errors, sender.gso,
	       self_cpu_s() - self0, o->rate);
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = {.mode = "closed", .group = "224.3.29.71", .source = "127.0.0.1",
			    .port = 9999, .size = 64, .window = 64, .timeout_ms = 50,
			    .seconds = 3, .warmup = 0.3, .count = 0, .pid = 0, .gso = 1};
	static const struct option longopts[] = {
		{"mode", required_argument, 0, 'm'},	{"group", required_argument, 0, 'g'},
		{"port", required_argument, 0, 'p'},	{"source", required_argument, 0, 's'},
		{"size", required_argument, 0, 'z'},	{"window", required_argument, 0, 'w'},
		{"seconds", required_argument, 0, 't'}, {"warmup", required_argument, 0, 'u'},
		{"count", required_argument, 0, 'n'},	{"timeout-ms", required_argument, 0, 'o'},
		{"pid", required_argument, 0, 'P'},	{"no-gso", no_argument, 0, 'G'},
		{"rate", required_argument, 0, 'r'},	{0, 0, 0, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'm': o.mode = optarg; break;
		case 'g': o.group = optarg; break;
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
	if (strcmp(o.mode, "closed") == 0)
		return closed_loop(&o);
	if (strcmp(o.mode, "rtt") == 0)
		return round_trips(&o);
	if (strcmp(o.mode, "oneway") == 0)
		return one_way(&o);
	fprintf(stderr, "cload: --mode closed, rtt or oneway\n");
	return 2;
}
