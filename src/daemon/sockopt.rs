//! The IPT_SO_* and IP6T_SO_* socket options, answered as the kernel's `do_ipt_get_ctl` /
//! `do_ipt_set_ctl` (net/ipv4/netfilter/ip_tables.c) and `do_ip6t_get_ctl` / `do_ip6t_set_ctl`
//! (net/ipv6/netfilter/ip6_tables.c) would answer them: the same length checks in the same
//! order, the same errnos, the same bytes. The two families' options have the same numbers
//! and layouts but for the entries; each family has its own tables.
//!
//! Tables come into existence on first access in a namespace, as they do in the kernel
//! (`xt_find_table_lock` instantiates a table from its template): GET_INFO, GET_ENTRIES,
//! SET_REPLACE (once the blob is valid) and SET_ADD_COUNTERS all instantiate `filter`.

use ipt_abi::abi::{
    c_str, IptReplace, IP6T_SO_GET_REVISION_MATCH, IP6T_SO_GET_REVISION_TARGET, IPT_GETINFO_SIZE,
    IPT_GET_ENTRIES_SIZE, IPT_SO_GET_ENTRIES, IPT_SO_GET_INFO, IPT_SO_GET_REVISION_MATCH,
    IPT_SO_GET_REVISION_TARGET, IPT_SO_SET_ADD_COUNTERS, IPT_SO_SET_REPLACE, XT_GET_REVISION_SIZE,
    XT_TABLE_MAXNAMELEN,
};
use ipt_abi::{ExtKind, Family, XtCounters};
use tracing::{info, warn};
use zerocopy::{FromBytes, IntoBytes};

use super::refusal::Refusal;
use super::state::{initial_table, Backends, Namespace, TableKey, TableState};

/// What a successful sockopt returns: the syscall's return value and, for gets, the bytes
/// copied back into the caller's buffer (for SET_REPLACE: the old counters).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The syscall's non-negative return value.
    pub ret: i32,
    /// Bytes for the caller.
    pub payload: Vec<u8>,
}

type Outcome = Result<Answer, Refusal>;

/// The name in a fixed-size kernel table-name field: NUL-terminated, the last byte forced to
/// NUL as the kernel does before it looks the name up.
fn table_name(field: &[u8; XT_TABLE_MAXNAMELEN]) -> String {
    String::from_utf8_lossy(c_str(&field[..XT_TABLE_MAXNAMELEN - 1])).into_owned()
}

/// Answers a getsockopt at level IPPROTO_IP (`family` IPv4) or IPPROTO_IPV6 (IPv6).
pub fn get(
    ns: &mut Namespace,
    backends: &dyn Backends,
    family: Family,
    optname: u32,
    optlen: u32,
    optval: &[u8],
) -> Outcome {
    // ip_getsockopt reads optlen as an int and refuses a negative one before anything else.
    if optlen > i32::MAX as u32 {
        return Err(Refusal::new(
            libc::EINVAL,
            format!("negative optlen {}", optlen as i32),
        ));
    }
    match (family, optname) {
        (_, IPT_SO_GET_INFO) => get_info(ns, backends, family, optlen, optval),
        (_, IPT_SO_GET_ENTRIES) => get_entries(ns, backends, family, optlen, optval),
        (Family::Ipv4, IPT_SO_GET_REVISION_MATCH) | (Family::Ipv6, IP6T_SO_GET_REVISION_MATCH) => {
            get_revision(family, ExtKind::Match, optlen, optval)
        }
        (Family::Ipv4, IPT_SO_GET_REVISION_TARGET)
        | (Family::Ipv6, IP6T_SO_GET_REVISION_TARGET) => {
            get_revision(family, ExtKind::Target, optlen, optval)
        }
        _ => Err(Refusal::new(
            libc::ENOPROTOOPT,
            format!("unknown getsockopt optname {optname}"),
        )),
    }
}

/// Answers a setsockopt at level IPPROTO_IP (`family` IPv4) or IPPROTO_IPV6 (IPv6).
pub fn set(
    ns: &mut Namespace,
    backends: &dyn Backends,
    family: Family,
    optname: u32,
    optval: &[u8],
) -> Outcome {
    match optname {
        IPT_SO_SET_REPLACE => set_replace(ns, backends, family, optval),
        IPT_SO_SET_ADD_COUNTERS => set_add_counters(ns, backends, family, optval),
        _ => Err(Refusal::new(
            libc::ENOPROTOOPT,
            format!("unknown setsockopt optname {optname}"),
        )),
    }
}

/// Whether a getsockopt of `family` is a revision query (IPv4: 66, 67; IPv6: 68, 69).
pub fn is_revision_query(family: Family, optname: u32) -> bool {
    matches!(
        (family, optname),
        (
            Family::Ipv4,
            IPT_SO_GET_REVISION_MATCH | IPT_SO_GET_REVISION_TARGET
        ) | (
            Family::Ipv6,
            IP6T_SO_GET_REVISION_MATCH | IP6T_SO_GET_REVISION_TARGET
        )
    )
}

/// `get_info()`: the 84-byte `ipt_getinfo` of a table.
///
/// The kernel refuses an optlen other than 84 (EINVAL), then copies the 32-byte name from the
/// caller (EFAULT if the caller's buffer is shorter). `parse_get_info_request` sees only the
/// bytes the client sent and calls a short name EINVAL too: with optlen right, that failure is
/// the copy's, EFAULT.
fn get_info(
    ns: &mut Namespace,
    backends: &dyn Backends,
    family: Family,
    optlen: u32,
    optval: &[u8],
) -> Outcome {
    let name = ipt_abi::parse_get_info_request(optval, optlen).map_err(|e| {
        if optlen as usize == IPT_GETINFO_SIZE {
            short_buffer()
        } else {
            Refusal::from(e)
        }
    })?;
    let table = ns.instantiate(&TableKey::new(family, &name), backends)?;
    Ok(Answer {
        ret: 0,
        payload: table.table.get_info(),
    })
}

/// `get_entries()`: the `ipt_get_entries` header followed by the entries with live counters.
///
/// The kernel refuses an optlen below the 40-byte header (EINVAL), copies the header (EFAULT if
/// the caller's buffer is shorter), refuses an optlen other than 40 + size (EINVAL), looks the
/// table up (ENOENT) and refuses a size that is not the table's (EAGAIN).
/// `parse_get_entries_request` makes the two optlen checks but calls a header shorter than 40
/// bytes EINVAL whatever optlen says: with optlen past the header, that failure is the copy's,
/// EFAULT.
fn get_entries(
    ns: &mut Namespace,
    backends: &dyn Backends,
    family: Family,
    optlen: u32,
    optval: &[u8],
) -> Outcome {
    let (name, size) = ipt_abi::parse_get_entries_request(optval, optlen).map_err(|e| {
        if optlen as usize >= IPT_GET_ENTRIES_SIZE && optval.len() < IPT_GET_ENTRIES_SIZE {
            short_buffer()
        } else {
            Refusal::from(e)
        }
    })?;
    let table = ns.instantiate(&TableKey::new(family, &name), backends)?;
    table.table.check_get_entries_size(size)?;
    let counters = table.counters()?;
    Ok(Answer {
        ret: 0,
        payload: table.table.get_entries(&counters),
    })
}

/// `xt_find_revision()`: 0, EPROTONOSUPPORT (known name, other revision), or ENOENT.
///
/// The kernel refuses an optlen other than 30 (EINVAL), then copies the request (EFAULT if the
/// caller's buffer is shorter). `parse_revision_request` wants exactly the 30 bytes: it gets
/// the first optlen bytes sent (none if fewer were sent), so any optlen but 30 is its EINVAL,
/// and with optlen 30 its only failure is a short buffer, EFAULT.
fn get_revision(family: Family, kind: ExtKind, optlen: u32, optval: &[u8]) -> Outcome {
    let req = optval.get(..optlen as usize).unwrap_or_default();
    let (name, revision) = ipt_abi::parse_revision_request(req).map_err(|e| {
        if optlen as usize == XT_GET_REVISION_SIZE {
            short_buffer()
        } else {
            Refusal::from(e)
        }
    })?;
    // The kernel's getsockopt returns 0 once xt_find_revision found the revision.
    ipt_abi::query_revision(family, kind, &name, revision)?;
    Ok(Answer::default())
}

/// `do_replace()`: validate, compile, load, switch; answer the old counters.
fn set_replace(
    ns: &mut Namespace,
    backends: &dyn Backends,
    family: Family,
    optval: &[u8],
) -> Outcome {
    // A short header is parse_replace's to refuse, with the kernel's errno (the name read here
    // only picks the entry count below; ip6t_replace has ipt_replace's layout).
    let key = TableKey::new(
        family,
        &IptReplace::read_from_prefix(optval)
            .map(|(hdr, _)| table_name(&hdr.name))
            .unwrap_or_default(),
    );
    // The current entry count decides EAGAIN; a table that does not exist yet would be
    // instantiated by the kernel after validation, with its initial entries.
    let current = match ns.tables.get(&key) {
        Some(t) => Some(t.table.entries.len() as u32),
        None => initial_table(&key).ok().map(|t| t.entries.len() as u32),
    };
    let started = std::time::Instant::now();
    let replace = ipt_abi::parse_replace(family, optval, current)?;
    let table = ns.instantiate(&key, backends)?;
    let rules = replace.table.entries.len();
    let old = table.replace(replace.table, optval)?;
    let took_ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1e3);
    info!(netns = %ns.id, table = %key, rules, took_ms, "applied ruleset: {}", table.backend.summary());
    Ok(Answer {
        ret: 0,
        payload: counters_bytes(&old),
    })
}

/// `do_add_counters()`: add what libiptc kept to the table's counters.
fn set_add_counters(
    ns: &mut Namespace,
    backends: &dyn Backends,
    family: Family,
    optval: &[u8],
) -> Outcome {
    let add = ipt_abi::parse_add_counters(family, optval)?;
    let table = ns.instantiate(&TableKey::new(family, &add.name), backends)?;
    let have = table.table.entries.len();
    if add.counters.len() != have {
        return Err(Refusal::new(
            libc::EINVAL,
            format!(
                "ADD_COUNTERS for {} entries, table {} has {have}",
                add.counters.len(),
                add.name
            ),
        ));
    }
    table.add_counters(&add.counters)?;
    Ok(Answer::default())
}

fn short_buffer() -> Refusal {
    Refusal::new(libc::EFAULT, "request shorter than its optlen")
}

/// `xt_counters` array as the kernel copies it to user space (native-endian u64 pairs).
pub fn counters_bytes(counters: &[XtCounters]) -> Vec<u8> {
    counters.as_bytes().to_vec()
}

impl TableState {
    fn counters(&self) -> Result<Vec<XtCounters>, Refusal> {
        self.backend.counters().map_err(|e| {
            warn!(error = %e, "reading counters failed");
            Refusal::new(e.errno(), e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use ipt_abi::build::{Rule, RuleTarget, TableBuilder};
    use ipt_abi::{Table, Verdict};

    use super::*;
    use crate::daemon::state::{BackendError, NsId, TableBackend};

    /// Counters kept in memory; `live` plays the datapath's per-CPU counters.
    #[derive(Debug, Default)]
    struct Fake {
        live: Arc<Mutex<Vec<XtCounters>>>,
        base: Vec<XtCounters>,
        fail_next: Arc<Mutex<Option<i32>>>,
    }

    impl TableBackend for Fake {
        fn counters(&self) -> Result<Vec<XtCounters>, BackendError> {
            let live = self.live.lock().unwrap();
            Ok(self
                .base
                .iter()
                .zip(live.iter())
                .map(|(b, l)| XtCounters {
                    pcnt: b.pcnt + l.pcnt,
                    bcnt: b.bcnt + l.bcnt,
                })
                .collect())
        }
        fn replace(
            &mut self,
            table: &Table,
            _blob: &[u8],
        ) -> Result<Vec<XtCounters>, BackendError> {
            if let Some(errno) = self.fail_next.lock().unwrap().take() {
                return Err(BackendError::new(errno, "injected"));
            }
            let old = self.counters()?;
            let n = table.entries.len();
            *self.live.lock().unwrap() = vec![XtCounters::default(); n];
            self.base = vec![XtCounters::default(); n];
            Ok(old)
        }
        fn add_counters(&mut self, add: &[XtCounters]) -> Result<(), BackendError> {
            for (b, a) in self.base.iter_mut().zip(add) {
                b.pcnt += a.pcnt;
                b.bcnt += a.bcnt;
            }
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeBackends {
        created: AtomicUsize,
        live: Arc<Mutex<Vec<XtCounters>>>,
        fail_next: Arc<Mutex<Option<i32>>>,
    }

    impl Backends for FakeBackends {
        fn create(
            &self,
            _ns: &Namespace,
            table: &Table,
        ) -> Result<Box<dyn TableBackend>, BackendError> {
            self.created.fetch_add(1, Ordering::SeqCst);
            *self.live.lock().unwrap() = vec![XtCounters::default(); table.entries.len()];
            Ok(Box::new(Fake {
                live: Arc::clone(&self.live),
                base: vec![XtCounters::default(); table.entries.len()],
                fail_next: Arc::clone(&self.fail_next),
            }))
        }
        fn flush(&self, _ns: NsId) {}
        fn flush_orphans(&self, _keep: &[NsId]) {}
    }

    fn name_field(name: &str) -> Vec<u8> {
        let mut v = name.as_bytes().to_vec();
        v.resize(XT_TABLE_MAXNAMELEN, 0);
        v
    }

    /// The errno of a refusal.
    fn errno(r: Outcome) -> i32 {
        r.expect_err("refused").errno
    }

    fn get_info(ns: &mut Namespace, b: &FakeBackends, name: &str) -> Outcome {
        let mut req = name_field(name);
        req.resize(IPT_GETINFO_SIZE, 0);
        get(
            ns,
            b,
            Family::Ipv4,
            IPT_SO_GET_INFO,
            IPT_GETINFO_SIZE as u32,
            &req,
        )
    }

    fn get_entries(ns: &mut Namespace, b: &FakeBackends, size: u32) -> Outcome {
        let mut req = name_field("filter");
        req.extend_from_slice(&size.to_ne_bytes());
        req.resize(IPT_GET_ENTRIES_SIZE, 0);
        get(
            ns,
            b,
            Family::Ipv4,
            IPT_SO_GET_ENTRIES,
            IPT_GET_ENTRIES_SIZE as u32 + size,
            &req,
        )
    }

    fn one_rule_blob(num_counters: u32) -> Vec<u8> {
        let mut t = TableBuilder::filter();
        t.rule("INPUT", Rule::new(RuleTarget::Drop).udp_dport(53));
        t.policy("FORWARD", Verdict::Drop);
        t.replace_blob(num_counters).expect("blob")
    }

    #[test]
    fn first_get_info_instantiates_the_filter_table_once() {
        let b = FakeBackends::default();
        let mut ns = Namespace::new(NsId(1));
        let a = get_info(&mut ns, &b, "filter").expect("filter exists");
        assert_eq!(a.payload, Table::initial("filter").unwrap().get_info());
        get_info(&mut ns, &b, "filter").expect("again");
        assert_eq!(b.created.load(Ordering::SeqCst), 1);
        assert_eq!(errno(get_info(&mut ns, &b, "nat")), libc::ENOENT);
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_INFO,
                83,
                &[0; 83]
            )),
            libc::EINVAL
        );
    }

    #[test]
    fn get_entries_checks_length_and_size_like_the_kernel() {
        let b = FakeBackends::default();
        let mut ns = Namespace::new(NsId(1));
        let size = Table::initial("filter").unwrap().size();
        let a = get_entries(&mut ns, &b, size).expect("entries");
        assert_eq!(a.payload.len(), 40 + size as usize);
        assert_eq!(errno(get_entries(&mut ns, &b, size - 8)), libc::EAGAIN);
        let mut req = name_field("filter");
        req.extend_from_slice(&size.to_ne_bytes());
        req.resize(40, 0);
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_ENTRIES,
                40 + size + 1,
                &req
            )),
            libc::EINVAL
        );
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_ENTRIES,
                39,
                &req[..39]
            )),
            libc::EINVAL
        );
    }

    /// A request whose optlen passes the kernel's length check but whose bytes are fewer than
    /// the kernel copies: EFAULT (copy_from_user), not the decoder's EINVAL; a wrong optlen
    /// stays EINVAL however few bytes came with it.
    #[test]
    fn short_buffers_are_efault_after_the_optlen_checks() {
        let b = FakeBackends::default();
        let mut ns = Namespace::new(NsId(1));
        let name = name_field("filter");
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_INFO,
                84,
                &name[..31]
            )),
            libc::EFAULT
        );
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_INFO,
                83,
                &name[..31]
            )),
            libc::EINVAL
        );
        let size = Table::initial("filter").expect("filter").size();
        let mut hdr = name_field("filter");
        hdr.extend_from_slice(&size.to_ne_bytes());
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_ENTRIES,
                40 + size,
                &hdr
            )),
            libc::EFAULT
        );
        assert_eq!(
            errno(get(&mut ns, &b, Family::Ipv4, IPT_SO_GET_ENTRIES, 40, &hdr)),
            libc::EFAULT
        );
        assert_eq!(
            errno(get(&mut ns, &b, Family::Ipv4, IPT_SO_GET_ENTRIES, 39, &hdr)),
            libc::EINVAL
        );
        let mut rev = b"udp".to_vec();
        rev.resize(29, 0);
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_REVISION_MATCH,
                30,
                &rev
            )),
            libc::EFAULT
        );
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_REVISION_MATCH,
                31,
                &rev
            )),
            libc::EINVAL
        );
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_REVISION_MATCH,
                29,
                &rev
            )),
            libc::EINVAL
        );
        assert!(ns.tables.is_empty(), "refused requests instantiate nothing");
    }

    #[test]
    fn replace_returns_old_counters_and_add_counters_restores_them() {
        let b = FakeBackends::default();
        let mut ns = Namespace::new(NsId(1));
        get_info(&mut ns, &b, "filter").unwrap();
        b.live.lock().unwrap()[0] = XtCounters { pcnt: 3, bcnt: 300 };
        let a = set(
            &mut ns,
            &b,
            Family::Ipv4,
            IPT_SO_SET_REPLACE,
            &one_rule_blob(4),
        )
        .expect("replace");
        assert_eq!(a.payload.len(), 4 * 16);
        assert_eq!(
            XtCounters::read_from_prefix(&a.payload).map(|(c, _)| c),
            Ok(XtCounters { pcnt: 3, bcnt: 300 })
        );
        assert_eq!(
            &a.payload[..16],
            &[3u64.to_ne_bytes(), 300u64.to_ne_bytes()].concat()[..]
        );
        let table = &ns.tables[&TableKey::ipv4("filter")].table;
        assert_eq!(table.entries.len(), 5);
        // xt_counters_info: name, count, 4 bytes of padding before the u64 counters.
        let mut add = name_field("filter");
        add.extend_from_slice(&5u32.to_ne_bytes());
        add.extend_from_slice(&[0; 4]);
        add.extend_from_slice(&counters_bytes(&[XtCounters { pcnt: 7, bcnt: 70 }; 5]));
        set(&mut ns, &b, Family::Ipv4, IPT_SO_SET_ADD_COUNTERS, &add).expect("add");
        assert_eq!(
            ns.tables[&TableKey::ipv4("filter")]
                .backend
                .counters()
                .unwrap()[4],
            XtCounters { pcnt: 7, bcnt: 70 }
        );
        // A count that is not the table's: EINVAL, nothing added.
        let mut bad = name_field("filter");
        bad.extend_from_slice(&4u32.to_ne_bytes());
        bad.extend_from_slice(&[0; 4]);
        bad.extend_from_slice(&counters_bytes(&[XtCounters { pcnt: 1, bcnt: 1 }; 4]));
        assert_eq!(
            errno(set(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_SET_ADD_COUNTERS,
                &bad
            )),
            libc::EINVAL
        );
        assert_eq!(
            ns.tables[&TableKey::ipv4("filter")]
                .backend
                .counters()
                .unwrap()[0],
            XtCounters { pcnt: 7, bcnt: 70 }
        );
    }

    /// The errno that refuses `one_rule_blob(num_counters)` as SET_REPLACE of the filter
    /// table, just created, once `prepare` has set the backends up; the table must not change.
    fn refused_replace(num_counters: u32, prepare: impl FnOnce(&FakeBackends)) -> i32 {
        let b = FakeBackends::default();
        let mut ns = Namespace::new(NsId(1));
        get_info(&mut ns, &b, "filter").unwrap();
        let before = ns.tables[&TableKey::ipv4("filter")].table.clone();
        prepare(&b);
        let e = errno(set(
            &mut ns,
            &b,
            Family::Ipv4,
            IPT_SO_SET_REPLACE,
            &one_rule_blob(num_counters),
        ));
        assert_eq!(ns.tables[&TableKey::ipv4("filter")].table, before);
        e
    }

    #[test]
    fn stale_num_counters_is_eagain_and_changes_nothing() {
        assert_eq!(refused_replace(3, |_| {}), libc::EAGAIN);
    }

    #[test]
    fn a_failing_backend_keeps_the_running_ruleset() {
        let fail = |b: &FakeBackends| *b.fail_next.lock().unwrap() = Some(libc::EINVAL);
        assert_eq!(refused_replace(4, fail), libc::EINVAL);
    }

    #[test]
    fn garbage_and_unknown_optnames_are_refused() {
        let b = FakeBackends::default();
        let mut ns = Namespace::new(NsId(1));
        assert_eq!(
            errno(set(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_SET_REPLACE,
                &[0xff; 50]
            )),
            libc::EINVAL
        );
        assert_eq!(
            errno(set(&mut ns, &b, Family::Ipv4, IPT_SO_SET_REPLACE, &[])),
            libc::EINVAL
        );
        assert_eq!(
            errno(set(&mut ns, &b, Family::Ipv4, 66, &[])),
            libc::ENOPROTOOPT
        );
        assert_eq!(
            errno(get(&mut ns, &b, Family::Ipv4, 68, 84, &[0; 84])),
            libc::ENOPROTOOPT
        );
        assert!(ns.tables.is_empty(), "refused requests instantiate nothing");
    }

    #[test]
    fn revision_queries() {
        let b = FakeBackends::default();
        let mut ns = Namespace::new(NsId(1));
        let mut req = b"multiport".to_vec();
        req.resize(29, 0);
        req.push(1);
        assert!(get(
            &mut ns,
            &b,
            Family::Ipv4,
            IPT_SO_GET_REVISION_MATCH,
            30,
            &req
        )
        .is_ok());
        req[29] = 7;
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_REVISION_MATCH,
                30,
                &req
            )),
            libc::EPROTONOSUPPORT
        );
        let mut unknown = b"nosuchmatch".to_vec();
        unknown.resize(30, 0);
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_REVISION_MATCH,
                30,
                &unknown
            )),
            libc::ENOENT
        );
        assert_eq!(
            errno(get(
                &mut ns,
                &b,
                Family::Ipv4,
                IPT_SO_GET_REVISION_TARGET,
                29,
                &unknown
            )),
            libc::EINVAL
        );
    }
}
