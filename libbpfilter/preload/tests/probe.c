/* Test client for libbpfilter.so: issues the iptables sockopts (and a few others) the way
 * iptables-legacy does, and prints what came back, one "key=value" per line.
 * Built by tests/preload.rs with the system C compiler; also used unpreloaded, in a scratch
 * network namespace, to capture the real kernel's GET_INFO/GET_ENTRIES answers. */
#define _GNU_SOURCE
#define _LARGEFILE64_SOURCE
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

static void hex(const char *key, const void *p, size_t n)
{
	const unsigned char *b = p;
	printf("%s=", key);
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
	printf("\n");
}

static int raw4(void)
{
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (fd < 0) {
		perror("socket");
		exit(2);
	}
	return fd;
}

static int raw6(void)
{
	int fd = socket(AF_INET6, SOCK_RAW, IPPROTO_RAW);
	if (fd < 0) {
		perror("socket");
		exit(2);
	}
	return fd;
}

/* Concurrent GET_INFOs from several threads, each on its own socket: counts the answers that
 * came back whole (rc 0 and the byte pattern the test daemon sends). */
static void *info_worker(void *arg)
{
	long ok = 0;
	int fd = raw4();
	for (int i = 0; i < 25; i++) {
		struct ipt_getinfo info;
		memset(&info, 0, sizeof(info));
		strcpy(info.name, "filter");
		socklen_t len = sizeof(info);
		int rc = getsockopt(fd, IPPROTO_IP, IPT_SO_GET_INFO, &info, &len);
		const unsigned char *b = (const unsigned char *)&info;
		int same = 1;
		for (size_t j = 0; j < sizeof(info); j++)
			same &= b[j] == (unsigned char)j;
		ok += rc == 0 && len == sizeof(info) && same;
	}
	close(fd);
	(void)arg;
	return (void *)ok;
}

static int write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "w");
	if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

/* The IPv4 and IPv6 GET_INFO and GET_ENTRIES requests are the same but for their level: the
 * same option numbers, and structures laid out alike (ip6t's are ipt's). */
_Static_assert(IPT_SO_GET_INFO == IP6T_SO_GET_INFO, "GET_INFO");
_Static_assert(IPT_SO_GET_ENTRIES == IP6T_SO_GET_ENTRIES, "GET_ENTRIES");
_Static_assert(sizeof(struct ipt_getinfo) == sizeof(struct ip6t_getinfo), "getinfo");
_Static_assert(sizeof(struct ipt_get_entries) == sizeof(struct ip6t_get_entries), "get_entries");

/* GET_INFO then GET_ENTRIES of table `name` on `fd` at `level` (IPPROTO_IP or IPPROTO_IPV6),
 * saved as DIR/info.bin and DIR/entries.bin; prints num_entries and size. */
static int capture(int fd, int level, const char *name, const char *dir)
{
	struct ipt_getinfo info;
	memset(&info, 0, sizeof(info));
	strncpy(info.name, name, sizeof(info.name) - 1);
	socklen_t len = sizeof(info);
	if (getsockopt(fd, level, IPT_SO_GET_INFO, &info, &len) < 0) {
		perror("GET_INFO");
		return 1;
	}
	socklen_t elen = sizeof(struct ipt_get_entries) + info.size;
	struct ipt_get_entries *e = calloc(1, elen);
	strcpy(e->name, info.name);
	e->size = info.size;
	if (getsockopt(fd, level, IPT_SO_GET_ENTRIES, e, &elen) < 0) {
		perror("GET_ENTRIES");
		return 1;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/info.bin", dir);
	if (write_file(path, &info, sizeof(info)))
		return 1;
	snprintf(path, sizeof(path), "%s/entries.bin", dir);
	if (write_file(path, e, elen))
		return 1;
	printf("num_entries=%u\nsize=%u\n", info.num_entries, info.size);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: probe info NAME | entries NAME SIZE | replace NUM_COUNTERS"
				" | rev NAME REV | other | names4 | names6 | capture[6] NAME DIR\n");
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "info") && argc == 3) {
		struct ipt_getinfo info;
		memset(&info, 0, sizeof(info));
		strncpy(info.name, argv[2], sizeof(info.name) - 1);
		socklen_t len = sizeof(info);
		int rc = getsockopt(raw4(), IPPROTO_IP, IPT_SO_GET_INFO, &info, &len);
		printf("rc=%d\nerrno=%d\noptlen=%u\n", rc, rc ? errno : 0, len);
		hex("optval", &info, sizeof(info));
		return 0;
	}
	if (!strcmp(cmd, "entries") && argc == 4) {
		unsigned size = atoi(argv[3]);
		socklen_t len = sizeof(struct ipt_get_entries) + size;
		struct ipt_get_entries *e = calloc(1, len);
		strncpy(e->name, argv[2], sizeof(e->name) - 1);
		e->size = size;
		int rc = getsockopt(raw4(), IPPROTO_IP, IPT_SO_GET_ENTRIES, e, &len);
		printf("rc=%d\nerrno=%d\noptlen=%u\n", rc, rc ? errno : 0, len);
		hex("optval", e, sizeof(struct ipt_get_entries) + size);
		return 0;
	}
	if (!strcmp(cmd, "replace") && argc == 3) {
		unsigned n = atoi(argv[2]);
		/* Two spare counters after the num_counters ones: they must stay 0xaa. */
		size_t cbytes = (n + 2) * sizeof(struct xt_counters);
		struct xt_counters *counters = malloc(cbytes);
		memset(counters, 0xaa, cbytes);
		size_t len = sizeof(struct ipt_replace) + 16;
		struct ipt_replace *r = calloc(1, len);
		strcpy(r->name, "filter");
		r->num_counters = n;
		r->size = 16;
		r->counters = counters;
		memset((char *)r + sizeof(*r), 0x11, 16);
		int rc = setsockopt(raw4(), IPPROTO_IP, IPT_SO_SET_REPLACE, r, len);
		printf("rc=%d\nerrno=%d\n", rc, rc ? errno : 0);
		hex("counters", counters, cbytes);
		return 0;
	}
	if (!strcmp(cmd, "threads") && argc == 2) {
		pthread_t t[8];
		long total = 0;
		for (int i = 0; i < 8; i++)
			pthread_create(&t[i], NULL, info_worker, NULL);
		for (int i = 0; i < 8; i++) {
			void *ok;
			pthread_join(t[i], &ok);
			total += (long)ok;
		}
		printf("ok=%ld\n", total);
		return 0;
	}
	if (!strcmp(cmd, "rev") && argc == 4) {
		struct xt_get_revision rev;
		memset(&rev, 0, sizeof(rev));
		strncpy(rev.name, argv[2], sizeof(rev.name) - 1);
		rev.revision = atoi(argv[3]);
		struct xt_get_revision before = rev;
		socklen_t len = sizeof(rev);
		int rc = getsockopt(raw4(), IPPROTO_IP, IPT_SO_GET_REVISION_MATCH, &rev, &len);
		printf("rc=%d\nerrno=%d\noptlen=%u\nuntouched=%d\n", rc, rc ? errno : 0, len,
		       !memcmp(&before, &rev, sizeof(rev)));
		return 0;
	}
	if (!strcmp(cmd, "other")) {
		/* Options the interposer must leave to libc, on a UDP and on a raw socket. */
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		int v = 65536, got = 0;
		socklen_t len = sizeof(got);
		int rc1 = setsockopt(u, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
		int rc2 = getsockopt(u, SOL_SOCKET, SO_RCVBUF, &got, &len);
		printf("rcvbuf_rc=%d,%d\nrcvbuf=%d\n", rc1, rc2, got);
		int ttl = 0;
		len = sizeof(ttl);
		int rc3 = getsockopt(raw4(), IPPROTO_IP, IP_TTL, &ttl, &len);
		printf("ttl_rc=%d\nttl=%d\n", rc3, ttl);
		/* An IPT optname on a non-raw socket goes to the kernel, not the daemon. */
		struct ipt_getinfo info;
		memset(&info, 0, sizeof(info));
		strcpy(info.name, "bpfl_nosuch");
		len = sizeof(info);
		int rc4 = getsockopt(u, IPPROTO_IP, IPT_SO_GET_INFO, &info, &len);
		printf("udp_info_rc=%d\nudp_info_errno=%d\n", rc4, rc4 ? errno : 0);
		/* An ip6tables optname on an IPv4 raw socket: the kernel answers it, not the daemon. */
		len = sizeof(info);
		int rc5 = getsockopt(raw4(), IPPROTO_IPV6, IP6T_SO_GET_INFO, &info, &len);
		printf("v6_on_v4_rc=%d\nv6_on_v4_errno=%d\n", rc5, rc5 ? errno : 0);
		return 0;
	}
	if ((!strcmp(cmd, "names4") || !strcmp(cmd, "names6")) && argc == 2) {
		const char *path = cmd[5] == '4' ? "/proc/net/ip_tables_names"
						 : "/proc/net/ip6_tables_names";
		/* fopen, as iptables-legacy-save does with O_CLOEXEC, and fopen64 explicitly. */
		for (int pass = 0; pass < 2; pass++) {
			FILE *f = pass ? fopen64(path, "re") : fopen(path, "r");
			if (!f) {
				printf("fopen%s_errno=%d\n", pass ? "64" : "", errno);
				continue;
			}
			char line[64];
			while (fgets(line, sizeof(line), f)) {
				line[strcspn(line, "\n")] = 0;
				printf("name%s=%s\n", pass ? "64" : "", line);
			}
			fclose(f);
		}
		return 0;
	}
	if (!strcmp(cmd, "capture") && argc == 4)
		/* Unpreloaded, in a scratch netns: the kernel's own answers, saved as files. */
		return capture(raw4(), IPPROTO_IP, argv[2], argv[3]);
	if (!strcmp(cmd, "capture6") && argc == 4)
		return capture(raw6(), IPPROTO_IPV6, argv[2], argv[3]);
	fprintf(stderr, "probe: bad arguments\n");
	return 2;
}
