//! Fixture capture tools (see fixtures/README.md).
