//! The sandbox's init (PID 1 of the session's PID namespace): `profile-vault sandbox-init`,
//! run by bubblewrap inside the sandbox. It relays the browser's proxy port on the
//! namespace's own loopback to the daemon's egress socket (the only way out), starts the
//! browser with the DevTools pipe on fds 3 and 4 — on a virtual display of its own when asked
//! (`--display WxH`: Xvnc or Xvfb, whose socket directory the daemon reaches through a bind) — reaps
//! orphans as an init must, and exits with the browser, which tears the whole namespace down.
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
/// `--session ID [--uid UID] [--display WxH] [--audio] --egress PATH -- BROWSER ARGS…`.
/// Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let mut egress = None;
    let mut display = None;
    let mut audio = false;
    let mut it = args.iter();
    let mut command = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--egress" => egress = it.next().cloned(),
            "--display" => display = it.next().cloned(),
            "--audio" => audio = true,
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
    let mut browser = Command::new(program);
    browser.args(rest);
    // The sound server starts while the display does; the browser waits for both.
    let sound = audio.then(start_audio);
    if let Some(size) = display {
        match start_display(&size) {
            Ok(d) => {
                browser.env("DISPLAY", d);
            }
            Err(e) => {
                eprintln!("sandbox-init: the virtual display did not start: {e}");
                return 1;
            }
        }
    }
    match sound.map(wait_audio) {
        Some(Ok(server)) => {
            browser.env("PULSE_SERVER", server);
        }
        Some(Err(e)) => eprintln!("sandbox-init: no sound: {e}"),
        None => {}
    }
    let child = match browser.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sandbox-init: cannot start {program}: {e}");
            return 1;
        }
    };
    reap_until(child.id())
}

/// Where the display's socket directory is inside the sandbox (bound from the run directory,
/// so the daemon connects to the same socket from outside).
pub const X11_DIR: &str = "/tmp/.X11-unix";

/// Starts the X server ([`display_server`]) on display :0 at `size` ("WxH") and waits until
/// it accepts clients (it writes its display number to `-displayfd` then). The server runs as the browser's own user and
/// listens only on its socket in [`X11_DIR`] (no TCP; abstract sockets are this network
/// namespace's own).
fn start_display(size: &str) -> Result<String, String> {
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .ok_or_else(|| format!("bad size {size:?}"))?;
    let (mut ready, ready_w) = std::io::pipe().map_err(|e| e.to_string())?;
    let server = display_server().ok_or("no X server (Xvnc or Xvfb) is installed")?;
    let mut x = Command::new(server);
    x.arg(":0");
    if server == "Xvnc" {
        // No VNC listener at all (no TCP port, no Unix socket): the daemon captures the
        // screen itself. Xvnc is here for its RandR: the screen can change size.
        x.args(["-geometry", &format!("{w}x{h}"), "-depth", "24"])
            .args(["-rfbport", "-1", "-SecurityTypes", "None"]);
    } else {
        x.args(["-screen", "0", &format!("{w}x{h}x24")]);
    }
    // Its stdout is the readiness pipe (it logs to stderr).
    x.args([
        "-nolisten",
        "tcp",
        "-displayfd",
        "1",
        "-nocursor",
        "-noreset",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(ready_w);
    let child = x
        .spawn()
        .map_err(|e| format!("cannot start {server}: {e}"))?;
    drop(x);
    let _ = child;
    // It writes the number and a newline, and keeps the pipe open.
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while ready.read(&mut b).map_err(|e| e.to_string())? == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    let n = String::from_utf8_lossy(&out).trim().to_string();
    if n.is_empty() {
        return Err(format!("{server} exited before it was ready"));
    }
    // X servers make their socket directory 1777 and the socket 0777: owner-only again (the daemon
    // connects as root, or as this very uid through the user namespace).
    use std::os::unix::fs::PermissionsExt;
    for p in [X11_DIR.to_string(), format!("{X11_DIR}/X{n}")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{p}: {e}"))?;
    }
    Ok(format!(":{n}"))
}

/// The X server a display runs on: Xvnc (TigerVNC's, whose screen can change size) where
/// it is installed, else Xvfb (a fixed screen).
pub fn display_server() -> Option<&'static str> {
    ["Xvnc", "Xvfb"]
        .into_iter()
        .find(|s| super::process::on_path(s).is_some())
}

/// Where the sound's FIFO is inside the sandbox (bound from the run directory: the daemon
/// reads what the browser plays from its other end).
pub const AUDIO_DIR: &str = "/tmp/pv-audio";
/// The PCM the FIFO carries: signed 16-bit little-endian, interleaved stereo, at this rate.
pub const AUDIO_RATE: u32 = 24_000;
const PULSE_SOCKET: &str = "/tmp/pulse/native";

/// Starts PulseAudio with one sink: a pipe into [`AUDIO_DIR`]`/pcm`, whose other end the
/// daemon holds (nothing plays on the host). No default script, no D-Bus, no autospawn;
/// clients connect on a socket inside the sandbox only.
fn start_audio() -> Result<std::process::Child, String> {
    let _ = std::fs::create_dir_all("/tmp/pulse");
    Command::new("pulseaudio")
        .args(["-n", "--daemonize=no", "--use-pid-file=no", "--exit-idle-time=-1"])
        .args(["--disallow-exit", "--disable-shm=yes", "--log-target=stderr"])
        .arg(format!(
            "--load=module-pipe-sink sink_name=pv file={AUDIO_DIR}/pcm format=s16le rate={AUDIO_RATE} channels=2 use_system_clock_for_timing=yes"
        ))
        .arg(format!("--load=module-native-protocol-unix socket={PULSE_SOCKET} auth-anonymous=1"))
        .env("HOME", "/tmp/pulse")
        .env("XDG_RUNTIME_DIR", "/tmp/pulse")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start pulseaudio: {e}"))
}

/// Waits (up to 5 s) until the sound server accepts clients; its address for the browser.
fn wait_audio(child: Result<std::process::Child, String>) -> Result<String, String> {
    let mut child = child?;
    for _ in 0..500 {
        if UnixStream::connect(PULSE_SOCKET).is_ok() {
            return Ok(format!("unix:{PULSE_SOCKET}"));
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("pulseaudio exited: {st}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err("pulseaudio did not start".into())
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
