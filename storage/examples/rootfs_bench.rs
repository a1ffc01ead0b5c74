//! Benchmark of the root filesystem drivers, run inside the daemon's
//! namespaces by `packaging/bench/rootfs.sh`:
//! `rootfs_bench STORE LAYER_HEXES ROUNDS TARBALL`.
//! Drivers are interleaved within each round; prints a markdown table.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ucri_storage::digest::Digest;
use ucri_storage::rootfs::{DriverKind, Rootfs};

const DRIVERS: [DriverKind; 3] = [
    DriverKind::Overlay,
    DriverKind::FuseOverlayfs,
    DriverKind::Vfs,
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, store, layers, rounds, tarball] = &args[..] else {
        eprintln!("usage: rootfs_bench STORE LAYER_HEXES ROUNDS TARBALL");
        std::process::exit(2);
    };
    let layers: Vec<Digest> = layers
        .split(',')
        .map(|h| format!("sha256:{h}").parse().expect("layer digest"))
        .collect();
    let rounds: usize = rounds.parse().expect("rounds");
    let mut results: Vec<[Vec<Duration>; 3]> = DRIVERS.iter().map(|_| Default::default()).collect();
    for round in 0..rounds {
        for (i, driver) in DRIVERS.iter().enumerate() {
            let rootfs = Rootfs::new(Path::new(store), *driver).expect("rootfs");
            let id = format!("bench-{driver}-{round}");
            let [mount, unmount, untar] = measure(&rootfs, &id, &layers, Path::new(tarball));
            results[i][0].push(mount);
            results[i][1].push(unmount);
            results[i][2].push(untar);
        }
    }
    print_table(&layers, &results);
}

/// create+mount, unmount+remove, and untar-into-a-fresh-rootfs times.
fn measure(rootfs: &Rootfs, id: &str, layers: &[Digest], tarball: &Path) -> [Duration; 3] {
    let t0 = Instant::now();
    rootfs.create(id, layers, false).expect("create");
    let mount = t0.elapsed();
    let t1 = Instant::now();
    rootfs.remove(id).expect("remove");
    let unmount = t1.elapsed();
    let root = rootfs.create(id, layers, false).expect("create for untar");
    let target = root.join("untar");
    std::fs::create_dir_all(&target).expect("mkdir");
    let t2 = Instant::now();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(&target)
        .status()
        .expect("tar");
    assert!(status.success(), "tar failed");
    nix::unistd::sync();
    let untar = t2.elapsed();
    rootfs.remove(id).expect("remove after untar");
    [mount, unmount, untar]
}

fn median_ms(values: &[Duration]) -> f64 {
    let mut v: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn print_table(layers: &[Digest], results: &[[Vec<Duration>; 3]]) {
    println!("| driver | create+mount ms | unmount+remove ms | untar 50 MB (incl. sync) ms |");
    println!("|---|---|---|---|");
    for (driver, r) in DRIVERS.iter().zip(results) {
        println!(
            "| {driver} | {:.1} | {:.1} | {:.0} |",
            median_ms(&r[0]),
            median_ms(&r[1]),
            median_ms(&r[2])
        );
    }
    println!(
        "(medians over {} rounds, {} layers)",
        results[0][0].len(),
        layers.len()
    );
}
