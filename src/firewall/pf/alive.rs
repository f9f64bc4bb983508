//! The liveness probe the real pf backends hand to [`super::PfEngine`]:
//! does a pid name a running process? The one place the pf side signals a
//! process, so the engine itself stays free of OS calls and its tests
//! script liveness instead.

/// True when a process with this id exists (signal 0 probes without
/// sending). A pid reused by an unrelated program keeps its anchors until
/// that program exits too; that errs on the side of not removing rules of
/// a live ftpsesame.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negatives address process groups, never one daemon.
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_probe() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0), "pid 0 is a process group, never ours");
        assert!(!process_alive(u32::MAX));
    }
}
