//! Differential conformance harness.
