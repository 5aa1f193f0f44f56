//! The iptables-legacy ABI: kernel struct mirrors, parse, validate, serialize.
#![forbid(unsafe_code)]
