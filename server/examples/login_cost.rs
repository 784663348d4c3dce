//! What one login's passphrase check costs: Argon2id at the configured parameters (default
//! `accounts.argon2_memory_kib` 65536, `accounts.argon2_iterations` 3, one lane), the median
//! and worst of `ROUNDS` verifications on one core.
//!
//! `cargo run --release -p sigil-server --example login_cost [MEMORY_KIB ITERATIONS]`

use std::time::Instant;

use sigil_server::accounts::{hash_passphrase, verify_passphrase, HashCost};

const ROUNDS: usize = 15;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cost = match args.as_slice() {
        [m, t] => HashCost {
            memory_kib: m.parse()?,
            iterations: t.parse()?,
        },
        [] => HashCost {
            memory_kib: 65_536,
            iterations: 3,
        },
        _ => anyhow::bail!("usage: login_cost [MEMORY_KIB ITERATIONS]"),
    };
    let phc = hash_passphrase("quartz lantern orbit meadow 47", cost)?;
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        anyhow::ensure!(verify_passphrase("quartz lantern orbit meadow 47", &phc));
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "Argon2id m={} KiB t={} p=1: median {:.0} ms, max {:.0} ms over {ROUNDS} verifications",
        cost.memory_kib,
        cost.iterations,
        ms(times[ROUNDS / 2]),
        ms(times[ROUNDS - 1])
    );
    Ok(())
}
