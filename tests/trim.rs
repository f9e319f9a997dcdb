//! The allocator gives back memory freed between live allocations when
//! asked (`tickcast::trim`), as it is after a burst of handshakes.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn freed_memory_between_live_allocations_goes_back_to_the_system() {
    const BUFFERS: usize = 20_000;
    const BUFFER: usize = 16 * 1024;
    // Like the edge: a handshake's buffers, each followed by a small
    // record that outlives it, so no free block reaches the heap's top.
    let mut buffers = Vec::with_capacity(BUFFERS);
    let mut records = Vec::with_capacity(BUFFERS);
    for i in 0..BUFFERS {
        buffers.push(vec![i as u8 | 1; BUFFER]);
        records.push(Box::new([i as u8; 64]));
    }
    drop(buffers);
    let freed = rss_kib();
    tickcast::trim::release_free_memory();
    let trimmed = rss_kib();
    let freed_kib = (BUFFERS * BUFFER / 1024) as u64;
    assert!(
        freed.saturating_sub(trimmed) > freed_kib / 2,
        "resident memory went from {freed} KiB to {trimmed} KiB after trimming; \
         {freed_kib} KiB had been freed"
    );
    assert_eq!(records.len(), BUFFERS);
}
