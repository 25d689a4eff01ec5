//! Network namespaces for root integration tests: created with a unique name, removed on drop
//! (even when the test panics), so tests can run side by side and leave nothing behind. Only the
//! namespaces a test creates are touched, never the root namespace's interfaces or routes.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn run_ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`Netns::enter`] by the namespace's name, on a scoped thread (so `body` may borrow).
pub fn enter_named<T, F>(name: &str, body: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = format!("/var/run/netns/{name}");
    std::thread::scope(|s| {
        let result = s
            .spawn(move || {
                let file =
                    std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns on a namespace fd we own; it only changes this thread's
                // namespace, and this thread is discarded afterwards.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                body()
            })
            .join();
        match result {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// An interface's packet counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// A namespace removed on drop (which also removes the interfaces in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `xlbt-<tag>-<pid>-<n>`. Panics, telling the operator why, when namespaces cannot be
    /// created (not root): privileged tests fail loudly, never skip.
    pub fn new(tag: &str) -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        Netns::named(&format!(
            "xlbt-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A namespace with exactly this name (the caller makes it unique). Panics like
    /// [`Netns::new`].
    pub fn named(name: &str) -> Netns {
        let name = name.to_owned();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed): {e}"));
        assert!(
            out.status.success(),
            "these tests need root to create network namespaces (`ip netns add {name}`: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Netns { name }
    }

    /// A command that runs in this namespace, in a session of its own (a terminal's Ctrl-C
    /// does not reach it; whoever starts it stops it). Only the network namespace changes:
    /// unlike `ip netns exec`, the mounts (bpffs at /sys/fs/bpf) stay the host's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let path = format!("/var/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let mut cmd = Command::new(program);
        // SAFETY: only async-signal-safe calls (setns, setsid) between fork and exec; `file`
        // lives in the closure, so its descriptor is open until the command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::setsid();
                Ok(())
            });
        }
        cmd
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run_ip(&all)
    }

    /// The kernel's packet counters of interface `dev` (`ip -s link`, 64-bit).
    pub fn link_stats(&self, dev: &str) -> LinkStats {
        let out = self.ip(&["-j", "-s", "link", "show", "dev", dev]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j -s link: {e}: {out}"));
        let n = |dir: &str, what: &str| {
            v[0]["stats64"][dir][what]
                .as_u64()
                .unwrap_or_else(|| panic!("no {dir} {what} count for {dev} in {out}"))
        };
        LinkStats {
            rx_packets: n("rx", "packets"),
            rx_dropped: n("rx", "dropped"),
            tx_packets: n("tx", "packets"),
            tx_dropped: n("tx", "dropped"),
        }
    }

    pub fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split(':').next().unwrap().trim().parse().unwrap()
    }

    /// Writes `/proc/sys/KEY` as seen from this namespace (net sysctls are per namespace, and
    /// resolved through the namespace of the thread that opens them).
    pub fn sysctl(&self, key: &str, value: &str) {
        let (path, value) = (format!("/proc/sys/{key}"), value.to_owned());
        self.enter(move || {
            std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path}: {e}"))
        });
    }

    /// Runs `body` on a thread that has entered this namespace and returns its result. Panics in
    /// `body` propagate.
    pub fn enter<T, F>(&self, body: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        enter_named(&self.name, body)
    }

    /// [`Netns::enter`] with a current-thread tokio runtime created after the switch (so every
    /// socket lives in the namespace).
    pub fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        self.enter(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(body())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
