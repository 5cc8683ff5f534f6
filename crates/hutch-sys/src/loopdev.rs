//! Loop devices: finding a free one and binding a backing file to it.

use std::os::fd::{AsFd, AsRawFd};

use rustix::io::Result;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_SET_DIRECT_IO: libc::c_ulong = 0x4C08;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            fd: 0,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: 0,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        }
    }
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Asks `/dev/loop-control` (open as `control`) for the number of a free loop device,
/// creating one if needed.
pub fn free_device(control: impl AsFd) -> Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; the descriptor is borrowed for the call.
    let n = unsafe { libc::ioctl(control.as_fd().as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(crate::errno::last());
    }
    Ok(n as u32)
}

/// Binds `backing` to the loop device open as `device`, set to detach itself once its last
/// user (mount or descriptor) is gone. `EBUSY` means someone else took the device first.
pub fn attach_autoclear(device: impl AsFd, backing: impl AsFd) -> Result<()> {
    let mut cfg = LoopConfig {
        fd: backing.as_fd().as_raw_fd() as u32,
        ..LoopConfig::default()
    };
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `cfg` is (repr(C), same
    // layout as the kernel's) and which lives across the call; both descriptors are borrowed.
    let ret = unsafe {
        libc::ioctl(
            device.as_fd().as_raw_fd(),
            LOOP_CONFIGURE,
            &cfg as *const LoopConfig,
        )
    };
    if ret < 0 {
        return Err(crate::errno::last());
    }
    Ok(())
}

/// Switches the bound loop device open as `device` to direct I/O on its backing file (or
/// back): reads and writes then bypass the host's page cache of the backing file, so the
/// data is cached once (by the filesystem on the device) instead of twice, and the
/// device's worker hands blocks to the disk instead of copying them. The kernel first
/// writes back what the host's cache holds of the backing file. `EINVAL` when the backing
/// filesystem cannot do direct I/O.
pub fn set_direct_io(device: impl AsFd, on: bool) -> Result<()> {
    // SAFETY: LOOP_SET_DIRECT_IO takes an integer argument; the descriptor is borrowed.
    let ret = unsafe {
        libc::ioctl(
            device.as_fd().as_raw_fd(),
            LOOP_SET_DIRECT_IO,
            libc::c_ulong::from(on),
        )
    };
    if ret < 0 {
        return Err(crate::errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_config_has_the_kernel_layout() {
        // sizeof(struct loop_config) in <linux/loop.h>: 4 + 4 + 232 + 64.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn a_non_loop_control_descriptor_is_refused() {
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(free_device(&f).is_err());
    }
}
