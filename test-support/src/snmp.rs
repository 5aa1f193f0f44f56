//! `/proc/net/snmp`: the IP stack's counters, e.g. `Ip: InReceives`, the count of datagrams
//! that entered `ip_rcv` (what a firewall namespace received).

/// One field of /proc/net/snmp's text: a header line `Proto: names...` followed by
/// `Proto: values...`.
pub fn field(text: &str, proto: &str, name: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let idx = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(idx)?.parse().ok()
}

/// `Ip: InReceives` of /proc/net/snmp's text.
pub fn in_receives(text: &str) -> Option<u64> {
    field(text, "Ip", "InReceives")
}

/// `Ip: InReceives` of the namespace the calling thread is in.
pub fn in_receives_here() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
    in_receives(&text).unwrap_or_else(|| panic!("no Ip InReceives in\n{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_parsing() {
        let t = "Ip: Forwarding DefaultTTL InReceives InHdrErrors\nIp: 1 64 1234 0\n\
                 Icmp: InMsgs\nIcmp: 5\n";
        assert_eq!(in_receives(t), Some(1234));
        assert_eq!(field(t, "Ip", "DefaultTTL"), Some(64));
        assert_eq!(field(t, "Icmp", "InMsgs"), Some(5));
        assert_eq!(field(t, "Ip", "Nope"), None);
        assert_eq!(field(t, "Udp", "InDatagrams"), None);
    }
}
