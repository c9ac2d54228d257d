//! The log alone: one durable commit of 1, 100 and 1,000 event bodies (flush + fsync each).
//! `cargo bench --bench store`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rollstore::store::Log;

fn body(n: usize) -> Vec<u8> {
    // About the size of an identification with three members.
    format!("{{\"seq\":{n},\"pad\":\"{}\"}}", "x".repeat(600)).into_bytes()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_append");
    group.sample_size(20);
    for size in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path()).unwrap();
        let bodies: Vec<Vec<u8>> = (0..size).map(body).collect();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_function(format!("{size}_per_commit"), |b| {
            b.iter_batched(
                || bodies.clone(),
                |bodies| log.append(&bodies).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
