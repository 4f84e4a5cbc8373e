//! A leader born in its job's cgroup: `clone3` with `CLONE_VM`,
//! `CLONE_VFORK` and `CLONE_INTO_CGROUP`, the child running `child_main`
//! on its own stack, as glibc's `clone` does for the older syscall (which
//! cannot name a cgroup; glibc has no `clone3` wrapper to call).
//!
//! Why: a leader that moves itself into its cgroup (a write to
//! `cgroup.procs`) takes the kernel's lock on every process's cgroup
//! membership for writing, which waits for the forks and exits under way
//! on the other CPU and holds the next ones back; one born there takes it
//! for reading only, as any fork (both take the cgroup mutex, which only
//! other cgroup changes wait for). Two jobs at a time, in C, with the
//! worker's guards and pipes (`bench/probes/ideal_runner.c`), starting
//! them born in their cgroups ran 0.75-1.01 of the raw spawn rate against
//! 0.70-0.79 moving in; in aam, 1-6% more jobs a second (issue 18,
//! BENCHMARKS.md).
//!
//! Where this cannot be done (not x86_64: `usable` is false from the
//! start; a kernel before 5.7 or a seccomp filter that refuses `clone3`:
//! `start` fails) the caller starts the leader the older way, moving
//! itself in; after a refusal that will not change, the older way is used
//! from then on, and the log says so once.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// `CLONE_INTO_CGROUP` (Linux 5.7): libc's constant is an `int` too
/// narrow for it.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Cleared once the kernel has refused this way for good.
static USABLE: AtomicBool = AtomicBool::new(cfg!(target_arch = "x86_64"));

/// Whether to try this way at all.
pub fn usable() -> bool {
    USABLE.load(Ordering::Relaxed)
}

/// Starts `child(arg)` in a new process that shares this one's memory
/// until it execs or exits (this thread waits until then), on the stack
/// below `stack_top` (`stack_size` bytes, 16-byte aligned), born in the
/// cgroup whose directory `cgroup` is open. Its pid, or why not: an error
/// after which the kernel will refuse every time clears `usable`.
///
/// # Safety
/// As for `libc::clone` with `CLONE_VM | CLONE_VFORK`: `child` must call
/// only async-signal-safe functions on memory that outlives its use and
/// end in `execve` or `_exit`; the stack must be this thread's and unused.
pub unsafe fn start(
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    stack_top: *mut u8,
    stack_size: usize,
    cgroup: RawFd,
) -> io::Result<libc::pid_t> {
    debug_assert!(cgroup >= 0, "a cgroup's directory fd, not {cgroup}");
    debug_assert!(
        (stack_top as usize).is_multiple_of(16),
        "the child's stack is misaligned"
    );
    let ret = clone3_vm_vfork(child, arg, stack_top, stack_size, cgroup);
    if ret >= 0 {
        return Ok(ret as libc::pid_t);
    }
    let errno = -ret as i32;
    // No clone3 (ENOSYS, or a seccomp filter's EPERM), or no cgroup field
    // in it (E2BIG, EINVAL before 5.7): the same answer every time.
    let for_good = matches!(
        errno,
        libc::ENOSYS | libc::EPERM | libc::E2BIG | libc::EINVAL
    );
    if for_good && USABLE.swap(false, Ordering::Relaxed) {
        tracing::warn!(
            "leaders move themselves into their cgroups from now on: the kernel refuses to start one in it ({})",
            io::Error::from_raw_os_error(errno)
        );
    }
    Err(io::Error::from_raw_os_error(errno))
}

#[cfg(target_arch = "x86_64")]
unsafe fn clone3_vm_vfork(
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    stack_top: *mut u8,
    stack_size: usize,
    cgroup: RawFd,
) -> isize {
    // SAFETY: plain data; every field not set is zero, as clone3 wants.
    let mut args: libc::clone_args = std::mem::zeroed();
    args.flags = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.stack = stack_top.wrapping_sub(stack_size) as u64;
    args.stack_size = stack_size as u64;
    args.cgroup = cgroup as u64;
    let ret: isize;
    // The child starts after `syscall` with rax 0 and rsp at the top of
    // its stack (the kernel adds `stack_size` to `stack`), every other
    // register as the parent's: r12 and r13 carry the function and its
    // argument there. Its frame chain starts afresh (rbp 0, as in glibc's
    // `clone`, so no profiler walks on into the parent's frames). It never
    // comes back into Rust code; should `child` return, its value is the
    // exit status. The parent gets the pid (or -errno) in rax; the kernel
    // changes rcx and r11 only, and the parent's stack is not touched.
    // SAFETY: the caller's contract (`start`); `args` lives until the
    // syscall returns in the parent, which is after the child's exec.
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        "xor ebp, ebp",
        "mov rdi, r13",
        "call r12",
        "mov edi, eax",
        "mov eax, {exit}",
        "syscall",
        "ud2",
        "2:",
        exit = const libc::SYS_exit,
        inlateout("rax") libc::SYS_clone3 as isize => ret,
        in("rdi") &args as *const libc::clone_args,
        in("rsi") std::mem::size_of::<libc::clone_args>(),
        in("r12") child as usize,
        in("r13") arg,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_vm_vfork(
    _child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    _arg: *mut libc::c_void,
    _stack_top: *mut u8,
    _stack_size: usize,
    _cgroup: RawFd,
) -> isize {
    -(libc::ENOSYS as isize)
}
