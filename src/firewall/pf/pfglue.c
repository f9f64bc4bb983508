/*
 * pfglue.c: the only code that knows pf's ioctl structures.
 *
 * pf's structs differ between FreeBSD and OpenBSD and change between
 * OpenBSD releases, so instead of mirroring them in Rust this file is
 * compiled by build.rs against the system's own <net/pfvar.h>.  Rust talks
 * to it through flat structs (ftps_rule, ftps_natlook, ftps_state) whose
 * layout is checked on both sides: _Static_assert here, const assertions in
 * src/firewall/pf/ffi.rs, with the same numbers.  Every function returns 0
 * (or a positive count/flag) on success and -errno on failure; none keeps
 * state, the caller owns the /dev/pf descriptor.
 */

#include <sys/types.h>
#include <sys/param.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <net/if.h>
#include <net/pfvar.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#ifdef __FreeBSD__
#include <sys/nv.h>
#endif

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Address family codes of the flat structs: ours, not AF_*, which differ
 * between the BSDs (AF_INET6 is 28 on FreeBSD, 24 on OpenBSD). */
#define FTPS_AF_INET 4
#define FTPS_AF_INET6 6

#define FTPS_DIR_IN 1
#define FTPS_DIR_OUT 2

/* One filter rule, flat.  Mirrored by ffi::FlatRule. */
struct ftps_rule {
	uint8_t af;        /* FTPS_AF_INET or FTPS_AF_INET6 */
	uint8_t log;       /* 1: log */
	uint8_t quick;     /* 1: quick */
	uint8_t flags;     /* TCP flags that must be set (TH_* wire bits) */
	uint8_t flagset;   /* TCP flags examined */
	uint8_t pad;
	uint16_t port;     /* destination port, network byte order */
	uint8_t src[16];   /* 4 or 16 bytes used, network byte order */
	uint8_t dst[16];
	char tag[64];      /* NUL-terminated, "" for none */
	char queue[64];    /* NUL-terminated, "" for none */
};

/* A state lookup, flat.  Mirrored by ffi::FlatNatlook. */
struct ftps_natlook {
	uint8_t af;
	uint8_t dir;       /* FTPS_DIR_IN or FTPS_DIR_OUT */
	uint16_t sport;    /* network byte order */
	uint16_t dport;    /* network byte order */
	uint16_t rsport;   /* out: real source port, network byte order */
	uint8_t saddr[16];
	uint8_t daddr[16];
	uint8_t rsaddr[16]; /* out: real (pre-NAT) source address */
};

/* What a state knows of one side of a TCP connection, flat and in host
 * order: the highest sequence number it sent (seqlo), the right edge of
 * the window the other side granted it (seqhi), the modulation added to
 * its numbers once they pass the state (seqdiff), its largest window
 * before scaling and its scale.  Mirrored by ffi::FlatPeer. */
struct ftps_peer {
	uint32_t seqlo;
	uint32_t seqhi;
	uint32_t seqdiff;
	uint16_t max_win;
	uint8_t wscale;    /* shift, PF_WSCALE_MASK bits */
	uint8_t scaled;    /* 1: the side offered window scaling */
};

/* One key of a state: its two endpoints.  Mirrored by ffi::FlatKey. */
struct ftps_key {
	uint8_t af;        /* FTPS_AF_INET or FTPS_AF_INET6 */
	uint8_t pad[3];
	uint16_t port[2];  /* network byte order */
	uint8_t addr[2][16];
};

/* One TCP state, flat.  Mirrored by ffi::FlatState. */
struct ftps_state {
	uint8_t dir;       /* FTPS_DIR_*: of the packet that created it */
	uint8_t sloppy;    /* 1: windows not followed (keep state sloppy) */
	uint8_t pad[2];
	struct ftps_key key[2];  /* the wire key, then the stack key */
	struct ftps_peer src;    /* the side that sent that packet */
	struct ftps_peer dst;
};

/* The layout probe: the Rust side asserts the same numbers, so a change on
 * either side without the other fails the build. */
_Static_assert(sizeof(struct ftps_rule) == 168, "ftps_rule size");
_Static_assert(offsetof(struct ftps_rule, port) == 6, "ftps_rule.port");
_Static_assert(offsetof(struct ftps_rule, src) == 8, "ftps_rule.src");
_Static_assert(offsetof(struct ftps_rule, dst) == 24, "ftps_rule.dst");
_Static_assert(offsetof(struct ftps_rule, tag) == 40, "ftps_rule.tag");
_Static_assert(offsetof(struct ftps_rule, queue) == 104, "ftps_rule.queue");
_Static_assert(sizeof(struct ftps_natlook) == 56, "ftps_natlook size");
_Static_assert(offsetof(struct ftps_natlook, saddr) == 8, "ftps_natlook.saddr");
_Static_assert(offsetof(struct ftps_natlook, daddr) == 24, "ftps_natlook.daddr");
_Static_assert(offsetof(struct ftps_natlook, rsaddr) == 40, "ftps_natlook.rsaddr");
_Static_assert(sizeof(struct ftps_peer) == 16, "ftps_peer size");
_Static_assert(offsetof(struct ftps_peer, max_win) == 12, "ftps_peer.max_win");
_Static_assert(sizeof(struct ftps_key) == 40, "ftps_key size");
_Static_assert(offsetof(struct ftps_key, port) == 4, "ftps_key.port");
_Static_assert(offsetof(struct ftps_key, addr) == 8, "ftps_key.addr");
_Static_assert(sizeof(struct ftps_state) == 116, "ftps_state size");
_Static_assert(offsetof(struct ftps_state, key) == 4, "ftps_state.key");
_Static_assert(offsetof(struct ftps_state, src) == 84, "ftps_state.src");
_Static_assert(offsetof(struct ftps_state, dst) == 100, "ftps_state.dst");

/* And the flat names must fit what pf accepts. */
_Static_assert(sizeof(((struct pf_rule *)0)->tagname) == 64, "PF_TAG_NAME_SIZE");
_Static_assert(sizeof(((struct pf_rule *)0)->qname) == 64, "PF_QNAME_SIZE");
/* The TCP flag bits the Rust side sends are the wire bits. */
_Static_assert(TH_FIN == 0x01 && TH_SYN == 0x02 && TH_RST == 0x04 &&
    TH_ACK == 0x10, "TH_* bits");
_Static_assert(PF_LOG == 0x01, "PF_LOG");
/* The state fields read below, as the kernel exports them. */
#if defined(DIOCGETSTATESV2)
typedef struct pf_state_export ftps_kstate;
typedef struct pf_state_peer_export ftps_kpeer;
_Static_assert(sizeof(ftps_kstate) == 384, "pf_state_export size");
#define FTPS_GETSTATES DIOCGETSTATESV2
#elif defined(__OpenBSD__)
typedef struct pfsync_state ftps_kstate;
typedef struct pfsync_state_peer ftps_kpeer;
#define FTPS_GETSTATES DIOCGETSTATES
#endif
#ifdef FTPS_GETSTATES
_Static_assert(sizeof(((ftps_kstate *)0)->key) / sizeof(((ftps_kstate *)0)->key[0]) == 2,
    "two state keys");
_Static_assert(PF_SK_WIRE == 0 && PF_SK_STACK == 1, "PF_SK_*");
_Static_assert(sizeof(((ftps_kpeer *)0)->seqlo) == 4 &&
    sizeof(((ftps_kpeer *)0)->seqhi) == 4 &&
    sizeof(((ftps_kpeer *)0)->seqdiff) == 4 &&
    sizeof(((ftps_kpeer *)0)->max_win) == 2 &&
    sizeof(((ftps_kpeer *)0)->wscale) == 1, "pf state peer fields");
_Static_assert(PF_WSCALE_FLAG == 0x80 && PF_WSCALE_MASK == 0x0f, "PF_WSCALE_*");
#endif

/* Size of the flat structs as this object sees them, for a run-time check
 * from Rust as well. */
size_t ftps_rule_size(void) { return sizeof(struct ftps_rule); }
size_t ftps_natlook_size(void) { return sizeof(struct ftps_natlook); }
size_t ftps_state_size(void) { return sizeof(struct ftps_state); }

static int
neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* The kernel's address family and address length for ours. */
static int
to_af(uint8_t af, sa_family_t *out, size_t *alen)
{
	switch (af) {
	case FTPS_AF_INET:
		*out = AF_INET;
		*alen = 4;
		return 0;
	case FTPS_AF_INET6:
		*out = AF_INET6;
		*alen = 16;
		return 0;
	default:
		return -EAFNOSUPPORT;
	}
}

static int
copy_name(char *dst, size_t dstlen, const char *src)
{
	size_t n = strlen(src);

	if (n >= dstlen)
		return -ENAMETOOLONG;
	memcpy(dst, src, n + 1);
	return 0;
}

/* 1 when pf is enabled, 0 when not. */
int
ftps_pf_running(int fd)
{
#ifdef DIOCGETSTATUS
	struct pf_status st;

	memset(&st, 0, sizeof st);
	if (ioctl(fd, DIOCGETSTATUS, &st) == -1)
		return neg_errno();
	return st.running ? 1 : 0;
#else
	/* FreeBSD 14 reports status only as a packed nvlist: ask for the size
	 * first, then for the list. */
	struct pfioc_nv nv;
	nvlist_t *nvl;
	void *buf;
	int running, tries;

	/* size 0 asks only for the packed length; a kernel that answers
	 * ENOSPC instead is served by the growing retries below. */
	memset(&nv, 0, sizeof nv);
	if (ioctl(fd, DIOCGETSTATUSNV, &nv) == -1 && errno != ENOSPC)
		return neg_errno();
	for (tries = 0; tries < 4; tries++) {
		nv.size = nv.len + ((size_t)4096 << tries);
		buf = malloc(nv.size);
		if (buf == NULL)
			return -ENOMEM;
		nv.data = buf;
		if (ioctl(fd, DIOCGETSTATUSNV, &nv) == 0)
			break;
		free(buf);
		if (errno != ENOSPC)
			return neg_errno();
		buf = NULL;
	}
	if (buf == NULL)
		return -ENOSPC;
	nvl = nvlist_unpack(buf, nv.len, 0);
	free(buf);
	if (nvl == NULL)
		return -EINVAL;
	if (!nvlist_exists_bool(nvl, "running")) {
		nvlist_destroy(nvl);
		return -EINVAL;
	}
	running = nvlist_get_bool(nvl, "running") ? 1 : 0;
	nvlist_destroy(nvl);
	return running;
#endif
}

/* 1 and rsaddr/rsport filled when the state table has the connection,
 * 0 when it has not (or has several matches, which tells nothing). */
int
ftps_pf_natlook(int fd, struct ftps_natlook *q)
{
	struct pfioc_natlook pnl;
	sa_family_t af;
	size_t alen;
	int rc;

	if ((rc = to_af(q->af, &af, &alen)) != 0)
		return rc;

	memset(&pnl, 0, sizeof pnl);
	pnl.af = af;
	pnl.proto = IPPROTO_TCP;
	pnl.direction = q->dir == FTPS_DIR_OUT ? PF_OUT : PF_IN;
	memcpy(&pnl.saddr, q->saddr, alen);
	memcpy(&pnl.daddr, q->daddr, alen);
	pnl.sport = q->sport;
	pnl.dport = q->dport;
	if (ioctl(fd, DIOCNATLOOK, &pnl) == -1) {
		if (errno == ENOENT || errno == E2BIG)
			return 0;
		return neg_errno();
	}
	memset(q->rsaddr, 0, sizeof q->rsaddr);
	memcpy(q->rsaddr, &pnl.rsaddr, alen);
	q->rsport = pnl.rsport;
	return 1;
}

static void
trans_init(struct pfioc_trans *t, struct pfioc_trans_e *e)
{
	memset(t, 0, sizeof *t);
	memset(e, 0, sizeof *e);
	t->size = 1;
	t->esize = sizeof *e;
	t->array = e;
#ifdef __FreeBSD__
	e->rs_num = PF_RULESET_FILTER;
#else
	e->type = PF_TRANS_RULESET;
#endif
}

/* DIOCXBEGIN on the anchor's filter ruleset, plus DIOCBEGINADDRS where the
 * kernel wants a pool ticket with every rule (FreeBSD). */
int
ftps_pf_begin(int fd, const char *anchor, uint32_t *ticket,
    uint32_t *pool_ticket)
{
	struct pfioc_trans t;
	struct pfioc_trans_e e;
	int rc;

	trans_init(&t, &e);
	if ((rc = copy_name(e.anchor, sizeof e.anchor, anchor)) != 0)
		return rc;
	if (ioctl(fd, DIOCXBEGIN, &t) == -1)
		return neg_errno();
	*ticket = e.ticket;
	*pool_ticket = 0;
#ifdef DIOCBEGINADDRS
	{
		struct pfioc_pooladdr pp;

		memset(&pp, 0, sizeof pp);
		if (ioctl(fd, DIOCBEGINADDRS, &pp) == -1) {
			rc = neg_errno();
			(void)ioctl(fd, DIOCXROLLBACK, &t);
			return rc;
		}
		*pool_ticket = pp.ticket;
	}
#endif
	return 0;
}

/* pass in [log] [quick] inet[6] proto tcp from src to dst port = port
 *     flags <flags>/<flagset> keep state [tag t] [queue q] */
int
ftps_pf_add_rule(int fd, const char *anchor, uint32_t ticket,
    uint32_t pool_ticket, const struct ftps_rule *r)
{
	struct pfioc_rule pr;
	sa_family_t af;
	size_t alen;
	int rc;

	if ((rc = to_af(r->af, &af, &alen)) != 0)
		return rc;

	memset(&pr, 0, sizeof pr);
	if ((rc = copy_name(pr.anchor, sizeof pr.anchor, anchor)) != 0)
		return rc;
	pr.ticket = ticket;
#ifdef __FreeBSD__
	pr.pool_ticket = pool_ticket;
#else
	(void)pool_ticket;
#endif

	pr.rule.action = PF_PASS;
	pr.rule.direction = PF_IN;
	pr.rule.log = r->log ? PF_LOG : 0;
	pr.rule.quick = r->quick ? 1 : 0;
	pr.rule.af = af;
	pr.rule.proto = IPPROTO_TCP;
	pr.rule.keep_state = PF_STATE_NORMAL;
	pr.rule.flags = r->flags;
	pr.rule.flagset = r->flagset;
	pr.rule.rtableid = -1;
#ifdef __OpenBSD__
	pr.rule.onrdomain = -1;
	pr.rule.nat.addr.type = PF_ADDR_NONE;
	pr.rule.rdr.addr.type = PF_ADDR_NONE;
	pr.rule.route.addr.type = PF_ADDR_NONE;
#endif

	pr.rule.src.addr.type = PF_ADDR_ADDRMASK;
	memcpy(&pr.rule.src.addr.v.a.addr, r->src, alen);
	memset(&pr.rule.src.addr.v.a.mask, 0xff, alen);
	pr.rule.dst.addr.type = PF_ADDR_ADDRMASK;
	memcpy(&pr.rule.dst.addr.v.a.addr, r->dst, alen);
	memset(&pr.rule.dst.addr.v.a.mask, 0xff, alen);
	pr.rule.dst.port_op = PF_OP_EQ;
	pr.rule.dst.port[0] = r->port;

	if ((rc = copy_name(pr.rule.tagname, sizeof pr.rule.tagname,
	    r->tag)) != 0)
		return rc;
	if ((rc = copy_name(pr.rule.qname, sizeof pr.rule.qname,
	    r->queue)) != 0)
		return rc;

	if (ioctl(fd, DIOCADDRULE, &pr) == -1)
		return neg_errno();
	return 0;
}

static int
trans_end(int fd, const char *anchor, uint32_t ticket, unsigned long req)
{
	struct pfioc_trans t;
	struct pfioc_trans_e e;
	int rc;

	trans_init(&t, &e);
	if ((rc = copy_name(e.anchor, sizeof e.anchor, anchor)) != 0)
		return rc;
	e.ticket = ticket;
	if (ioctl(fd, req, &t) == -1)
		return neg_errno();
	return 0;
}

int
ftps_pf_commit(int fd, const char *anchor, uint32_t ticket)
{
	return trans_end(fd, anchor, ticket, DIOCXCOMMIT);
}

int
ftps_pf_rollback(int fd, const char *anchor, uint32_t ticket)
{
	return trans_end(fd, anchor, ticket, DIOCXROLLBACK);
}

/* Number of child anchors directly under `parent`; 0 when parent does not
 * exist (nothing was ever added). */
int
ftps_pf_anchor_count(int fd, const char *parent, uint32_t *count)
{
	struct pfioc_ruleset rs;
	int rc;

	memset(&rs, 0, sizeof rs);
	if ((rc = copy_name(rs.path, sizeof rs.path, parent)) != 0)
		return rc;
	if (ioctl(fd, DIOCGETRULESETS, &rs) == -1) {
		if (errno == ENOENT || errno == EINVAL) {
			*count = 0;
			return 0;
		}
		return neg_errno();
	}
	*count = rs.nr;
	return 0;
}

/* Name (last path component) of child anchor `nr` under `parent`. */
int
ftps_pf_anchor_name(int fd, const char *parent, uint32_t nr, char *out,
    size_t outlen)
{
	struct pfioc_ruleset rs;
	int rc;

	memset(&rs, 0, sizeof rs);
	if ((rc = copy_name(rs.path, sizeof rs.path, parent)) != 0)
		return rc;
	rs.nr = nr;
	if (ioctl(fd, DIOCGETRULESET, &rs) == -1)
		return neg_errno();
	rs.name[sizeof rs.name - 1] = '\0';
	return copy_name(out, outlen, rs.name);
}

#ifdef FTPS_GETSTATES
/* Our af code for a kernel af, 0 for any other. */
static uint8_t
from_af(sa_family_t af)
{
	if (af == AF_INET)
		return FTPS_AF_INET;
	if (af == AF_INET6)
		return FTPS_AF_INET6;
	return 0;
}

static void
flat_peer(struct ftps_peer *out, const ftps_kpeer *p)
{
	/* The export is in network byte order (pf_state_peer_hton). */
	out->seqlo = ntohl(p->seqlo);
	out->seqhi = ntohl(p->seqhi);
	out->seqdiff = ntohl(p->seqdiff);
	out->max_win = ntohs(p->max_win);
	out->wscale = p->wscale & PF_WSCALE_MASK;
	out->scaled = (p->wscale & PF_WSCALE_FLAG) ? 1 : 0;
}

/* 1 when the flat key's endpoints are the query's, in either order. */
static int
key_is(const struct ftps_key *k, const struct ftps_natlook *q)
{
	size_t alen = q->af == FTPS_AF_INET ? 4 : 16;

	if (k->af != q->af)
		return 0;
	if (memcmp(k->addr[0], q->saddr, alen) == 0 &&
	    memcmp(k->addr[1], q->daddr, alen) == 0 &&
	    k->port[0] == q->sport && k->port[1] == q->dport)
		return 1;
	return memcmp(k->addr[1], q->saddr, alen) == 0 &&
	    memcmp(k->addr[0], q->daddr, alen) == 0 &&
	    k->port[1] == q->sport && k->port[0] == q->dport;
}

static void
flat_state(struct ftps_state *out, const ftps_kstate *s)
{
	int i, j;
	uint8_t af;

	memset(out, 0, sizeof *out);
	out->dir = s->direction == PF_OUT ? FTPS_DIR_OUT : FTPS_DIR_IN;
	out->sloppy = (s->state_flags & htons(PFSTATE_SLOPPY)) ? 1 : 0;
	for (i = 0; i < 2; i++) {
#ifdef __OpenBSD__
		af = from_af(s->key[i].af);	/* af-to: the keys may differ */
#else
		af = from_af(s->af);
#endif
		out->key[i].af = af;
		for (j = 0; j < 2; j++) {
			memcpy(out->key[i].addr[j], &s->key[i].addr[j],
			    af == FTPS_AF_INET ? 4 : 16);
			out->key[i].port[j] = s->key[i].port[j];
		}
	}
	flat_peer(&out->src, &s->src);
	flat_peer(&out->dst, &s->dst);
}
#endif

/*
 * Read the whole state table (one DIOCGETSTATES[V2]) and copy out, flat,
 * the TCP states with either key naming the query's two endpoints, in
 * either order: at most `cap` into `out`.  Returns how many matched (may
 * exceed cap), -EFBIG when the table would take more than `max_bytes` to
 * read, -EOPNOTSUPP where this system exports no windows, or -errno;
 * `*total` is the number of states read (or estimated, for -EFBIG).
 * States added between sizing and reading may be missed.
 */
int
ftps_pf_states(int fd, const struct ftps_natlook *q, size_t max_bytes,
    struct ftps_state *out, uint32_t cap, uint32_t *total)
{
#ifdef FTPS_GETSTATES
#ifdef DIOCGETSTATESV2
	struct pfioc_states_v2 ps;
#else
	struct pfioc_states ps;
#endif
	struct ftps_state flat;
	ftps_kstate *buf;
	size_t len, n, i;
	int matched = 0;

	*total = 0;
	if (q->af != FTPS_AF_INET && q->af != FTPS_AF_INET6)
		return -EAFNOSUPPORT;
	memset(&ps, 0, sizeof ps);
#ifdef DIOCGETSTATESV2
	ps.ps_req_version = PF_STATE_VERSION;
#endif
	/* A zero length asks only for the size. */
	if (ioctl(fd, FTPS_GETSTATES, &ps) == -1)
		return neg_errno();
	len = (size_t)ps.ps_len;
	/* Room for the table to grow a quarter while it is copied. */
	len += len / 4 + 16 * sizeof(ftps_kstate);
	if (len > max_bytes) {
		*total = (uint32_t)((size_t)ps.ps_len / sizeof(ftps_kstate));
		return -EFBIG;
	}
	if ((buf = malloc(len)) == NULL)
		return -ENOMEM;
#ifdef DIOCGETSTATESV2
	ps.ps_len = (int)len;
	ps.ps_states = buf;
#else
	ps.ps_len = len;
	ps.ps_states = buf;
#endif
	if (ioctl(fd, FTPS_GETSTATES, &ps) == -1) {
		int rc = neg_errno();

		free(buf);
		return rc;
	}
	n = (size_t)ps.ps_len / sizeof(ftps_kstate);
	for (i = 0; i < n; i++) {
		if (buf[i].proto != IPPROTO_TCP)
			continue;
		flat_state(&flat, &buf[i]);
		if (!key_is(&flat.key[0], q) && !key_is(&flat.key[1], q))
			continue;
		if ((uint32_t)matched < cap)
			out[matched] = flat;
		matched++;
	}
	free(buf);
	*total = (uint32_t)n;
	return matched;
#else
	(void)fd;
	(void)q;
	(void)max_bytes;
	(void)out;
	(void)cap;
	*total = 0;
	return -EOPNOTSUPP;
#endif
}
