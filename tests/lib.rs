//! Empty: this package exists for its integration-test binary, `it/main.rs`.
