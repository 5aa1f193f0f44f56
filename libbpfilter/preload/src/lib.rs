//! `libbpfilter.so`: LD_PRELOAD interposer of getsockopt/setsockopt for iptables-legacy.
