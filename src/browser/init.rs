//! The sandbox's init (PID 1 of the session's PID namespace): `profile-vault sandbox-init`,
//! run by bubblewrap inside the sandbox. It relays the browser's proxy port on the
//! namespace's own loopback to the daemon's egress socket (the only way out), starts the
//! browser with the DevTools pipe on fds 3 and 4, reaps orphans as an init must, and exits
//! with the browser — which tears the whole namespace down.
//!
//! It is not a trust boundary: it runs as the browser's own user, and everything it relays
//! is checked by the daemon (`browser::egress`). Plain threads, no runtime: it must be small.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;

/// The port the browser's proxy setting points at, inside the namespace.
pub const PROXY_PORT: u16 = 1080;

/// Runs the init with `args` (after `sandbox-init`):
/// `--session ID [--uid UID] --egress PATH -- BROWSER ARGS…`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let mut egress = None;
    let mut it = args.iter();
    let mut command = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--egress" => egress = it.next().cloned(),
            "--session" => {
                it.next();
            }
            "--uid" => match it.next().and_then(|u| u.parse::<u32>().ok()) {
                Some(u) => {
                    if let Err(e) = drop_to(u) {
                        eprintln!("sandbox-init: cannot drop to uid {u}: {e}");
                        return 1;
                    }
                }
                None => return 2,
            },
            "--" => {
                command = it.cloned().collect();
                break;
            }
            _ => {}
        }
    }
    let (Some(egress), Some((program, rest))) = (egress, command.split_first()) else {
        eprintln!("usage: profile-vault sandbox-init --egress PATH --session ID -- BROWSER ARGS");
        return 2;
    };
    match TcpListener::bind(("127.0.0.1", PROXY_PORT)) {
        Ok(l) => {
            std::thread::spawn(move || relay_all(&l, &egress));
        }
        Err(e) => {
            eprintln!("sandbox-init: cannot listen on the proxy port: {e}");
            return 1;
        }
    }
    owner_only();
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox-init: cannot start {program}: {e}");
            return 1;
        }
    };
    reap_until(child.id())
}

fn relay_all(l: &TcpListener, egress: &str) {
    for conn in l.incoming().flatten() {
        let egress = egress.to_string();
        std::thread::spawn(move || {
            if let Ok(up) = UnixStream::connect(&egress) {
                relay(conn, up);
            }
        });
    }
}

fn relay(tcp: TcpStream, unix: UnixStream) {
    let (Ok(mut tcp2), Ok(mut unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let mut tcp = tcp;
        let mut unix = unix;
        copy(&mut tcp, &mut unix);
        let _ = unix.shutdown(Shutdown::Write);
    });
    copy(&mut unix2, &mut tcp2);
    let _ = tcp2.shutdown(Shutdown::Write);
    let _ = up.join();
}

fn copy(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = [0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Started by a root daemon, the init begins as root (in its own mount, PID and network
/// namespaces) and becomes the browser's uid before anything else runs: every capability
/// leaves the bounding set, then groups, gid and uid change (no way back: no new
/// privileges is set by bubblewrap).
#[allow(unsafe_code)]
fn drop_to(uid: u32) -> std::io::Result<()> {
    // SAFETY: prctl/setgroups/setresgid/setresuid take plain integers (and a null list).
    unsafe {
        {
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
        }
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(uid, uid, uid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::geteuid() != uid || libc::getegid() != uid {
            return Err(std::io::Error::other("still privileged"));
        }
    }
    Ok(())
}

/// Everything the browser creates (its profile, downloads) is owner-only.
#[allow(unsafe_code)]
fn owner_only() {
    // SAFETY: umask(2) only sets the file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Reaps every child (orphans are re-parented to PID 1) until `pid` exits; its exit code.
#[allow(unsafe_code)]
fn reap_until(pid: u32) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) writes only the status int we pass.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r < 0 {
            return 1;
        }
        if r as u32 == pid {
            return if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
        }
    }
}
