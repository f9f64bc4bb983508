/*
 * bpflock.c: lock a bpf capture descriptor on FreeBSD and OpenBSD.
 *
 * Compiled by build.rs against the system's own <net/bpf.h> (the ioctl
 * numbers and struct bpf_program are the system's business).  Called once,
 * after libpcap has set the capture filter and before privileges are
 * dropped.  Returns 0, or -errno of the first ioctl that failed.
 */

#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/time.h>

#include <net/bpf.h>

#include <errno.h>

int ftps_bpf_lock(int fd);

static int
neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* Immediate mode (libpcap asked for it already; repeated so that a locked
 * descriptor is known never to buffer), a write filter that rejects every
 * packet (the daemon never sends; a write now fails with EPERM), then
 * BIOCLOCK: from here on the read filter, the write filter and the
 * interface are fixed for the life of the descriptor. */
int
ftps_bpf_lock(int fd)
{
	static struct bpf_insn reject_all[] = {
		BPF_STMT(BPF_RET + BPF_K, 0),
	};
	struct bpf_program prog;
	u_int on = 1;

	if (ioctl(fd, BIOCIMMEDIATE, &on) == -1)
		return neg_errno();
	prog.bf_len = sizeof reject_all / sizeof reject_all[0];
	prog.bf_insns = reject_all;
	if (ioctl(fd, BIOCSETWF, &prog) == -1)
		return neg_errno();
	if (ioctl(fd, BIOCLOCK) == -1)
		return neg_errno();
	return 0;
}
