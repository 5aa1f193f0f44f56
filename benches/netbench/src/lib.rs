//! Side-by-side data-path and control-plane benchmarks.
