//! Running programs with a bound: a command that is killed (with its whole
//! process group) when it outlives its timeout, and long-running daemons that
//! log to files and are stopped (SIGTERM, then SIGKILL) when dropped.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or timed-out) command produced.
pub struct Out {
    pub cmdline: String,
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// The exit code, when the program exited by itself (1 for an error; a
    /// panic is 101).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// stdout and stderr together, for searching error messages.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        if self.timed_out {
            writeln!(f, "  -> TIMED OUT after {:?}", self.elapsed)?;
        } else {
            writeln!(f, "  -> {:?} after {:?}", self.status, self.elapsed)?;
        }
        writeln!(f, "  --- stdout ---\n{}", indent(&self.stdout))?;
        write!(f, "  --- stderr ---\n{}", indent(&self.stderr))
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Sends `sig` to the process group `pgid` (children are spawned as group leaders).
fn kill_group(pgid: u32, sig: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{sig} -{pgid} 2>/dev/null"))
        .status();
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` to completion, feeding `stdin`, killing it (and its process
/// group) after `timeout`. Never hangs.
pub fn run(cmd: &mut Command, stdin: Option<&str>, timeout: Duration) -> Out {
    let line = cmdline(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Out {
                cmdline: line,
                status: None,
                timed_out: false,
                elapsed: start.elapsed(),
                stdout: String::new(),
                stderr: format!("could not start: {e}"),
            }
        }
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    let out_h = drain(child.stdout.take());
    let err_h = drain(child.stderr.take());
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                kill_group(child.id(), "KILL");
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    // A grandchild may keep the pipes open; kill the group so the readers end.
    kill_group(child.id(), "KILL");
    Out {
        cmdline: line,
        status,
        timed_out,
        elapsed: start.elapsed(),
        stdout: out_h.join().unwrap_or_default(),
        stderr: err_h.join().unwrap_or_default(),
    }
}

/// A background process whose stdout/stderr go to files; on drop it gets
/// SIGTERM (whole process group), then SIGKILL after a grace period.
pub struct Daemon {
    pub name: String,
    child: Child,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    grace: Duration,
}

impl Daemon {
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path, grace: Duration) -> Daemon {
        let stdout_path = log_dir.join(format!("{name}.stdout.log"));
        let stderr_path = log_dir.join(format!("{name}.stderr.log"));
        let line = cmdline(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create stdout log"))
            .stderr(File::create(&stderr_path).expect("create stderr log"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name} ({line}): {e}"));
        Daemon {
            name: name.to_string(),
            child,
            stdout_path,
            stderr_path,
            grace,
        }
    }

    /// The process id (also its process group).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (`TERM`, `HUP`, `KILL`, …) to the process group.
    pub fn signal(&self, sig: &str) {
        kill_group(self.child.id(), sig);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Last `n` lines of stderr and stdout.
    pub fn log_tail(&self, n: usize) -> String {
        let mut s = String::new();
        for (what, path) in [("stderr", &self.stderr_path), ("stdout", &self.stdout_path)] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            s.push_str(&format!(
                "===== {} {what} (last {} of {} lines, {}) =====\n",
                self.name,
                lines.len() - from,
                lines.len(),
                path.display()
            ));
            for l in &lines[from..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_some() {
            kill_group(self.child.id(), "KILL");
            return;
        }
        kill_group(self.child.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < self.grace {
            if self.exited().is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        kill_group(self.child.id(), "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A free loopback port below the kernel's ephemeral range, for a daemon that
/// a test stops and starts again on the same port. [`free_port`]'s ports come
/// from the ephemeral range, where any outgoing connection may take the port
/// as its local end while the daemon is down, and the restart then fails with
/// "address already in use"; below that range only a listener can.
pub fn restart_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let base = 10_000.min(low / 2);
    let span = low - base;
    // Test processes running side by side start at different points.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(nanos) % span;
    for _ in 0..span {
        let offset = (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(base + offset).expect("a port below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {base}..{low}");
}
