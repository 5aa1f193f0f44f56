//! The kernel log as LOG tests read it: /dev/kmsg records from a sequence number on, lines
//! normalized where two identical topologies differ (`nf_log_all_netns` is turned on for a test
//! by `test_support::log_all_netns`: the kernel's LOG writes nothing in other namespaces
//! without it).

use std::os::unix::fs::OpenOptionsExt;

/// Lines of /dev/kmsg from `from` on (sequence numbers), text only, with `prefix`.
pub fn kmsg_lines_since(from: u64, prefix: &str) -> Vec<(u8, String)> {
    use std::io::Read;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("/dev/kmsg");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => {
                let rec = String::from_utf8_lossy(&buf[..n]).into_owned();
                let Some((hdr, text)) = rec.split_once(';') else {
                    continue;
                };
                let mut h = hdr.split(',');
                let prio: u32 = h.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let seq: u64 = h.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let text = text.lines().next().unwrap_or("").to_owned();
                if seq >= from && text.starts_with(prefix) {
                    out.push(((prio & 7) as u8, text));
                }
            }
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    out
}

/// The sequence number the next /dev/kmsg record will get.
pub fn kmsg_next_seq() -> u64 {
    use std::io::Read;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("/dev/kmsg");
    let mut last = 0;
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        let rec = String::from_utf8_lossy(&buf[..n]);
        if let Some(seq) = rec.split(',').nth(1).and_then(|v| v.parse::<u64>().ok()) {
            last = seq;
        }
    }
    last + 1
}

/// The parts of a LOG line two identical topologies still differ in: interface names (they
/// carry the namespace's name), MAC addresses, IP and ICMP ids, source ports, IPv6 flow labels
/// and TCP sequence numbers.
pub fn normalize(line: &str, names: &[(&str, &str)]) -> String {
    let mut l = line.to_owned();
    for (from, to) in names {
        l = l.replace(from, to);
    }
    l.split(' ')
        .map(|f| {
            for key in [
                "MAC=", "ID=", "MACSRC=", "MACDST=", "SPT=", "FLOWLBL=", "SEQ=",
            ] {
                if f.starts_with(key) {
                    return format!("{key}*");
                }
            }
            f.to_owned()
        })
        .collect::<Vec<_>>()
        .join(" ")
}
