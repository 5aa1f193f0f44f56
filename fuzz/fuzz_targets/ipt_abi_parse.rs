//! Fuzz every ipt-abi parser on arbitrary bytes: no panic, and whatever parse_replace accepts
//! must serialize to a blob that parses back to a table the kernel shows the same way (parts of
//! a payload the kernel keeps to itself, such as a limit's given cost, are not shown).
#![no_main]

use ipt_abi::{parse_add_counters, parse_replace, parse_revision_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_replace(ipt_abi::Family::Ipv4, data, None) {
        let blob = r.table.replace_blob(r.num_counters, r.counters_ptr);
        let again = parse_replace(ipt_abi::Family::Ipv4, &blob, Some(r.num_counters)).expect("serialized table re-parses");
        let counters = vec![ipt_abi::XtCounters::default(); r.table.entries.len()];
        assert_eq!(again.table.get_entries(&counters), r.table.get_entries(&counters));
        let _ = r.table.chains();
    }
    let _ = parse_add_counters(ipt_abi::Family::Ipv4, data);
    let _ = parse_revision_request(data);
});
