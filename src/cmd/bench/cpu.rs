//! CPU time of the bench client and of the cluster's node processes.
//!
//! The client's own CPU comes from `getrusage(RUSAGE_SELF)` (user + system, all threads). Node
//! CPU comes from `/proc/<pid>/stat` (utime + stime, in clock ticks, so ~10 ms resolution: runs
//! of a few seconds are accurate to about 1%). Node processes are the pids given with
//! `--node-pids`, or else every `dynakv node` process whose `--ring` argument, resolved against
//! that process's working directory, is the same file as the bench's ring. Nodes served inside
//! another process (tests) cannot be told apart from it and are not measured.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// CPU time used by this process so far, every thread, user and system.
pub fn client_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass; a zeroed rusage is a valid value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Total CPU time of `pids` so far; `None` if any of them cannot be read (it exited).
pub fn processes_cpu(pids: &[u32]) -> Option<Duration> {
    // SAFETY: sysconf has no memory effects.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut ticks = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) start at field 3, `state`;
        // utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        ticks += utime + stime;
    }
    Some(Duration::from_micros(ticks * 1_000_000 / ticks_per_second))
}

/// Pids of `dynakv node` processes serving the ring file at `ring`.
pub fn find_nodes(ring: &Path) -> Vec<u32> {
    let Ok(ring) = ring.canonicalize() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| serves_ring(pid, &ring))
        .collect();
    pids.sort_unstable();
    pids
}

/// True when process `pid` is `dynakv node --ring <file>` with `file` resolving to `ring`.
fn serves_ring(pid: u32, ring: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let is_dynakv = args.first().is_some_and(|exe| exe.ends_with(b"dynakv"));
    if !is_dynakv || args.get(1) != Some(&&b"node"[..]) {
        return false;
    }
    let Some(file) = args.windows(2).find(|w| w[0] == b"--ring").map(|w| w[1]) else {
        return false;
    };
    let Ok(file) = std::str::from_utf8(file) else { return false };
    let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else { return false };
    let path: PathBuf = cwd.join(file);
    path.canonicalize().is_ok_and(|p| p == ring)
}
