//! The few `bpf(2)` commands steering needs, as raw syscalls: map create,
//! update and delete, program load, link create. Each attribute struct is
//! the prefix of the kernel's `union bpf_attr` that command reads; the
//! kernel zero-fills the rest.

use std::ffi::c_long;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_MAP_CREATE: c_long = 0;
const BPF_MAP_UPDATE_ELEM: c_long = 2;
const BPF_MAP_DELETE_ELEM: c_long = 3;
const BPF_PROG_LOAD: c_long = 5;
const BPF_LINK_CREATE: c_long = 28;

const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
const BPF_SK_LOOKUP: u32 = 36;
/// Hash map entries are allocated as they are added, not all up front.
const BPF_F_NO_PREALLOC: u32 = 1;

#[derive(Clone, Copy)]
pub(crate) enum MapType {
    Hash = 1,
    SockMap = 15,
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Runs one bpf(2) command. Returns the syscall's non-negative result.
fn bpf<T>(cmd: c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] prefix of
    // `union bpf_attr` for `cmd`, and its size is passed with it; the kernel
    // reads (and for some commands writes) only within that size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// A descriptor returned by a bpf(2) command.
fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just created this descriptor for us and nothing
    // else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

pub(crate) fn map_create(
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<Map> {
    let map_flags = match map_type {
        MapType::Hash => BPF_F_NO_PREALLOC,
        MapType::SockMap => 0,
    };
    let mut attr = MapCreate {
        map_type: map_type as u32,
        key_size,
        value_size,
        max_entries,
        map_flags,
    };
    let fd = bpf(BPF_MAP_CREATE, &mut attr).map(owned)?;
    Ok(Map {
        fd,
        key_size: key_size as usize,
        value_size: value_size as usize,
    })
}

/// Before Linux 5.11 BPF maps are charged to RLIMIT_MEMLOCK, whose usual
/// 64 KiB (or 8 MiB) is less than the destination map's buckets; raise it
/// as libbpf does. Later kernels charge the memory cgroup instead.
pub(crate) fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass. Failure (no
    // CAP_SYS_RESOURCE) is fine: map creation then says what it lacks.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited);
    }
}

/// A map and the sizes it was made with: the kernel reads exactly that
/// many bytes behind the key and value pointers, so every call checks the
/// slices it is given against them.
pub(crate) struct Map {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl Map {
    /// Sets `key` to `value` (created or replaced).
    pub(crate) fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.key_size, "map key size");
        assert_eq!(value.len(), self.value_size, "map value size");
        let mut attr = MapElem {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags: 0, // BPF_ANY: create or replace
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }

    pub(crate) fn delete(&self, key: &[u8]) -> io::Result<()> {
        assert_eq!(key.len(), self.key_size, "map key size");
        let mut attr = MapElem {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.as_ptr() as u64,
            value: 0,
            flags: 0,
        };
        bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
    }

    /// The descriptor the program's instructions name the map by.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Loads an `sk_lookup` program. On a verifier rejection the error carries
/// the verifier's last lines, which is what anyone debugging it needs.
pub(crate) fn prog_load_sk_lookup(insns: &[u64]) -> io::Result<OwnedFd> {
    match load(insns, None) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EINVAL)) => {
            let mut log = vec![0u8; 1 << 16];
            let Err(again) = load(insns, Some(&mut log)) else {
                return Err(e);
            };
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim_end();
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            Err(io::Error::new(
                again.kind(),
                format!("{again}; verifier: {}", tail.join(" / ")),
            ))
        }
        r => r,
    }
}

fn load(insns: &[u64], log: Option<&mut [u8]>) -> io::Result<OwnedFd> {
    // The program calls GPL-only helpers (bpf_sk_assign, bpf_sk_release);
    // the string only declares the program's licence to the kernel.
    let license = c"Dual MIT/GPL";
    let mut name = [0u8; 16];
    name[..7].copy_from_slice(b"nodeway");
    let (log_level, log_size, log_buf) = match log {
        Some(l) => (1, l.len() as u32, l.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SK_LOOKUP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_SK_LOOKUP,
    };
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

/// Attaches `prog` to the network namespace `netns`; detached when the
/// returned link closes.
pub(crate) fn link_create_sk_lookup(
    prog: BorrowedFd<'_>,
    netns: BorrowedFd<'_>,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: netns.as_raw_fd() as u32,
        attach_type: BPF_SK_LOOKUP,
        flags: 0,
    };
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}
