//! The seccomp filter over everything in a browser's sandbox (its init, the X server, the
//! sound server and the browser process itself), handed to bubblewrap (`--seccomp FD`) and
//! installed before the sandbox's first program runs.
//!
//! Chromium's own sandbox filters its renderers, but the browser process, the one assumed
//! taken over, runs unfiltered. This filter refuses (`EPERM`) what a browser never needs and
//! a takeover would use first: reading or steering other processes of the sandbox (`ptrace`,
//! `process_vm_*`, `pidfd_getfd`: the X server holds the daemon's connections), and the
//! kernel interfaces behind most local privilege escalations (`io_uring`, `bpf`,
//! `perf_event_open`, keyrings, `userfaultfd`, modules, `kexec`, new mounts, file handles).
//! Calls of another architecture's ABI (32-bit `int 0x80`, x32) are refused whole: a
//! denylist by number would not hold for them. Creating namespaces stays allowed: Chromium's
//! own sandbox needs it.

/// `seccomp_data` offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_EPERM: u32 = 0x0005_0000 | 1;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// x32 system calls on x86_64 carry this bit.
#[cfg(target_arch = "x86_64")]
const X32_BIT: u32 = 0x4000_0000;

/// The system calls refused.
fn denied() -> Vec<u32> {
    let mut nrs = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_fanotify_init,
    ];
    #[cfg(target_arch = "x86_64")]
    nrs.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib]);
    nrs.into_iter().map(|n| n as u32).collect()
}

/// One classic BPF instruction (`struct sock_filter`), as the kernel reads it.
fn insn(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..2].copy_from_slice(&code.to_ne_bytes());
    b[2] = jt;
    b[3] = jf;
    b[4..].copy_from_slice(&k.to_ne_bytes());
    b
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// The filter program: what bubblewrap reads from `--seccomp FD`.
pub fn program() -> Vec<u8> {
    let nrs = denied();
    let mut p: Vec<[u8; 8]> = vec![
        insn(LD_W_ABS, 0, 0, ARCH),
        // Another ABI: refused.
        insn(JEQ_K, 1, 0, AUDIT_ARCH),
        insn(RET_K, 0, 0, RET_EPERM),
        insn(LD_W_ABS, 0, 0, NR),
    ];
    // Check `j` (of `checks`) jumps, when it matches, past the ones after it and "allow" to
    // "refuse".
    let checks = nrs.len() + usize::from(cfg!(target_arch = "x86_64"));
    let to_refuse = |i: usize| u8::try_from(checks - i).expect("a short program");
    #[cfg(target_arch = "x86_64")]
    p.push(insn(JGE_K, to_refuse(0), 0, X32_BIT));
    let first = checks - nrs.len();
    for (i, nr) in nrs.iter().enumerate() {
        p.push(insn(JEQ_K, to_refuse(first + i), 0, *nr));
    }
    p.push(insn(RET_K, 0, 0, RET_ALLOW));
    p.push(insn(RET_K, 0, 0, RET_EPERM));
    p.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic BPF interpreter for the instructions the program uses.
    fn run(prog: &[u8], arch: u32, nr: u32) -> u32 {
        let insns: Vec<(u16, u8, u8, u32)> = prog
            .chunks_exact(8)
            .map(|c| {
                (
                    u16::from_ne_bytes([c[0], c[1]]),
                    c[2],
                    c[3],
                    u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = insns[pc];
            pc += 1;
            match code {
                LD_W_ABS => acc = if k == ARCH { arch } else { nr },
                JEQ_K => pc += usize::from(if acc == k { jt } else { jf }),
                JGE_K => pc += usize::from(if acc >= k { jt } else { jf }),
                RET_K => return k,
                _ => panic!("unknown instruction {code:#x}"),
            }
        }
    }

    #[test]
    fn the_program_refuses_the_denied_calls_and_other_abis_and_allows_the_rest() {
        let p = program();
        assert!(p.len() / 8 < 4096, "BPF_MAXINSNS");
        for nr in denied() {
            assert_eq!(run(&p, AUDIT_ARCH, nr), RET_EPERM, "{nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_clone,
            libc::SYS_unshare,
            libc::SYS_seccomp,
            libc::SYS_exit_group,
        ] {
            assert_eq!(run(&p, AUDIT_ARCH, nr as u32), RET_ALLOW, "{nr}");
        }
        assert_eq!(run(&p, 0x4000_0003, 26), RET_EPERM, "i386's ptrace");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(run(&p, AUDIT_ARCH, X32_BIT), RET_EPERM, "x32's read");
    }
}
