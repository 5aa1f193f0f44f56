//! BPF_MAP_TYPE_PROG_ARRAY slots: where maps meet programs.
//!
//! These [`Map`] methods live here rather than in `map.rs` so that neither `map.rs` nor
//! `prog.rs` depends on the other; this module depends on both.

use std::os::fd::AsRawFd;

use super::error::{Result, SysError};
use super::map::{update_flags, Map, MapType};
use super::prog::Program;

impl Map {
    /// PROG_ARRAY: puts `prog` into slot `index` (atomic for readers: a tail call sees the old
    /// or the new program).
    pub fn set_prog(&self, index: u32, prog: &Program) -> Result<()> {
        if self.map_type() != MapType::ProgArray {
            return Err(SysError::invalid(format!(
                "set_prog on a {:?} map",
                self.map_type()
            )));
        }
        let fd =
            u32::try_from(prog.fd().as_raw_fd()).map_err(|_| SysError::invalid("negative fd"))?;
        self.update(&index.to_ne_bytes(), &fd.to_ne_bytes(), update_flags::ANY)
    }

    /// PROG_ARRAY: id of the program in slot `index`, None if empty.
    pub fn prog_id(&self, index: u32) -> Result<Option<u32>> {
        if self.map_type() != MapType::ProgArray {
            return Err(SysError::invalid(format!(
                "prog_id on a {:?} map",
                self.map_type()
            )));
        }
        Ok(self
            .get(&index.to_ne_bytes())?
            .map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testutil::{insns, ipv4_udp_packet, require_bpf};

    /// `r0 = ret; exit`.
    fn ret_prog(ret: i32) -> Vec<u8> {
        insns(&[(0xb7, 0, 0, 0, ret), (0x95, 0, 0, 0, 0)])
    }

    #[test]
    fn prog_array_tail_call() {
        if !require_bpf() {
            return;
        }
        // Dispatcher: r6 = ctx; r2 = map; r3 = 0; tail_call; r0 = 1; exit  (empty slot: ACCEPT).
        let pa = Map::create(MapType::ProgArray, 4, 4, 1, "bpfltr_t_pa").unwrap();
        let fd = pa.fd().as_raw_fd();
        let disp = insns(&[
            (0x18, 2, 1, 0, fd), // r2 = map fd (BPF_PSEUDO_MAP_FD)
            (0x00, 0, 0, 0, 0),
            (0xb7, 3, 0, 0, 0),  // r3 = 0
            (0x85, 0, 0, 0, 12), // call bpf_tail_call
            (0xb7, 0, 0, 0, 1),  // r0 = 1
            (0x95, 0, 0, 0, 0),
        ]);
        let (d, _) = Program::load_netfilter("bpfltr_t_disp", &disp, 0).unwrap();
        assert_eq!(d.info().unwrap().map_ids, vec![pa.id().unwrap()]);
        assert_eq!(d.test_run(&ipv4_udp_packet(), None, 1).unwrap().retval, 1);
        let (drop_p, _) = Program::load_netfilter("bpfltr_t_drop", &ret_prog(0), 0).unwrap();
        pa.set_prog(0, &drop_p).unwrap();
        assert_eq!(pa.prog_id(0).unwrap(), Some(drop_p.id().unwrap()));
        assert_eq!(d.test_run(&ipv4_udp_packet(), None, 1).unwrap().retval, 0);
        pa.delete(&0u32.to_ne_bytes()).unwrap();
        assert_eq!(pa.prog_id(0).unwrap(), None);
        assert_eq!(d.test_run(&ipv4_udp_packet(), None, 1).unwrap().retval, 1);
        // Slots of another map type are refused before any syscall.
        let a = Map::create(MapType::Array, 4, 4, 1, "bpfltr_t_npa").unwrap();
        assert_eq!(a.set_prog(0, &drop_p).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(a.prog_id(0).unwrap_err().errno(), libc::EINVAL);
    }
}
