//! Throughput, latency and submission benchmarks (filled in below).
fn main() {}
