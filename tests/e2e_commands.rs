//! Every iptables command form through bpfilter, compared with the kernel's iptables-legacy
//! running the same sequence in a parallel namespace: exit codes, stdout and stderr must be
//! identical after every step.

mod common;

use common::Tool;

#[test]
fn command_forms_match_the_kernel() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let steps = [
        "-L",
        "-L -n -v",
        "-A INPUT -p udp --dport 53 -j DROP",
        "-A INPUT -s 10.0.0.0/8 -p tcp -m tcp --dport 22 --tcp-flags SYN,ACK SYN -j ACCEPT",
        "-I INPUT 1 -i lo -j ACCEPT",
        "-I INPUT -p icmp --icmp-type echo-request -j ACCEPT",
        "-A OUTPUT -o eth+ -d 192.168.1.1 -j DROP",
        "-A FORWARD -f -j DROP",
        "-A FORWARD ! -f -p tcp -m multiport --dports 80,443,8000:8100 -j ACCEPT",
        "-A FORWARD -m iprange --src-range 10.1.1.1-10.1.1.9 ! --dst-range 10.2.0.0-10.2.255.255 -j DROP",
        "-A INPUT -m comment --comment hello -j ACCEPT",
        "-N web",
        "-N logdrop",
        "-A web -p tcp ! --sport 1024:65535 -j RETURN",
        "-A web -j logdrop",
        "-A logdrop -j DROP",
        "-A INPUT -p tcp -j web",
        "-A FORWARD -g web",
        "-C INPUT -p udp --dport 53 -j DROP",
        "-C INPUT -p udp --dport 54 -j DROP",
        "-R INPUT 2 -p icmp --icmp-type 8/0 -j DROP",
        "-D INPUT -p udp --dport 53 -j DROP",
        "-D INPUT 1",
        "-D INPUT 99",
        "-P FORWARD DROP",
        "-P OUTPUT DROP",
        "-P OUTPUT ACCEPT",
        "-E logdrop dropper",
        "-L dropper -n",
        "-X web",
        "-N web",
        "-Z",
        "-Z INPUT 1",
        "-L -n -v -x --line-numbers",
        "-S",
        "-S INPUT",
        "-S web",
        "-F web",
        "-X web",
        "-F",
        "-X",
        "-L -n",
        "-L nosuchchain",
        "-t nosuch -L",
        "-A INPUT -m nosuchmatch -j ACCEPT",
        "-A INPUT -j NOSUCHTARGET",
    ];
    for step in steps {
        p.ipt(&d, step);
        p.same_listing(&d);
    }
}

/// Extensions the kernel has and bpfilter does not are refused loudly, by iptables' own
/// message, and change nothing; they are never approximated.
#[test]
fn unsupported_extensions_are_refused_and_change_nothing() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    p.ipt(&d, "-A INPUT -p tcp --dport 22 -j ACCEPT");
    for line in [
        "-A INPUT -j NFLOG",
        "-A INPUT -m length --length 0:100 -j ACCEPT",
        "-A INPUT -m statistic --mode nth --every 2 --packet 0",
        "-A INPUT -m connlimit --connlimit-above 3 -j ACCEPT",
        "-A INPUT -p tcp -j TCPMSS --clamp-mss-to-pmtu",
        "-A INPUT -m ttl --ttl-lt 5",
    ] {
        let args: Vec<&str> = line.split_whitespace().collect();
        let err = p.bpf_refuses(&d, &args, &format!("`{line}` must be refused"));
        assert!(
            err.contains("No chain/target/match by that name"),
            "`{line}`: {err}"
        );
    }
}

#[test]
fn restore_and_save_match_the_kernel() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let ruleset =
        "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:svc - [0:0]\n\
        [5:300] -A INPUT -i lo -j ACCEPT\n\
        -A INPUT -p tcp -m tcp --dport 22 -j svc\n\
        [7:700] -A INPUT -p icmp -m icmp --icmp-type 8 -j ACCEPT\n\
        -A svc -s 192.168.0.0/16 -j ACCEPT\n\
        -A svc -j RETURN\n\
        COMMIT\n";
    p.same(&d, Tool::Restore, &["-c"], ruleset);
    p.same_listing(&d);
    p.same(&d, Tool::Restore, &["--test"], ruleset);
    p.same(
        &d,
        Tool::Restore,
        &["--noflush"],
        "*filter\n-A OUTPUT -p udp -m udp --dport 123 -j ACCEPT\nCOMMIT\n",
    );
    p.same_listing(&d);
    p.same(
        &d,
        Tool::Restore,
        &[],
        "*filter\n-A INPUT -m bogus -j ACCEPT\nCOMMIT\n",
    );
    p.same(
        &d,
        Tool::Restore,
        &[],
        "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n",
    );
    p.same_listing(&d);
    p.same(&d, Tool::Save, &[], "");
    p.same(&d, Tool::Save, &["-t", "filter"], "");
}

#[test]
fn daemon_down_gives_one_clear_line() {
    let Some((mut d, p)) = common::start_pair() else {
        return;
    };
    d.kill9();
    let out = d.iptables(&p.bpf, Tool::Iptables, &["-L"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&d.socket.display().to_string()),
        "names the socket: {err}"
    );
    d.restart();
}

/// A command started with its standard input closed behaves as the kernel's: nothing takes
/// fd 0 in its place (the daemon's connection did once, and `iptables-restore` read its rules
/// from it, waiting forever).
#[test]
fn a_closed_standard_input_stays_closed_to_the_command() {
    let Some((d, p)) = common::start_pair() else {
        return;
    };
    let run = |ns: &test_support::netns::Netns, command: String| {
        let out = std::process::Command::new("timeout")
            .args(["10", "ip", "netns", "exec", &ns.name, "sh", "-c"])
            .arg(format!("exec 0<&-; exec {command}"))
            .env("BPFILTER_SOCKET", &d.socket)
            .env(
                "XTABLES_LOCKFILE",
                std::env::temp_dir().join(format!("xtables-{}.lock", ns.name)),
            )
            .output()
            .expect("sh");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let bin = common::bpfilter_bin();
    for tool in ["iptables-restore", "iptables -S"] {
        let ours = run(&p.bpf, format!("{} {tool}", bin.display()));
        let theirs = run(&p.kernel, tool.replace("iptables", "iptables-legacy"));
        assert_eq!(ours, theirs, "{tool} with fd 0 closed\n{}", d.log());
    }
    p.same_listing(&d);
}
